package route

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/route/routetest"
)

func vsiteWait(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("not within %v: %s", d, what)
	return 0
}

func TestVsiteRouting(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	routetest.HSet(t, addr, "doorman:vsite:v1", map[string]string{"host": "10.0.0.1", "port": "10143", "ssl": "yes", "site": "east"})
	routetest.HSet(t, addr, "doorman:vsite:v2", map[string]string{"host": "10.0.0.2"})
	// Her own host and port are ignored: the vsite owns routing.
	routetest.HSet(t, addr, "doorman:user:alice", map[string]string{"password": "{PLAIN}pw", "vsite": "v1", "host": "10.9.9.9", "port": "1"})
	routetest.HSet(t, addr, "doorman:user:bob", map[string]string{"password": "{PLAIN}pw", "vsite": "v2", "proxy_maybe": ""})
	routetest.HSet(t, addr, "doorman:user:carol", map[string]string{"password": "{PLAIN}pw", "vsite": "nosuch"})

	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}})
	r.Start()
	ctx := context.Background()

	e, err := r.Lookup(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseProxy(e.Fields)
	if err != nil || !p.Proxy || p.Host != "10.0.0.1" || p.Port != 10143 || p.SSL != "yes" || e.Fields["site"] != "east" {
		t.Fatalf("alice via v1: %+v %v (fields %v)", p, err, e.Fields)
	}
	e, err = r.Lookup(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := ParseProxy(e.Fields); p.Proxy || !p.ProxyMaybe || p.Host != "10.0.0.2" || p.Port != 0 {
		t.Fatalf("bob via v2: %+v", p)
	}
	_, err = r.Lookup(ctx, "carol")
	if !errors.Is(err, ErrTempFail) || !strings.Contains(err.Error(), `unknown vsite "nosuch"`) {
		t.Fatalf("carol with an unknown vsite: %v", err)
	}

	// A rewrite announced on the channel applies within a second.
	routetest.HSet(t, addr, "doorman:vsite:v1", map[string]string{"host": "10.0.0.3"})
	routetest.Do(t, addr, "HDEL", "doorman:vsite:v1", "port", "ssl")
	routetest.Do(t, addr, "PUBLISH", "doorman:events", "vsite v1")
	took := vsiteWait(t, time.Second, "vsite v1 moved", func() bool {
		e, err := r.Lookup(ctx, "alice")
		return err == nil && e.Fields["host"] == "10.0.0.3" && e.Fields["port"] == ""
	})
	t.Logf("vsite move seen after %v", took)

	// A new vsite, then "flush", which reloads them all.
	routetest.HSet(t, addr, "doorman:vsite:nosuch", map[string]string{"host": "10.0.0.4"})
	routetest.Do(t, addr, "PUBLISH", "doorman:events", "flush")
	vsiteWait(t, time.Second, "vsite nosuch loaded by flush", func() bool {
		_, err := r.Lookup(ctx, "carol")
		return err == nil
	})
	// A deleted vsite goes away.
	routetest.Do(t, addr, "DEL", "doorman:vsite:v2")
	routetest.Do(t, addr, "PUBLISH", "doorman:events", "vsite v2")
	vsiteWait(t, time.Second, "vsite v2 dropped", func() bool {
		_, ok := r.Vsite("v2")
		return !ok
	})
}

func TestVsitePeriodicReload(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	routetest.HSet(t, addr, "doorman:vsite:v1", map[string]string{"host": "10.0.0.1"})
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}, VsiteReloadInterval: 300 * time.Millisecond})
	r.Start()
	if vs, ok := r.Vsite("v1"); !ok || vs["host"] != "10.0.0.1" {
		t.Fatalf("v1 at start: %v", vs)
	}
	// No PUBLISH: only the periodic reload can see this.
	routetest.HSet(t, addr, "doorman:vsite:v1", map[string]string{"host": "10.0.0.5"})
	vsiteWait(t, 2*time.Second, "periodic reload", func() bool {
		vs, _ := r.Vsite("v1")
		return vs["host"] == "10.0.0.5"
	})
}

func TestAuthCache(t *testing.T) {
	addr, stop := routetest.StartRedis(t)
	routetest.HSet(t, addr, "doorman:user:alice", map[string]string{"password": "{PLAIN}old", "proxy": "", "host": "10.0.0.1"})
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}, CacheSize: 2, CacheTTL: time.Hour, CacheNegativeTTL: time.Hour})
	r.Start()
	ctx := context.Background()
	pw := func(user string) string {
		t.Helper()
		e, err := r.Lookup(ctx, user)
		if errors.Is(err, ErrUnknownUser) {
			return "unknown"
		}
		if err != nil {
			t.Fatalf("lookup %s: %v", user, err)
		}
		return e.Password
	}
	if got := pw("alice"); got != "{PLAIN}old" {
		t.Fatal(got)
	}
	if got := pw("nobody"); got != "unknown" {
		t.Fatal(got)
	}
	routetest.HSet(t, addr, "doorman:user:alice", map[string]string{"password": "{PLAIN}new"})
	routetest.HSet(t, addr, "doorman:user:nobody", map[string]string{"password": "{PLAIN}x"})
	if got := pw("alice"); got != "{PLAIN}old" {
		t.Fatalf("alice not served from the cache: %s", got)
	}
	if got := pw("nobody"); got != "unknown" {
		t.Fatalf("negative entry not cached: %s", got)
	}
	routetest.Do(t, addr, "PUBLISH", "doorman:events", "user alice")
	vsiteWait(t, time.Second, "user alice invalidated", func() bool { return pw("alice") == "{PLAIN}new" })
	routetest.Do(t, addr, "PUBLISH", "doorman:events", "flush")
	vsiteWait(t, time.Second, "flush", func() bool { return pw("nobody") == "{PLAIN}x" })

	// LRU bound: a third user pushes out the least recently used one.
	routetest.HSet(t, addr, "doorman:user:bob", map[string]string{"password": "{PLAIN}b"})
	pw("alice")
	pw("nobody")
	pw("bob")
	if n := r.CacheLen(); n != 2 {
		t.Fatalf("cache holds %d entries, want 2", n)
	}

	// Redis gone: cached users still resolve, others are temporary failures, fast.
	stop()
	if got := pw("bob"); got != "{PLAIN}b" {
		t.Fatal(got)
	}
	start := time.Now()
	_, err := r.Lookup(ctx, "carol")
	if !errors.Is(err, ErrTempFail) || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("uncached lookup with Redis down: %v after %v", err, time.Since(start))
	}
}

