package engine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"doorman/engine/testenv"
	"doorman/route/routetest"
)

// End-to-end tests: a real Dovecot backend and a real Redis, started on loopback ports,
// Doorman in between, and real clients (raw IMAP, curl, Python's imaplib).

var (
	backendOnce sync.Once
	backend     *testenv.Dovecot
	backendErr  error
)

// sharedBackend starts one Dovecot for the whole package: users alice, bob, carol, dave
// (password "secret" each) and the master user proxy/masterpw.
func sharedBackend(t *testing.T) *testenv.Dovecot {
	t.Helper()
	if err := testenv.Available(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("dovecot not installed: %v", err)
		}
		t.Fatalf("dovecot not installed: %v", err)
	}
	backendOnce.Do(func() {
		backend, backendErr = testenv.StartDovecot(testenv.DovecotOptions{
			Protocols: []string{"imap", "pop3", "submission", "lmtp", "sieve"},
			Users: []testenv.User{
				{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"},
				{Name: "carol", Password: "secret"}, {Name: "dave", Password: "secret"},
				{Name: "erin", Password: "secret"},
			},
			MasterUser: "proxy", MasterPass: "masterpw",
		})
	})
	if backendErr != nil {
		t.Fatalf("start dovecot: %v", backendErr)
	}
	return backend
}

// stopAtExit holds the stops of backends other tests share, run after the last test.
var stopAtExit []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, stop := range stopAtExit {
		stop()
	}
	if backend != nil {
		_ = backend.Stop()
	}
	os.Exit(code)
}

type proxy struct {
	srv  *Server
	addr string
	logs *observer.ObservedLogs
}

// startProxy runs Doorman on a free loopback port with the given passwd-file lines and
// extra YAML settings.
func startProxy(t *testing.T, passwd string, extra string) *proxy {
	t.Helper()
	return startProxyFor(t, "imap", passwd, extra)
}

// startProxyAt is startProxy on a given port.
func startProxyAt(t *testing.T, port int, passwd string) *proxy {
	t.Helper()
	return startProxyOn(t, port, "imap", passwd, "")
}

// startProxyFor is startProxy with one listener of the given protocol.
func startProxyFor(t *testing.T, protocol, passwd string, extra string) *proxy {
	t.Helper()
	return startProxyOn(t, 0, protocol, passwd, extra)
}

// startProxyOn is startProxyFor on a given port (0: a free one).
func startProxyOn(t *testing.T, port int, protocol, passwd string, extra string) *proxy {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "users.passwd"), []byte(passwd), 0o600); err != nil {
		t.Fatal(err)
	}
	if port == 0 {
		var err error
		if port, err = testenv.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	yml := fmt.Sprintf(`listeners:
  - {name: %s, protocol: %s, address: %q}
login_trusted_networks: [127.0.0.0/8]
auth_failure_delay: 200ms
%s
`, protocol, protocol, addr, extra)
	if !strings.Contains(extra, "passdb:") {
		yml += "passdb:\n  - {driver: passwd-file, path: users.passwd}\n"
	}
	p := startProxyYAML(t, dir, yml)
	p.addr = addr
	return p
}

// startProxyYAML runs Doorman on a configuration given whole; dir holds its files.
func startProxyYAML(t *testing.T, dir, yml string) *proxy {
	t.Helper()
	cfg, err := ParseConfig([]byte(yml), dir)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yml)
	}
	core, logs := observer.New(zap.DebugLevel)
	srv, err := New(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	})
	return &proxy{srv: srv, logs: logs}
}

// client is a line-level IMAP client for exact wire checks.
type client struct {
	t  *testing.T
	c  net.Conn
	r  *bufio.Reader
	gr string
}

func dial(t *testing.T, addr string, from string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, r: bufio.NewReaderSize(c, 64<<10)}
	cl.gr = cl.line(10 * time.Second)
	return cl
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) line(timeout time.Duration) string {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	return l
}

// until reads lines until the tagged reply for tag and returns them all.
func (c *client) until(tag string, timeout time.Duration) []string {
	c.t.Helper()
	var lines []string
	for {
		l := c.line(timeout)
		lines = append(lines, l)
		if strings.HasPrefix(l, tag+" ") {
			return lines
		}
	}
}

func last(lines []string) string { return lines[len(lines)-1] }

