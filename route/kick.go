package route

import (
	"context"
	"fmt"
	"strconv"
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

// Client is the Redis client behind the passdb, for the fleet's own keys.
func (r *Redis) Client() redis.UniversalClient { return r.client }

// Prefix is the passdb's key_prefix.
func (r *Redis) Prefix() string { return r.prefix }

// KickKey is the backstop record of a kick.
func KickKey(prefix, kind, value string) string { return prefix + "kick:" + kind + ":" + value }

// Kick records a kick of kind/value at time at (its backstop, for ttl) and publishes it.
// It returns how many subscribers received the message.
func Kick(ctx context.Context, c redis.UniversalClient, prefix, kind, value string, at time.Time, ttl time.Duration) (int64, error) {
	switch kind {
	case KickUser, KickBackend, KickVsite:
	default:
		return 0, fmt.Errorf("route: unknown kick kind %q", kind)
	}
	if value == "" {
		return 0, fmt.Errorf("route: kick %s: empty value", kind)
	}
	if ttl <= 0 {
		ttl = DefaultKickRecordTTL
	}
	if err := c.Set(ctx, KickKey(prefix, kind, value), strconv.FormatInt(at.UnixMilli(), 10), ttl).Err(); err != nil {
		return 0, err
	}
	return c.Publish(ctx, prefix+"events", "kick "+kind+" "+value).Result()
}
