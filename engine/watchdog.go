package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"doorman/route"
)

// The site watchdog (fleet.watchdog, opt-in): it health-checks each watched site's hosts
// and fails a site over only after it has been unreachable for down_after (5 minutes by
// default, as Dovecot's proxy document advises: a failover on a short blip costs more, in
// cold caches, than it saves), and restores it gradually (route.Fleet.Restore, one vsite
// every restore_pause) once it has been reachable again for up_after.
//
// One watchdog decides for the whole fleet: the leader, holding the lease
// <prefix>watchdog:leader (3 intervals, renewed each interval); the others stand by and
// take over when the lease lapses. The site clock (down_since, up_since) and the per-host
// results (down) live in the site's hash, so a new leader carries on where the old one
// left off; each failover or restore runs under the site's lock, so two deciders that
// disagree for a moment (a lease lapsing under a stalled leader) cannot move a site at
// once; and up_after gives hysteresis, so a flapping site is not flipped back and forth.
// Every decision is logged and counted. It runs on its own goroutines, never on an event
// loop.
type watchdog struct {
	cfg   WatchdogConfig
	fl    *route.Fleet
	log   *zap.Logger
	owner string // this host, in the lease and the site locks
	dial  func(ctx context.Context, addr string) error

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}

	lease *route.Lease // owned by the run goroutine; nil when not the leader

	mu        sync.Mutex
	restoring map[string]context.CancelFunc // sites being restored by this host
	states    map[string]string             // site → state, for the metrics
	restoreWG sync.WaitGroup

	leader                          atomic.Bool
	checks, checkErrors             atomic.Int64
	failovers, restores, redisFails atomic.Int64
}

// watchdogLeaderKey is the leader lease's key under the prefix.
const watchdogLeaderKey = "watchdog:leader"

// probePort is the port of a site host given without one: IMAP's.
const probePort = "143"

// newWatchdog returns nil unless fleet.watchdog.enabled.
func newWatchdog(s *Server, r *route.Redis) (*watchdog, error) {
	if !s.cfg.Fleet.Watchdog.Enabled {
		return nil, nil
	}
	return startableWatchdog(s.cfg.Fleet.Watchdog, r.Fleet(), s.log.Named("watchdog")), nil
}

func startableWatchdog(cfg WatchdogConfig, fl *route.Fleet, log *zap.Logger) *watchdog {
	host, _ := os.Hostname()
	return &watchdog{
		cfg:       cfg,
		fl:        fl,
		log:       log,
		owner:     host + ":" + strconv.Itoa(os.Getpid()),
		dial:      tcpProbe(time.Duration(cfg.CheckTimeout)),
		restoring: map[string]context.CancelFunc{},
		states:    map[string]string{},
	}
}

// tcpProbe says a host is up when a TCP connection to it opens within timeout.
func tcpProbe(timeout time.Duration) func(ctx context.Context, addr string) error {
	return func(ctx context.Context, addr string) error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

func (w *watchdog) start() {
	if w == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done = make(chan struct{})
	w.log.Info("watchdog started", zap.String("owner", w.owner), zap.Duration("interval", time.Duration(w.cfg.Interval)),
		zap.Duration("down_after", time.Duration(w.cfg.DownAfter)), zap.Duration("up_after", time.Duration(w.cfg.UpAfter)))
	go w.run(ctx)
}

// stop ends the watchdog: running restores stop (another leader carries on), and the
// lease is released so another host takes over at once.
func (w *watchdog) stop(ctx context.Context) {
	if w == nil || w.cancel == nil {
		return
	}
	w.stopOnce.Do(func() {
		w.cancel()
		select {
		case <-w.done:
		case <-ctx.Done():
		}
	})
}

func (w *watchdog) run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(time.Duration(w.cfg.Interval))
	defer t.Stop()
	for {
		w.tick(ctx)
		select {
		case <-ctx.Done():
			w.resign()
			return
		case <-t.C:
		}
	}
}