func expectPrefix(t *testing.T, got, want string) {
	t.Helper()
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got %q, want prefix %q", got, want)
	}
}

func passwdLine(user, pass, fields string) string {
	return fmt.Sprintf("%s:%s::::::%s\n", user, pass, fields)
}

func TestPasswordForwardingFromFile(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	c := dial(t, p.addr, "127.0.0.7")
	expectPrefix(t, c.gr, "* OK [CAPABILITY IMAP4rev1")
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK [CAPABILITY IMAP4rev1")
	c.send("b SELECT INBOX\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK [READ-WRITE]")
	c.send("c LOGOUT\r\n")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
	c.c.Close()
	// The backend saw the client's own address through the ID, not the proxy's.
	waitFor(t, func() bool {
		log, _ := be.Log()
		return strings.Contains(log, "user=<alice>") && strings.Contains(log, "rip=127.0.0.7")
	}, "backend log shows rip=127.0.0.7 for alice")
	waitFor(t, func() bool { return p.logs.FilterMessage("session ended").Len() == 1 }, "one session-end line")
	e := p.logs.FilterMessage("session ended").All()[0].ContextMap()
	if e["stage"] != "relay" || e["user"] != "alice" || e["session"] == "" {
		t.Fatalf("session end line: %v", e)
	}
	if e["in"].(int64) == 0 || e["out"].(int64) == 0 {
		t.Fatalf("byte counters empty: %v", e)
	}
}

func TestWrongPasswordAndUnknownUser(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice wrong\r\n")
	if got := last(c.until("a", 10*time.Second)); got != "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n" {
		t.Fatalf("wrong password: %q", got)
	}
	c.send("b LOGIN nobody secret\r\n")
	if got := last(c.until("b", 10*time.Second)); got != "b NO [AUTHENTICATIONFAILED] Authentication failed.\r\n" {
		t.Fatalf("unknown user: %q", got)
	}
	// The session is still usable after failures.
	c.send("c LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
	for _, e := range p.logs.All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, "wrong") {
				t.Fatalf("a password reached the log: %s=%q", k, s)
			}
		}
	}
}

func TestNoPasswordModeAndBackendRejects(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	p := startProxy(t, passwdLine("bob", "", "proxy nopassword host=127.0.0.1 port="+port), "")
	c := dial(t, p.addr, "")
	// Doorman accepts any password; the backend rejects the wrong one, and Dovecot's
	// rewrite hides its text.
	c.send("a LOGIN bob wrong\r\n")
	if got := last(c.until("a", 10*time.Second)); got != "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n" {
		t.Fatalf("backend rejection: %q", got)
	}
	c.send("b LOGIN bob secret\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
}

func TestMasterUserFromRedis(t *testing.T) {
	be := sharedBackend(t)
	addr, stop := routetest.StartRedis(t)
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	port := portOf(be.IMAPAddr)
	if err := rdb.HSet(ctx, "doorman:user:carol", "password", "{PLAIN}redispw", "proxy", "y",
		"host", "127.0.0.1", "port", port, "master", "proxy", "pass", "masterpw").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "doorman:user:dave", "password", "{PLAIN}secret", "proxy", "y",
		"host", "127.0.0.1", "port", port, "destuser", "dave*proxy", "pass", "masterpw").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "doorman:user:erin", "nopassword", "y", "proxy", "y",
		"host", "127.0.0.1", "port", port).Err(); err != nil {
		t.Fatal(err)
	}
	// The file knows alice only: carol, dave and erin come from Redis, the next passdb.
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port),
		fmt.Sprintf("passdb:\n  - {driver: passwd-file, path: users.passwd}\n  - {driver: redis, addrs: [%q]}\n", addr))

	// carol: Doorman checks her Redis password (not the backend's), then logs in through
	// the backend's master user with AUTHENTICATE PLAIN.
	c := dial(t, p.addr, "")
	c.send("a LOGIN carol redispw\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c.send("b SELECT INBOX\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")

	// dave: master user through destuser=user*master, the client using SASL-IR.
	d := dial(t, p.addr, "")
	ir := base64.StdEncoding.EncodeToString([]byte("\x00dave\x00secret"))
	d.send("a AUTHENTICATE PLAIN " + ir + "\r\n")
	expectPrefix(t, last(d.until("a", 10*time.Second)), "a OK")

	// erin: nopassword in Redis, password forwarded, checked by the backend.
	e := dial(t, p.addr, "")
	e.send("a LOGIN erin secret\r\n")
	expectPrefix(t, last(e.until("a", 10*time.Second)), "a OK")
}

