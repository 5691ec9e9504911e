package route

import (
	"context"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Failed-login penalty per client address (Dovecot's auth penalty,
// auth/auth-penalty.c), shared by every proxy host through Redis: the
// counter is <prefix>penalty:<ip>, raised with INCR and given a fresh
// EXPIRE of PenaltyTimeout on every failure, so it is forgotten once an
// address has not failed for that long. IPv6 addresses count per /48
// (PENALTY_IPV6_MASK_BITS), as one host usually has a whole prefix.
//
// Errors are returned so they can be logged, but a caller must treat any
// error as "no penalty": an outage of Redis must never block logins.

// Dovecot's penalty constants (auth-penalty.h).
const (
	PenaltyInit = 2 * time.Second  // AUTH_PENALTY_INIT_SECS
	PenaltyMax  = 15 * time.Second // AUTH_PENALTY_MAX_SECS
	// PenaltyTimeout is AUTH_PENALTY_TIMEOUT: a penalty is forgotten this
	// long after the last failure.
	PenaltyTimeout = (2 + 4 + 8 + 15) * time.Second
)

// PenaltyDelay is auth_penalty_to_secs(): 2 s doubled per failure, at most
// 15 s; no failures, no delay (1 → 4 s, 2 → 8 s, 3 or more → 15 s).
func PenaltyDelay(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := PenaltyInit
	for i := 0; i < failures && d < PenaltyMax; i++ {
		d *= 2
	}
	return min(d, PenaltyMax)
}

// PenaltyKey is the key of an address's counter: <prefix>penalty:<ip>, the
// IPv6 ones masked to /48.
func (r *Redis) PenaltyKey(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(48)
		return r.prefix + "penalty:" + p.String()
	}
	return r.prefix + "penalty:" + ip.String()
}

// Penalty returns the failures counted against ip.
func (r *Redis) Penalty(ctx context.Context, ip netip.Addr) (int, error) {
	v, err := r.client.Get(ctx, r.PenaltyKey(ip)).Result()
	if err == redis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, &TempError{Passdb: r.Name(), Err: err}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, nil
	}
	return n, nil
}

// PenaltyFailed counts one failed login from ip. INCR and EXPIRE go in one
// MULTI (the same key, so also on Cluster).
func (r *Redis) PenaltyFailed(ctx context.Context, ip netip.Addr) error {
	key := r.PenaltyKey(ip)
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, key)
		p.Expire(ctx, key, PenaltyTimeout)
		return nil
	})
	if err != nil {
		return &TempError{Passdb: r.Name(), Err: err}
	}
	return nil
}

// PenaltyClear forgets ip's failures (a successful login, as in Dovecot).
func (r *Redis) PenaltyClear(ctx context.Context, ip netip.Addr) error {
	if err := r.client.Del(ctx, r.PenaltyKey(ip)).Err(); err != nil {
		return &TempError{Passdb: r.Name(), Err: err}
	}
	return nil
}