// resign stops this host's restores and gives the lease up.
func (w *watchdog) resign() {
	w.mu.Lock()
	for _, cancel := range w.restoring {
		cancel()
	}
	w.mu.Unlock()
	w.restoreWG.Wait()
	if w.lease != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = w.lease.Release(ctx)
		cancel()
		w.lease = nil
	}
	if w.leader.Swap(false) {
		w.log.Info("watchdog: no longer the leader", zap.String("owner", w.owner))
	}
}

// tick is one round: keep or seek the lease, then (as leader) check and decide.
func (w *watchdog) tick(runCtx context.Context) {
	interval := time.Duration(w.cfg.Interval)
	ctx, cancel := context.WithTimeout(runCtx, interval+time.Duration(w.cfg.CheckTimeout))
	defer cancel()
	if w.lease != nil {
		if err := w.lease.Renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("watchdog: lost the leader lease", zap.Error(err))
			w.redisFails.Add(1)
			w.resign()
		}
	}
	if w.lease == nil {
		// Three rounds, and the time a round's checks may take beyond its interval.
		l, ok, err := w.fl.Acquire(ctx, watchdogLeaderKey, w.owner, 3*interval+time.Duration(w.cfg.CheckTimeout))
		if err != nil {
			w.redisFails.Add(1)
			w.log.Warn("watchdog: Redis", zap.Error(err))
			return
		}
		if ok {
			w.lease = l
			w.leader.Store(true)
			w.log.Info("watchdog: now the leader", zap.String("owner", w.owner))
		}
	}
	sites, err := w.fl.Sites(ctx)
	if err != nil {
		w.redisFails.Add(1)
		w.log.Warn("watchdog: reading the sites", zap.Error(err))
		return
	}
	w.mu.Lock()
	clear(w.states)
	for _, s := range sites {
		w.states[s.ID] = s.State
	}
	w.mu.Unlock()
	if w.lease == nil {
		return
	}
	// The fallback sites of watched sites are checked too (their down field tells a
	// failover which of their hosts can take vsites), but not failed over themselves.
	fallbacks := map[string]bool{}
	for _, s := range sites {
		if w.watched(s) {
			for _, fb := range s.Fallback {
				fallbacks[fb.Site] = true
			}
		}
	}
	var wg sync.WaitGroup
	for _, s := range sites {
		if watched := w.watched(s); watched || fallbacks[s.ID] {
			wg.Go(func() { w.check(runCtx, ctx, s, watched) })
		}
	}
	wg.Wait()
}

func (w *watchdog) watched(s *route.Site) bool {
	if len(w.cfg.Sites) > 0 {
		return slices.Contains(w.cfg.Sites, s.ID)
	}
	return len(s.Fallback) > 0
}

