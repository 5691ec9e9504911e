package engine

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"doorman/engine/testenv"
	"doorman/route/routetest"
)

// Routing at ISP scale on Redis: virtual sites, the auth cache, pub/sub invalidation on
// several proxy hosts at once, Redis outages, delay_until and the shared auth penalty.
// Real Redis, real Dovecot.

// startRedisProxy runs Doorman with one redis passdb; extra is more YAML.
func startRedisProxy(t *testing.T, redisAddr, extra string) *proxy {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	yml := fmt.Sprintf(`listeners:
  - {name: imap, protocol: imap, address: %q}
auth_failure_delay: 200ms
login_proxy_max_reconnects: 0
passdb:
  - {driver: redis, addrs: [%q]}
%s
`, addr, redisAddr, extra)
	p := startProxyYAML(t, t.TempDir(), yml)
	p.addr = addr
	return p
}

// imapLogin logs in and returns the tagged reply and the connection.
func imapLogin(t *testing.T, addr, user, pass string) (string, *client) {
	t.Helper()
	c := dial(t, addr, "")
	c.send(fmt.Sprintf("a LOGIN %s %s\r\n", user, pass))
	return last(c.until("a", 20*time.Second)), c
}

// onSecondBackend reports whether a logged-in connection reached the backend that has
// the mailbox OnB2.
func onSecondBackend(c *client) bool {
	c.send("m LIST \"\" OnB2\r\n")
	lines := c.until("m", 10*time.Second)
	return len(lines) > 1 && strings.HasPrefix(lines[0], "* LIST")
}

