package engine

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest/observer"

	"doorman/engine/testenv"
	"doorman/route/routetest"
)

// The director in one process, against real Redis and the shared Dovecot: a user's or a
// vsite's site= picks the site; the record outlives the session by director_user_expire
// and is renewed while the session lasts; a site that is missing or has no healthy
// backend fails the login as unavailable.
func TestDirectorRecordLifetime(t *testing.T) {
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: raddr})
	defer rc.Close()
	ctx := context.Background()
	// The site's one backend is the shared Dovecot, as ip:port; a second, down, host is
	// listed in down= and must never be chosen.
	if err := rc.HSet(ctx, "doorman:site:s1", "hosts", be.IMAPAddr+",192.0.2.1:143", "down", "192.0.2.1:143").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, "doorman:vsite:v1", "site", "s1").Err(); err != nil {
		t.Fatal(err)
	}
	for user, fields := range map[string][]any{
		"alice": {"site", "s1"},  // the user's own site
		"bob":   {"vsite", "v1"}, // through its vsite
		"carol": {"site", "nosuchsite"},
		"dave":  {"proxy", ""}, // no site at all, and no fleet.director_site
	} {
		args := append([]any{"password", "{PLAIN}secret", "proxy", ""}, fields...)
		if err := rc.HSet(ctx, "doorman:user:"+user, args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	p := startRedisProxy(t, raddr, "fleet:\n  director_user_expire: 4s")

	// alice: relayed to the site's healthy backend, the record written with the live
	// expiry (director_user_expire * 1.5).
	r, alice := imapLogin(t, p.addr, "alice", "secret")
	expectPrefix(t, r, "a OK")
	if h := rc.Get(ctx, "doorman:director:alice").Val(); h != be.IMAPAddr {
		t.Fatalf("alice's record %q, want %s", h, be.IMAPAddr)
	}
	if ttl := rc.PTTL(ctx, "doorman:director:alice").Val(); ttl <= 4*time.Second || ttl > 6*time.Second {
		t.Fatalf("alice's record expires in %v while her session lives; want (4s, 6s]", ttl)
	}
	r, bob := imapLogin(t, p.addr, "bob", "secret")
	expectPrefix(t, r, "a OK")
	bob.send("z LOGOUT\r\n")
	bob.until("z", 5*time.Second)
	bob.c.Close()
	if h := rc.Get(ctx, "doorman:director:bob").Val(); h != be.IMAPAddr {
		t.Fatalf("bob's record (through vsite v1) %q", h)
	}
	for _, u := range []string{"carol", "dave"} {
		if r, _ := imapLogin(t, p.addr, u, "secret"); r != "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n" {
			t.Fatalf("%s: %q", u, r)
		}
	}
	if n := p.logs.FilterMessage("login failed").Filter(func(e observer.LoggedEntry) bool {
		return strings.Contains(e.ContextMap()["reason"].(string), `director: site "nosuchsite" does not exist`)
	}).Len(); n != 1 {
		t.Fatalf("carol's failure not logged with the director's reason")
	}

	// bob's session ended: within a couple of seconds his record gets director_user_expire.
	waitFor(t, func() bool {
		ttl := rc.PTTL(ctx, "doorman:director:bob").Val()
		return ttl > 0 && ttl <= 4*time.Second
	}, "bob's record set to expire director_user_expire after his session")
	// alice's lasts past the first expiry (renewed every 2 s while her session lives).
	time.Sleep(7 * time.Second)
	if ttl := rc.PTTL(ctx, "doorman:director:alice").Val(); ttl <= 0 {
		t.Fatal("alice's record expired while her session lived")
	}
	alice.send("n NOOP\r\n")
	expectPrefix(t, last(alice.until("n", 5*time.Second)), "n OK")
	if rc.Exists(ctx, "doorman:director:bob").Val() != 0 {
		t.Fatal("bob's record still there director_user_expire after his session")
	}

	m := string(p.srv.appendMetrics(nil))
	for _, want := range []string{
		`doorman_director_assignments_total{result="new"} 2`,
		`doorman_director_assignments_total{result="failed"} 1`,
		`doorman_director_site_backends{site="s1"} 1`,
		`doorman_director_site_backends{site="nosuchsite"} 0`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Two successful backend logins so far: the histogram has them, cumulatively.
	if c := metricValue(t, m, "doorman_backend_login_seconds_count"); c != 2 {
		t.Errorf("backend login histogram count %d, want 2", c)
	}
	if inf := metricValue(t, m, `doorman_backend_login_seconds_bucket{le="+Inf"}`); inf != 2 {
		t.Errorf("+Inf bucket %d, want 2", inf)
	}
	prev := int64(0)
	for _, b := range histogramBounds {
		v := metricValue(t, m, `doorman_backend_login_seconds_bucket{le="`+strconv.FormatFloat(b, 'g', -1, 64)+`"}`)
		if v < prev {
			t.Fatalf("buckets not cumulative at le=%v: %d < %d", b, v, prev)
		}
		prev = v
	}
}

func metricValue(t *testing.T, text, series string) int64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\d+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no series %s in:\n%s", series, text)
	}
	v, _ := strconv.ParseInt(m[1], 10, 64)
	return v
}

