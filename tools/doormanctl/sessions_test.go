package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/route"
	"doorman/route/routetest"
)

func TestSessionsAndKick(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	rdb := newClient(t, addr)
	r, err := route.NewRedis(route.RedisConfig{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f := r.Fleet()
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	rec := func(host, id, user, backend, vsite string, started time.Time) route.SessionRecord {
		return route.SessionRecord{Host: host, ID: id, User: user, Protocol: "imap", Listener: "imap",
			Client: "192.0.2.7:50000", Backend: backend, Vsite: vsite, Started: started, ToClient: 1234, ToBackend: 56}
	}
	if err := f.ReplaceSessions(ctx, "h2", []route.SessionRecord{
		rec("h2", "b2", "bob", "10.0.0.2:143", "", t0.Add(2*time.Second)),
		rec("h2", "a2", "alice", "10.0.0.1:143", "v1", t0.Add(time.Second)),
	}, time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.ReplaceSessions(ctx, "h1", []route.SessionRecord{rec("h1", "a1", "alice", "10.0.0.1:143", "v1", t0)}, time.Minute, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A host that died long ago: listed in the zset, its records expired.
	if err := rdb.ZAdd(ctx, f.HostsKey(), redisZ(time.Now().Add(-time.Hour), "dead")).Err(); err != nil {
		t.Fatal(err)
	}

	out := mustRun(t, "-redis", addr, "sessions")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "HOST") || lines[4] != "3 sessions" {
		t.Fatalf("sessions:\n%s", out)
	}
	// Sorted by host, then start; each row has the user, backend, vsite and bytes.
	for i, want := range [][]string{
		{"h1", "a1", "alice", "imap", "192.0.2.7:50000", "10.0.0.1:143", "v1", "56", "1234"},
		{"h2", "a2", "alice", "imap", "192.0.2.7:50000", "10.0.0.1:143", "v1", "56", "1234"},
		{"h2", "b2", "bob", "imap", "192.0.2.7:50000", "10.0.0.2:143", "-", "56", "1234"},
	} {
		got := strings.Fields(lines[i+1])
		if len(got) != 10 || strings.Join(got[:7], " ") != strings.Join(want[:7], " ") || got[8] != want[7] || got[9] != want[8] {
			t.Fatalf("row %d: %q, want %q", i, got, want)
		}
		if st, err := time.Parse(time.RFC3339, got[7]); err != nil || st.Before(t0) || st.After(t0.Add(2*time.Second)) {
			t.Fatalf("row %d: started %q", i, got[7])
		}
	}
	if n := rdb.ZScore(ctx, f.HostsKey(), "dead").Err(); n == nil {
		t.Fatal("the dead host is still in the hosts zset")
	}
	// Filters, and JSON.
	var list []route.SessionRecord
	if err := json.Unmarshal([]byte(mustRun(t, "-redis", addr, "sessions", "-user", "alice", "-json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "a1" || list[1].ID != "a2" || list[1].Host != "h2" || !list[0].Started.Equal(t0) {
		t.Fatalf("-user alice -json: %+v", list)
	}
	if out := mustRun(t, "-redis", addr, "sessions", "--host", "h2", "--vsite", "v1"); !strings.Contains(out, "a2") || strings.Contains(out, "b2") || !strings.HasSuffix(out, "1 sessions\n") {
		t.Fatalf("-host h2 -vsite v1:\n%s", out)
	}

	// kick: the message and the backstop record.
	msgs := subscribe(t, rdb)
	before := time.Now()
	out = mustRun(t, "-redis", addr, "kick", "--user", "alice", "-ttl", "90s")
	if !strings.Contains(out, "received by 1 hosts") {
		t.Fatalf("kick: %s", out)
	}
	select {
	case m := <-msgs:
		if m.Payload != "kick user alice" {
			t.Fatalf("published %q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no kick message")
	}
	v, err := rdb.Get(ctx, "doorman:kick:user:alice").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ms, _ := strconv.ParseInt(v, 10, 64); ms < before.UnixMilli() || ms > time.Now().UnixMilli() {
		t.Fatalf("kick record %s, want the kick's time", v)
	}
	if ttl := rdb.TTL(ctx, "doorman:kick:user:alice").Val(); ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("kick record TTL %v", ttl)
	}
	mustRun(t, "-redis", addr, "kick", "-backend", "10.0.0.1")
	if m := <-msgs; m.Payload != "kick backend 10.0.0.1" {
		t.Fatalf("published %q", m.Payload)
	}
	for _, bad := range [][]string{
		{"kick"}, {"kick", "-user", "a", "-vsite", "v"}, {"kick", "-user", "a b"}, {"kick", "-user", "a", "-ttl", "0s"},
		{"kick", "-backend", "imap.example.com"}, {"sessions", "extra"}, {"sessions", "-nope"},
	} {
		code, _, _ := ctlRun(t, append([]string{"-redis", addr}, bad...)...)
		want := exitUsage
		if bad[0] == "kick" && len(bad) == 3 && bad[2] == "a b" {
			want = exitFail // route.Kick refuses the value
		}
		if code != want {
			t.Errorf("doormanctl %q: exit %d, want %d", bad, code, want)
		}
	}
}

func redisZ(at time.Time, member string) redis.Z {
	return redis.Z{Score: float64(at.Unix()), Member: member}
}
