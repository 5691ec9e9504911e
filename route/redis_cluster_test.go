package route

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/route/routetest"
)

// The Redis passdb against a 3-master Redis Cluster: several addrs make
// go-redis a ClusterClient; users spread over the slots of all nodes.
func TestRedisCluster(t *testing.T) {
	c := routetest.StartCluster(t, 3)
	seed := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer seed.Close()
	ctx := context.Background()
	const n = 200
	slots := map[int64]bool{}
	_, err := seed.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			u := fmt.Sprintf("user%03d@example.com", i)
			p.HSet(ctx, "doorman:user:"+u, "password", "{PLAIN}pw"+u, "host", fmt.Sprintf("10.0.0.%d", i%250+1), "proxy", "")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		slot, err := seed.ClusterKeySlot(ctx, fmt.Sprintf("doorman:user:user%03d@example.com", i)).Result()
		if err != nil {
			t.Fatal(err)
		}
		slots[slot] = true
	}
	// Every node holds some of the users (no key was left on one node).
	for _, addr := range c.Addrs {
		if k := routetest.Do(t, addr, "DBSIZE"); k[0] == "0" {
			t.Errorf("node %s holds no user", addr)
		}
	}

	r := newTestRedis(t, RedisConfig{Addrs: c.Addrs})
	if _, ok := r.client.(*redis.ClusterClient); !ok {
		t.Fatalf("client is %T; want *redis.ClusterClient", r.client)
	}
	for i := range n {
		u := fmt.Sprintf("user%03d@example.com", i)
		e, err := r.Lookup(ctx, u)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", u, err)
		}
		if e.Password != "{PLAIN}pw"+u || e.Fields["host"] != fmt.Sprintf("10.0.0.%d", i%250+1) || !e.Has("proxy") {
			t.Errorf("Lookup(%s) = %+v", u, e)
		}
	}
	if _, err := r.Lookup(ctx, "nobody"); err != ErrUnknownUser {
		t.Errorf("Lookup(nobody) err = %v; want ErrUnknownUser", err)
	}
	if err := r.Ping(ctx); err != nil {
		t.Error(err)
	}
	t.Logf("%d users over %d slots on %d nodes", n, len(slots), len(c.Addrs))
}

// The Redis passdb through Sentinel: lookups reach the master; when it is
// killed, lookups fail fast with a temporary error until Sentinel promotes
// the replica, then succeed again. With three Sentinels, the one the client
// talks to dies with the master.
//
// The window is Sentinel's (down-after-milliseconds 1000, then electing and
// promoting) plus up to a second of go-redis's dial breaker: after PoolSize
// failed dials in a row its pool fails every dial at once with the last
// error, and a background probe dials once a second until one works. The
// third case makes the pool large enough that the lookups here (one per
// 100 ms) never trip it, to show the difference.
func TestRedisSentinelFailover(t *testing.T) {
	t.Run("1 sentinel", func(t *testing.T) { testSentinelFailover(t, 1, 0) })
	t.Run("3 sentinels", func(t *testing.T) { testSentinelFailover(t, 3, 0) })
	t.Run("1 sentinel, no dial breaker", func(t *testing.T) { testSentinelFailover(t, 1, 1000) })
}

