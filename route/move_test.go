package route

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/route/routetest"
)

// eventLog collects what is published on doorman:events.
type eventLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *eventLog) count(pred func(string) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if pred(m) {
			n++
		}
	}
	return n
}

func listenEvents(t *testing.T, c *redis.Client) *eventLog {
	t.Helper()
	ps := c.Subscribe(context.Background(), "doorman:events")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := &eventLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ps.Channel() {
			l.mu.Lock()
			l.msgs = append(l.msgs, m.Payload)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ps.Close(); <-done })
	return l
}

func testFleet(t *testing.T) (*Fleet, *redis.Client, string) {
	t.Helper()
	addr, _ := routetest.StartRedis(t)
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return r.Fleet(), c, addr
}

func TestMoveUsersToHost(t *testing.T) {
	f, c, addr := testFleet(t)
	ctx := context.Background()
	const n = 1200 // three batches
	var users []string
	for i := range n {
		u := fmt.Sprintf("u%04d", i)
		users = append(users, u)
		fields := []any{"password", "{PLAIN}pw"}
		switch i % 3 {
		case 0:
			fields = append(fields, "vsite", "v1")
		case 1:
			fields = append(fields, "proxy", "", "host", "10.0.0.1", "port", "10143", "hostip", "10.0.0.1")
		case 2:
			fields = append(fields, "proxy_maybe", "", "host", "10.0.0.2")
		}
		if err := c.HSet(ctx, "doorman:user:"+u, fields...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	ev := listenEvents(t, c)
	now := time.Unix(1_800_000_000, 200_000_000)
	start := time.Now()
	res, err := f.Move(ctx, append(users, "ghost1", "ghost2"), MoveTarget{Host: "10.0.0.9", Port: 1143},
		MoveOptions{Delay: 31 * time.Second, Jitter: 5 * time.Second, Now: now})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("moved %d users in %v", res.Moved, took)
	if res.Moved != n || strings.Join(res.NotFound, ",") != "ghost1,ghost2" {
		t.Fatalf("moved %d, not found %v", res.Moved, res.NotFound)
	}
	if took > 10*time.Second {
		t.Errorf("moving %d users took %v", n, took)
	}
	if c.Exists(ctx, "doorman:user:ghost1").Val() != 0 {
		t.Error("a move created a missing user")
	}
	for i, u := range users {
		h := c.HGetAll(ctx, "doorman:user:"+u).Val()
		if h["host"] != "10.0.0.9" || h["port"] != "1143" || h["delay_until"] != "1800000032+5" || h["password"] != "{PLAIN}pw" {
			t.Fatalf("user %s after the move: %v", u, h)
		}
		if _, ok := h["vsite"]; ok {
			t.Fatalf("user %s keeps its vsite: %v", u, h)
		}
		if _, ok := h["hostip"]; ok {
			t.Fatalf("user %s keeps its old hostip: %v", u, h)
		}
		_, proxy := h["proxy"]
		_, maybe := h["proxy_maybe"]
		if proxy == maybe || (i%3 == 2) != maybe {
			t.Fatalf("user %s: proxy/proxy_maybe %v", u, h)
		}
		if ms := c.Get(ctx, "doorman:kick:user:"+u).Val(); ms != fmt.Sprint(now.UnixMilli()) {
			t.Fatalf("kick record of %s: %q", u, ms)
		}
	}
	// Each moved user was dropped from the caches and kicked; missing ones were not.
	deadline := time.Now().Add(5 * time.Second)
	for ev.count(func(m string) bool { return strings.HasPrefix(m, "kick user ") }) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if k, u := ev.count(func(m string) bool { return strings.HasPrefix(m, "kick user u") }),
		ev.count(func(m string) bool { return strings.HasPrefix(m, "user u") }); k != n || u != n {
		t.Errorf("published %d kicks and %d cache drops; want %d each", k, u, n)
	}
	if g := ev.count(func(m string) bool { return strings.Contains(m, "ghost") }); g != 0 {
		t.Errorf("%d messages about missing users", g)
	}

	// The Redis passdb routes a moved user to the new host, held until delay_until.
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}})
	e, err := r.Lookup(ctx, "u0000")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseProxy(e.Fields)
	if err != nil || !p.Proxy || p.Host != "10.0.0.9" || p.Port != 1143 || p.DelayUntil.Unix() != 1800000032 || p.DelayJitter != 5*time.Second {
		t.Fatalf("u0000 routed as %+v, %v", p, err)
	}
}

