package engine

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"doorman/engine/relay"
	"doorman/route"
)

// This host's part in the fleet, through the first redis passdb's Redis:
//
//   - Its relayed sessions are published as records (route/fleet_sessions.go) so that
//     doormanctl sessions shows the whole fleet. Registering and unregistering a
//     session (on event loops and relay workers) only appends to a bounded queue; one
//     goroutine writes the queued changes each second in one pipeline, renews the hash's
//     expiry every refresh_interval, and rewrites the whole hash (bytes brought up to
//     date) every fleetRewriteEvery refreshes: at 100,000 sessions a rewrite is some
//     25 MB, so it is not done at every refresh. A failed
//     write, or a queue that outgrew its bound, makes the next write a full rewrite, so
//     memory stays bounded through a Redis outage and Redis catches up after it.
//   - Kicks: "kick <kind> <value>" on the events channel ends the matching relayed
//     sessions here. A kick published while this host's subscription was down is caught
//     by its backstop record (route/kick.go): all records are read when the subscription
//     comes back, and the user's own record when a user with sessions here logs in.

// Fleet timings (variables for tests).
var (
	fleetFlushEvery   = time.Second      // queued changes go out this often
	fleetWriteTimeout = 10 * time.Second // one write (a full rewrite of many sessions)
	fleetCheckTimeout = time.Second      // loginCheck's read of a kick record
	fleetStopTimeout  = 2 * time.Second  // removing this host's records at stop
)

// fleetRewriteEvery: every how many refreshes the hash is rewritten whole (the byte
// counts in doormanctl sessions are that old at most: a minute by default).
var fleetRewriteEvery = 6

// fleetMaxPending bounds the queue of changes: past it the queue is dropped and the next
// write is a full rewrite (a burst of changes larger than that costs no more than one).
const fleetMaxPending = 1 << 16

type fleet struct {
	srv     *Server
	rf      *route.Fleet
	host    string
	log     *zap.Logger
	refresh time.Duration
	ttl     time.Duration

	mu      sync.Mutex
	pending []fleetChange
	rewrite bool // the next write replaces the hash whole
	stopped bool
	started bool

	live      atomic.Int64 // registered sessions (what the hash holds once written)
	backstop  chan struct{}
	quit      chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
	failing   bool // owned by run: the last write failed (log once per outage)
	needScan  bool // owned by run: the kick records are still to be read
	kickFleet atomic.Int64
	kickBack  atomic.Int64
	redisErrs atomic.Int64
	published atomic.Int64
}

// fleetChange is a session that started (h set) or ended (h nil).
type fleetChange struct {
	rec *endRecord
	h   *relay.Handle
}

// newFleet returns nil when fleet.enabled is off.
func newFleet(s *Server, r *route.Redis) (*fleet, error) {
	if c := s.cfg.Fleet.Enabled; c == nil || !*c {
		return nil, nil
	}
	f := &fleet{
		srv:      s,
		rf:       r.Fleet(),
		host:     s.cfg.Hostname,
		log:      s.log.Named("fleet"),
		refresh:  time.Duration(s.cfg.Fleet.RefreshInterval),
		ttl:      time.Duration(s.cfg.Fleet.SessionTTL),
		rewrite:  true, // the first write replaces what a previous run of this host left
		backstop: make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.OnEvent("kick", f.onKick)
	r.OnResubscribe(f.onResubscribe)
	return f, nil
}

func (f *fleet) start() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.started = true
	f.mu.Unlock()
	go f.run()
}

// stop ends the writer and removes this host's records (best effort).
func (f *fleet) stop(ctx context.Context) {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.stopped, f.pending = true, nil
	started := f.started
	f.mu.Unlock()
	if !started {
		return
	}
	f.stopOnce.Do(func() { close(f.quit) })
	select {
	case <-f.done:
	case <-ctx.Done():
	}
	ctx, cancel := context.WithTimeout(ctx, fleetStopTimeout)
	defer cancel()
	if err := f.rf.DeleteSessions(ctx, f.host); err != nil {
		f.redisErrs.Add(1)
		f.log.Warn("could not remove this host's session records", zap.Error(err))
	}
}

// changed queues a session's start (h set) or end (h nil). It runs on event loops and
// relay workers: an append under a lock, nothing more.
func (f *fleet) changed(rec *endRecord, h *relay.Handle) {
	if h != nil {
		f.live.Add(1)
	} else {
		f.live.Add(-1)
	}
	f.mu.Lock()
	switch {
	case f.rewrite || f.stopped:
		// The next write snapshots the registry, or there is none.
	case len(f.pending) >= fleetMaxPending:
		f.pending, f.rewrite = nil, true
	default:
		f.pending = append(f.pending, fleetChange{rec, h})
	}
	f.mu.Unlock()
}

