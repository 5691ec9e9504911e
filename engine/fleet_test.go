package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"doorman/engine/relay"
	"doorman/engine/testenv"
	"doorman/route"
	"doorman/route/routetest"
)

// The fleet's view and kicks on one Doorman in process: real Redis, real Dovecot. The
// session records appear and go with the sessions; a published kick by user, vsite or
// backend ends exactly the matching sessions; a kick whose message this host missed is
// caught by its backstop record when the subscription comes back and when the user logs
// in again.

const fleetTestYAML = "hostname: h1\nlogin_trusted_networks: [127.0.0.0/8]\nfleet: {refresh_interval: 1s, session_ttl: 3s}\n"

func fleetOf(t *testing.T, raddr string) *route.Fleet {
	t.Helper()
	r, err := route.NewRedis(route.RedisConfig{Addrs: []string{raddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r.Fleet()
}

// fleetLogin logs user in through addr and fails unless it succeeds.
func fleetLogin(t *testing.T, addr, user string) *client {
	t.Helper()
	got, c := imapLogin(t, addr, user, "secret")
	expectPrefix(t, got, "a OK")
	return c
}

// fleetAlive says whether a logged-in connection still answers a NOOP.
func fleetAlive(c *client) bool {
	if _, err := c.c.Write([]byte("n NOOP\r\n")); err != nil {
		return false
	}
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return false
		}
		if strings.HasPrefix(l, "n ") {
			return strings.HasPrefix(l, "n OK")
		}
	}
}

// fleetEOF waits up to timeout for the connection to be closed by Doorman and returns
// when that was seen.
func fleetEOF(t *testing.T, c *client, timeout time.Duration) time.Time {
	t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		_, err := c.r.ReadString('\n')
		if err == nil {
			continue // a BYE, or what was in flight
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", timeout)
		}
		if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("read: %v", err)
		}
		return time.Now()
	}
}