func TestMoveUsersToVsite(t *testing.T) {
	f, c, _ := testFleet(t)
	ctx := context.Background()
	c.HSet(ctx, "doorman:user:alice", "password", "x", "proxy", "", "host", "10.0.0.1", "port", "1", "hostip", "10.0.0.1")
	c.HSet(ctx, "doorman:vsite:v7", "host", "10.0.0.7")
	res, err := f.Move(ctx, []string{"alice"}, MoveTarget{Vsite: "v7"}, MoveOptions{Delay: 3 * time.Second})
	if err != nil || res.Moved != 1 {
		t.Fatal(res, err)
	}
	h := c.HGetAll(ctx, "doorman:user:alice").Val()
	du, _, err := parseDelayUntil(h["delay_until"])
	if h["vsite"] != "v7" || h["host"] != "" || h["port"] != "" || h["hostip"] != "" || err != nil ||
		du.Before(time.Now().Add(2*time.Second)) || du.After(time.Now().Add(4*time.Second)) {
		t.Fatalf("alice after a move to v7: %v", h)
	}
	for _, bad := range []MoveTarget{{}, {Host: "h", Vsite: "v"}, {Vsite: "v", Port: 1}, {Host: "a b"}, {Host: "h", Port: 70000}} {
		if _, err := f.Move(ctx, []string{"alice"}, bad, MoveOptions{}); err == nil {
			t.Errorf("move to %+v: no error", bad)
		}
	}
	if _, err := f.Move(ctx, []string{"al ice"}, MoveTarget{Host: "h"}, MoveOptions{}); err == nil {
		t.Error("a user name with a space: no error")
	}
}

// A reader never sees half a move: the new host without its delay_until, or a host and
// a vsite at once.
func TestMoveAtomic(t *testing.T) {
	f, c, _ := testFleet(t)
	ctx := context.Background()
	c.HSet(ctx, "doorman:user:bob", "password", "x", "vsite", "v1")
	var stop atomic.Bool
	var bad atomic.Value
	var reads atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			h, err := c.HGetAll(ctx, "doorman:user:bob").Result()
			if err != nil {
				bad.Store(err.Error())
				return
			}
			reads.Add(1)
			_, hasHost := h["host"]
			_, hasVsite := h["vsite"]
			switch {
			case hasHost == hasVsite:
				bad.Store(fmt.Sprint("host and vsite both or neither: ", h))
			case hasHost && (h["delay_until"] == "" || h["port"] != "2143"):
				bad.Store(fmt.Sprint("the new host without its delay or port: ", h))
			}
		}
	}()
	c.HSet(ctx, "doorman:vsite:v1", "host", "10.0.0.1")
	for i := range 300 {
		to := MoveTarget{Host: "10.0.0.5", Port: 2143}
		if i%2 == 1 {
			to = MoveTarget{Vsite: "v1"}
		}
		if _, err := f.Move(ctx, []string{"bob"}, to, MoveOptions{Delay: 31 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			// On the vsite, drop the delay: the next move to a host must bring its own.
			if _, err := c.HDel(ctx, "doorman:user:bob", "delay_until").Result(); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop.Store(true)
	<-done
	if b := bad.Load(); b != nil {
		t.Fatal(b)
	}
	t.Logf("%d reads during 300 moves", reads.Load())
}