func TestPipelinedAfterLogin(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\nb SELECT INBOX\r\nc NOOP\r\nd LOGOUT\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK [READ-WRITE]")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
	expectPrefix(t, last(c.until("d", 10*time.Second)), "d OK")
}

func TestBackendDown(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", fmt.Sprintf("proxy host=127.0.0.1 port=%d", port)),
		"login_proxy_timeout: 3s")
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\n")
	// Dovecot retries within login_proxy_timeout, then gives up with UNAVAILABLE.
	got := last(c.until("a", 3*time.Second+5*time.Second))
	if got != "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n" {
		t.Fatalf("backend down: %q", got)
	}
}

func TestRedisDown(t *testing.T) {
	addr, stop := routetest.StartRedis(t)
	stop() // a dead Redis: connection refused
	p := startProxy(t, "", fmt.Sprintf("passdb:\n  - {driver: redis, addrs: [%q]}\n", addr))
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\n")
	got := last(c.until("a", 10*time.Second))
	expectPrefix(t, got, "a NO [UNAVAILABLE] Temporary authentication failure.")
	c.send("b NOOP\r\n")
	expectPrefix(t, last(c.until("b", 5*time.Second)), "b OK")
}

func TestBigMessageRoundTrip(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("dave", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	c := dial(t, p.addr, "")
	c.send("a LOGIN dave secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c.send("m CREATE big\r\n")
	c.until("m", 10*time.Second)
	msg := bigMessage(5 << 20)
	c.send(fmt.Sprintf("b APPEND big {%d}\r\n", len(msg)))
	expectPrefix(t, c.line(10*time.Second), "+ ")
	c.send(string(msg) + "\r\n")
	expectPrefix(t, last(c.until("b", 30*time.Second)), "b OK")
	c.send("c SELECT big\r\n")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
	c.send("d FETCH 1 BODY.PEEK[]\r\n")
	head := c.line(30 * time.Second)
	var n int
	if _, err := fmt.Sscanf(head[strings.Index(head, "{"):], "{%d}", &n); err != nil || n != len(msg) {
		t.Fatalf("fetch header %q: size %d, want %d", head, n, len(msg))
	}
	got := make([]byte, n)
	_ = c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := ioReadFull(c.r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("fetched message differs from the appended one")
	}
	expectPrefix(t, last(c.until("d", 10*time.Second)), "d OK")
}

func TestCurlThroughProxy(t *testing.T) {
	be := sharedBackend(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl not installed: %v", err)
	}
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--url", "imap://"+p.addr+"/",
		"--user", "alice:secret").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "INBOX") {
		t.Fatalf("curl listed no INBOX:\n%s", out)
	}
	out, err = exec.Command("curl", "-sS", "--max-time", "20", "--url", "imap://"+p.addr+"/",
		"--user", "alice:nope").CombinedOutput()
	if err == nil {
		t.Fatalf("curl with a wrong password succeeded:\n%s", out)
	}
}

func TestPythonImaplibThroughProxy(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("carol", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)+" master=proxy pass=masterpw"), "")
	host, port, _ := net.SplitHostPort(p.addr)
	script := fmt.Sprintf(`
import imaplib
m = imaplib.IMAP4(%q, %s)
typ, _ = m.login("carol", "secret")
assert typ == "OK", typ
m.create("py")
m.append("py", None, None, b"Subject: hi\r\n\r\nhello from imaplib\r\n")
typ, data = m.select("py")
assert typ == "OK", (typ, data)
typ, data = m.fetch(data[0].decode(), "(BODY.PEEK[])")
assert b"hello from imaplib" in data[0][1], data
m.logout()
print("ok")
`, host, port)
	out, err := exec.Command("python3", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
}

