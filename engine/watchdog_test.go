package engine

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"doorman/route"
	"doorman/route/routetest"
)

// wdHost is a site's backend as the watchdog sees it: a TCP port that can go away and
// come back on the same address.
type wdHost struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

func newWDHost(t *testing.T) *wdHost {
	h := &wdHost{t: t, addr: "127.0.0.1:0"}
	h.up()
	h.addr = h.ln.Addr().String()
	t.Cleanup(h.down)
	return h
}

func (h *wdHost) up() {
	h.mu.Lock()
	defer h.mu.Unlock()
	var err error
	for range 50 { // the port may linger a moment after a close
		if h.ln, err = net.Listen("tcp", h.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	go func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}(h.ln)
}

func (h *wdHost) down() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ln != nil {
		h.ln.Close()
		h.ln = nil
	}
}

func wdEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
	}
}

type wdEnv struct {
	rc   *redis.Client
	fl   *route.Fleet
	addr string
	a, b *wdHost
}

// newWDEnv: site A (one host) falls back to B; vsites v0..v3 live on A.
func newWDEnv(t *testing.T) *wdEnv {
	addr, _ := routetest.StartRedis(t)
	r, err := route.NewRedis(route.RedisConfig{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	e := &wdEnv{rc: redis.NewClient(&redis.Options{Addr: addr}), fl: r.Fleet(), addr: addr, a: newWDHost(t), b: newWDHost(t)}
	t.Cleanup(func() { e.rc.Close() })
	ctx := context.Background()
	e.rc.HSet(ctx, "doorman:site:A", "hosts", e.a.addr, "fallback", "B")
	e.rc.HSet(ctx, "doorman:site:B", "hosts", e.b.addr)
	ah, ap, _ := net.SplitHostPort(e.a.addr)
	for i := range 4 {
		e.rc.HSet(ctx, fmt.Sprintf("doorman:vsite:v%d", i), "host", ah, "port", ap, "site", "A")
	}
	return e
}

func (e *wdEnv) site(t *testing.T, id string) *route.Site {
	t.Helper()
	s, err := e.fl.Site(context.Background(), id)
	if err != nil || s == nil {
		t.Fatal(s, err)
	}
	return s
}

func (e *wdEnv) home() int {
	n := 0
	for i := range 4 {
		if e.rc.HGet(context.Background(), fmt.Sprintf("doorman:vsite:v%d", i), "site").Val() == "A" {
			n++
		}
	}
	return n
}

func testWatchdogConfig() WatchdogConfig {
	return WatchdogConfig{
		Enabled:      true,
		Interval:     Duration(100 * time.Millisecond),
		DownAfter:    Duration(2 * time.Second),
		UpAfter:      Duration(time.Second),
		RestorePause: Duration(400 * time.Millisecond),
		CheckTimeout: Duration(500 * time.Millisecond),
	}
}

func startTestWatchdog(t *testing.T, e *wdEnv, log *zap.Logger) *watchdog {
	w := startableWatchdog(testWatchdogConfig(), e.fl, log)
	w.start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w.stop(ctx)
	})
	return w
}

func metricsText(w *watchdog) string {
	var m metricWriter
	w.appendMetrics(&m)
	return string(m.b)
}