// The site's down list and host changes reach a running director through "site <id>".
func TestDirectorFollowsSiteEvents(t *testing.T) {
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: raddr})
	defer rc.Close()
	ctx := context.Background()
	if err := rc.HSet(ctx, "doorman:site:s1", "hosts", be.IMAPAddr+",192.0.2.1:143", "down", "192.0.2.1:143").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, "doorman:user:erin", "password", "{PLAIN}secret", "proxy", "").Err(); err != nil {
		t.Fatal(err)
	}
	p := startRedisProxy(t, raddr, "fleet:\n  director_site: s1")
	r, c := imapLogin(t, p.addr, "erin", "secret")
	expectPrefix(t, r, "a OK")
	c.c.Close()
	// Every host down: the next login fails as unavailable once the event is in.
	if err := rc.HSet(ctx, "doorman:site:s1", "down", be.IMAPAddr+",192.0.2.1:143").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(ctx, "doorman:events", "site s1").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		r, _ := imapLogin(t, p.addr, "erin", "secret")
		return strings.HasPrefix(r, "a NO [UNAVAILABLE]")
	}, "logins fail once every backend of the site is down")
	if err := rc.HDel(ctx, "doorman:site:s1", "down").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(ctx, "doorman:events", "site s1").Err(); err != nil {
		t.Fatal(err)
	}
	// Both hosts healthy now; erin's record still names the Dovecot, which stays hers.
	waitFor(t, func() bool {
		r, _ := imapLogin(t, p.addr, "erin", "secret")
		return strings.HasPrefix(r, "a OK")
	}, "logins work again once the site is back")
	if h := rc.Get(ctx, "doorman:director:erin").Val(); h != be.IMAPAddr {
		t.Fatalf("erin's record %q", h)
	}
}

