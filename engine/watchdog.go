package engine

import (
	"context"

	"doorman/route"
)

// watchdog health-checks the sites and fails them over and back.
// (Skeleton: filled in by the sites work.)
type watchdog struct{}

// newWatchdog returns nil unless fleet.watchdog.enabled.
func newWatchdog(s *Server, r *route.Redis) (*watchdog, error) { return nil, nil }

func (w *watchdog) start()                        {}
func (w *watchdog) stop(ctx context.Context)      {}
func (w *watchdog) appendMetrics(m *metricWriter) {}
