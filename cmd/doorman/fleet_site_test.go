package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/engine/testenv"
	"doorman/route/routetest"
)

// Moves, site failover and restore, and the watchdog, as an operator sees them: two
// Doorman processes (this test binary re-executed as the daemon, see TestMain in
// fleet_test.go) sharing one Redis, real Dovecot backends standing for sites, and the
// real doormanctl. Which backend served a login is read from the backends' logs (the
// client address each login came from, passed on by Doorman as x-originating-ip).

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  error
)

// doormanctl builds the command once per test binary run.
func doormanctl(t *testing.T) string {
	t.Helper()
	ctlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "doormanctl-")
		if err != nil {
			ctlErr = err
			return
		}
		ctlPath = filepath.Join(dir, "doormanctl")
		out, err := exec.Command("go", "build", "-o", ctlPath, "doorman/tools/doormanctl").CombinedOutput()
		if err != nil {
			ctlErr = fmt.Errorf("go build doormanctl: %v\n%s", err, out)
		}
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	return ctlPath
}

func runCtl(t *testing.T, raddr string, args ...string) string {
	t.Helper()
	out, err := exec.Command(doormanctl(t), append([]string{"-redis", raddr}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("doormanctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// siteFleet is the fleet of these tests: Redis, backends, two Doorman processes.
type siteFleet struct {
	raddr    string
	rc       *redis.Client
	backends []*testenv.Dovecot
	proxies  []string
	n        int // client addresses used so far
	subnet   string
}

func siteUsers(names ...string) []testenv.User {
	var us []testenv.User
	for _, n := range names {
		us = append(us, testenv.User{Name: n, Password: "secret"})
	}
	return us
}

// startSiteFleet starts one backend per listen IP and Redis, runs setup (to write the
// records the proxies load at start), then two Doorman processes with extra appended to
// their configuration.
func startSiteFleet(t *testing.T, subnet string, users []testenv.User, ips []string, extra string, setup func(*siteFleet)) *siteFleet {
	t.Helper()
	f := &siteFleet{subnet: subnet}
	for _, ip := range ips {
		f.backends = append(f.backends, testenv.MustStartDovecot(t, testenv.DovecotOptions{ListenIP: ip, Users: users}))
	}
	f.raddr, _ = routetest.StartRedis(t)
	f.rc = redis.NewClient(&redis.Options{Addr: f.raddr})
	t.Cleanup(func() { f.rc.Close() })
	setup(f)
	for i := range 2 {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		startDaemon(t, t.TempDir(), fmt.Sprintf(`hostname: proxy%d
listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: redis, addrs: [%q]}
login_trusted_networks: [127.0.0.0/8]
shutdown_timeout: 1s
shutdown_spread: 1s
auth_cache_size: 1000
log: {level: info, format: json}
%s`, i+1, addr, f.raddr, extra), addr)
		f.proxies = append(f.proxies, addr)
	}
	return f
}

func (f *siteFleet) hset(t *testing.T, key string, kv ...any) {
	t.Helper()
	if err := f.rc.HSet(context.Background(), key, kv...).Err(); err != nil {
		t.Fatal(err)
	}
}

func (f *siteFleet) hash(key string) map[string]string {
	return f.rc.HGetAll(context.Background(), key).Val()
}

// login logs user in through proxy i from a new client address and returns that
// address and when the login completed.
func (f *siteFleet) login(t *testing.T, i int, user string) (string, time.Time) {
	t.Helper()
	f.n++
	from := fmt.Sprintf("%s.%d", f.subnet, f.n)
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", f.proxies[i])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(40 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting: %q %v", l, err)
	}
	fmt.Fprintf(c, "a LOGIN %s secret\r\n", user)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("login of %s through process %d: %v", user, i, err)
		}
		if strings.HasPrefix(l, "a ") {
			if !strings.HasPrefix(l, "a OK") {
				t.Fatalf("login of %s through process %d from %s: %q", user, i, from, l)
			}
			return from, time.Now()
		}
	}
}

// served waits for one backend's log to show the login from the client address from.
func (f *siteFleet) served(t *testing.T, from string) int {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for i, be := range f.backends {
			if log, _ := be.Log(); strings.Contains(log, "rip="+from+",") {
				return i
			}
		}
	}
	t.Fatalf("no backend logged the login from %s", from)
	return -1
}