func (f *fleet) run() {
	defer close(f.done)
	f.write(true)
	// Kicks this host missed before it first subscribed end the sessions it already
	// has: none at a normal start, so this is no SCAN (see applyKickRecords); if Redis
	// is not there yet, it is retried each tick.
	f.needScan = !f.applyKickRecords()
	lastRefresh, refreshes := time.Now(), 0
	t := time.NewTicker(fleetFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-f.quit:
			return
		case <-f.backstop:
			f.needScan = true
		case <-t.C:
			if time.Since(lastRefresh) < f.refresh {
				f.write(false)
				break
			}
			refreshes++
			full := refreshes%fleetRewriteEvery == 0
			if f.write(full) && (full || f.touch()) {
				lastRefresh = time.Now()
			}
		}
		if f.needScan {
			f.needScan = !f.applyKickRecords()
		}
	}
}

// write sends the queued changes, or (full, or after a failure) the whole hash. It
// reports whether Redis took it.
func (f *fleet) write(full bool) bool {
	f.mu.Lock()
	batch := f.pending
	f.pending = nil
	full = full || f.rewrite
	// From here on changes queue again: the snapshot below covers the earlier ones, and
	// a change caught both ways is written twice, which is harmless.
	f.rewrite = false
	live := f.live.Load()
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
	defer cancel()
	var err error
	if full {
		if f.failing {
			// Redis was away: a cheap check before building every record.
			err = f.rf.Ping(ctx)
		}
		if err == nil {
			err = f.rf.ReplaceSessions(ctx, f.host, f.snapshot(), f.ttl, time.Now())
		}
	} else if len(batch) > 0 {
		set, del := f.resolve(batch)
		err = f.rf.WriteSessions(ctx, f.host, set, del, f.ttl)
	}
	if err != nil {
		f.redisErrs.Add(1)
		f.mu.Lock()
		f.pending, f.rewrite = nil, true
		f.mu.Unlock()
		if !f.failing {
			f.log.Warn("writing this host's session records failed; rewriting them when Redis is back", zap.Error(err))
		}
		f.failing = true
		return false
	}
	if f.failing {
		f.log.Info("session records written again")
	}
	f.failing = false
	f.published.Store(live)
	return true
}

// touch renews the expiry of this host's records and its entry in the hosts zset.
func (f *fleet) touch() bool {
	ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
	defer cancel()
	exists, err := f.rf.TouchSessions(ctx, f.host, f.ttl, time.Now())
	if err != nil {
		f.redisErrs.Add(1)
	}
	if err != nil || (!exists && f.live.Load() > 0) {
		// Redis is away, or lost the records: the next write puts them all back.
		f.mu.Lock()
		f.rewrite = true
		f.mu.Unlock()
		return false
	}
	return true
}

// resolve turns a batch of changes into records to set and ids to delete: the last
// change of a session wins.
func (f *fleet) resolve(batch []fleetChange) (set []route.SessionRecord, del []string) {
	last := make(map[*endRecord]*relay.Handle, len(batch))
	for _, c := range batch {
		last[c.rec] = c.h
	}
	for rec, h := range last {
		if h != nil {
			set = append(set, f.record(rec, h))
		} else {
			del = append(del, rec.id)
		}
	}
	return set, del
}

// snapshot is every registered session as a record.
func (f *fleet) snapshot() []route.SessionRecord {
	var cs []fleetChange
	f.srv.eachSession(sessionFilter{}, func(rec *endRecord, h *relay.Handle) { cs = append(cs, fleetChange{rec, h}) })
	out := make([]route.SessionRecord, len(cs))
	for i, c := range cs {
		out[i] = f.record(c.rec, c.h)
	}
	return out
}

func (f *fleet) record(rec *endRecord, h *relay.Handle) route.SessionRecord {
	toClient, toBackend := h.Bytes()
	return route.SessionRecord{
		Host:      f.host,
		ID:        rec.id,
		User:      rec.user,
		Protocol:  f.srv.listenerProtocol(rec.listener()),
		Listener:  rec.listener(),
		Client:    rec.remote.String(),
		Backend:   rec.target,
		Vsite:     rec.vsite(),
		Started:   time.Unix(0, rec.started).UTC(),
		ToClient:  rec.out + toClient,
		ToBackend: rec.in + toBackend,
	}
}

