package route

import (
	"context"
	"errors"
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

// KickRecord is a kick's backstop record.
type KickRecord struct {
	Kind, Value string
	At          time.Time
}

// KickRecord reads the backstop record of one kick; ok is false when there is none.
func (f *Fleet) KickRecord(ctx context.Context, kind, value string) (at time.Time, ok bool, err error) {
	v, err := f.c.Get(ctx, f.KickKey(kind, value)).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("route: kick record %s: %q is not unix milliseconds", f.KickKey(kind, value), v)
	}
	return time.UnixMilli(ms), true, nil
}

// KickRecords reads every kick's backstop record (SCAN <prefix>kick:*, on every master of
// a Cluster). Records that vanish meanwhile or do not parse are skipped.
func (f *Fleet) KickRecords(ctx context.Context) ([]KickRecord, error) {
	prefix := f.prefix + "kick:"
	keys, err := scanKeys(ctx, f.c, prefix)
	if err != nil {
		return nil, err
	}
	var out []KickRecord
	for _, k := range keys {
		kind, value, ok := strings.Cut(strings.TrimPrefix(k, prefix), ":")
		if !ok || value == "" {
			continue
		}
		v, err := f.c.Get(ctx, k).Result()
		if errors.Is(err, redis.Nil) {
			continue // expired since the SCAN
		}
		if err != nil {
			return out, err
		}
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
			out = append(out, KickRecord{Kind: kind, Value: value, At: time.UnixMilli(ms)})
		}
	}
	return out, nil
}
