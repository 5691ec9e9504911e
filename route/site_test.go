package route

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// sitesSetup: site A (two hosts) falls back to B:3 (two hosts) and C:1 (one host); n
// vsites live on A, two on B.
func sitesSetup(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	ctx := context.Background()
	c.HSet(ctx, "doorman:site:A", "hosts", "10.1.0.1:143,10.1.0.2:143", "fallback", "B:3,C:1")
	c.HSet(ctx, "doorman:site:B", "hosts", "10.2.0.1:1143,10.2.0.2")
	c.HSet(ctx, "doorman:site:C", "hosts", "[fd00::3]:143")
	for i := range n {
		fields := []any{"host", fmt.Sprintf("a%d.example", i%2), "port", "143", "site", "A", "ssl", "any-cert"}
		if i%5 == 0 {
			fields = append(fields, "hostip", fmt.Sprintf("10.1.0.%d", 1+i%2))
		}
		c.HSet(ctx, fmt.Sprintf("doorman:vsite:v%02d", i), fields...)
	}
	c.HSet(ctx, "doorman:vsite:b1", "host", "10.2.0.1", "site", "B")
	c.HSet(ctx, "doorman:vsite:b2", "host", "10.2.0.2", "site", "B")
}

func TestFailoverWeightedSpread(t *testing.T) {
	f, c, _ := testFleet(t)
	ctx := context.Background()
	sitesSetup(t, c, 40)
	before := map[string]map[string]string{}
	for i := range 40 {
		id := fmt.Sprintf("v%02d", i)
		before[id] = c.HGetAll(ctx, "doorman:vsite:"+id).Val()
	}
	ev := listenEvents(t, c)
	res, err := f.Failover(ctx, "A", SiteOptions{Owner: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Moved) != 40 || len(res.Failed) != 0 {
		t.Fatalf("moved %d, failed %v", len(res.Moved), res.Failed)
	}
	perSite, perHost := map[string]int{}, map[string]int{}
	for id, old := range before {
		h := c.HGetAll(ctx, "doorman:vsite:"+id).Val()
		perSite[h["site"]]++
		perHost[hostPort(h["host"], h["port"])]++
		if h["home_site"] != "A" || h["home_host"] != old["host"] || h["home_port"] != "143" || h["home_hostip"] != old["hostip"] ||
			h["ssl"] != "any-cert" {
			t.Fatalf("vsite %s after failover: %v (was %v)", id, h, old)
		}
		if _, ok := h["hostip"]; ok {
			t.Fatalf("vsite %s keeps its home hostip: %v", id, h)
		}
		if h["site"] == "B" && h["host"] == "10.2.0.2" && h["port"] != "" {
			t.Fatalf("vsite %s on a host without a port keeps a port: %v", id, h)
		}
		if c.Exists(ctx, "doorman:kick:vsite:"+id).Val() != 1 {
			t.Fatalf("vsite %s not kicked", id)
		}
	}
	if perSite["B"] != 30 || perSite["C"] != 10 {
		t.Fatalf("spread %v; want B 30, C 10 (weights 3:1)", perSite)
	}
	if perHost["10.2.0.1:1143"]+perHost["10.2.0.2"] != 30 || perHost["10.2.0.1:1143"] == 0 || perHost["10.2.0.2"] == 0 || perHost["[fd00::3]:143"] != 10 {
		t.Fatalf("hosts %v", perHost)
	}
	t.Logf("spread over hosts: %v", perHost)
	s, err := f.Site(ctx, "A")
	if err != nil || s.State != SiteFailed || time.Since(s.Changed) > 5*time.Second {
		t.Fatalf("site A after failover: %+v %v", s, err)
	}
	if b := c.HGetAll(ctx, "doorman:vsite:b1").Val(); b["site"] != "B" || b["home_site"] != "" {
		t.Fatalf("a vsite of B was touched: %v", b)
	}
	vsite := func(m string) bool { return strings.HasPrefix(m, "vsite v") }
	kick := func(m string) bool { return strings.HasPrefix(m, "kick vsite v") }
	siteA := func(m string) bool { return m == "site A" }
	deadline := time.Now().Add(5 * time.Second)
	for ev.count(siteA) < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ev.count(vsite) != 40 || ev.count(kick) != 40 || ev.count(siteA) != 1 {
		t.Fatalf("published %d vsite reloads, %d kicks, %d site messages", ev.count(vsite), ev.count(kick), ev.count(siteA))
	}

	// Deterministic: the same vsites land on the same hosts in another Redis.
	f2, c2, _ := testFleet(t)
	sitesSetup(t, c2, 40)
	if _, err := f2.Failover(ctx, "A", SiteOptions{}); err != nil {
		t.Fatal(err)
	}
	for id := range before {
		if a, b := c.HGet(ctx, "doorman:vsite:"+id, "host").Val(), c2.HGet(ctx, "doorman:vsite:"+id, "host").Val(); a != b {
			t.Fatalf("vsite %s went to %s, then to %s", id, a, b)
		}
	}

	// Idempotent: a second failover moves nothing.
	res, err = f.Failover(ctx, "A", SiteOptions{})
	if err != nil || len(res.Moved) != 0 || len(res.Failed) != 0 {
		t.Fatalf("second failover: %+v %v", res, err)
	}
	if n := ev.count(kick); n != 40 {
		t.Fatalf("second failover kicked again: %d kicks", n)
	}
}

func TestFailoverUnusableFallbacks(t *testing.T) {
	f, c, _ := testFleet(t)
	ctx := context.Background()
	sitesSetup(t, c, 8)
	// C's only host is down: everything goes to B.
	c.HSet(ctx, "doorman:site:C", "down", "[fd00::3]:143")
	res, err := f.Failover(ctx, "A", SiteOptions{})
	if err != nil || len(res.Moved) != 8 {
		t.Fatalf("%+v %v", res, err)
	}
	for _, m := range res.Moved {
		if m.ToSite != "B" {
			t.Fatalf("vsite %s went to %s, whose hosts are all down", m.Vsite, m.ToSite)
		}
	}
	// No usable fallback at all: the vsites stay, each reported.
	f2, c2, _ := testFleet(t)
	sitesSetup(t, c2, 3)
	c2.HSet(ctx, "doorman:site:B", "state", "failed")
	c2.HSet(ctx, "doorman:site:C", "down", "[fd00::3]:143")
	res, err = f2.Failover(ctx, "A", SiteOptions{})
	if err != nil || len(res.Moved) != 0 || len(res.Failed) != 3 || !strings.Contains(res.Failed[0].Err.Error(), "no usable fallback") {
		t.Fatalf("%+v %v", res, err)
	}
	if h := c2.HGetAll(ctx, "doorman:vsite:v00").Val(); h["site"] != "A" || h["home_site"] != "" {
		t.Fatalf("vsite moved without a fallback: %v", h)
	}
	if _, err := f2.Failover(ctx, "nosuch", SiteOptions{}); err == nil {
		t.Error("failover of a missing site: no error")
	}
	if _, err := f2.Failover(ctx, "C", SiteOptions{}); err == nil || !strings.Contains(err.Error(), "no fallback") {
		t.Errorf("failover of a site without fallback: %v", err)
	}
}

func TestRestoreOneAtATime(t *testing.T) {
	f, c, _ := testFleet(t)
	ctx := context.Background()
	const n = 5
	sitesSetup(t, c, n)
	before := map[string]map[string]string{}
	for i := range n {
		id := fmt.Sprintf("v%02d", i)
		before[id] = c.HGetAll(ctx, "doorman:vsite:"+id).Val()
	}
	c.HSet(ctx, "doorman:site:A", "down_since", "1700000000", "up_since", "1700000100")
	if _, err := f.Failover(ctx, "A", SiteOptions{Owner: "doormanctl@ops1"}); err != nil {
		t.Fatal(err)
	}
	if s, _ := f.Site(ctx, "A"); s.FailedBy != "doormanctl@ops1" || !s.UpSince.IsZero() || s.DownSince.IsZero() {
		t.Fatalf("site A after failover: %+v", s)
	}
	home := func() int {
		k := 0
		for id := range before {
			if c.HGet(ctx, "doorman:vsite:"+id, "site").Val() == "A" {
				k++
			}
		}
		return k
	}
	if home() != 0 {
		t.Fatal("vsites still home after failover")
	}
	const pause = 300 * time.Millisecond
	var order []string
	var times []time.Time
	res, err := f.Restore(ctx, "A", SiteOptions{Pause: pause, Progress: func(m VsiteMove) {
		order = append(order, m.Vsite)
		times = append(times, time.Now())
		if k := home(); k != len(order) {
			t.Errorf("after %d vsites restored, %d are home", len(order), k)
		}
	}})
	if err != nil || len(res.Moved) != n {
		t.Fatalf("%+v %v", res, err)
	}
	if strings.Join(order, ",") != "v00,v01,v02,v03,v04" {
		t.Fatalf("restore order %v", order)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < pause {
			t.Fatalf("vsites %s and %s restored %v apart; the pause is %v", order[i-1], order[i], gap, pause)
		}
	}
	for id, old := range before {
		h := c.HGetAll(ctx, "doorman:vsite:"+id).Val()
		du, _, err := parseDelayUntil(h["delay_until"])
		if err != nil || du.Before(time.Now().Add(25*time.Second)) {
			t.Fatalf("vsite %s: delay_until %q", id, h["delay_until"])
		}
		delete(h, "delay_until")
		if fmt.Sprint(h) != fmt.Sprint(old) {
			t.Fatalf("vsite %s restored as %v; was %v", id, h, old)
		}
	}
	s, _ := f.Site(ctx, "A")
	if s.State != "up" || !s.DownSince.IsZero() || !s.UpSince.IsZero() || s.FailedBy != "" {
		t.Fatalf("site A after restore: %+v", s)
	}
}

func TestRestoreInterrupted(t *testing.T) {
	f, c, _ := testFleet(t)
	sitesSetup(t, c, 4)
	if _, err := f.Failover(context.Background(), "A", SiteOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	res, err := f.Restore(ctx, "A", SiteOptions{Pause: time.Minute, Progress: func(VsiteMove) { cancel() }})
	if !errors.Is(err, context.Canceled) || len(res.Moved) != 1 {
		t.Fatalf("interrupted restore: %+v %v", res, err)
	}
	if s, _ := f.Site(context.Background(), "A"); s.State != SiteFailed {
		t.Fatalf("site A half restored is %s", s.State)
	}
	// The lock went with it; run again, the restore carries on.
	res, err = f.Restore(context.Background(), "A", SiteOptions{Pause: 10 * time.Millisecond})
	if err != nil || len(res.Moved) != 3 || res.Moved[0].Vsite != "v01" {
		t.Fatalf("second restore: %+v %v", res, err)
	}
}

func TestSiteLock(t *testing.T) {
	f, c, _ := testFleet(t)
	ctx := context.Background()
	sitesSetup(t, c, 20)
	// Someone holds the lock: a failover fails and moves nothing.
	l, ok, err := f.Acquire(ctx, SiteLockKey("A"), "other-host", time.Minute)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := f.Failover(ctx, "A", SiteOptions{}); !errors.Is(err, ErrSiteBusy) || !strings.Contains(err.Error(), "other-host") {
		t.Fatalf("failover under another's lock: %v", err)
	}
	if c.HGet(ctx, "doorman:vsite:v00", "site").Val() != "A" {
		t.Fatal("moved under another's lock")
	}
	if _, ok, _ := f.Acquire(ctx, SiteLockKey("A"), "x", time.Minute); ok {
		t.Fatal("a held lock acquired twice")
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// Concurrent failovers: each vsite is moved (and kicked) exactly once.
	ev := listenEvents(t, c)
	var wg sync.WaitGroup
	moved := make([]int, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			res, err := f.Failover(ctx, "A", SiteOptions{Owner: fmt.Sprint("host", i)})
			errs[i] = err
			if res != nil {
				moved[i] = len(res.Moved)
			}
		})
	}
	wg.Wait()
	total, busy := 0, 0
	for i := range 4 {
		total += moved[i]
		if errors.Is(errs[i], ErrSiteBusy) {
			busy++
		} else if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	if total != 20 {
		t.Fatalf("concurrent failovers moved %v (busy: %d)", moved, busy)
	}
	time.Sleep(200 * time.Millisecond)
	if k := ev.count(func(m string) bool { return strings.HasPrefix(m, "kick vsite") }); k != 20 {
		t.Fatalf("%d vsite kicks; want 20", k)
	}
	t.Logf("moved per failover %v, %d found the site busy", moved, busy)

	// A restore keeps its short lock renewed through long pauses, and stops if it loses it.
	lockTTL := 300 * time.Millisecond
	var lost error
	res, err := f.Restore(ctx, "A", SiteOptions{LockTTL: lockTTL, Pause: 400 * time.Millisecond, Progress: func(m VsiteMove) {
		if m.Vsite == "v02" {
			if _, ok, _ := f.Acquire(ctx, SiteLockKey("A"), "x", time.Minute); ok {
				lost = errors.New("the lock lapsed during the restore")
			}
			// An operator deletes the lock (or it expired while Redis was away).
			c.Del(ctx, "doorman:lock:site:A")
		}
	}})
	if lost != nil {
		t.Fatal(lost)
	}
	if !errors.Is(err, ErrLockLost) || len(res.Moved) != 3 {
		t.Fatalf("restore after losing the lock: moved %d, %v", len(res.Moved), err)
	}
}

// A site's hosts are what Doorman connects to: IP or IP:port, never a name.
func TestParseSiteHosts(t *testing.T) {
	s, err := ParseSite("A", map[string]string{"hosts": "10.0.0.1, 10.0.0.2:1143,[::1]:143", "down": "10.0.0.1", "fallback": "B:2,C"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Hosts) != 3 || len(s.Healthy()) != 2 || len(s.Fallback) != 2 || s.Fallback[1].Weight != 1 {
		t.Fatalf("parsed %+v", s)
	}
	for _, h := range []map[string]string{
		{"hosts": "mail.example.net"},
		{"hosts": "10.0.0.1:0"},
		{"hosts": "10.0.0.1", "down": "backend1"},
		{"hosts": "10.0.0.1", "fallback": "B:0"},
		{"hosts": "10.0.0.1", "state": "maybe"},
	} {
		if _, err := ParseSite("A", h); err == nil {
			t.Errorf("%v: accepted", h)
		}
	}
}