// secondBackend starts another Dovecot, with alice, and gives her the mailbox OnB2 there.
func secondBackend(t *testing.T) *testenv.Dovecot {
	t.Helper()
	be2, err := testenv.StartDovecot(testenv.DovecotOptions{Users: []testenv.User{{Name: "alice", Password: "secret"}}})
	if err != nil {
		t.Fatalf("second dovecot: %v", err)
	}
	t.Cleanup(func() { _ = be2.Stop() })
	c := dial(t, be2.IMAPAddr, "")
	c.send("a LOGIN alice secret\r\nb CREATE OnB2\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
	return be2
}

func TestRedisVsiteMoveOnTwoServers(t *testing.T) {
	be := sharedBackend(t)
	be2 := secondBackend(t)
	raddr, _ := routetest.StartRedis(t)
	routetest.HSet(t, raddr, "doorman:vsite:v1", map[string]string{"host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	routetest.HSet(t, raddr, "doorman:user:alice", map[string]string{"password": "{PLAIN}secret", "vsite": "v1"})
	routetest.HSet(t, raddr, "doorman:user:bob", map[string]string{"password": "{PLAIN}secret", "vsite": "gone"})
	// The cache is on: a vsite move must reach cached users too.
	extra := "login_trusted_networks: [127.0.0.0/8]\nauth_cache_size: 1000\n"
	servers := []*proxy{startRedisProxy(t, raddr, extra), startRedisProxy(t, raddr, extra)}

	for i, p := range servers {
		got, c := imapLogin(t, p.addr, "alice", "secret")
		expectPrefix(t, got, "a OK")
		if onSecondBackend(c) {
			t.Fatalf("server %d: alice on the second backend before the move", i)
		}
	}
	// A vsite Doorman does not know: a temporary failure, and the reason in the log.
	got, _ := imapLogin(t, servers[0].addr, "bob", "secret")
	expectPrefix(t, got, "a NO [UNAVAILABLE]")
	waitFor(t, func() bool {
		return servers[0].logs.FilterMessage("login failed").FilterFieldKey("reason").Len() > 0 &&
			strings.Contains(fmt.Sprint(servers[0].logs.FilterMessage("login failed").All()[0].ContextMap()["reason"]), `unknown vsite "gone"`)
	}, "a log line naming the unknown vsite")

	// Move the site: one HSET, one PUBLISH. Both servers send new logins to the new place.
	routetest.HSet(t, raddr, "doorman:vsite:v1", map[string]string{"port": portOf(be2.IMAPAddr)})
	moved := time.Now()
	routetest.Do(t, raddr, "PUBLISH", "doorman:events", "vsite v1")
	for i, p := range servers {
		for {
			got, c := imapLogin(t, p.addr, "alice", "secret")
			expectPrefix(t, got, "a OK")
			if onSecondBackend(c) {
				break
			}
			if time.Since(moved) > 2*time.Second {
				t.Fatalf("server %d: alice not moved %v after the PUBLISH", i, time.Since(moved))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	took := time.Since(moved)
	t.Logf("both servers route alice to the moved vsite %v after the PUBLISH", took)
	if took > time.Second {
		t.Fatalf("move took %v, want < 1s", took)
	}
}

func TestRedisCacheInvalidationOnTwoServers(t *testing.T) {
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	routetest.HSet(t, raddr, "doorman:vsite:v1", map[string]string{"host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	routetest.HSet(t, raddr, "doorman:user:bob", map[string]string{"password": "{PLAIN}secret", "vsite": "v1"})
	extra := "login_trusted_networks: [127.0.0.0/8]\nauth_cache_size: 10K\n"
	servers := []*proxy{startRedisProxy(t, raddr, extra), startRedisProxy(t, raddr, extra)}
	for _, p := range servers {
		got, _ := imapLogin(t, p.addr, "bob", "secret")
		expectPrefix(t, got, "a OK")
	}
	// The password changes in Redis; both caches still hold the old one.
	routetest.HSet(t, raddr, "doorman:user:bob", map[string]string{"password": "{PLAIN}changed"})
	for i, p := range servers {
		got, _ := imapLogin(t, p.addr, "bob", "secret")
		if !strings.HasPrefix(got, "a OK") {
			t.Fatalf("server %d: bob not served from the auth cache: %q", i, got)
		}
	}
	published := time.Now()
	routetest.Do(t, raddr, "PUBLISH", "doorman:events", "user bob")
	for i, p := range servers {
		for {
			got, _ := imapLogin(t, p.addr, "bob", "secret")
			if strings.HasPrefix(got, "a NO [AUTHENTICATIONFAILED]") {
				break
			}
			if time.Since(published) > 3*time.Second {
				t.Fatalf("server %d: old password still accepted %v after \"user bob\": %q", i, time.Since(published), got)
			}
		}
	}
	t.Logf("invalidation reached both servers within %v", time.Since(published))
}

// ownRedis runs redis-server on a given port so the test can stall, kill and restart it.
type ownRedis struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func (r *ownRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *ownRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.t.TempDir(), "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(r.cmd, r.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr(), time.Second)
		if err == nil {
			c.Close()
			routetest.Do(r.t, r.addr(), "PING")
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on %s did not start", r.addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *ownRedis) kill() {
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGCONT)
		_ = r.cmd.Process.Kill()
		<-r.done
		r.cmd = nil
	}
}

func TestRedisOutageAndRecovery(t *testing.T) {
	be := sharedBackend(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed")
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &ownRedis{t: t, port: port}
	r.start()
	t.Cleanup(r.kill)
	seed := func() {
		routetest.HSet(t, r.addr(), "doorman:vsite:v1", map[string]string{"host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
		for _, u := range []string{"alice", "carol"} {
			routetest.HSet(t, r.addr(), "doorman:user:"+u, map[string]string{"password": "{PLAIN}secret", "vsite": "v1"})
		}
	}
	seed()
	extra := "login_trusted_networks: [127.0.0.0/8]\nauth_cache_size: 1000\n"
	servers := []*proxy{startRedisProxy(t, r.addr(), extra), startRedisProxy(t, r.addr(), extra)}
	for _, p := range servers {
		got, _ := imapLogin(t, p.addr, "alice", "secret") // now cached
		expectPrefix(t, got, "a OK")
	}

	outage := func(what string) {
		t.Helper()
		for i, p := range servers {
			got, _ := imapLogin(t, p.addr, "alice", "secret")
			if !strings.HasPrefix(got, "a OK") {
				t.Fatalf("%s, server %d: cached alice: %q", what, i, got)
			}
			start := time.Now()
			got, _ = imapLogin(t, p.addr, "carol", "secret")
			took := time.Since(start)
			t.Logf("%s, server %d: uncached login answered in %v", what, i, took)
			expectPrefix(t, got, "a NO [UNAVAILABLE]")
			if took > 1500*time.Millisecond {
				t.Fatalf("%s: the temporary failure took %v", what, took)
			}
		}
	}

	// A stalled Redis (SIGSTOP): connections are accepted, nothing is answered.
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	outage("Redis stalled")
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	// A dead Redis.
	r.kill()
	outage("Redis down")

	// Back on the same port, empty (no persistence): provisioning writes the data again.
	r.start()
	seed()
	// Both subscribers come back by themselves.
	waitFor(t, func() bool {
		n := routetest.Do(t, r.addr(), "PUBSUB", "NUMSUB", "doorman:events")
		return len(n) == 2 && n[1] == "2"
	}, "both servers resubscribed to doorman:events")
	routetest.Do(t, r.addr(), "PUBLISH", "doorman:events", "flush")
	for i, p := range servers {
		waitFor(t, func() bool {
			got, _ := imapLogin(t, p.addr, "carol", "secret")
			return strings.HasPrefix(got, "a OK")
		}, fmt.Sprintf("server %d: carol logs in after Redis is back", i))
	}
}

func TestRedisDelayUntil(t *testing.T) {
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	now := time.Now()
	routetest.HSet(t, raddr, "doorman:user:dave", map[string]string{"password": "{PLAIN}secret", "proxy": "",
		"host": "127.0.0.1", "port": portOf(be.IMAPAddr), "delay_until": strconv.FormatInt(now.Unix()+2, 10)})
	routetest.HSet(t, raddr, "doorman:user:erin", map[string]string{"password": "{PLAIN}secret", "proxy": "",
		"host": "127.0.0.1", "port": portOf(be.IMAPAddr), "delay_until": strconv.FormatInt(now.Unix()+400, 10)})
	p := startRedisProxy(t, raddr, "login_trusted_networks: [127.0.0.0/8]\n")

	got, _ := imapLogin(t, p.addr, "dave", "secret")
	held := time.Since(now)
	t.Logf("delay_until=now+2 held the login %v", held)
	expectPrefix(t, got, "a OK")
	// The timestamp has whole seconds: the hold ends between 1 and 2 s from now.
	if held < time.Second || held > 3*time.Second {
		t.Fatalf("held %v, want 1..2 s", held)
	}
	// More than 300 s ahead: a temporary failure, at once.
	start := time.Now()
	got, _ = imapLogin(t, p.addr, "erin", "secret")
	expectPrefix(t, got, "a NO [UNAVAILABLE]")
	if time.Since(start) > time.Second {
		t.Fatalf("delay_until too far: answered after %v", time.Since(start))
	}
}

func TestDelayUntilWait(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	last := func(n int) int { return n - 1 }
	for _, tc := range []struct {
		until  int64
		jitter time.Duration
		want   time.Duration
		fail   bool
	}{
		{1_700_000_010, 0, 10 * time.Second, false},
		{1_700_000_010, 5 * time.Second, 14 * time.Second, false}, // + random 0..N-1 s
		{1_699_999_000, 0, -1000 * time.Second, false},            // in the past: no wait
		{1_700_000_300, 0, 300 * time.Second, false},
		{1_700_000_290, 60 * time.Second, 300 * time.Second, false}, // randomness capped at 300 s
		{1_700_000_301, 0, 0, true},
	} {
		got, err := delayUntilWait(time.Unix(tc.until, 0), tc.jitter, now, last)
		if (err != nil) != tc.fail || (!tc.fail && got != tc.want) {
			t.Errorf("delay_until=%d+%v: %v, %v; want %v (fail %v)", tc.until, tc.jitter, got, err, tc.want, tc.fail)
		}
	}
}

func TestRedisAuthPenaltyAcrossServers(t *testing.T) {
	be := sharedBackend(t)
	raddr, _ := routetest.StartRedis(t)
	routetest.HSet(t, raddr, "doorman:user:alice", map[string]string{"password": "{PLAIN}secret", "proxy": "",
		"host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	// No login_trusted_networks: 127.0.0.1 is penalized like anyone.
	a, b := startRedisProxy(t, raddr, ""), startRedisProxy(t, raddr, "")
	key := "doorman:penalty:127.0.0.1"

	timed := func(p *proxy, pass, want string) time.Duration {
		t.Helper()
		start := time.Now()
		got, _ := imapLogin(t, p.addr, "alice", pass)
		took := time.Since(start)
		expectPrefix(t, got, want)
		return took
	}
	// First failure: only the failure delay.
	if took := timed(a, "wrong", "a NO [AUTHENTICATIONFAILED]"); took > 2*time.Second {
		t.Fatalf("first failure took %v", took)
	}
	// The second, on the other server, waits the 4 s the first one earned.
	took := timed(b, "wrong", "a NO [AUTHENTICATIONFAILED]")
	t.Logf("second failure (other server) answered after %v", took)
	if took < 3800*time.Millisecond {
		t.Fatalf("second failure took %v, want ≥ 4 s", took)
	}
	if n := routetest.Do(t, raddr, "GET", key); n[0] != "2" {
		t.Fatalf("penalty counter %q, want 2", n)
	}
	// Two failures: 8 s, even for the right password; success clears the counter.
	took = timed(a, "secret", "a OK")
	t.Logf("good login after two failures answered after %v", took)
	if took < 7800*time.Millisecond {
		t.Fatalf("login after two failures took %v, want ≥ 8 s", took)
	}
	if n := routetest.Do(t, raddr, "EXISTS", key); n[0] != "0" {
		t.Fatalf("penalty not cleared by a good login: EXISTS %v", n)
	}
	if took := timed(b, "secret", "a OK"); took > 2*time.Second {
		t.Fatalf("login after the clear took %v", took)
	}
}

func TestRedisRoutingConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "users"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const listen = "listeners:\n  - {name: imap, protocol: imap, address: \"127.0.0.1:1143\"}\n"
	cfg, err := ParseConfig([]byte(listen+"passdb:\n  - {driver: redis, addrs: [\"127.0.0.1:6379\"]}\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AuthCacheSize != "0" || cfg.AuthCacheTTL != Duration(time.Hour) || cfg.AuthCacheNegativeTTL != Duration(time.Hour) ||
		cfg.VsiteReloadInterval != Duration(time.Minute) || !*cfg.AuthPenalty {
		t.Fatalf("defaults with a redis passdb: %+v", cfg)
	}
	cfg, err = ParseConfig([]byte(listen+"passdb:\n  - {driver: passwd-file, path: users}\nauth_cache_size: 10M\nauth_cache_ttl: 5m\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if *cfg.AuthPenalty || cfg.AuthCacheSize != "10M" || cfg.AuthCacheTTL != Duration(5*time.Minute) {
		t.Fatalf("passwd-file only: %+v", cfg)
	}
	_, err = ParseConfig([]byte(listen+"passdb:\n  - {driver: passwd-file, path: users}\nauth_cache_size: 10X\nauth_penalty: yes\nvsite_reload_interval: -1s\n"), dir)
	for _, want := range []string{"auth_cache_size: invalid", "auth_penalty: needs a redis passdb", "vsite_reload_interval: must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want it to contain %q", err, want)
		}
	}
}