// kickFilter is the filter of a kick of kind/value; ok is false for one that cannot be
// read.
func kickFilter(kind, value string) (f sessionFilter, ok bool) {
	if value == "" {
		return f, false
	}
	switch kind {
	case route.KickUser:
		f.user = value
	case route.KickVsite:
		f.vsite = value
	case route.KickBackend:
		return f, backendFilter(&f, value)
	default:
		return f, false
	}
	return f, true
}

// kick ends the matching local sessions (asynchronously: Handle.Kick) and returns how
// many. A user kick is a map lookup when the user has no session here.
func (f *fleet) kick(sf sessionFilter) int {
	if sf.user != "" && f.srv.sessions.userSessions(sf.user) == 0 {
		return 0
	}
	return f.srv.kickSessions(sf)
}

// onKick handles "kick <kind> <value>" on the watcher goroutine: a walk of the registry
// under its shard locks and asynchronous kicks, no I/O.
func (f *fleet) onKick(arg string) {
	kind, value, _ := strings.Cut(arg, " ")
	value = strings.TrimSpace(value)
	sf, ok := kickFilter(kind, value)
	if !ok {
		f.log.Warn("ignored a kick message", zap.String("kind", kind), zap.String("value", value))
		return
	}
	n := f.kick(sf)
	f.kickFleet.Add(int64(n))
	f.log.Info("kick", zap.String("kind", kind), zap.String("value", value), zap.Int("kicked", n), zap.String("source", "fleet"))
}

// onResubscribe runs on the watcher goroutine; the records are read by run.
func (f *fleet) onResubscribe() {
	select {
	case f.backstop <- struct{}{}:
	default:
	}
}

// applyKickRecords reads every kick record and ends the local sessions each one matches
// that started before it. It reports whether it could read them (else run tries again
// at its next tick). With no session here there is nothing to end, and no SCAN.
func (f *fleet) applyKickRecords() bool {
	if f.live.Load() <= 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), fleetWriteTimeout)
	defer cancel()
	recs, err := f.rf.KickRecords(ctx)
	if err != nil {
		f.redisErrs.Add(1)
		return false
	}
	for _, r := range recs {
		sf, ok := kickFilter(r.Kind, r.Value)
		if !ok {
			continue
		}
		sf.before = r.At.UnixNano()
		if n := f.kick(sf); n > 0 {
			f.kickBack.Add(int64(n))
			f.log.Info("kick", zap.String("kind", r.Kind), zap.String("value", r.Value), zap.Int("kicked", n),
				zap.String("source", "backstop"), zap.Time("at", r.At))
		}
	}
	return true
}

// loginCheck runs off the loop after a successful backend login, before the hand-off:
// if the user has sessions here, a kick of the user this host missed (its record is
// newer than those sessions) ends them. The new session is not registered yet, so it is
// never hit. A user without sessions here costs a map lookup, no Redis call.
func (f *fleet) loginCheck(ctx context.Context, user string) {
	if f == nil || user == "" || f.srv.sessions.userSessions(user) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, fleetCheckTimeout)
	defer cancel()
	at, ok, err := f.rf.KickRecord(ctx, route.KickUser, user)
	if err != nil {
		f.redisErrs.Add(1)
		return
	}
	if !ok {
		return
	}
	if n := f.srv.kickSessions(sessionFilter{user: user, before: at.UnixNano()}); n > 0 {
		f.kickBack.Add(int64(n))
		f.log.Info("kick", zap.String("kind", route.KickUser), zap.String("value", user), zap.Int("kicked", n),
			zap.String("source", "backstop"), zap.Time("at", at))
	}
}

func (f *fleet) appendMetrics(m *metricWriter) {
	if f == nil {
		return
	}
	m.family("doorman_kicks_total", "counter", "Relayed sessions kicked, by source: admin (this host's API), fleet (a kick published to the fleet), backstop (a kick record this host had missed).")
	m.sample("doorman_kicks_total", `source="admin"`, f.srv.stats.Kicked.Load())
	m.sample("doorman_kicks_total", `source="fleet"`, f.kickFleet.Load())
	m.sample("doorman_kicks_total", `source="backstop"`, f.kickBack.Load())
	m.one("doorman_fleet_redis_errors_total", "counter", "Failed Redis operations of the fleet (session records, kick records).", f.redisErrs.Load())
	m.one("doorman_fleet_sessions_published", "gauge", "Sessions in this host's session records as of the last successful write.", f.published.Load())
}
