package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"doorman/engine/testenv"
)

// exampleCopy copies the example configuration to a temporary folder, with the test
// certificates `make run` makes (tools/devcert) in its tls/ folder.
func exampleCopy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"doorman.yaml", "users.passwd"} {
		b, err := os.ReadFile(filepath.Join("example", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := testenv.NewCA(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue("doorman", "localhost", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "doorman.yaml")
}

func TestCheckExampleConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-t", "-c", exampleCopy(t)}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "is valid") {
		t.Fatalf("output: %q", out.String())
	}
}

func TestCheckReportsEveryError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	yml := "listeners:\n  - {name: imap, protocol: imap4, address: \"127.0.0.1\"}\npassdb:\n  - {driver: passwd-file, path: missing.passwd}\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-t", "-c", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{"listeners[0].protocol", "listeners[0].address", "passdb[0].path"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("%q missing from: %s", want, errOut.String())
		}
	}
}

// imapConn is a line-level IMAP client for the signal tests.
type imapConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialIMAPFrom(t *testing.T, addr, from string) (*imapConn, string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ic := &imapConn{t: t, c: c, r: bufio.NewReader(c)}
	return ic, ic.line()
}

func (ic *imapConn) line() string {
	ic.t.Helper()
	_ = ic.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := ic.r.ReadString('\n')
	if err != nil {
		ic.t.Fatalf("read: %v (%q)", err, l)
	}
	return l
}

// cmd sends a tagged command and returns its tagged reply.
func (ic *imapConn) cmd(tag, command string) string {
	ic.t.Helper()
	fmt.Fprintf(ic.c, "%s %s\r\n", tag, command)
	for {
		if l := ic.line(); strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
}

func waitLog(t *testing.T, path, substr string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, substr) {
				return l
			}
		}
	}
	t.Fatalf("no log line with %q", substr)
	return ""
}

// The daemon's life under signals: SIGHUP applies a changed login_trusted_networks to new
// connections, names a changed key that needs a restart, keeps the old configuration when
// the file is bad, and never touches a relayed session; SIGTERM refuses new connections at
// once, lets the relayed session work until shutdown_timeout, then ends it and exits 0.
func TestSignals(t *testing.T) {
	be := testenv.MustStartDovecot(t, testenv.DovecotOptions{Users: []testenv.User{{Name: "alice", Password: "secret"}}})
	host, port, _ := net.SplitHostPort(be.IMAPAddr)
	passwd := filepath.Join(t.TempDir(), "users.passwd")
	if err := os.WriteFile(passwd, []byte("alice:{PLAIN}secret::::::proxy host="+host+" port="+port+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lport, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	conf := func(trusted, greeting string) string {
		return fmt.Sprintf(`listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: passwd-file, path: %q}
login_trusted_networks: [%s]
login_greeting: %q
shutdown_timeout: 3s
shutdown_spread: 1s
log: {level: info, format: json}
`, addr, passwd, trusted, greeting)
	}
	d := startDaemon(t, t.TempDir(), conf("127.0.0.0/8", "Doorman ready."), addr)
	confPath := d.cmd.Args[len(d.cmd.Args)-1]
	const from = "127.0.0.9" // not the listener's own address: only trust makes it secured

	// Trusted: plaintext LOGIN is offered, and the session is relayed.
	live, gr := dialIMAPFrom(t, addr, from)
	if strings.Contains(gr, "LOGINDISABLED") {
		t.Fatalf("greeting for a trusted client: %q", gr)
	}
	if r := live.cmd("a", "LOGIN alice secret"); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("login: %q", r)
	}

	// Reload with 127.0.0.0/8 no longer trusted, and a new greeting (restart needed).
	if err := os.WriteFile(confPath, []byte(conf("10.0.0.0/8", "Changed.")), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d.log, "configuration reloaded")
	if l := waitLog(t, d.log, "take effect only after a restart"); !strings.Contains(l, "login_greeting") ||
		strings.Contains(l, "login_trusted_networks") {
		t.Fatalf("restart keys: %s", l)
	}
	_, gr = dialIMAPFrom(t, addr, from)
	if !strings.Contains(gr, "LOGINDISABLED") || !strings.Contains(gr, "Doorman ready.") {
		t.Fatalf("greeting after the reload: %q; want LOGINDISABLED (no longer trusted) and the old greeting", gr)
	}
	if r := live.cmd("b", "NOOP"); !strings.HasPrefix(r, "b OK") {
		t.Fatalf("the relayed session after SIGHUP: %q", r)
	}

	// A bad file: every error logged, the old configuration stays.
	if err := os.WriteFile(confPath, []byte(conf("not-a-network", "x")+"login_proxy_timeout: -1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d.log, "not-a-network")
	waitLog(t, d.log, "login_proxy_timeout")
	if _, gr = dialIMAPFrom(t, addr, from); !strings.Contains(gr, "LOGINDISABLED") {
		t.Fatalf("a bad file changed the configuration: %q", gr)
	}
	if r := live.cmd("c", "NOOP"); !strings.HasPrefix(r, "c OK") {
		t.Fatalf("the relayed session after a bad SIGHUP: %q", r)
	}

	// SIGTERM: refused at once; the relayed session works on, then ends.
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Since(start) > 2*time.Second {
			t.Fatalf("still accepting %v after SIGTERM", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := live.cmd("d", "NOOP"); !strings.HasPrefix(r, "d OK") {
		t.Fatalf("the relayed session during the shutdown: %q", r)
	}
	_ = live.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := live.r.ReadString('\n'); err == nil {
		t.Fatal("a line instead of the end of the session")
	}
	if ended := time.Since(start); ended < 2500*time.Millisecond {
		t.Fatalf("the session ended %v after SIGTERM, before shutdown_timeout (3s)", ended)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not exit")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	waitLog(t, d.log, "shutdown: disconnecting the remaining sessions")
	waitLog(t, d.log, `"stopped"`)
}
