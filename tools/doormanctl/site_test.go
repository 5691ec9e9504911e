package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"doorman/route/routetest"
)

func TestMoveCommand(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	c := newClient(t, addr)
	ctx := context.Background()
	for _, u := range []string{"alice", "bob", "carol"} {
		c.HSet(ctx, "doorman:user:"+u, "password", "{PLAIN}x", "vsite", "v1")
	}
	ev := subscribe(t, c)
	before := time.Now()
	out := mustRun(t, "-redis", addr, "move", "-host", "10.0.0.9", "-port", "1143", "-delay", "3s", "alice")
	if !strings.Contains(out, "moved 1 users to host 10.0.0.9 port 1143") {
		t.Fatalf("output: %s", out)
	}
	h := c.HGetAll(ctx, "doorman:user:alice").Val()
	if h["host"] != "10.0.0.9" || h["port"] != "1143" || h["vsite"] != "" {
		t.Fatalf("alice: %v", h)
	}
	var du int64
	fmt.Sscan(h["delay_until"], &du)
	if du < before.Add(3*time.Second).Unix() || du > time.Now().Add(4*time.Second).Unix() {
		t.Fatalf("alice delay_until %q", h["delay_until"])
	}
	wantMessage(t, ev, "user alice")
	wantMessage(t, ev, "kick user alice")

	// Targets that would fail every moved user's logins are refused, and nothing moves:
	// a host name (Doorman connects to an IP), a vsite that does not exist, a delay past
	// delay_until's 5-minute limit.
	for _, bad := range [][]string{
		{"move", "-host", "mail.example.net", "alice"},
		{"move", "-vsite", "nosuchvsite", "alice"},
		{"move", "-host", "10.0.0.8", "-delay", "6m", "alice"},
	} {
		if code, _, errs := ctlRun(t, append([]string{"-redis", addr}, bad...)...); code == exitOK {
			t.Errorf("%v: exit 0 (%s)", bad, errs)
		}
	}
	if h := c.HGetAll(ctx, "doorman:user:alice").Val(); h["host"] != "10.0.0.9" || h["vsite"] != "" {
		t.Fatalf("alice after refused moves: %v", h)
	}

	// From standard input, with a missing user: moved the others, exit 1.
	c.HSet(ctx, "doorman:vsite:v2", "host", "10.0.0.2")
	stdin = strings.NewReader("bob\n\n# a comment\ncarol\nnobody\n")
	defer func() { stdin = nil }()
	code, out, errs := ctlRun(t, "-redis", addr, "move", "-vsite", "v2", "-delay", "0", "-file", "-")
	if code != exitFail || !strings.Contains(out, "moved 2 users to vsite v2") || !strings.Contains(out, "not found: nobody") ||
		!strings.Contains(errs, "1 users not found") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if h := c.HGetAll(ctx, "doorman:user:carol").Val(); h["vsite"] != "v2" || h["delay_until"] != "" {
		t.Fatalf("carol: %v", h)
	}
	for _, bad := range [][]string{
		{"move", "alice"}, {"move", "-host", "h", "-vsite", "v", "alice"}, {"move", "-host", "h"},
		{"move", "-host", "h", "-file", "-", "alice"}, {"move", "-host", "h", "-delay", "-1s", "alice"},
	} {
		if code, _, _ := ctlRun(t, append([]string{"-redis", addr}, bad...)...); code != exitUsage {
			t.Errorf("%v: exit %d; want %d", bad, code, exitUsage)
		}
	}
}

func TestSiteCommands(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	c := newClient(t, addr)
	ctx := context.Background()
	ev := subscribe(t, c)
	mustRun(t, "-redis", addr, "site", "set", "A", "hosts=10.1.0.1:143", "fallback=B:3,C:1")
	wantMessage(t, ev, "site A")
	mustRun(t, "-redis", addr, "site", "set", "B", "hosts=10.2.0.1:1143")
	mustRun(t, "-redis", addr, "site", "set", "C", "hosts=10.3.0.1", "down=10.3.0.9")
	mustRun(t, "-redis", addr, "site", "set", "C", "down=")
	if h := c.HGetAll(ctx, "doorman:site:C").Val(); h["hosts"] != "10.3.0.1" || len(h) != 1 {
		t.Fatalf("site C: %v", h)
	}
	for _, bad := range [][]string{
		{"site", "set", "A", "fallback=A:1"}, {"site", "set", "A", "fallback=B:0"}, {"site", "set", "A", "color=red"},
		{"site", "set", "A", "state=gone"}, {"site"}, {"failover"}, {"restore", "-site", "A", "-pause", "-1s"},
	} {
		if code, _, _ := ctlRun(t, append([]string{"-redis", addr}, bad...)...); code != exitUsage {
			t.Errorf("%v: exit %d; want %d", bad, code, exitUsage)
		}
	}
	for i := range 8 {
		c.HSet(ctx, fmt.Sprintf("doorman:vsite:v%d", i), "host", "10.1.0.1", "port", "143", "site", "A")
	}
	out := mustRun(t, "-redis", addr, "failover", "-site", "A")
	if !strings.Contains(out, "site A failed over: 8 vsites moved") || strings.Count(out, "-> B (10.2.0.1:1143)") != 6 ||
		strings.Count(out, "-> C (10.3.0.1)") != 2 {
		t.Fatalf("failover output:\n%s", out)
	}
	out = mustRun(t, "-redis", addr, "site", "list")
	if !strings.Contains(out, "A     failed  10.1.0.1:143") || !strings.Contains(out, "B:3,C:1") {
		t.Fatalf("site list:\n%s", out)
	}
	out = mustRun(t, "-redis", addr, "site", "show", "B")
	if !strings.Contains(out, "0 home, 0 failed over elsewhere, 6 guests from failed sites") {
		t.Fatalf("site show B:\n%s", out)
	}
	out = mustRun(t, "-redis", addr, "site", "show", "A")
	if !strings.Contains(out, "failed_by  doormanctl@") || !strings.Contains(out, "8 failed over elsewhere") {
		t.Fatalf("site show A:\n%s", out)
	}
	start := time.Now()
	out = mustRun(t, "-redis", addr, "restore", "-site", "A", "-pause", "100ms")
	if took := time.Since(start); took < 700*time.Millisecond {
		t.Errorf("8 vsites restored 100ms apart in %v", took)
	}
	if !strings.Contains(out, "site A restored: 8 vsites back") || strings.Count(out, "-> A (10.1.0.1:143)") != 8 ||
		strings.Index(out, "vsite v0:") > strings.Index(out, "vsite v7:") {
		t.Fatalf("restore output:\n%s", out)
	}
	if h := c.HGetAll(ctx, "doorman:vsite:v3").Val(); h["site"] != "A" || h["host"] != "10.1.0.1" || h["port"] != "143" || h["home_site"] != "" {
		t.Fatalf("v3 after restore: %v", h)
	}
	// Busy: the lock held elsewhere.
	c.Set(ctx, "doorman:lock:site:A", "watchdog@other x", time.Minute)
	if code, _, errs := ctlRun(t, "-redis", addr, "failover", "-site", "A"); code != exitFail || !strings.Contains(errs, "held by watchdog@other") {
		t.Fatalf("failover under a held lock: exit %d, %s", code, errs)
	}
}
