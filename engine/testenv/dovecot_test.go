package testenv

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// imapConn is a minimal raw IMAP client for the tests.
type imapConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialIMAP(t *testing.T, addr string) *imapConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	ic := &imapConn{t: t, c: c, r: bufio.NewReader(c)}
	if g := ic.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting: %q", g)
	}
	return ic
}

func (ic *imapConn) line() string {
	ic.t.Helper()
	ic.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := ic.r.ReadString('\n')
	if err != nil {
		ic.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

func (ic *imapConn) send(s string) {
	ic.t.Helper()
	ic.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := ic.c.Write([]byte(s)); err != nil {
		ic.t.Fatalf("write: %v", err)
	}
}

// cmd sends "tag rest" and returns the untagged lines and the tagged status
// ("OK ...", "NO ...", "BAD ...").
func (ic *imapConn) cmd(tag, rest string) (untagged []string, status string) {
	ic.t.Helper()
	ic.send(tag + " " + rest + "\r\n")
	return ic.result(tag)
}

func (ic *imapConn) result(tag string) (untagged []string, status string) {
	ic.t.Helper()
	for {
		l := ic.line()
		if strings.HasPrefix(l, tag+" ") {
			return untagged, strings.TrimPrefix(l, tag+" ")
		}
		untagged = append(untagged, l)
	}
}

func (ic *imapConn) expect(tag, rest, want string) []string {
	ic.t.Helper()
	u, st := ic.cmd(tag, rest)
	if !strings.HasPrefix(st, want) {
		ic.t.Fatalf("%s %s: got %q, want %s (untagged %q)", tag, rest, st, want, u)
	}
	return u
}

var testUsers = []User{{"alice", "secret"}, {"bob", "hunter2"}}

func startTestDovecot(t *testing.T) *Dovecot {
	return MustStartDovecot(t, DovecotOptions{Users: testUsers, MasterUser: "proxy", MasterPass: "masterpw"})
}

func TestDovecotIMAP(t *testing.T) {
	d := startTestDovecot(t)

	t.Run("login", func(t *testing.T) {
		ic := dialIMAP(t, d.IMAPAddr)
		ic.expect("a", "LOGIN alice secret", "OK")
		ic.expect("z", "LOGOUT", "OK")
	})
	t.Run("wrong password", func(t *testing.T) {
		ic := dialIMAP(t, d.IMAPAddr)
		ic.expect("a", "LOGIN alice wrong", "NO")
		ic.expect("b", "LOGIN bob secret", "NO")
		ic.expect("c", "LOGIN nobody secret", "NO")
		ic.expect("d", "LOGIN alice*proxy wrong", "NO")
		ic.expect("e", "LOGIN alice*bob hunter2", "NO") // bob is no master user
		ic.expect("f", "LOGIN bob hunter2", "OK")
	})
	t.Run("append and select", func(t *testing.T) {
		ic := dialIMAP(t, d.IMAPAddr)
		ic.expect("a", "LOGIN alice secret", "OK")
		msg := "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
		ic.send(fmt.Sprintf("b APPEND INBOX {%d}\r\n", len(msg)))
		if l := ic.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("APPEND continuation: %q", l)
		}
		ic.send(msg + "\r\n")
		if _, st := ic.result("b"); !strings.HasPrefix(st, "OK") {
			t.Fatalf("APPEND: %q", st)
		}
		u := ic.expect("c", "SELECT INBOX", "OK")
		if !contains(u, "* 1 EXISTS") {
			t.Fatalf("SELECT INBOX: %q", u)
		}
	})
	t.Run("master login", func(t *testing.T) {
		ic := dialIMAP(t, d.IMAPAddr)
		ic.expect("b", "LOGIN alice*proxy masterpw", "OK")
		// same mailbox as alice's own login (the message appended above)
		if u := ic.expect("c", "SELECT INBOX", "OK"); !contains(u, "* 1 EXISTS") {
			t.Fatalf("SELECT INBOX as alice*proxy: %q", u)
		}
	})
	t.Run("sasl plain master", func(t *testing.T) {
		ic := dialIMAP(t, d.IMAPAddr)
		ir := base64.StdEncoding.EncodeToString([]byte("alice\x00proxy\x00masterpw"))
		ic.send("a AUTHENTICATE PLAIN\r\n")
		if l := ic.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("AUTHENTICATE continuation: %q", l)
		}
		ic.send(ir + "\r\n")
		if _, st := ic.result("a"); !strings.HasPrefix(st, "OK") {
			t.Fatalf("AUTHENTICATE PLAIN authzid=alice authcid=proxy: %q", st)
		}
		if u := ic.expect("c", "SELECT INBOX", "OK"); !contains(u, "* 1 EXISTS") {
			t.Fatalf("SELECT INBOX: %q", u)
		}
		// wrong master password, SASL-IR form
		ic2 := dialIMAP(t, d.IMAPAddr)
		bad := base64.StdEncoding.EncodeToString([]byte("alice\x00proxy\x00nope"))
		ic2.expect("a", "AUTHENTICATE PLAIN "+bad, "NO")
	})
	t.Run("originating ip", func(t *testing.T) {
		ic := dialIMAP(t, d.IMAPAddr)
		ic.expect("a", `ID ("x-originating-ip" "127.0.0.9" "x-originating-port" "4242")`, "OK")
		ic.expect("b", "LOGIN bob hunter2", "OK")
		log, err := d.WaitLog("rip=127.0.0.9", 5*time.Second)
		if err != nil {
			t.Fatalf("%v\n%s", err, log)
		}
		if !strings.Contains(log, "user=<bob>") {
			t.Fatalf("no login line for bob:\n%s", log)
		}
	})
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, s) {
			return true
		}
	}
	return false
}