func splitAddr(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// A move holds the user's new logins until delay_until, on either process, then sends
// them to the new backend.
func TestSiteMoveUser(t *testing.T) {
	f := startSiteFleet(t, "127.0.7", siteUsers("alice"), []string{"127.0.0.1", "127.0.0.72"}, "", func(f *siteFleet) {
		ah, ap := splitAddr(t, f.backends[0].IMAPAddr)
		f.hset(t, "doorman:user:alice", "password", "{PLAIN}secret", "proxy", "", "host", ah, "port", ap)
	})
	bh, bp := splitAddr(t, f.backends[1].IMAPAddr)
	for i := range f.proxies {
		if from, _ := f.login(t, i, "alice"); f.served(t, from) != 0 {
			t.Fatalf("alice through process %d not on backend A", i)
		}
	}
	out := runCtl(t, f.raddr, "move", "-host", bh, "-port", bp, "-delay", "3s", "alice")
	t.Logf("doormanctl: %s", strings.TrimSpace(out))
	du, err := strconv.ParseInt(f.hash("doorman:user:alice")["delay_until"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	until := time.Unix(du, 0)
	var wg sync.WaitGroup
	for i := range f.proxies {
		wg.Go(func() {
			from, done := f.login(t, i, "alice")
			if done.Before(until) {
				t.Errorf("process %d: alice's login completed %v before delay_until", i, until.Sub(done))
			}
			if done.After(until.Add(5 * time.Second)) {
				t.Errorf("process %d: alice's login completed %v after delay_until", i, done.Sub(until))
			}
			if be := f.served(t, from); be != 1 {
				t.Errorf("process %d: alice's login after the move went to backend %d, not B", i, be)
			}
			t.Logf("process %d: held until %v after delay_until, then on backend B", i, done.Sub(until).Round(time.Millisecond))
		})
	}
	wg.Wait()
}

// Failover of site A sends its users' new logins to the fallback sites, spread by weight;
// restore brings the vsites back one at a time.
func TestSiteFailoverRestore(t *testing.T) {
	names := []string{"u0", "u1", "u2", "u3", "u4", "u5"}
	f := startSiteFleet(t, "127.0.8", siteUsers(names...), []string{"127.0.0.1", "127.0.0.72", "127.0.0.73"}, "", func(f *siteFleet) {
		ah, ap := splitAddr(t, f.backends[0].IMAPAddr)
		f.hset(t, "doorman:site:A", "hosts", f.backends[0].IMAPAddr, "fallback", "B:2,C:1")
		f.hset(t, "doorman:site:B", "hosts", f.backends[1].IMAPAddr)
		f.hset(t, "doorman:site:C", "hosts", f.backends[2].IMAPAddr)
		for i, u := range names {
			f.hset(t, fmt.Sprintf("doorman:vsite:v%d", i), "host", ah, "port", ap, "site", "A")
			f.hset(t, "doorman:user:"+u, "password", "{PLAIN}secret", "vsite", fmt.Sprintf("v%d", i))
		}
	})
	for i, u := range names {
		if from, _ := f.login(t, i%2, u); f.served(t, from) != 0 {
			t.Fatalf("%s not on site A before the failover", u)
		}
	}

	out := runCtl(t, f.raddr, "failover", "-site", "A")
	t.Logf("doormanctl failover:\n%s", out)
	perBackend := map[int]int{}
	for i, u := range names {
		from, _ := f.login(t, i%2, u)
		perBackend[f.served(t, from)]++
	}
	if perBackend[1] != 4 || perBackend[2] != 2 {
		t.Fatalf("logins after the failover per backend: %v; want 4 on B and 2 on C (weights 2:1)", perBackend)
	}

	// Restore with a pause: watch the vsites come home one at a time.
	const pause = 700 * time.Millisecond
	cmd := exec.Command(doormanctl(t), "-redis", f.raddr, "restore", "-site", "A", "-pause", pause.String(), "-delay", "1s")
	var outb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &outb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var times []time.Time
	var order []string
	deadline := time.Now().Add(30 * time.Second)
	for len(order) < len(names) {
		if time.Now().After(deadline) {
			t.Fatalf("restored only %v\n%s", order, outb.String())
		}
		home := 0
		for i := range names {
			id := fmt.Sprintf("v%d", i)
			if f.hash("doorman:vsite:" + id)["site"] == "A" {
				home++
				if len(order) < home && !slices.Contains(order, id) {
					order = append(order, id)
					times = append(times, time.Now())
				}
			}
		}
		if home > len(order) {
			t.Fatalf("%d vsites home at once (seen one by one: %v)", home, order)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-exited; err != nil {
		t.Fatalf("restore: %v\n%s", err, outb.String())
	}
	t.Logf("doormanctl restore:\n%s", outb.String())
	if strings.Join(order, ",") != "v0,v1,v2,v3,v4,v5" {
		t.Fatalf("restored in the order %v", order)
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < pause-100*time.Millisecond {
			t.Fatalf("%s and %s came back %v apart; the pause is %v", order[i-1], order[i], gap, pause)
		}
	}
	// Back home: new logins (after the vsites' short delay_until) go to site A again.
	for i, u := range names {
		if from, _ := f.login(t, i%2, u); f.served(t, from) != 0 {
			t.Fatalf("%s not back on site A after the restore", u)
		}
	}
	if s := f.hash("doorman:site:A"); s["state"] != "up" {
		t.Fatalf("site A after the restore: %v", s)
	}
}

// The watchdog: site A's backend stopped for less than down_after is not failed over;
// stopped longer, it is; back for up_after, it is restored one vsite at a time.
func TestSiteWatchdog(t *testing.T) {
	const (
		downAfter = 4 * time.Second
		upAfter   = time.Second
		pause     = 500 * time.Millisecond
	)
	names := []string{"u0", "u1"}
	users := siteUsers(names...)
	f := startSiteFleet(t, "127.0.9", users, []string{"127.0.0.74", "127.0.0.75"}, fmt.Sprintf(
		"fleet: {watchdog: {enabled: true, interval: 200ms, down_after: %v, up_after: %v, restore_pause: %v, check_timeout: 500ms}}\n",
		downAfter, upAfter, pause), func(f *siteFleet) {
		ah, ap := splitAddr(t, f.backends[0].IMAPAddr)
		f.hset(t, "doorman:site:A", "hosts", f.backends[0].IMAPAddr, "fallback", "B")
		f.hset(t, "doorman:site:B", "hosts", f.backends[1].IMAPAddr)
		for i, u := range names {
			f.hset(t, fmt.Sprintf("doorman:vsite:v%d", i), "host", ah, "port", ap, "site", "A")
			f.hset(t, "doorman:user:"+u, "password", "{PLAIN}secret", "vsite", fmt.Sprintf("v%d", i))
		}
	})
	ah, ap := splitAddr(t, f.backends[0].IMAPAddr)
	port, _ := strconv.Atoi(ap)
	restartA := func() {
		f.backends[0] = testenv.MustStartDovecot(t, testenv.DovecotOptions{ListenIP: ah, IMAPPort: port, Users: users})
	}
	wait := func(d time.Duration, what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("not within %v: %s", d, what)
			}
		}
	}
	siteA := func() map[string]string { return f.hash("doorman:site:A") }

	// A short outage: seen (down_since), but no failover.
	start := time.Now()
	if err := f.backends[0].Stop(); err != nil {
		t.Fatal(err)
	}
	wait(5*time.Second, "the watchdog sees A down", func() bool { return siteA()["down_since"] != "" })
	restartA()
	short := time.Since(start)
	if short > downAfter-time.Second {
		t.Fatalf("restarting Dovecot took %v: too close to down_after %v for this test", short, downAfter)
	}
	wait(5*time.Second, "the watchdog sees A back", func() bool { return siteA()["down_since"] == "" })
	time.Sleep(time.Until(start.Add(downAfter + time.Second)))
	if s := siteA(); s["state"] == "failed" || f.hash("doorman:vsite:v0")["site"] != "A" {
		t.Fatalf("an outage of %v (down_after %v) failed A over: %v", short, downAfter, s)
	}
	t.Logf("an outage of %v: not failed over", short.Round(time.Millisecond))

	// A long one: failed over after down_after; new logins go to site B.
	start = time.Now()
	if err := f.backends[0].Stop(); err != nil {
		t.Fatal(err)
	}
	wait(downAfter+15*time.Second, "A failed over", func() bool { return siteA()["state"] == "failed" })
	took := time.Since(start)
	if took < downAfter {
		t.Fatalf("failed over %v after the backend stopped; down_after is %v", took, downAfter)
	}
	t.Logf("failed over %v after the backend stopped (down_after %v)", took.Round(time.Millisecond), downAfter)
	for i, u := range names {
		if from, _ := f.login(t, i, u); f.served(t, from) != 1 {
			t.Fatalf("%s not on site B after the failover", u)
		}
	}

	// Back: restored after up_after, one vsite at a time.
	restartA()
	back := time.Now()
	var times []time.Time
	wait(upAfter+20*time.Second, "both vsites home", func() bool {
		home := 0
		for i := range names {
			if f.hash(fmt.Sprintf("doorman:vsite:v%d", i))["site"] == "A" {
				home++
			}
		}
		if home > len(times)+1 {
			t.Fatalf("%d vsites came home at once", home)
		}
		for len(times) < home {
			times = append(times, time.Now())
		}
		return home == len(names)
	})
	if d := times[0].Sub(back); d < upAfter {
		t.Fatalf("the first vsite came home %v after A was back; up_after is %v", d, upAfter)
	}
	if gap := times[1].Sub(times[0]); gap < pause-100*time.Millisecond {
		t.Fatalf("the vsites came home %v apart; restore_pause is %v", gap, pause)
	}
	wait(5*time.Second, "A up", func() bool { return siteA()["state"] == "up" })
	// The restored vsites hold new logins for 31 s (delay_until); drop that to see where
	// the logins go now.
	for i := range names {
		id := fmt.Sprintf("v%d", i)
		f.rc.HDel(context.Background(), "doorman:vsite:"+id, "delay_until")
		f.rc.Publish(context.Background(), "doorman:events", "vsite "+id)
	}
	wait(5*time.Second, "logins on A again", func() bool {
		from, _ := f.login(t, 0, "u0")
		return f.served(t, from) == 0
	})
}