// check probes one site's hosts and records which are down; for a watched site it also
// keeps the site's clock and decides. ctx bounds the round; runCtx, the watchdog's
// life, bounds a failover.
func (w *watchdog) check(runCtx, ctx context.Context, s *route.Site, watched bool) {
	now := time.Now()
	var (
		mu   sync.Mutex
		down []string
		wg   sync.WaitGroup
	)
	for _, h := range s.Hosts {
		wg.Go(func() {
			addr := h
			if _, _, err := net.SplitHostPort(h); err != nil {
				addr = net.JoinHostPort(strings.Trim(h, "[]"), probePort)
			}
			if err := w.dial(ctx, addr); err != nil {
				mu.Lock()
				down = append(down, h)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	w.checks.Add(1)
	if ctx.Err() != nil {
		return // the round ran out of time: no verdict
	}
	// Keep the hosts' order, so the field changes only when the result does.
	slices.SortFunc(down, func(a, b string) int { return slices.Index(s.Hosts, a) - slices.Index(s.Hosts, b) })
	reachable := len(down) < len(s.Hosts)
	if len(s.Hosts) == 0 {
		reachable = true // nothing to check: no verdict either way
	}
	if len(down) > 0 {
		w.checkErrors.Add(1)
	}
	if !watched {
		if !slices.Equal(down, s.Down) {
			var err error
			if len(down) == 0 {
				err = w.fl.UpdateSite(ctx, s.ID, nil, "down")
			} else {
				err = w.fl.UpdateSite(ctx, s.ID, map[string]string{"down": strings.Join(down, ",")})
			}
			if err != nil {
				w.redisFails.Add(1)
				w.log.Warn("watchdog: writing the site's health", zap.String("site", s.ID), zap.Error(err))
			} else {
				w.log.Info("watchdog: hosts down", zap.String("site", s.ID), zap.Strings("down", down))
			}
		}
		return
	}

	set, del := map[string]string{}, []string{}
	if !slices.Equal(down, s.Down) {
		if len(down) == 0 {
			del = append(del, "down")
		} else {
			set["down"] = strings.Join(down, ",")
		}
	}
	// The clock is kept in whole seconds, rounded up: a site is never failed over (or
	// restored) early.
	sec := int64(math.Ceil(float64(now.UnixNano()) / 1e9))
	stamp := strconv.FormatInt(sec, 10)
	w.mu.Lock()
	stopRestore, restoring := w.restoring[s.ID]
	w.mu.Unlock()
	downSince, upSince := s.DownSince, s.UpSince
	if reachable {
		if !downSince.IsZero() {
			del = append(del, "down_since")
			w.log.Info("watchdog: site reachable again", zap.String("site", s.ID),
				zap.Duration("was_down", now.Sub(downSince).Round(time.Second)))
			downSince = time.Time{}
		}
		if s.State == route.SiteFailed && upSince.IsZero() && !restoring && w.failedByWatchdog(s) {
			set["up_since"] = stamp
			upSince = time.Unix(sec, 0)
		}
	} else {
		if downSince.IsZero() {
			set["down_since"] = stamp
			w.log.Warn("watchdog: site unreachable", zap.String("site", s.ID), zap.Strings("down", down),
				zap.Duration("failover_after", time.Duration(w.cfg.DownAfter)))
			downSince = time.Unix(sec, 0)
		}
		if !upSince.IsZero() {
			del = append(del, "up_since")
			upSince = time.Time{}
		}
	}
	if len(set) > 0 || len(del) > 0 {
		if err := w.fl.UpdateSite(ctx, s.ID, set, del...); err != nil {
			w.redisFails.Add(1)
			w.log.Warn("watchdog: writing the site's health", zap.String("site", s.ID), zap.Error(err))
			return
		}
	}

	switch {
	case !reachable && restoring:
		// Gone again while coming back: stop bringing vsites to it. The vsites already
		// home go back out once it has been down for down_after (below, next rounds).
		w.log.Warn("watchdog: site unreachable during its restore; stopping the restore", zap.String("site", s.ID))
		stopRestore()
	case !reachable && now.Sub(downSince) >= time.Duration(w.cfg.DownAfter) &&
		(s.State != route.SiteFailed || s.Changed.Before(downSince)):
		// Up, or failed but partly restored before this outage began.
		fctx, cancel := context.WithTimeout(runCtx, time.Minute)
		defer cancel()
		w.failover(fctx, s, now.Sub(downSince))
	case reachable && s.State == route.SiteFailed && !restoring && !upSince.IsZero() && w.failedByWatchdog(s) &&
		now.Sub(upSince) >= time.Duration(w.cfg.UpAfter):
		// s was read at the round's start: a restore of ours may have ended since.
		if cur, err := w.fl.Site(ctx, s.ID); err != nil || cur == nil || cur.State != route.SiteFailed {
			return
		}
		w.startRestore(s, now.Sub(upSince))
	}
}

// failedByWatchdog: a site an operator failed over (for maintenance, say) stays failed
// until the operator restores it; the watchdog brings back only what a watchdog moved.
func (w *watchdog) failedByWatchdog(s *route.Site) bool {
	return strings.HasPrefix(s.FailedBy, watchdogOwnerPrefix)
}

// watchdogOwnerPrefix starts the owner of the site locks a watchdog takes.
const watchdogOwnerPrefix = "watchdog@"

func (w *watchdog) failover(ctx context.Context, s *route.Site, downFor time.Duration) {
	w.log.Warn("watchdog: failing the site over", zap.String("site", s.ID), zap.String("action", "failover"),
		zap.Duration("down_for", downFor.Round(time.Second)))
	res, err := w.fl.Failover(ctx, s.ID, route.SiteOptions{Owner: watchdogOwnerPrefix + w.owner})
	if err != nil {
		w.log.Error("watchdog: failover failed", zap.String("site", s.ID), zap.Error(err))
		return
	}
	w.failovers.Add(1)
	for _, m := range res.Failed {
		w.log.Error("watchdog: vsite left on the failed site", zap.String("site", s.ID), zap.String("vsite", m.Vsite), zap.Error(m.Err))
	}
	w.log.Warn("watchdog: site failed over", zap.String("site", s.ID), zap.Int("vsites_moved", len(res.Moved)),
		zap.Int("vsites_left", len(res.Failed)))
}

// startRestore brings the site back on its own goroutine (a restore takes
// restore_pause per vsite), holding the site's lock.
func (w *watchdog) startRestore(s *route.Site, upFor time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	w.mu.Lock()
	w.restoring[s.ID] = cancel
	w.mu.Unlock()
	w.restores.Add(1)
	w.log.Warn("watchdog: restoring the site", zap.String("site", s.ID), zap.String("action", "restore"),
		zap.Duration("up_for", upFor.Round(time.Second)), zap.Duration("restore_pause", time.Duration(w.cfg.RestorePause)))
	w.restoreWG.Add(1)
	go func() {
		defer w.restoreWG.Done()
		defer func() {
			cancel()
			w.mu.Lock()
			delete(w.restoring, s.ID)
			w.mu.Unlock()
		}()
		res, err := w.fl.Restore(ctx, s.ID, route.SiteOptions{
			Owner: watchdogOwnerPrefix + w.owner,
			Pause: time.Duration(w.cfg.RestorePause),
			Delay: time.Duration(w.cfg.RestoreDelay),
			Progress: func(m route.VsiteMove) {
				w.log.Info("watchdog: vsite restored", zap.String("site", s.ID), zap.String("vsite", m.Vsite),
					zap.String("from", m.From), zap.String("to", m.To))
			},
		})
		n := 0
		if res != nil {
			n = len(res.Moved)
		}
		switch {
		case errors.Is(err, context.Canceled):
			w.log.Warn("watchdog: restore stopped", zap.String("site", s.ID), zap.Int("vsites_restored", n))
		case err != nil:
			w.log.Error("watchdog: restore failed", zap.String("site", s.ID), zap.Int("vsites_restored", n), zap.Error(err))
		default:
			w.log.Warn("watchdog: site restored", zap.String("site", s.ID), zap.Int("vsites_restored", n))
		}
	}()
}

func (w *watchdog) appendMetrics(m *metricWriter) {
	if w == nil {
		return
	}
	m.one("doorman_watchdog_checks_total", "counter", "Site health checks made by this host's watchdog (as the leader).", w.checks.Load())
	m.one("doorman_watchdog_check_failures_total", "counter", "Such checks that found at least one of the site's hosts down.", w.checkErrors.Load())
	m.family("doorman_watchdog_decisions_total", "counter", "Site failovers and restores this host's watchdog started.")
	m.sample("doorman_watchdog_decisions_total", `action="failover"`, w.failovers.Load())
	m.sample("doorman_watchdog_decisions_total", `action="restore"`, w.restores.Load())
	m.one("doorman_watchdog_redis_errors_total", "counter", "Failed Redis operations of the watchdog.", w.redisFails.Load())
	leader := int64(0)
	if w.leader.Load() {
		leader = 1
	}
	m.one("doorman_watchdog_leader", "gauge", "1 while this host's watchdog is the fleet's leader.", leader)
	w.mu.Lock()
	ids := make([]string, 0, len(w.states))
	for id := range w.states {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	m.family("doorman_site_state", "gauge", "Each site's state as last read (1 for its state): up, or failed (its vsites on the fallback sites).")
	for _, id := range ids {
		for _, st := range []string{"up", route.SiteFailed} {
			v := int64(0)
			if w.states[id] == st {
				v = 1
			}
			m.sample("doorman_site_state", fmt.Sprintf(`site="%s",state="%s"`, escapeLabel(id), st), v)
		}
	}
	w.mu.Unlock()
}
