package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/engine/testenv"
	"doorman/route/routetest"
)

// The fleet, as an operator runs it: two Doorman processes (this test binary re-executed
// as the daemon) sharing one Redis, in front of two real Dovecot backends. A virtual site
// rewritten in Redis moves the new logins of its users on both processes within a second.

// TestMain lets the test binary be the daemon: DOORMAN_TEST_DAEMON=1 runs main's run().
func TestMain(m *testing.M) {
	if os.Getenv("DOORMAN_TEST_DAEMON") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// daemon is one Doorman process started by startDaemon; the test's cleanup sends it
// SIGTERM and waits (killing it after 15 s).
type daemon struct {
	cmd    *exec.Cmd
	log    string        // its log file
	exited chan struct{} // closed once the process has exited and cmd.ProcessState is set
}

// startDaemon runs one Doorman process on the given configuration (written to dir) until
// the test ends, and returns once it accepts connections on addr.
func startDaemon(t *testing.T, dir, yml, addr string) *daemon {
	t.Helper()
	conf := filepath.Join(dir, "doorman.yaml")
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: exec.Command(os.Args[0], "-c", conf), log: filepath.Join(dir, "doorman.log"), exited: make(chan struct{})}
	d.cmd.Env = append(os.Environ(), "DOORMAN_TEST_DAEMON=1")
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(d.log)
			t.Logf("doorman at %s:\n%s", addr, b)
		}
	})
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("doorman on %s did not come up: %v", addr, err)
		}
	}
}

// loginFrom logs alice in through addr from the client address from; the backend whose
// log shows that address (its ID x-originating-ip) is where the login went.
func loginFrom(t *testing.T, addr, from string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting from %s: %q %v", addr, l, err)
	}
	fmt.Fprintf(c, "a LOGIN alice secret\r\n")
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("login through %s: %v", addr, err)
		}
		if strings.HasPrefix(l, "a ") {
			if !strings.HasPrefix(l, "a OK") {
				t.Fatalf("login through %s from %s: %q", addr, from, l)
			}
			return
		}
	}
}

func servedBy(be *testenv.Dovecot, from string) bool {
	log, _ := be.Log()
	return strings.Contains(log, "rip="+from+",")
}

// whereServed waits (briefly: the log line may follow the OK) for one backend's log to
// show the login from the client address from.
func whereServed(t *testing.T, from string, backends ...*testenv.Dovecot) int {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for i, be := range backends {
			if servedBy(be, from) {
				return i
			}
		}
	}
	t.Fatalf("no backend logged the login from %s", from)
	return -1
}

func TestVsiteMoveOnTwoProcesses(t *testing.T) {
	users := []testenv.User{{Name: "alice", Password: "secret"}}
	a := testenv.MustStartDovecot(t, testenv.DovecotOptions{Users: users})
	b := testenv.MustStartDovecot(t, testenv.DovecotOptions{ListenIP: "127.0.0.71", Users: users})
	raddr, _ := routetest.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: raddr})
	defer rc.Close()
	ctx := context.Background()
	hostPort := func(addr string) (string, string) { h, p, _ := net.SplitHostPort(addr); return h, p }
	ah, ap := hostPort(a.IMAPAddr)
	bh, bp := hostPort(b.IMAPAddr)
	if err := rc.HSet(ctx, "doorman:user:alice", "password", "{PLAIN}secret", "vsite", "v1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, "doorman:vsite:v1", "host", ah, "port", ap).Err(); err != nil {
		t.Fatal(err)
	}
	var proxies []string
	for range 2 {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		startDaemon(t, t.TempDir(), fmt.Sprintf(`listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: redis, addrs: [%q]}
login_trusted_networks: [127.0.0.0/8]
shutdown_timeout: 1s
shutdown_spread: 1s
auth_cache_size: 1000
log: {level: warn, format: json}
`, addr, raddr), addr)
		proxies = append(proxies, addr)
	}
	// Both processes route alice through v1 to backend A.
	for i, p := range proxies {
		from := fmt.Sprintf("127.0.6.%d", i+1)
		loginFrom(t, p, from)
		if whereServed(t, from, a, b) != 0 {
			t.Fatalf("login from %s through process %d did not reach backend A", from, i)
		}
	}
	// Move the site, tell the fleet, and time the first login of each process that lands on B.
	if err := rc.HSet(ctx, "doorman:vsite:v1", "host", bh, "port", bp).Err(); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	if err := rc.Publish(ctx, "doorman:events", "vsite v1").Err(); err != nil {
		t.Fatal(err)
	}
	n := 10
	for i, p := range proxies {
		for {
			n++
			from := fmt.Sprintf("127.0.6.%d", n)
			loginFrom(t, p, from)
			took := time.Since(moved) // the login is done; where it went is read from the logs
			if whereServed(t, from, a, b) == 1 {
				t.Logf("process %d: new logins on backend B %v after the PUBLISH", i, took.Round(time.Millisecond))
				if took > time.Second {
					t.Fatalf("process %d took %v to follow the move", i, took)
				}
				break
			}
			if time.Since(moved) > time.Second {
				t.Fatalf("process %d still routes alice to backend A a second after the vsite moved", i)
			}
		}
	}
}