func testSentinelFailover(t *testing.T, sentinels, poolSize int) {
	s := routetest.StartSentinels(t, sentinels)
	routetest.HSet(t, s.Master(t), "doorman:user:alice", map[string]string{"password": "{PLAIN}pw", "host": "10.0.0.1"})
	// The replica must have the user before the master dies.
	waitForRedis(t, 5*time.Second, func() bool {
		return routetest.Do(t, s.Nodes[1], "HGET", "doorman:user:alice", "host")[0] == "10.0.0.1"
	})

	r := newTestRedis(t, RedisConfig{Addrs: s.Sentinels, MasterName: s.MasterName, PoolSize: poolSize})
	if _, ok := r.client.(*redis.Client); !ok {
		t.Fatalf("client is %T; want the Sentinel-backed *redis.Client", r.client)
	}
	ctx := context.Background()
	if e, err := r.Lookup(ctx, "alice"); err != nil || e.Fields["host"] != "10.0.0.1" {
		t.Fatalf("Lookup(alice) before failover = %+v, %v", e, err)
	}

	if sentinels > 1 {
		s.KillSentinel(0) // the one the client asked first; a quorum remains
	}
	old := s.KillMaster(t)
	killed := time.Now()
	const bound = 20 * time.Second
	var failures int
	var firstErr error
	var slowest time.Duration
	var promoted time.Time // when the replica said it was master
	for {
		start := time.Now()
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		e, err := r.Lookup(lctx, "alice")
		cancel()
		took := time.Since(start)
		slowest = max(slowest, took)
		if err == nil {
			if e.Fields["host"] != "10.0.0.1" {
				t.Fatalf("Lookup(alice) after failover = %+v", e)
			}
			break
		} else {
			if !IsTemporary(err) || errors.Is(err, ErrUnknownUser) {
				t.Fatalf("Lookup during failover: err = %v; want a temporary failure", err)
			}
			if failures == 0 {
				firstErr = err
			}
			failures++
		}
		if took >= time.Second {
			t.Errorf("a Lookup during failover took %v (err %v); want < 1s", took, err)
		}
		if promoted.IsZero() && routetest.Role(s.Nodes[1]) == "master" {
			promoted = time.Now()
		}
		if time.Since(killed) > bound {
			t.Fatalf("lookups still failing %v after the master was killed: %v", bound, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	window := time.Since(killed)
	now := s.Master(t)
	if now == old || routetest.Role(now) != "master" {
		t.Errorf("master after failover = %s (role %q); was %s", now, routetest.Role(now), old)
	}
	if promoted.IsZero() {
		promoted = time.Now()
	}
	t.Logf("failover with %d Sentinel(s), pool size %d: lookups failed for %v (the replica was promoted after %v; %d failed lookups, slowest call %v, first error: %v); new master %s",
		sentinels, poolSize, window.Round(10*time.Millisecond), promoted.Sub(killed).Round(10*time.Millisecond), failures, slowest.Round(time.Millisecond), firstErr, now)
}

func waitForRedis(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A Cluster node that stops answering (SIGSTOP, like a hung host): lookups
// of its keys fail with a temporary error; the others still work.
// ClusterClient retries network errors and timeouts on its own (up to
// MaxRedirects+1 attempts, whatever MaxRetries says), so without a ctx
// deadline one lookup costs several read timeouts; the test reports how long.
func TestRedisClusterHungNode(t *testing.T) {
	c := routetest.StartCluster(t, 3)
	r := newTestRedis(t, RedisConfig{Addrs: c.Addrs})
	seed := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer seed.Close()
	ctx := context.Background()
	// Users until one lives on the node we stop, and one elsewhere.
	hung := c.Addrs[0]
	var onHung, elsewhere string
	for i := 0; onHung == "" || elsewhere == ""; i++ {
		u := fmt.Sprintf("u%d", i)
		if err := seed.HSet(ctx, "doorman:user:"+u, "password", "{PLAIN}x").Err(); err != nil {
			t.Fatal(err)
		}
		n, err := seed.MasterForKey(ctx, "doorman:user:"+u)
		if err != nil {
			t.Fatal(err)
		}
		if n.Options().Addr == hung {
			onHung = u
		} else {
			elsewhere = u
		}
	}
	for _, u := range []string{onHung, elsewhere} {
		if _, err := r.Lookup(ctx, u); err != nil {
			t.Fatalf("Lookup(%s): %v", u, err)
		}
	}
	pid := 0
	for _, line := range routetest.Do(t, hung, "INFO", "server") {
		for _, l := range strings.Split(line, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
				pid, _ = strconv.Atoi(v)
			}
		}
	}
	if pid == 0 {
		t.Fatal("no process_id in INFO server")
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT)

	for _, deadline := range []time.Duration{0, 500 * time.Millisecond} {
		lctx, cancel := ctx, context.CancelFunc(func() {})
		if deadline > 0 {
			lctx, cancel = context.WithTimeout(ctx, deadline)
		}
		start := time.Now()
		_, err := r.Lookup(lctx, onHung)
		took := time.Since(start)
		cancel()
		if !IsTemporary(err) {
			t.Errorf("Lookup on a hung node: err = %v; want a temporary failure", err)
		}
		t.Logf("Lookup on a hung Cluster node, ctx deadline %v: %v after %v", deadline, err, took.Round(time.Millisecond))
		if limit := max(deadline+200*time.Millisecond, 5*time.Second); took > limit {
			t.Errorf("took %v; want < %v", took, limit)
		}
	}
	if _, err := r.Lookup(ctx, elsewhere); err != nil {
		t.Errorf("Lookup(%s) on a healthy node while another hangs: %v", elsewhere, err)
	}
}
