package engine

import (
	"context"

	"doorman/route"
)

// fleet is this host's part in the fleet: its session records in Redis, and kicks.
// (Skeleton: filled in by the fleet-sessions work.)
type fleet struct{}

// newFleet returns nil when fleet.enabled is off.
func newFleet(s *Server, r *route.Redis) (*fleet, error) { return nil, nil }

func (f *fleet) start()                   {}
func (f *fleet) stop(ctx context.Context) {}

// loginCheck runs off the loop after a successful backend login, before the hand-off.
func (f *fleet) loginCheck(ctx context.Context, user string) {}

func (f *fleet) appendMetrics(m *metricWriter) {}
