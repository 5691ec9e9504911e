package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"doorman/engine/testenv"
	"doorman/route/routetest"
)

// Fleet-wide kicks as an operator runs them: two Doorman processes sharing one Redis in
// front of a real Dovecot, and the doormanctl binary. A kick of one user ends its
// sessions on both processes within a second and leaves the others alone; doormanctl
// sessions lists both processes' sessions; a process killed outright drops out of the
// view once its records expire.

// kickConn is one logged-in IMAP connection through Doorman.
type kickConn struct {
	name string
	c    net.Conn
	r    *bufio.Reader
}

func kickLogin(t *testing.T, addr, user, name string) *kickConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	k := &kickConn{name: name, c: c, r: bufio.NewReader(c)}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if l, err := k.r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("%s: greeting %q %v", name, l, err)
	}
	fmt.Fprintf(c, "a LOGIN %s secret\r\n", user)
	if l := k.tagged(t, "a"); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("%s: login: %q", name, l)
	}
	_ = c.SetDeadline(time.Time{})
	return k
}

func (k *kickConn) tagged(t *testing.T, tag string) string {
	t.Helper()
	for {
		l, err := k.r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		if strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
}

// alive says whether the connection still answers a NOOP.
func (k *kickConn) alive(t *testing.T) bool {
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	defer k.c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(k.c, "n NOOP\r\n"); err != nil {
		return false
	}
	for {
		l, err := k.r.ReadString('\n')
		if err != nil {
			return false
		}
		if strings.HasPrefix(l, "n ") {
			return strings.HasPrefix(l, "n OK")
		}
	}
}

// eof reads until the connection ends and sends the time it saw that (or a zero time if
// it was still open after the deadline).
func (k *kickConn) eof(deadline time.Time) <-chan time.Time {
	ch := make(chan time.Time, 1)
	_ = k.c.SetReadDeadline(deadline)
	go func() {
		for {
			if _, err := k.r.ReadString('\n'); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					ch <- time.Time{}
				} else {
					ch <- time.Now()
				}
				return
			}
		}
	}()
	return ch
}

// buildDoormanctl builds tools/doormanctl once into dir.
func buildDoormanctl(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "doormanctl")
	out, err := exec.Command("go", "build", "-o", bin, "doorman/tools/doormanctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go build doormanctl: %v\n%s", err, out)
	}
	return bin
}

type ctlSession struct {
	Host, ID, User, Backend string
}

func TestFleetKickOnTwoProcesses(t *testing.T) {
	be := testenv.MustStartDovecot(t, testenv.DovecotOptions{Users: []testenv.User{
		{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"}}})
	raddr, _ := routetest.StartRedis(t)
	host, port, _ := net.SplitHostPort(be.IMAPAddr)
	for _, u := range []string{"alice", "bob"} {
		routetest.HSet(t, raddr, "doorman:user:"+u, map[string]string{"password": "{PLAIN}secret", "proxy": "", "host": host, "port": port})
	}
	ctlBin := buildDoormanctl(t, t.TempDir())
	ctl := func(args ...string) (string, error) {
		out, err := exec.Command(ctlBin, append([]string{"-redis", raddr}, args...)...).CombinedOutput()
		return string(out), err
	}

	const sessionTTL = 2 * time.Second
	var addrs []string
	var procs []*daemon
	for i := range 2 {
		p, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		procs = append(procs, startDaemon(t, t.TempDir(), fmt.Sprintf(`hostname: d%d
listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: redis, addrs: [%q]}
login_trusted_networks: [127.0.0.0/8]
shutdown_timeout: 1s
shutdown_spread: 1s
fleet: {refresh_interval: 1s, session_ttl: %s}
log: {level: info, format: json}
`, i+1, addr, raddr, sessionTTL), addr))
		addrs = append(addrs, addr)
	}
	var alice, bob []*kickConn
	for i, addr := range addrs {
		alice = append(alice, kickLogin(t, addr, "alice", fmt.Sprintf("alice@d%d", i+1)))
		bob = append(bob, kickLogin(t, addr, "bob", fmt.Sprintf("bob@d%d", i+1)))
	}
	alice = append(alice, kickLogin(t, addrs[1], "alice", "alice@d2#2"))

	// doormanctl sessions shows the five sessions, from both hosts, with users and backends.
	var list []ctlSession
	listed := func() map[string]int {
		t.Helper()
		out, err := ctl("sessions", "-json")
		if err != nil {
			t.Fatalf("doormanctl sessions -json: %v\n%s", err, out)
		}
		list = nil
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("doormanctl sessions -json: %v\n%s", err, out)
		}
		m := map[string]int{}
		for _, s := range list {
			if s.Backend != be.IMAPAddr {
				t.Fatalf("session %+v: backend is not %s", s, be.IMAPAddr)
			}
			m[s.Host+" "+s.User]++
		}
		return m
	}
	want := "map[d1 alice:1 d1 bob:1 d2 alice:2 d2 bob:1]"
	for deadline := time.Now().Add(10 * time.Second); fmt.Sprint(listed()) != want; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("doormanctl sessions: %v, want %s", listed(), want)
		}
	}
	out, err := ctl("sessions")
	if err != nil {
		t.Fatalf("doormanctl sessions: %v\n%s", err, out)
	}
	for _, s := range list {
		if !strings.Contains(out, s.ID) {
			t.Fatalf("the table lacks %s:\n%s", s.ID, out)
		}
	}
	if !strings.Contains(out, "5 sessions") || strings.Index(out, "d1 ") > strings.Index(out, "d2 ") {
		t.Fatalf("doormanctl sessions:\n%s", out)
	}

	// Kick alice across the fleet, and time her connections' ends on both processes.
	var ends []<-chan time.Time
	for _, k := range alice {
		ends = append(ends, k.eof(time.Now().Add(15*time.Second)))
	}
	kicked := time.Now()
	out, err = ctl("kick", "-user", "alice")
	if err != nil {
		t.Fatalf("doormanctl kick: %v\n%s", err, out)
	}
	if !strings.Contains(out, "received by 2 hosts") {
		t.Fatalf("doormanctl kick: %s", out)
	}
	var slowest time.Duration
	for i, ch := range ends {
		at := <-ch
		if at.IsZero() {
			t.Fatalf("%s still open 15s after the kick", alice[i].name)
		}
		slowest = max(slowest, at.Sub(kicked))
	}
	// Measured from the start of the doormanctl process (its start-up included) to the
	// last of the three connections seeing the end.
	t.Logf("alice's 3 sessions on 2 processes ended within %v of running doormanctl kick", slowest.Round(time.Millisecond))
	if slowest > time.Second {
		t.Fatalf("the kick took %v, want < 1s", slowest)
	}
	for _, k := range bob {
		if !k.alive(t) {
			t.Fatalf("%s ended with alice's kick", k.name)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); fmt.Sprint(listed()) != "map[d1 bob:1 d2 bob:1]"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after the kick, doormanctl sessions: %v", listed())
		}
	}

	// A process killed outright: its records vanish once they expire.
	if err := procs[1].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	for deadline := time.Now().Add(10 * time.Second); fmt.Sprint(listed()) != "map[d1 bob:1]"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after SIGKILL of d2, doormanctl sessions: %v", listed())
		}
	}
	gone := time.Since(killedAt)
	t.Logf("d2's records vanished %v after SIGKILL (session_ttl %v)", gone.Round(time.Millisecond), sessionTTL)
	if gone > sessionTTL+time.Second {
		t.Fatalf("d2's records outlived session_ttl: %v", gone)
	}
	if !bob[0].alive(t) {
		t.Fatal("bob's session on d1 ended")
	}
}
