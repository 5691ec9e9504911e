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

func TestListenIP(t *testing.T) {
	RequireDovecot(t)
	// a port free on 127.0.0.1 a moment ago, so that nothing answers there
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	d, err := StartDovecot(DovecotOptions{ListenIP: "127.0.0.3", IMAPPort: port, Users: testUsers})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	if want := fmt.Sprintf("127.0.0.3:%d", port); d.IMAPAddr != want {
		t.Fatalf("IMAPAddr %s, want %s", d.IMAPAddr, want)
	}
	dialIMAP(t, d.IMAPAddr).expect("a", "LOGIN alice secret", "OK")
	other := fmt.Sprintf("127.0.0.1:%d", port)
	if err := greet(other); err == nil {
		t.Fatalf("dovecot on ListenIP 127.0.0.3 also greets on %s", other)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", d.IMAPAddr); err == nil {
		c.Close()
		t.Errorf("%s still open after Stop", d.IMAPAddr)
	}

	// port 0 picks a port free on ListenIP
	d2 := MustStartDovecot(t, DovecotOptions{ListenIP: "127.0.0.3", Users: testUsers})
	if host, _, _ := net.SplitHostPort(d2.IMAPAddr); host != "127.0.0.3" {
		t.Fatalf("IMAPAddr %s, want one on 127.0.0.3", d2.IMAPAddr)
	}
	dialIMAP(t, d2.IMAPAddr).expect("a", "LOGIN bob hunter2", "OK")

	for _, bad := range []string{"localhost", "192.0.2.1"} {
		if _, err := StartDovecot(DovecotOptions{ListenIP: bad}); err == nil || !strings.Contains(err.Error(), "ListenIP") {
			t.Errorf("ListenIP %q: got %v, want an error", bad, err)
		}
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

// textConn is a minimal raw line-based client (POP3, SMTP, LMTP,
// ManageSieve) for the tests.
type textConn struct {
	t    *testing.T
	name string
	c    net.Conn
	r    *bufio.Reader
}

func dialText(t *testing.T, name, addr string) *textConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", name, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &textConn{t: t, name: name, c: c, r: bufio.NewReader(c)}
}

func (tc *textConn) line() string {
	tc.t.Helper()
	tc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := tc.r.ReadString('\n')
	if err != nil {
		tc.t.Fatalf("%s read: %v (got %q)", tc.name, err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

func (tc *textConn) send(s string) {
	tc.t.Helper()
	tc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.c.Write([]byte(s)); err != nil {
		tc.t.Fatalf("%s write: %v", tc.name, err)
	}
}

// expect reads a line and fails unless it starts with want.
func (tc *textConn) expect(want string) string {
	tc.t.Helper()
	l := tc.line()
	if !strings.HasPrefix(l, want) {
		tc.t.Fatalf("%s: got %q, want %s", tc.name, l, want)
	}
	return l
}

// cmd sends a line and expects a one-line reply starting with want.
func (tc *textConn) cmd(line, want string) string {
	tc.t.Helper()
	tc.send(line + "\r\n")
	l := tc.line()
	if !strings.HasPrefix(l, want) {
		tc.t.Fatalf("%s %q: got %q, want %s", tc.name, line, l, want)
	}
	return l
}

// smtp sends an SMTP/LMTP command and reads the (multi-line) reply; it
// fails unless the code is want.
func (tc *textConn) smtp(line, want string) []string {
	tc.t.Helper()
	if line != "" {
		tc.send(line + "\r\n")
	}
	var reply []string
	for {
		l := tc.line()
		reply = append(reply, l)
		if len(l) < 4 || l[3] != '-' {
			break
		}
	}
	if !strings.HasPrefix(reply[len(reply)-1], want) {
		tc.t.Fatalf("%s %q: got %q, want %s", tc.name, line, reply, want)
	}
	return reply
}

// sieve sends a ManageSieve command and reads the response lines up to
// the final OK/NO/BYE, failing unless it starts with want.
func (tc *textConn) sieve(line, want string) []string {
	tc.t.Helper()
	if line != "" {
		tc.send(line + "\r\n")
	}
	var lines []string
	for {
		l := tc.line()
		lines = append(lines, l)
		if strings.HasPrefix(l, "OK") || strings.HasPrefix(l, "NO") || strings.HasPrefix(l, "BYE") {
			break
		}
	}
	if !strings.HasPrefix(lines[len(lines)-1], want) {
		tc.t.Fatalf("%s %q: got %q, want %s", tc.name, line, lines, want)
	}
	return lines
}

func plainIR(authz, authc, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + authc + "\x00" + pass))
}

var allProtocols = []string{"imap", "pop3", "submission", "lmtp", "sieve"}

// lmtpDeliver delivers msg to the recipients over LMTP.
func lmtpDeliver(t *testing.T, addr, from string, rcpts []string, msg string) {
	t.Helper()
	lc := dialText(t, "lmtp", addr)
	lc.smtp("", "220")
	lc.smtp("LHLO client.example.org", "250")
	lc.smtp("MAIL FROM:<"+from+">", "250")
	for _, r := range rcpts {
		lc.smtp("RCPT TO:<"+r+">", "250")
	}
	lc.smtp("DATA", "354")
	lc.send(msg + ".\r\n")
	for _, r := range rcpts {
		lc.smtp("", "250") // one reply per recipient
		_ = r
	}
	lc.smtp("QUIT", "221")
}

// imapCount logs in and returns the number of messages in mailbox.
func imapCount(t *testing.T, addr, user, pass, mailbox string) int {
	t.Helper()
	ic := dialIMAP(t, addr)
	ic.expect("a", "LOGIN "+user+" "+pass, "OK")
	u := ic.expect("b", "STATUS "+mailbox+" (MESSAGES)", "OK")
	for _, l := range u {
		var n int
		if i := strings.Index(l, "(MESSAGES "); i >= 0 {
			if _, err := fmt.Sscanf(l[i:], "(MESSAGES %d)", &n); err == nil {
				return n
			}
		}
	}
	t.Fatalf("STATUS %s: %q", mailbox, u)
	return 0
}

func TestDovecotProtocols(t *testing.T) {
	RequireDovecotProtocols(t, allProtocols...)
	pop3Port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// two instances side by side, both with all protocols
	a := MustStartDovecot(t, DovecotOptions{Users: testUsers, MasterUser: "proxy", MasterPass: "masterpw", Protocols: allProtocols})
	b := MustStartDovecot(t, DovecotOptions{Users: testUsers, Protocols: []string{"pop3", "lmtp", "submission", "sieve"}, POP3Port: pop3Port})
	if b.POP3Addr != fmt.Sprintf("127.0.0.1:%d", pop3Port) {
		t.Errorf("POP3Addr %s, want port %d", b.POP3Addr, pop3Port)
	}
	if strings.Join(b.Protocols, " ") != "imap pop3 submission lmtp sieve" {
		t.Errorf("Protocols %q", b.Protocols)
	}
	seen := map[string]bool{}
	for _, d := range []*Dovecot{a, b} {
		for _, addr := range []string{d.IMAPAddr, d.POP3Addr, d.SubmissionAddr, d.LMTPAddr, d.SieveAddr, d.Sink.Addr} {
			if addr == "" || seen[addr] {
				t.Fatalf("address %q empty or used twice", addr)
			}
			seen[addr] = true
		}
	}

	t.Run("pop3", func(t *testing.T) {
		pc := dialText(t, "pop3", a.POP3Addr)
		pc.expect("+OK")
		pc.cmd("USER alice", "+OK")
		pc.cmd("PASS wrong", "-ERR")
		pc.cmd("USER alice", "+OK")
		pc.cmd("PASS secret", "+OK")
		pc.cmd("STAT", "+OK 0 0")
		pc.cmd("QUIT", "+OK")
	})
	t.Run("pop3 xclient", func(t *testing.T) {
		pc := dialText(t, "pop3", a.POP3Addr)
		pc.expect("+OK [XCLIENT]") // 127.0.0.1 is a trusted network
		pc.cmd("XCLIENT ADDR=127.0.0.7 PORT=4242", "+OK")
		pc.cmd("USER bob", "+OK")
		pc.cmd("PASS hunter2", "+OK")
		log, err := a.WaitLog("rip=127.0.0.7", 5*time.Second)
		if err != nil {
			t.Fatalf("%v\n%s", err, log)
		}
		if !strings.Contains(log, "pop3-login: Info: Login: user=<bob>") {
			t.Fatalf("no pop3 login line for bob:\n%s", log)
		}
	})
	t.Run("submission", func(t *testing.T) {
		sc := dialText(t, "submission", a.SubmissionAddr)
		sc.smtp("", "220")
		ehlo := sc.smtp("EHLO client.example.org", "250")
		if !strings.Contains(strings.Join(ehlo, "\n"), "AUTH PLAIN") || !strings.Contains(strings.Join(ehlo, "\n"), "XCLIENT") {
			t.Errorf("EHLO: %q", ehlo)
		}
		sc.smtp("XCLIENT ADDR=127.0.0.8 PORT=4343", "220") // a new greeting
		sc.smtp("EHLO client.example.org", "250")
		sc.smtp("AUTH PLAIN "+plainIR("", "alice", "secret"), "235")
		sc.smtp("MAIL FROM:<alice@example.org>", "250")
		sc.smtp("RCPT TO:<carol@example.net>", "250")
		sc.smtp("RCPT TO:<dave@example.net>", "250")
		sc.smtp("DATA", "354")
		sc.send("From: alice@example.org\r\nSubject: via submission\r\n\r\n..dot line\r\nbody\r\n.\r\n") // dot-stuffed
		sc.smtp("", "250")
		sc.smtp("QUIT", "221")
		msgs, err := a.Sink.WaitMessages(1, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		m := msgs[0]
		if m.From != "alice@example.org" || strings.Join(m.To, ",") != "carol@example.net,dave@example.net" ||
			!strings.Contains(string(m.Data), "Subject: via submission\r\n") || !strings.Contains(string(m.Data), "\r\n.dot line\r\nbody\r\n") ||
			!strings.Contains(string(m.Data), "Received: from client.example.org ([127.0.0.8])") {
			t.Fatalf("sink got %+v (%q)", m, m.Data)
		}
		if n := len(b.Sink.Messages()); n != 0 {
			t.Errorf("the other instance's sink got %d messages", n)
		}
		log, err := a.WaitLog("rip=127.0.0.8", 5*time.Second)
		if err != nil || !strings.Contains(log, "submission-login: Info: Login: user=<alice>") {
			t.Fatalf("no submission login line with rip=127.0.0.8: %v\n%s", err, log)
		}
	})
	t.Run("lmtp", func(t *testing.T) {
		lc := dialText(t, "lmtp", a.LMTPAddr)
		lc.smtp("", "220")
		lc.smtp("LHLO client.example.org", "250")
		lc.smtp("MAIL FROM:<bob@example.org>", "250")
		lc.smtp("RCPT TO:<nobody@example.org>", "550")
		lc.smtp("QUIT", "221")

		lmtpDeliver(t, a.LMTPAddr, "bob@example.org", []string{"alice@example.org"},
			"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: via lmtp\r\n\r\nhello\r\n")
		ic := dialIMAP(t, a.IMAPAddr)
		ic.expect("a", "LOGIN alice secret", "OK")
		if u := ic.expect("b", "SELECT INBOX", "OK"); !contains(u, "* 1 EXISTS") {
			t.Fatalf("SELECT INBOX after LMTP delivery: %q", u)
		}
		if u := ic.expect("c", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])", "OK"); !strings.Contains(strings.Join(u, "\n"), "Subject: via lmtp") {
			t.Fatalf("FETCH: %q", u)
		}
		// and over POP3
		pc := dialText(t, "pop3", a.POP3Addr)
		pc.expect("+OK")
		pc.cmd("USER alice", "+OK")
		pc.cmd("PASS secret", "+OK")
		pc.cmd("STAT", "+OK 1 ")
		pc.cmd("QUIT", "+OK")
	})
	t.Run("managesieve", func(t *testing.T) {
		mc := dialText(t, "sieve", a.SieveAddr)
		if caps := mc.sieve("", "OK"); !strings.Contains(strings.Join(caps, "\n"), `"SASL" "PLAIN LOGIN"`) {
			t.Errorf("capabilities: %q", caps)
		}
		mc.sieve(`AUTHENTICATE "PLAIN" "`+plainIR("", "alice", "secret")+`"`, "OK")
		script := "require [\"fileinto\", \"mailbox\"];\r\nif header :contains \"subject\" \"sort me\" {\r\n  fileinto :create \"Sorted\";\r\n}\r\n"
		mc.send(fmt.Sprintf("PUTSCRIPT \"sorter\" {%d+}\r\n%s\r\n", len(script), script))
		mc.sieve("", "OK")
		mc.sieve(`SETACTIVE "sorter"`, "OK")
		if l := mc.sieve("LISTSCRIPTS", "OK"); !contains(l, `"sorter" ACTIVE`) {
			t.Fatalf("LISTSCRIPTS: %q", l)
		}
		mc.sieve("LOGOUT", "OK")
		if log, err := a.WaitLog("managesieve-login: Info: Login: user=<alice>", 5*time.Second); err != nil || !strings.Contains(log, "rip=127.0.0.1") {
			t.Fatalf("no managesieve login line: %v\n%s", err, log)
		}
		// the script runs on LMTP delivery
		lmtpDeliver(t, a.LMTPAddr, "bob@example.org", []string{"alice@example.org"},
			"From: bob@example.org\r\nSubject: please sort me\r\n\r\nhello\r\n")
		if n := imapCount(t, a.IMAPAddr, "alice", "secret", "Sorted"); n != 1 {
			t.Fatalf("Sorted has %d messages, want 1", n)
		}
		if n := imapCount(t, a.IMAPAddr, "alice", "secret", "INBOX"); n != 1 {
			t.Fatalf("INBOX has %d messages, want 1", n)
		}
	})
	t.Run("two backends", func(t *testing.T) {
		lmtpDeliver(t, b.LMTPAddr, "carol@example.org", []string{"alice@example.org", "Bob@Example.ORG"},
			"From: carol@example.org\r\nSubject: to b\r\n\r\nhello\r\n")
		if n := imapCount(t, b.IMAPAddr, "alice", "secret", "INBOX"); n != 1 {
			t.Errorf("b: alice's INBOX has %d messages, want 1", n)
		}
		if n := imapCount(t, b.IMAPAddr, "bob", "hunter2", "INBOX"); n != 1 {
			t.Errorf("b: bob's INBOX has %d messages, want 1", n)
		}
		if n := imapCount(t, a.IMAPAddr, "alice", "secret", "INBOX"); n != 1 {
			t.Errorf("a: alice's INBOX has %d messages, want 1 (unchanged)", n)
		}
	})
}

func TestBadProtocolOptions(t *testing.T) {
	if _, err := StartDovecot(DovecotOptions{Protocols: []string{"imap", "nntp"}}); err == nil || !strings.Contains(err.Error(), "nntp") {
		t.Fatalf("got %v, want an error about nntp", err)
	}
	RequireDovecotProtocols(t, "pop3")
	_, err := StartDovecot(DovecotOptions{Protocols: []string{"pop3"}, IMAPPort: 10143, POP3Port: 10143})
	if err == nil || !strings.Contains(err.Error(), "both imap and pop3") {
		t.Fatalf("got %v, want an error about port 10143", err)
	}
}

func TestSMTPSink(t *testing.T) {
	s, err := StartSMTPSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dialText(t, "sink", s.Addr)
	c.smtp("", "220")
	if r := c.smtp("EHLO me", "250"); !contains(r, "250-PIPELINING") {
		t.Errorf("EHLO: %q", r)
	}
	c.smtp("RCPT TO:<x@y>", "503")
	c.smtp("DATA", "503")
	c.smtp("MAIL FROM:<> SIZE=10", "250")
	c.smtp("DATA", "503")
	// pipelined
	c.send("RCPT TO:<a@example.org> NOTIFY=NEVER\r\nRCPT TO: <b@example.org>\r\nDATA\r\n")
	c.smtp("", "250")
	c.smtp("", "250")
	c.smtp("", "354")
	c.send("Subject: x\r\n\r\n..leading dot\r\n.\r\n")
	c.smtp("", "250")
	c.smtp("MAIL FROM:<c@example.org>", "250")
	c.smtp("RSET", "250")
	c.smtp("FOO", "502")
	msgs, err := s.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].From != "" || strings.Join(msgs[0].To, " ") != "a@example.org b@example.org" ||
		string(msgs[0].Data) != "Subject: x\r\n\r\n.leading dot\r\n" || msgs[0].Helo != "me" {
		t.Fatalf("messages %+v", msgs)
	}
	if _, err := s.WaitMessages(2, 100*time.Millisecond); err == nil {
		t.Error("WaitMessages(2) did not time out")
	}
	s.Reset()
	if len(s.Messages()) != 0 {
		t.Error("Reset kept messages")
	}
	// Close ends open sessions
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Error("session still open after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