func bigMessage(n int) []byte {
	var b bytes.Buffer
	b.WriteString("From: a@example.org\r\nSubject: big\r\n\r\n")
	raw := make([]byte, 57)
	for b.Len() < n-80 {
		_, _ = rand.Read(raw)
		b.WriteString(base64.StdEncoding.EncodeToString(raw))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

func ioReadFull(r *bufio.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for: %s", what)
}

// A backend that accepts and never greets: only a fake can stall mid-login. The login
// ends with UNAVAILABLE once proxy_timeout runs out, not never.
func TestBackendStallsAtGreeting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent, until the test ends
		}
	}()
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(ln.Addr().String())+" proxy_timeout=2"), "")
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\n")
	got := last(c.until("a", 2*time.Second+5*time.Second))
	if got != "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n" {
		t.Fatalf("stalled backend: %q", got)
	}
	waitFor(t, func() bool {
		return p.logs.FilterMessage("login failed").FilterFieldKey("reason").Len() == 1
	}, "a login failed line")
	reason := p.logs.FilterMessage("login failed").All()[0].ContextMap()["reason"].(string)
	if !strings.Contains(reason, "timed out") {
		t.Fatalf("reason %q does not say the login timed out", reason)
	}
}

func TestRefusalsFromThePassdb(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	p := startProxy(t,
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port)+
			passwdLine("local", "{PLAIN}secret", "")+
			passwdLine("gone", "{PLAIN}secret", "nologin nodelay reason=Moved.")+
			passwdLine("nohost", "{PLAIN}secret", "proxy"), "")
	c := dial(t, p.addr, "")
	// User names are looked up in lower case, as with Dovecot's auth_username_format=%Lu.
	c.send("a LOGIN ALICE secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")

	d := dial(t, p.addr, "")
	d.send("b LOGIN local secret\r\n")
	expectPrefix(t, last(d.until("b", 10*time.Second)), "b NO [CONTACTADMIN]")
	d.send("c LOGIN gone secret\r\n")
	if got := last(d.until("c", 10*time.Second)); got != "c NO [CONTACTADMIN] Moved.\r\n" {
		t.Fatalf("nologin: %q", got)
	}
	d.send("d LOGIN nohost secret\r\n")
	if got := last(d.until("d", 10*time.Second)); got != "d NO [UNAVAILABLE] Account is temporarily unavailable.\r\n" {
		t.Fatalf("proxy without host: %q", got)
	}
}

func TestPreLoginTimeoutAndLimits(t *testing.T) {
	p := startProxy(t, "", "login_timeout: 1s")
	c := dial(t, p.addr, "")
	if got := c.line(10 * time.Second); got != "* BYE Disconnected for inactivity.\r\n" {
		t.Fatalf("inactivity: %q", got)
	}
	waitFor(t, func() bool { return p.logs.FilterMessage("session ended").Len() == 1 }, "session end line")
	e := p.logs.FilterMessage("session ended").All()[0].ContextMap()
	if e["ended_by"] != "proxy" || e["stage"] != "auth" || e["reason"] != "inactivity timeout" {
		t.Fatalf("timeout end line: %v", e)
	}

	d := dial(t, p.addr, "")
	d.send("a FOO\r\nb BAR\r\nc BAZ\r\n")
	lines := []string{d.line(5 * time.Second), d.line(5 * time.Second), d.line(5 * time.Second)}
	if lines[2] != "* BYE Too many invalid IMAP commands.\r\n" {
		t.Fatalf("bad commands: %q", lines)
	}

	e2 := dial(t, p.addr, "")
	e2.send("a NOOP " + strings.Repeat("x", 20000))
	if got := e2.line(5 * time.Second); got != "* BYE Input buffer full, aborting\r\n" {
		t.Fatalf("long line: %q", got)
	}
}

// SIGHUP's work: Reload re-reads the passwd-file; a file that no longer parses keeps the
// old contents and the error is reported.
func TestReloadPasswdFile(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port), "")
	path := filepath.Join(p.srv.cfg.dir, "users.passwd")
	if err := os.WriteFile(path, []byte(passwdLine("alice", "{PLAIN}newpass", "proxy nopassword host=127.0.0.1 port="+port)+
		passwdLine("bob", "", "proxy nopassword host=127.0.0.1 port="+port)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Reload(); err == nil {
		t.Fatal("a file with nopassword next to a password reloaded without error")
	}
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\n") // the old contents still hold
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")

	if err := os.WriteFile(path, []byte(passwdLine("bob", "", "proxy nopassword host=127.0.0.1 port="+port)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	d := dial(t, p.addr, "")
	d.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(d.until("a", 10*time.Second)), "a NO [AUTHENTICATIONFAILED]")
	d.send("b LOGIN bob secret\r\n")
	expectPrefix(t, last(d.until("b", 10*time.Second)), "b OK")
}