func TestTwoInstancesAndStop(t *testing.T) {
	RequireDovecot(t)
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// explicit Dir below t.TempDir (whose parent is 0700) and a fixed port
	dir := filepath.Join(t.TempDir(), "one")
	a, err := StartDovecot(DovecotOptions{Dir: dir, IMAPPort: port, Users: []User{{"alice", "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	b := MustStartDovecot(t, DovecotOptions{Users: []User{{"alice", "b"}}})
	if a.IMAPAddr != fmt.Sprintf("127.0.0.1:%d", port) || a.IMAPAddr == b.IMAPAddr {
		t.Fatalf("addresses %s %s (want port %d)", a.IMAPAddr, b.IMAPAddr, port)
	}
	if a.Instance == b.Instance || a.BaseDir == b.BaseDir {
		t.Fatalf("instances share names: %+v %+v", a, b)
	}
	dialIMAP(t, a.IMAPAddr).expect("a", "LOGIN alice a", "OK")
	dialIMAP(t, b.IMAPAddr).expect("a", "LOGIN alice b", "OK")
	dialIMAP(t, b.IMAPAddr).expect("a", "LOGIN alice a", "NO")

	// keep a session open so an imap process exists during Stop
	ic := dialIMAP(t, a.IMAPAddr)
	ic.expect("a", "LOGIN alice a", "OK")
	ic.expect("b", "SELECT INBOX", "OK")
	pids := a.Pids()
	if len(pids) < 3 || pids[0] != a.PID {
		t.Fatalf("pids %v", pids)
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d of stopped instance still alive", pid)
		}
	}
	if a.Running() {
		t.Error("Running after Stop")
	}
	if c, err := net.Dial("tcp", a.IMAPAddr); err == nil {
		c.Close()
		t.Error("port still open after Stop")
	}
	if err := a.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dovecot.log")); err != nil {
		t.Errorf("explicit Dir must be kept: %v", err)
	}
	// the other instance is unaffected
	dialIMAP(t, b.IMAPAddr).expect("a", "LOGIN alice b", "OK")

	// restart on the same Dir and port
	a2, err := StartDovecot(DovecotOptions{Dir: dir, IMAPPort: port, Users: []User{{"alice", "a2"}}})
	if err != nil {
		t.Fatal(err)
	}
	dialIMAP(t, a2.IMAPAddr).expect("a", "LOGIN alice a2", "OK")
	if err := a2.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestTempDirRemoved(t *testing.T) {
	RequireDovecot(t)
	d, err := StartDovecot(DovecotOptions{Users: testUsers})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Dir); !os.IsNotExist(err) {
		t.Errorf("temporary Dir %s not removed: %v", d.Dir, err)
	}
}

func TestLongDirUsesShortBaseDir(t *testing.T) {
	RequireDovecot(t)
	dir := filepath.Join(t.TempDir(), strings.Repeat("x", 60), strings.Repeat("y", 40))
	d := MustStartDovecot(t, DovecotOptions{Dir: dir, Users: testUsers})
	if len(d.BaseDir) > 64 || strings.HasPrefix(d.BaseDir, dir) {
		t.Fatalf("base_dir %s", d.BaseDir)
	}
	dialIMAP(t, d.IMAPAddr).expect("a", "LOGIN alice secret", "OK")
}

func TestInvalidUser(t *testing.T) {
	RequireDovecot(t)
	if _, err := StartDovecot(DovecotOptions{Users: []User{{"a:b", "x"}}}); err == nil {
		t.Fatal("user name with ':' accepted")
	}
}
