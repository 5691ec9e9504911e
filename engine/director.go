package engine

import (
	"context"

	"doorman/route"
)

// director assigns a backend to users that have none, by consistent hashing.
// (Skeleton: filled in by the director work.)
type director struct{}

// newDirector returns nil when no director site is configured.
func newDirector(s *Server, r *route.Redis) (*director, error) { return nil, nil }

// assign sets p's host for a proxied user without one; it reports whether it did.
func (d *director) assign(ctx context.Context, user string, fields map[string]string, p *route.Proxy) (bool, error) {
	return false, nil
}

// ended runs at the end of a session whose backend the director chose.
func (d *director) ended(rec *endRecord) {}

func (d *director) appendMetrics(m *metricWriter) {}