// fleetSessions lists h1's published sessions by user.
func fleetSessions(t *testing.T, f *route.Fleet) map[string][]route.SessionRecord {
	t.Helper()
	list, err := f.ListSessions(context.Background(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]route.SessionRecord{}
	for _, r := range list {
		m[r.User] = append(m[r.User], r)
	}
	return m
}

func TestFleetSessionRecords(t *testing.T) {
	// A rewrite every other refresh (1 s here): the byte counts below come up in time.
	// Set before the server starts, restored after it stopped (cleanups run last first).
	old := fleetRewriteEvery
	fleetRewriteEvery = 2
	t.Cleanup(func() { fleetRewriteEvery = old })
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	routetest.HSet(t, raddr, "doorman:vsite:v1", map[string]string{"host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	routetest.HSet(t, raddr, "doorman:user:alice", map[string]string{"password": "{PLAIN}secret", "vsite": "v1"})
	routetest.HSet(t, raddr, "doorman:user:bob", map[string]string{"password": "{PLAIN}secret", "proxy": "", "host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	p := startRedisProxy(t, raddr, fleetTestYAML)
	f := fleetOf(t, raddr)

	a := fleetLogin(t, p.addr, "alice")
	b := fleetLogin(t, p.addr, "bob")
	var m map[string][]route.SessionRecord
	waitFor(t, func() bool { m = fleetSessions(t, f); return len(m["alice"]) == 1 && len(m["bob"]) == 1 }, "alice's and bob's records")
	ra := m["alice"][0]
	if ra.Host != "h1" || ra.Protocol != "imap" || ra.Listener != "imap" || ra.Backend != be.IMAPAddr || ra.Vsite != "v1" ||
		!strings.HasPrefix(ra.Client, "127.0.0.1:") || time.Since(ra.Started) > time.Minute || ra.ToClient == 0 || ra.ToBackend == 0 {
		t.Fatalf("alice's record: %+v", ra)
	}
	if rb := m["bob"][0]; rb.Vsite != "" || rb.Backend != be.IMAPAddr {
		t.Fatalf("bob's record: %+v", rb)
	}
	if n := routetest.Do(t, raddr, "ZSCORE", "doorman:fleet:hosts", "h1"); len(n) != 1 || n[0] == "" {
		t.Fatalf("h1 not in doorman:fleet:hosts: %q", n)
	}
	ttl, _ := strconv.Atoi(routetest.Do(t, raddr, "TTL", "doorman:fleet:sessions:{h1}")[0])
	if ttl <= 0 || ttl > 3 {
		t.Fatalf("TTL of h1's records: %d, want 1..3", ttl)
	}
	// The full refresh brings the byte counts up to date.
	before := ra.ToClient
	a.send("s SELECT INBOX\r\n")
	expectPrefix(t, last(a.until("s", 10*time.Second)), "s OK")
	waitFor(t, func() bool { m = fleetSessions(t, f); return len(m["alice"]) == 1 && m["alice"][0].ToClient > before }, "alice's byte counts refreshed")

	// A session's end removes its record; the other stays.
	a.send("z LOGOUT\r\n")
	fleetEOF(t, a, 10*time.Second)
	a.c.Close() // the relay ends a session when both sides have closed
	waitFor(t, func() bool { m = fleetSessions(t, f); return len(m["alice"]) == 0 && len(m["bob"]) == 1 }, "alice's record removed, bob's kept")

	// A Redis that loses everything (FLUSHALL, as after a restart without persistence)
	// gets the host's records back at the next full refresh.
	routetest.Do(t, raddr, "FLUSHALL")
	waitFor(t, func() bool { m = fleetSessions(t, f); return len(m["bob"]) == 1 }, "bob's record written again")
	if !fleetAlive(b) {
		t.Fatal("bob's session ended")
	}
	var metrics string
	waitFor(t, func() bool {
		metrics = string(p.srv.appendMetrics(nil))
		return strings.Contains(metrics, "\ndoorman_fleet_sessions_published 1\n")
	}, "doorman_fleet_sessions_published 1")
	for _, want := range []string{`doorman_kicks_total{source="fleet"} 0`, "doorman_fleet_redis_errors_total 0"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Fatalf("metrics lack %q:\n%s", want, metrics)
		}
	}
}

// fleetSecondBackend starts a Dovecot of its own with dave, for kicks by backend.
func fleetSecondBackend(t *testing.T) *testenv.Dovecot {
	t.Helper()
	be2, err := testenv.StartDovecot(testenv.DovecotOptions{Users: []testenv.User{{Name: "dave", Password: "secret"}}})
	if err != nil {
		t.Fatalf("second dovecot: %v", err)
	}
	t.Cleanup(func() { _ = be2.Stop() })
	return be2
}

func TestFleetKicks(t *testing.T) {
	be := sharedBackend(t)
	be2 := fleetSecondBackend(t)
	raddr, _ := routetest.StartRedis(t)
	port := portOf(be.IMAPAddr)
	routetest.HSet(t, raddr, "doorman:vsite:v1", map[string]string{"host": "127.0.0.1", "port": port})
	routetest.HSet(t, raddr, "doorman:vsite:v2", map[string]string{"host": "127.0.0.1", "port": port})
	routetest.HSet(t, raddr, "doorman:user:alice", map[string]string{"password": "{PLAIN}secret", "vsite": "v1"})
	routetest.HSet(t, raddr, "doorman:user:bob", map[string]string{"password": "{PLAIN}secret", "vsite": "v2"})
	routetest.HSet(t, raddr, "doorman:user:carol", map[string]string{"password": "{PLAIN}secret", "proxy": "", "host": "127.0.0.1", "port": port})
	routetest.HSet(t, raddr, "doorman:user:dave", map[string]string{"password": "{PLAIN}secret", "proxy": "", "host": "127.0.0.1", "port": portOf(be2.IMAPAddr)})
	p := startRedisProxy(t, raddr, fleetTestYAML)
	f := fleetOf(t, raddr)
	ctx := context.Background()

	alice := []*client{fleetLogin(t, p.addr, "alice"), fleetLogin(t, p.addr, "alice")}
	bob := fleetLogin(t, p.addr, "bob")
	carol := fleetLogin(t, p.addr, "carol")
	dave := fleetLogin(t, p.addr, "dave")

	kick := func(kind, value string) time.Time {
		t.Helper()
		at := time.Now()
		n, err := f.Kick(ctx, kind, value, at, time.Minute)
		if err != nil || n != 1 {
			t.Fatalf("kick %s %s: %d subscribers, %v", kind, value, n, err)
		}
		return at
	}
	live := 5
	ended := func(what string, at time.Time, cs ...*client) {
		t.Helper()
		// Kicks are asynchronous: the count of the next kick must not include these.
		live -= len(cs)
		defer waitFor(t, func() bool { return registrySize(p.srv) == live }, what+": the kicked sessions leave the registry")
		for _, c := range cs {
			took := fleetEOF(t, c, 10*time.Second).Sub(at)
			t.Logf("%s: session ended %v after the kick", what, took.Round(time.Millisecond))
			// The requirement is 1 s across the fleet; in process on a loaded machine a
			// little more is tolerated, the two-process test holds the line.
			if took > 2*time.Second {
				t.Fatalf("%s: took %v", what, took)
			}
		}
	}
	alive := func(what string, cs ...*client) {
		t.Helper()
		for i, c := range cs {
			if !fleetAlive(c) {
				t.Fatalf("%s: session %d ended", what, i)
			}
		}
	}

	// A user with no session here: nothing happens.
	kick(route.KickUser, "erin")
	ended("user alice", kick(route.KickUser, "alice"), alice...)
	alive("after kick user alice", bob, carol, dave)
	ended("vsite v2", kick(route.KickVsite, "v2"), bob)
	alive("after kick vsite v2", carol, dave)
	// A backend as IP:port, written as an IPv4-mapped IPv6 address: only that port.
	ended("backend ip:port", kick(route.KickBackend, "[::ffff:127.0.0.1]:"+portOf(be2.IMAPAddr)), dave)
	alive("after kick backend ip:port", carol)
	// A backend as an IP: every port.
	ended("backend ip", kick(route.KickBackend, "127.0.0.1"), carol)

	waitFor(t, func() bool { return len(fleetSessions(t, f)) == 0 }, "no session records left")
	want := map[string]int{"user erin": 0, "user alice": 2, "vsite v2": 1, "backend [::ffff:127.0.0.1]:" + portOf(be2.IMAPAddr): 1, "backend 127.0.0.1": 1}
	for _, e := range p.logs.FilterMessage("kick").All() {
		cm := e.ContextMap()
		k := fmt.Sprint(cm["kind"], " ", cm["value"])
		if n, ok := want[k]; !ok || cm["source"] != "fleet" || fmt.Sprint(cm["kicked"]) != strconv.Itoa(n) {
			t.Fatalf("log line %v", cm)
		}
		delete(want, k)
	}
	if len(want) != 0 {
		t.Fatalf("no log line for %v", want)
	}
	if m := string(p.srv.appendMetrics(nil)); !strings.Contains(m, "doorman_kicks_total{source=\"fleet\"} 5\n") {
		t.Fatalf("metrics:\n%s", m)
	}
}

func TestFleetKickBackstop(t *testing.T) {
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	for _, u := range []string{"alice", "bob"} {
		routetest.HSet(t, raddr, "doorman:user:"+u, map[string]string{"password": "{PLAIN}secret", "proxy": "", "host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	}
	p := startRedisProxy(t, raddr, fleetTestYAML)
	setRecord := func(kind, value string, at time.Time) {
		routetest.Do(t, raddr, "SET", "doorman:kick:"+kind+":"+value, strconv.FormatInt(at.UnixMilli(), 10), "EX", "60")
	}

	// At resubscribe: a kick whose message was lost (only its record was written).
	old := fleetLogin(t, p.addr, "alice")
	bob := fleetLogin(t, p.addr, "bob")
	setRecord(route.KickUser, "alice", time.Now())
	if !fleetAlive(old) {
		t.Fatal("alice's session ended without a message")
	}
	killed := time.Now()
	routetest.Do(t, raddr, "CLIENT", "KILL", "TYPE", "pubsub")
	took := fleetEOF(t, old, 10*time.Second).Sub(killed)
	t.Logf("alice's older session ended %v after the subscription was cut", took.Round(time.Millisecond))
	if !fleetAlive(bob) {
		t.Fatal("bob's session ended")
	}
	// The record is still there; sessions that start after it are not touched by it.
	newer := fleetLogin(t, p.addr, "alice")
	routetest.Do(t, raddr, "CLIENT", "KILL", "TYPE", "pubsub")
	waitFor(t, func() bool {
		return p.logs.FilterMessage("events subscription restored; reloading vsites and flushing the auth cache").Len() >= 2
	}, "the second resubscribe")
	if !fleetAlive(newer) {
		t.Fatal("a session that started after the kick record was kicked")
	}

	// At login: a record newer than alice's session, no message; her next login ends the
	// older session and not itself.
	time.Sleep(5 * time.Millisecond) // the record must be later than newer's start, in ms
	setRecord(route.KickUser, "alice", time.Now())
	if !fleetAlive(newer) {
		t.Fatal("alice's session ended without a message")
	}
	third := fleetLogin(t, p.addr, "alice")
	fleetEOF(t, newer, 10*time.Second)
	if !fleetAlive(third) || !fleetAlive(bob) {
		t.Fatal("the new login, or bob, was kicked")
	}
	var sources []string
	for _, e := range p.logs.FilterMessage("kick").All() {
		cm := e.ContextMap()
		sources = append(sources, fmt.Sprint(cm["source"], " ", cm["kind"], " ", cm["value"], " ", cm["kicked"]))
	}
	if fmt.Sprint(sources) != "[backstop user alice 1 backstop user alice 1]" {
		t.Fatalf("kick log lines: %q", sources)
	}
	if m := string(p.srv.appendMetrics(nil)); !strings.Contains(m, "doorman_kicks_total{source=\"backstop\"} 2\n") {
		t.Fatalf("metrics:\n%s", m)
	}
}

// A clean stop removes the host's records at once, well before they would expire.
func TestFleetStopRemovesRecords(t *testing.T) {
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	routetest.HSet(t, raddr, "doorman:user:bob", map[string]string{"password": "{PLAIN}secret", "proxy": "", "host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`hostname: hstop
listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: redis, addrs: [%q]}
fleet: {refresh_interval: 10s, session_ttl: 60s}
`, addr, raddr)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = srv.Stop(context.Background())
		}
	})
	f := fleetOf(t, raddr)
	fleetLogin(t, addr, "bob")
	waitFor(t, func() bool { return len(fleetSessions(t, f)["bob"]) == 1 }, "bob's record")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped = true
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if n := routetest.Do(t, raddr, "EXISTS", "doorman:fleet:sessions:{hstop}"); n[0] != "0" {
		t.Fatalf("hstop's records outlived its stop")
	}
	if s := routetest.Do(t, raddr, "ZSCORE", "doorman:fleet:hosts", "hstop"); len(s) != 1 || s[0] != "" {
		t.Fatalf("hstop still in doorman:fleet:hosts: %q", s)
	}
}

// Through a Redis outage the queue of changes stays bounded, and once Redis is back (empty,
// as after a restart without persistence) the host writes its sessions whole: the one
// that ended meanwhile is gone, the one that started meanwhile is there.
func TestFleetRedisOutage(t *testing.T) {
	be := sharedBackend(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &ownRedis{t: t, port: port}
	r.start()
	t.Cleanup(r.kill)
	seed := func() {
		for _, u := range []string{"alice", "bob"} {
			routetest.HSet(t, r.addr(), "doorman:user:"+u, map[string]string{"password": "{PLAIN}secret", "proxy": "", "host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
		}
	}
	seed()
	p := startRedisProxy(t, r.addr(), fleetTestYAML+"auth_cache_size: 1000\n")
	f := fleetOf(t, r.addr())
	alice := fleetLogin(t, p.addr, "alice")
	fleetLogin(t, p.addr, "bob") // bob is cached now
	waitFor(t, func() bool { m := fleetSessions(t, f); return len(m["alice"]) == 1 && len(m["bob"]) == 1 }, "both records")

	r.kill()
	waitFor(t, func() bool { return p.srv.fleet.redisErrs.Load() > 0 }, "a failed write")
	alice.send("z LOGOUT\r\n")
	fleetEOF(t, alice, 10*time.Second)
	alice.c.Close()
	fleetLogin(t, p.addr, "bob") // from the auth cache
	waitFor(t, func() bool { return p.srv.sessions.userSessions("alice") == 0 }, "alice's session gone from the registry")
	p.srv.fleet.mu.Lock()
	pending, rewrite := len(p.srv.fleet.pending), p.srv.fleet.rewrite
	p.srv.fleet.mu.Unlock()
	if pending != 0 || !rewrite {
		t.Fatalf("during the outage: %d changes queued, rewrite %v; want none queued and a rewrite", pending, rewrite)
	}

	r.start()
	seed()
	waitFor(t, func() bool { m := fleetSessions(t, f); return len(m["alice"]) == 0 && len(m["bob"]) == 2 }, "bob's two sessions, and not alice's, after the outage")
}

// The queue of changes is bounded: past fleetMaxPending it is dropped for a rewrite.
func TestFleetQueueBound(t *testing.T) {
	f := &fleet{}
	rec := &endRecord{id: "x", user: "u"}
	h := &relay.Handle{}
	for range fleetMaxPending {
		f.changed(rec, h)
	}
	if len(f.pending) != fleetMaxPending || f.rewrite {
		t.Fatalf("%d queued, rewrite %v", len(f.pending), f.rewrite)
	}
	f.changed(rec, nil)
	if f.pending != nil || !f.rewrite {
		t.Fatalf("past the bound: %d queued, rewrite %v", len(f.pending), f.rewrite)
	}
	f.changed(rec, nil)
	if f.pending != nil {
		t.Fatalf("queued while a rewrite is due")
	}
	if f.live.Load() != fleetMaxPending-2 {
		t.Fatalf("live = %d", f.live.Load())
	}
}