func TestAuthCacheTTL(t *testing.T) {
	c := newAuthCache(10, time.Minute, time.Second)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	c.put("a", &Entry{User: "a"})
	c.put("b", nil)
	if _, ok := c.get("a"); !ok {
		t.Fatal("a not cached")
	}
	now = now.Add(2 * time.Second)
	if _, ok := c.get("b"); ok {
		t.Fatal("negative entry outlived auth_cache_negative_ttl")
	}
	if _, ok := c.get("a"); !ok {
		t.Fatal("a expired early")
	}
	now = now.Add(time.Minute)
	if _, ok := c.get("a"); ok {
		t.Fatal("a outlived auth_cache_ttl")
	}
	if newAuthCache(0, time.Hour, time.Hour) != nil {
		t.Fatal("size 0 must be off")
	}
}

func TestParseCacheSize(t *testing.T) {
	for in, want := range map[string]int{"": 0, "0": 0, "5000": 5000, "10M": 10 << 20 / CacheEntrySize, "1k": 1024 / CacheEntrySize, "100KB": 100 << 10 / CacheEntrySize, "1G": 1 << 30 / CacheEntrySize} {
		if got, err := ParseCacheSize(in); err != nil || got != want {
			t.Errorf("ParseCacheSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"x", "10X", "-1", "1.5M", "M"} {
		if _, err := ParseCacheSize(in); err == nil {
			t.Errorf("ParseCacheSize(%q) accepted", in)
		}
	}
}

func TestPenalty(t *testing.T) {
	for n, want := range map[int]time.Duration{0: 0, 1: 4 * time.Second, 2: 8 * time.Second, 3: 15 * time.Second, 9: 15 * time.Second} {
		if got := PenaltyDelay(n); got != want {
			t.Errorf("PenaltyDelay(%d) = %v, want %v", n, got, want)
		}
	}
	addr, stop := routetest.StartRedis(t)
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}})
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.7")
	for i := 1; i <= 3; i++ {
		if err := r.PenaltyFailed(ctx, ip); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Penalty(ctx, ip); err != nil || n != i {
			t.Fatalf("after %d failures: %d, %v", i, n, err)
		}
	}
	if ttl := routetest.Do(t, addr, "TTL", "doorman:penalty:192.0.2.7"); ttl[0] != "29" && ttl[0] != "28" {
		t.Fatalf("TTL = %v, want 29", ttl)
	}
	// IPv6 counts per /48.
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:ffff::9")
	if r.PenaltyKey(a) != r.PenaltyKey(b) || r.PenaltyKey(a) != "doorman:penalty:2001:db8:1::/48" {
		t.Fatalf("IPv6 keys: %s %s", r.PenaltyKey(a), r.PenaltyKey(b))
	}
	if err := r.PenaltyClear(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Penalty(ctx, ip); n != 0 {
		t.Fatalf("after clear: %d", n)
	}
	stop()
	if _, err := r.Penalty(ctx, ip); !errors.Is(err, ErrTempFail) {
		t.Fatalf("Redis down: %v", err)
	}
}

// On Redis Cluster the vsites are spread over every master: the SCAN runs on
// each, every key is read on its own, pub/sub and the penalty work too.
func TestVsiteCluster(t *testing.T) {
	c := routetest.StartCluster(t, 3)
	seed := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer seed.Close()
	ctx := context.Background()
	const n = 40
	for i := range n {
		if err := seed.HSet(ctx, fmt.Sprintf("doorman:vsite:v%d", i), "host", fmt.Sprintf("10.1.0.%d", i)).Err(); err != nil {
			t.Fatal(err)
		}
		if err := seed.HSet(ctx, fmt.Sprintf("doorman:user:u%d", i), "password", "{PLAIN}pw", "vsite", fmt.Sprintf("v%d", i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestRedis(t, RedisConfig{Addrs: c.Addrs, CacheSize: 100, CacheTTL: time.Hour})
	r.Start()
	for i := range n {
		e, err := r.Lookup(ctx, fmt.Sprintf("u%d", i))
		if err != nil || e.Fields["host"] != fmt.Sprintf("10.1.0.%d", i) {
			t.Fatalf("u%d: %v %v", i, e, err)
		}
	}
	if err := seed.HSet(ctx, "doorman:vsite:v7", "host", "10.2.0.7").Err(); err != nil {
		t.Fatal(err)
	}
	if err := seed.Publish(ctx, "doorman:events", "vsite v7").Err(); err != nil {
		t.Fatal(err)
	}
	vsiteWait(t, 2*time.Second, "v7 moved on the cluster", func() bool {
		e, err := r.Lookup(ctx, "u7")
		return err == nil && e.Fields["host"] == "10.2.0.7"
	})
	ip := netip.MustParseAddr("198.51.100.1")
	if err := r.PenaltyFailed(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Penalty(ctx, ip); err != nil || got != 1 {
		t.Fatalf("penalty on the cluster: %d, %v", got, err)
	}
}
