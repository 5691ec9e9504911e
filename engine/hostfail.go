package engine

import (
	"context"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// Backend health for proxy_host_immediate_failure_after, as Dovecot 2.3's login proxy
// keeps it (login-proxy.c, login_proxy_connect and proxy_fail_connect): per backend
// ip:port, the newest successful connect, the newest failed one, and how many connects are
// under way. A new attempt fails at once with "Host is down", and is not retried, when
//
//	the newest failure is later than the newest success by more than the passdb's
//	proxy_host_immediate_failure_after (default 30s; 0 disables), and
//	another connect to that backend is under way (so one keeps probing it),
//
// so that while a backend is down, every client is not made to wait out its own connect
// timeout. A backend never tried counts as having succeeded a second before its first
// attempt. A failure is not recorded when a connect succeeded since the failed login
// began (a one-off failure). Dovecot keeps this per login process; Doorman per process.
//
// Differences: Dovecot counts a connect as under way until the TCP connect ends; Doorman's
// attempt (backendAttempt) covers the connect and the backend login, so an attempt that
// connected is recorded as a success when its login ends. Times compare at nanosecond
// resolution, not whole seconds.

// hostFailShards spreads the targets over locks; hostFailMax bounds each shard's map.
const (
	hostFailShards = 16
	hostFailMax    = 4096
	// hostFailForget: a target without a connect under way and untouched this long is
	// forgotten when its shard is full.
	hostFailForget = 10 * time.Minute
)

type hostFailures struct {
	seed   maphash.Seed
	shards [hostFailShards]hostFailShard
}

type hostFailShard struct {
	mu sync.Mutex
	m  map[netip.AddrPort]*hostState
	_  [40]byte
}

type hostState struct {
	lastSuccess time.Time
	lastFailure time.Time
	waiting     int       // attempts under way
	touched     time.Time // last begin or end
}

func newHostFailures() *hostFailures { return &hostFailures{seed: maphash.MakeSeed()} }

func (hf *hostFailures) shard(t netip.AddrPort) *hostFailShard {
	return &hf.shards[maphash.Comparable(hf.seed, t)%hostFailShards]
}

// begin counts an attempt to target as under way, unless the target is down by the rule
// above: then it returns false (the attempt must fail at once, without reconnects) and
// how long the newest failure is past the newest success.
func (hf *hostFailures) begin(target netip.AddrPort, now time.Time, after time.Duration) (ok bool, down time.Duration) {
	sh := hf.shard(target)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[target]
	if st == nil {
		if sh.m == nil {
			sh.m = make(map[netip.AddrPort]*hostState)
		}
		if len(sh.m) >= hostFailMax {
			sh.sweep(now)
		}
		if len(sh.m) >= hostFailMax {
			return true, 0 // untracked: no fast failure for it
		}
		// First connect to this target: don't start failing at once.
		st = &hostState{lastSuccess: now.Add(-time.Second)}
		sh.m[target] = st
	}
	st.touched = now
	if after > 0 && st.lastFailure.After(st.lastSuccess) && st.waiting > 0 {
		if down = st.lastFailure.Sub(st.lastSuccess); down > after {
			return false, down
		}
	}
	st.waiting++
	return true, 0
}

// end records how an attempt that began at started (the login's first attempt, as
// Dovecot's proxy->created) ended: connected, failed to connect, or abandoned (the
// client left: neither).
func (hf *hostFailures) end(target netip.AddrPort, started, now time.Time, outcome connectOutcome) {
	sh := hf.shard(target)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[target]
	if st == nil {
		return
	}
	st.touched = now
	if st.waiting > 0 {
		st.waiting--
	}
	switch outcome {
	case connectOK:
		st.lastSuccess = now
	case connectFailed:
		// A connect succeeded since this login began: perhaps just a one-off failure.
		if !started.Before(st.lastSuccess) {
			st.lastFailure = now
		}
	}
}

type connectOutcome uint8

const (
	connectOK connectOutcome = iota
	connectFailed
	connectAbandoned
)

// attemptOutcome classes a backendAttempt's result for the health record: connected
// (whatever the login said), failed to connect, or abandoned by a client that left.
func attemptOutcome(ctx context.Context, st Stage, err error) connectOutcome {
	switch {
	case err == nil || st != StageConnect:
		return connectOK
	case ctx.Err() != nil:
		return connectAbandoned
	}
	return connectFailed
}

// sweep drops targets without attempts under way that nobody touched for a while.
func (sh *hostFailShard) sweep(now time.Time) {
	for t, st := range sh.m {
		if st.waiting == 0 && now.Sub(st.touched) > hostFailForget {
			delete(sh.m, t)
		}
	}
}

// len is how many targets are tracked (for tests).
func (hf *hostFailures) len() int {
	n := 0
	for i := range hf.shards {
		sh := &hf.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