func TestWatchdogFailoverAndRestore(t *testing.T) {
	e := newWDEnv(t)
	core, logs := observer.New(zap.InfoLevel)
	w := startTestWatchdog(t, e, zap.New(core))
	cfg := testWatchdogConfig()
	downAfter, upAfter := time.Duration(cfg.DownAfter), time.Duration(cfg.UpAfter)
	wdEventually(t, 5*time.Second, "the watchdog leads", w.leader.Load)
	if !strings.Contains(metricsText(w), "doorman_watchdog_leader 1") {
		t.Fatalf("metrics:\n%s", metricsText(w))
	}

	// A short outage (well under down_after): seen, but no failover.
	start := time.Now()
	e.a.down()
	wdEventually(t, 3*time.Second, "the watchdog sees A down", func() bool {
		s := e.site(t, "A")
		return !s.DownSince.IsZero() && strings.Join(s.Down, ",") == e.a.addr
	})
	time.Sleep(max(0, 600*time.Millisecond-time.Since(start)))
	e.a.up()
	short := time.Since(start)
	wdEventually(t, 3*time.Second, "the watchdog sees A back", func() bool {
		s := e.site(t, "A")
		return s.DownSince.IsZero() && len(s.Down) == 0
	})
	time.Sleep(time.Until(start.Add(downAfter + time.Second))) // past down_after since the outage began
	if s := e.site(t, "A"); s.State != "up" || e.home() != 4 || w.failovers.Load() != 0 {
		t.Fatalf("an outage of %v failed A over (down_after %v): %+v, %d vsites home", short, downAfter, s, e.home())
	}
	t.Logf("an outage of %v: no failover", short.Round(time.Millisecond))

	// A long one: failed over, no sooner than down_after.
	start = time.Now()
	e.a.down()
	wdEventually(t, downAfter+10*time.Second, "A failed over", func() bool { return e.site(t, "A").State == route.SiteFailed })
	took := time.Since(start)
	if took < downAfter {
		t.Fatalf("failed over %v after the outage began; down_after is %v", took, downAfter)
	}
	t.Logf("failed over %v after the outage began (down_after %v)", took.Round(time.Millisecond), downAfter)
	if n := e.home(); n != 0 {
		t.Fatalf("%d vsites still on A", n)
	}
	bh, bp, _ := net.SplitHostPort(e.b.addr)
	if h := e.rc.HGetAll(context.Background(), "doorman:vsite:v2").Val(); h["site"] != "B" || h["host"] != bh || h["port"] != bp {
		t.Fatalf("v2 after the failover: %v", h)
	}

	// Back briefly (under up_after), then down again: no restore.
	e.a.up()
	wdEventually(t, 3*time.Second, "A's up_since", func() bool { return !e.site(t, "A").UpSince.IsZero() })
	e.a.down()
	wdEventually(t, 3*time.Second, "A down again", func() bool { return e.site(t, "A").UpSince.IsZero() })
	if w.restores.Load() != 0 || e.home() != 0 {
		t.Fatal("a site back for less than up_after was restored")
	}

	// Back for good: restored after up_after, one vsite at a time.
	e.a.up()
	back := time.Now()
	var times []time.Time
	wdEventually(t, upAfter+15*time.Second, "all vsites home", func() bool {
		for len(times) < e.home() {
			times = append(times, time.Now())
		}
		return len(times) == 4
	})
	if first := times[0].Sub(back); first < upAfter {
		t.Fatalf("the first vsite came back %v after the site; up_after is %v", first, upAfter)
	}
	for i := 1; i < 4; i++ {
		if gap := times[i].Sub(times[i-1]); gap < time.Duration(cfg.RestorePause)-100*time.Millisecond {
			t.Fatalf("vsites came back %v apart; restore_pause is %v", gap, time.Duration(cfg.RestorePause))
		}
	}
	wdEventually(t, 5*time.Second, "A up", func() bool {
		s := e.site(t, "A")
		return s.State == "up" && s.UpSince.IsZero() && s.DownSince.IsZero()
	})
	wdEventually(t, 5*time.Second, "the metrics follow", func() bool {
		m := metricsText(w)
		return strings.Contains(m, `doorman_site_state{site="A",state="up"} 1`) && strings.Contains(m, `doorman_site_state{site="A",state="failed"} 0`)
	})
	m := metricsText(w)
	for _, want := range []string{`doorman_watchdog_decisions_total{action="failover"} 1`, `doorman_watchdog_decisions_total{action="restore"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	for _, msg := range []string{"watchdog: failing the site over", "watchdog: site failed over", "watchdog: restoring the site", "watchdog: site restored"} {
		if logs.FilterMessage(msg).FilterField(zap.String("site", "A")).Len() != 1 {
			t.Errorf("log %q for site A: %d lines", msg, logs.FilterMessage(msg).Len())
		}
	}
	if n := logs.FilterMessage("watchdog: vsite restored").Len(); n != 4 {
		t.Errorf("%d vsite-restored lines", n)
	}
}

// Two watchdogs on one Redis: one leads, the decision is taken once, and the other takes
// over when the leader stops.
func TestWatchdogOneLeader(t *testing.T) {
	e := newWDEnv(t)
	w1 := startTestWatchdog(t, e, zap.NewNop())
	w2 := startTestWatchdog(t, e, zap.NewNop())
	leaders := func() int {
		n := 0
		for _, w := range []*watchdog{w1, w2} {
			if w.leader.Load() {
				n++
			}
		}
		return n
	}
	wdEventually(t, 5*time.Second, "a leader", func() bool { return leaders() == 1 })
	e.a.down()
	wdEventually(t, 15*time.Second, "A failed over", func() bool { return e.site(t, "A").State == route.SiteFailed })
	time.Sleep(500 * time.Millisecond) // a few more rounds
	if n := w1.failovers.Load() + w2.failovers.Load(); n != 1 || leaders() != 1 {
		t.Fatalf("%d failovers, %d leaders", n, leaders())
	}
	lead, other := w1, w2
	if w2.leader.Load() {
		lead, other = w2, w1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lead.stop(ctx)
	stopped := time.Now()
	wdEventually(t, 5*time.Second, "the other takes over", other.leader.Load)
	t.Logf("took over %v after the leader stopped", time.Since(stopped).Round(time.Millisecond))
	// The new leader carries the site's clock on: A comes back and is restored.
	e.a.up()
	wdEventually(t, 15*time.Second, "A restored by the new leader", func() bool { return e.site(t, "A").State == "up" && e.home() == 4 })
	if other.restores.Load() != 1 {
		t.Fatalf("the new leader started %d restores", other.restores.Load())
	}
}

// The fallback site's hosts are checked too: a failover sends no vsite to one that is down.
func TestWatchdogFallbackHealth(t *testing.T) {
	e := newWDEnv(t)
	b2 := newWDHost(t)
	b2.down()
	e.rc.HSet(context.Background(), "doorman:site:B", "hosts", e.b.addr+","+b2.addr)
	w := startTestWatchdog(t, e, zap.NewNop())
	wdEventually(t, 5*time.Second, "B's dead host marked down", func() bool {
		return strings.Join(e.site(t, "B").Down, ",") == b2.addr
	})
	if s := e.site(t, "B"); !s.DownSince.IsZero() {
		t.Fatalf("a fallback-only site got a clock: %+v", s)
	}
	e.a.down()
	wdEventually(t, 15*time.Second, "A failed over", func() bool { return e.site(t, "A").State == route.SiteFailed })
	bh, bp, _ := net.SplitHostPort(e.b.addr)
	for i := range 4 {
		if h := e.rc.HGetAll(context.Background(), fmt.Sprintf("doorman:vsite:v%d", i)).Val(); h["host"] != bh || h["port"] != bp {
			t.Fatalf("v%d went to %s:%s; B's live host is %s", i, h["host"], h["port"], e.b.addr)
		}
	}
	b2.up()
	wdEventually(t, 5*time.Second, "B's host back", func() bool { return len(e.site(t, "B").Down) == 0 })
	if w.failovers.Load() != 1 {
		t.Fatalf("%d failovers", w.failovers.Load())
	}
}

// A site an operator failed over stays failed while reachable: the watchdog restores
// only what it failed over.
func TestWatchdogLeavesManualFailover(t *testing.T) {
	e := newWDEnv(t)
	ctx := context.Background()
	if _, err := e.fl.Failover(ctx, "A", route.SiteOptions{Owner: "doormanctl@ops"}); err != nil {
		t.Fatal(err)
	}
	w := startTestWatchdog(t, e, zap.NewNop())
	wdEventually(t, 5*time.Second, "the watchdog leads", w.leader.Load)
	start := w.checks.Load()
	cfg := testWatchdogConfig()
	time.Sleep(time.Duration(cfg.UpAfter) + 2*time.Second)
	if n := w.checks.Load() - start; n < 5 {
		t.Fatalf("only %d checks meanwhile", n)
	}
	if s := e.site(t, "A"); s.State != route.SiteFailed || e.home() != 0 || w.restores.Load() != 0 {
		t.Fatalf("the watchdog restored a site failed over by hand: %+v, %d vsites home", s, e.home())
	}
}
