package route

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kicks across the fleet.
//
// A kick is the message "kick <kind> <value>" on <prefix>events, which every host acts on
// within a round trip, and a backstop record <prefix>kick:<kind>:<value> holding the kick's
// time (unix milliseconds) with an expiry: a host whose subscription was down when the
// message went out reads the records when it comes back (and on the login of a user it
// holds sessions of), and ends the matching sessions that started before that time.
// Kinds: user (a login name), backend (an IP, or IP:port), vsite (a vsite id).

// Kick kinds.
const (
	KickUser    = "user"
	KickBackend = "backend"
	KickVsite   = "vsite"
)

// DefaultKickRecordTTL is how long a kick's backstop record lives.
const DefaultKickRecordTTL = 10 * time.Minute

// Fleet is the fleet's records in the Redis of a passdb: session records, kicks, sites,
// director assignments. Its methods live in the files of each part (kick.go, ...).
type Fleet struct {
	c      redis.UniversalClient
	prefix string
}

// Fleet returns the fleet records kept in this passdb's Redis, under its key_prefix.
func (r *Redis) Fleet() *Fleet { return &Fleet{c: r.client, prefix: r.prefix} }

// Prefix is the key_prefix.
func (f *Fleet) Prefix() string { return f.prefix }

// EventsChannel is <prefix>events.
func (f *Fleet) EventsChannel() string { return f.prefix + "events" }

// KickKey is the backstop record of a kick.
func (f *Fleet) KickKey(kind, value string) string { return f.prefix + "kick:" + kind + ":" + value }

// Kick records a kick of kind/value at time at (its backstop, for ttl) and publishes it.
// It returns how many subscribers received the message.
func (f *Fleet) Kick(ctx context.Context, kind, value string, at time.Time, ttl time.Duration) (int64, error) {
	switch kind {
	case KickUser, KickBackend, KickVsite:
	default:
		return 0, fmt.Errorf("route: unknown kick kind %q", kind)
	}
	if value == "" || strings.ContainsAny(value, " \t\r\n") {
		return 0, fmt.Errorf("route: kick %s: bad value %q", kind, value)
	}
	if ttl <= 0 {
		ttl = DefaultKickRecordTTL
	}
	if err := f.c.Set(ctx, f.KickKey(kind, value), strconv.FormatInt(at.UnixMilli(), 10), ttl).Err(); err != nil {
		return 0, err
	}
	return f.c.Publish(ctx, f.EventsChannel(), "kick "+kind+" "+value).Result()
}
