package route

import (
	"context"
	"errors"
	"maps"
	"sync/atomic"
	"testing"

	"doorman/route/routetest"
)

// go-redis logs dial failures on its own; count them instead of printing.
var redisLogLines atomic.Int32

func init() {
	SetRedisLogger(func(context.Context, string, ...any) { redisLogLines.Add(1) })
}

func newTestRedis(t *testing.T, cfg RedisConfig) *Redis {
	t.Helper()
	r, err := NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRedisLookup(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	routetest.HSet(t, addr, "doorman:user:alice@example.com", map[string]string{
		"password": "{PLAIN}secret", "proxy": "", "host": "10.0.0.1", "port": "10143",
		"nopassword": "N", "forward_x": "1",
	})
	routetest.HSet(t, addr, "doorman:user:bob", map[string]string{
		"password": "$6$mBVar4Tg19MlFPKE$6WFWHtYMIeGd1zmJ/qzD.hr/spEjU.kEmnw0b9uwoURXCJVtz6Gwly9OMeCqw8.m6/GHP83QFvkcat2ysxzLg.",
		"user":     "robert",
	})
	routetest.HSet(t, addr, "doorman:user:carol", map[string]string{"password_noscheme": "{x}", "nologin": ""})
	routetest.HSet(t, addr, "other:user:dave", map[string]string{"password": "{PLAIN}x"})
	routetest.Do(t, addr, "SET", "doorman:user:wrongtype", "a string")

	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}})
	ctx := context.Background()

	e, err := r.Lookup(ctx, "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	wantFields := map[string]string{"proxy": "", "host": "10.0.0.1", "port": "10143", "nopassword": "N", "forward_x": "1"}
	if e.User != "alice@example.com" || e.Password != "{PLAIN}secret" || !maps.Equal(e.Fields, wantFields) {
		t.Errorf("alice = %+v", e)
	}
	p, err := ParseProxy(e.Fields)
	if err != nil || !p.Proxy || !p.NoPassword || p.Port != 10143 || len(p.Forward) != 1 {
		t.Errorf("ParseProxy(alice) = %+v, %v", p, err)
	}

	e, err = r.Lookup(ctx, "bob")
	if err != nil || e.User != "robert" || e.Password[:9] != "{CRYPT}$6" {
		t.Errorf("bob = %+v, %v", e, err)
	}
	e, err = r.Lookup(ctx, "carol")
	if err != nil || e.Password != "{CRYPT}{x}" || !e.Has("nologin") {
		t.Errorf("carol = %+v, %v", e, err)
	}

	for _, u := range []string{"nobody", "", "dave", "ALICE@example.com"} {
		if _, err := r.Lookup(ctx, u); err != ErrUnknownUser {
			t.Errorf("Lookup(%q) err = %v; want ErrUnknownUser", u, err)
		}
	}
	// WRONGTYPE is a Redis error: temporary, never "unknown user".
	if _, err := r.Lookup(ctx, "wrongtype"); !errors.Is(err, ErrTempFail) {
		t.Errorf("Lookup(wrongtype) err = %v; want a temporary failure", err)
	}
	if err := r.Ping(ctx); err != nil {
		t.Error(err)
	}

	// A custom prefix and default scheme.
	r2 := newTestRedis(t, RedisConfig{Addrs: []string{addr}, KeyPrefix: "other:", DefaultScheme: "PLAIN"})
	if e, err := r2.Lookup(ctx, "dave"); err != nil || e.Password != "{PLAIN}x" {
		t.Errorf("dave = %+v, %v", e, err)
	}
	if got := r2.UserKey("u"); got != "other:user:u" {
		t.Errorf("UserKey = %q", got)
	}
	if got := r.VsiteKey("7"); got != "doorman:vsite:7" {
		t.Errorf("VsiteKey = %q", got)
	}

	// Through a chain, end to end.
	res := NewChain(r).Authenticate(ctx, NewHasher(1), "bob", "secret")
	if res.Verdict != VerdictOK || res.Entry.User != "robert" || res.Passdb != "redis" {
		t.Errorf("Authenticate(bob) = %+v", res)
	}
}

func TestRedisDown(t *testing.T) {
	addr, stop := routetest.StartRedis(t)
	routetest.HSet(t, addr, "doorman:user:alice", map[string]string{"password": "{PLAIN}pw"})
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}})
	ctx := context.Background()
	if _, err := r.Lookup(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	stop()
	for range 3 { // pooled connection gone, then fresh dials refused
		_, err := r.Lookup(ctx, "alice")
		var te *TempError
		if !errors.As(err, &te) || te.Passdb != "redis" || !IsTemporary(err) {
			t.Fatalf("Lookup with Redis stopped: err = %v; want a *TempError", err)
		}
	}
	if err := r.Ping(ctx); !errors.Is(err, ErrTempFail) {
		t.Errorf("Ping err = %v", err)
	}
	res := NewChain(r).Authenticate(ctx, nil, "alice", "pw")
	if res.Verdict != VerdictTempFail {
		t.Errorf("Authenticate with Redis down = %v", res.Verdict)
	}
	if redisLogLines.Load() == 0 {
		t.Error("go-redis's dial failures did not reach SetRedisLogger's function")
	}
}

// A Redis that accepts connections but never answers: the read timeout
// turns the lookup into a temporary failure (no retry, no ctx deadline).
func TestRedisHung(t *testing.T) {
	addr := routetest.StartHungServer(t)
	r := newTestRedis(t, RedisConfig{Addrs: []string{addr}})
	_, err := r.Lookup(context.Background(), "alice")
	var te *TempError
	if !errors.As(err, &te) {
		t.Fatalf("Lookup against a hung server: err = %v; want a *TempError", err)
	}
	var timeout interface{ Timeout() bool }
	if !errors.As(err, &timeout) || !timeout.Timeout() {
		t.Errorf("err = %v; want a timeout underneath", err)
	}
}

func TestNewRedisConfig(t *testing.T) {
	bad := []RedisConfig{
		{},
		{Addrs: []string{"a:1", "b:1"}, DB: 1},
		{Addrs: []string{"a:1"}, ReadTimeout: -1},
		{Addrs: []string{"a:1"}, PoolSize: -1},
		{Addrs: []string{"a:1"}, DefaultScheme: "ROT13"},
	}
	for _, cfg := range bad {
		if r, err := NewRedis(cfg); err == nil {
			r.Close()
			t.Errorf("NewRedis(%+v): no error", cfg)
		}
	}
	// Sentinel: several addrs with a DB are fine.
	r, err := NewRedis(RedisConfig{Addrs: []string{"a:1", "b:1"}, MasterName: "m", DB: 2})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}