// Sessions by protocol and stage, and logins by outcome class.
func TestMetricsByProtocolAndClass(t *testing.T) {
	be := sharedBackend(t)
	closed, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr))+
		passwdLine("bob", "{PLAIN}secret", "proxy host=127.0.0.1 port="+strconv.Itoa(closed))+
		passwdLine("carol", "{PLAIN}secret", "nologin"), "login_proxy_max_reconnects: 0")
	metrics := func() string { return string(p.srv.appendMetrics(nil)) }
	idle := dial(t, p.addr, "")
	if v := metricValue(t, metrics(), `doorman_protocol_sessions{protocol="imap",stage="login"}`); v != 1 {
		t.Fatalf("imap login-phase sessions %d, want 1", v)
	}
	for _, c := range []struct{ user, pass, reply string }{
		{"alice", "wrong", "a NO"},
		{"bob", "secret", "a NO [UNAVAILABLE]"},
		{"carol", "secret", "a NO"},
	} {
		r, cl := imapLogin(t, p.addr, c.user, c.pass)
		expectPrefix(t, r, c.reply)
		cl.c.Close()
	}
	r, alice := imapLogin(t, p.addr, "alice", "secret")
	expectPrefix(t, r, "a OK")
	idle.c.Close()
	waitFor(t, func() bool {
		m := metrics()
		return metricValue(t, m, `doorman_protocol_sessions{protocol="imap",stage="login"}`) == 0 &&
			metricValue(t, m, `doorman_protocol_sessions{protocol="imap",stage="relay"}`) == 1
	}, "one imap session relayed, none in the login phase")
	m := metrics()
	for class, want := range map[string]int64{"ok": 1, "auth": 1, "unavailable": 1, "disabled": 1, "tempfail": 0} {
		if v := metricValue(t, m, `doorman_login_results_total{class="`+class+`"}`); v != want {
			t.Errorf("logins of class %s: %d, want %d", class, v, want)
		}
	}
	if v := metricValue(t, m, `doorman_protocol_sessions{protocol="pop3",stage="relay"}`); v != 0 {
		t.Errorf("pop3 relay %d", v)
	}
	alice.send("z LOGOUT\r\n")
	alice.until("z", 5*time.Second)
	alice.c.Close()
	waitFor(t, func() bool {
		return metricValue(t, metrics(), `doorman_protocol_sessions{protocol="imap",stage="relay"}`) == 0
	}, "the relayed session counted out")
	if v := metricValue(t, metrics(), `doorman_relay_bytes_total{direction="to_client"}`); v == 0 {
		t.Error("no relayed bytes counted after the session")
	}
}

func TestHistogramAndLabelEscapes(t *testing.T) {
	var h histogram
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Second, time.Minute} {
		h.observe(d)
	}
	m := metricWriter{}
	h.write(&m, "x_seconds", "help")
	text := string(m.b)
	for series, want := range map[string]int64{
		`x_seconds_bucket{le="0.001"}`: 2, // 0.5 ms and exactly 1 ms: le is inclusive
		`x_seconds_bucket{le="0.005"}`: 3,
		`x_seconds_bucket{le="1"}`:     3,
		`x_seconds_bucket{le="2.5"}`:   4,
		`x_seconds_bucket{le="30"}`:    4,
		`x_seconds_bucket{le="+Inf"}`:  5,
		`x_seconds_count`:              5,
	} {
		if v := metricValue(t, text, series); v != want {
			t.Errorf("%s = %d, want %d", series, v, want)
		}
	}
	if !strings.Contains(text, "\nx_seconds_sum 62.0045\n") || !strings.HasPrefix(text, "# HELP x_seconds help\n# TYPE x_seconds histogram\n") {
		t.Errorf("histogram text:\n%s", text)
	}
	if got := escapeLabel("a\\b\"c\nd é"); got != `a\\b\"c\nd é` {
		t.Errorf("escapeLabel: %q", got)
	}
}

// Redis down after a user is cached: the director cannot read or store the assignment, and
// the login goes to the ring's choice (the same on every host) instead of failing.
func TestDirectorWithoutRedis(t *testing.T) {
	be := sharedBackend(t)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &ownRedis{t: t, port: port}
	r.start()
	t.Cleanup(r.kill)
	routetest.HSet(t, r.addr(), "doorman:site:s1", map[string]string{"hosts": be.IMAPAddr})
	routetest.HSet(t, r.addr(), "doorman:user:alice", map[string]string{"password": "{PLAIN}secret", "proxy": "", "site": "s1"})
	p := startRedisProxy(t, r.addr(), "auth_cache_size: 100\nauth_penalty: no")
	res, c := imapLogin(t, p.addr, "alice", "secret") // loads the site, caches alice
	expectPrefix(t, res, "a OK")
	c.c.Close()

	r.kill()
	res, c = imapLogin(t, p.addr, "alice", "secret")
	expectPrefix(t, res, "a OK")
	c.c.Close()
	if n := p.logs.FilterMessageSnippet("using the ring's choice").Len(); n == 0 {
		t.Fatal("no log line for the assignment made without Redis")
	}
	if v := metricValue(t, string(p.srv.appendMetrics(nil)), `doorman_director_assignments_total{result="unstored"}`); v < 1 {
		t.Fatalf(`doorman_director_assignments_total{result="unstored"} = %d, want >= 1`, v)
	}
}
