package engine

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"doorman/codec/lmtp"
	"doorman/engine/testenv"
	"doorman/route"
	"doorman/route/routetest"
)

// LMTP through Doorman, against real Dovecot LMTP backends (two instances side by side),
// a fake backend where the exact bytes Doorman sends matter, and Python's smtplib.

func lmtpHostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return h
}

// lmtpDial connects to the proxy's LMTP listener and checks the greeting.
func lmtpDial(t *testing.T, addr string) *client {
	t.Helper()
	c := dial(t, addr, "")
	if want := "220 " + lmtpHostname(t) + " Doorman LMTP ready\r\n"; c.gr != want {
		t.Fatalf("greeting %q, want %q", c.gr, want)
	}
	return c
}

// reply reads one (possibly multi-line) reply.
func lmtpReply(c *client, timeout time.Duration) []string {
	c.t.Helper()
	var lines []string
	for {
		l := c.line(timeout)
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}

// expect reads one reply and wants it to be exactly want (CRLF implied).
func lmtpExpect(c *client, want string) string {
	c.t.Helper()
	got := strings.Join(lmtpReply(c, 30*time.Second), "")
	if got != want+"\r\n" {
		c.t.Fatalf("got %q, want %q", got, want+"\r\n")
	}
	return got
}

func lmtpLHLO(c *client) {
	c.t.Helper()
	c.send("LHLO client.example\r\n")
	// The tests' clients are in login_trusted_networks, so XCLIENT is offered, as Dovecot does.
	lmtpExpect(c, "250-"+lmtpHostname(c.t)+"\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"+
		"250 XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT")
}

// lmtpSessionOf takes the session id out of "250 2.0.0 <rcpt> <session> Saved".
func lmtpSessionOf(t *testing.T, reply string) string {
	t.Helper()
	f := strings.Fields(reply)
	if len(f) != 5 || f[4] != "Saved" {
		t.Fatalf("not a Saved reply: %q", reply)
	}
	return f[3]
}

// lmtpTestMessage is a message with a unique subject, a line that needs dot-stuffing and
// 8-bit text.
func lmtpTestMessage(t *testing.T) (subject string, msg []byte) {
	t.Helper()
	var tok [6]byte
	_, _ = rand.Read(tok[:])
	subject = "lmtp-" + hex.EncodeToString(tok[:])
	msg = []byte("From: sender@example.org\r\nTo: several@example.org\r\nSubject: " + subject +
		"\r\n\r\nHello through Doorman.\r\n.a line that starts with a dot\r\nÜnïcödé\r\n")
	return subject, msg
}

// lmtpDotStuff is what an SMTP client sends for msg (msg ends with CRLF).
func lmtpDotStuff(msg []byte) []byte {
	var b bytes.Buffer
	for _, l := range bytes.SplitAfter(msg, []byte("\n")) {
		if bytes.HasPrefix(l, []byte(".")) {
			b.WriteByte('.')
		}
		b.Write(l)
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// lmtpIMAPFetch logs in to a backend as user and returns the message with subject.
func lmtpIMAPFetch(t *testing.T, addr, user, subject string) []byte {
	t.Helper()
	c := dial(t, addr, "")
	defer c.c.Close()
	c.send("a LOGIN " + user + " secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c.send("b SELECT INBOX\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
	c.send("c SEARCH SUBJECT \"" + subject + "\"\r\n")
	lines := c.until("c", 10*time.Second)
	var seq string
	for _, l := range lines {
		if strings.HasPrefix(l, "* SEARCH ") {
			f := strings.Fields(l)
			if len(f) != 3 {
				t.Fatalf("%s: want one message with subject %s: %q", user, subject, l)
			}
			seq = f[2]
		}
	}
	if seq == "" {
		t.Fatalf("%s: no message with subject %s on %s", user, subject, addr)
	}
	c.send("d FETCH " + seq + " BODY.PEEK[]\r\n")
	head := c.line(30 * time.Second)
	var n int
	i := strings.Index(head, "{")
	if i < 0 {
		t.Fatalf("fetch: %q", head)
	}
	if _, err := fmt.Sscanf(head[i:], "{%d}", &n); err != nil {
		t.Fatalf("fetch: %q: %v", head, err)
	}
	got := make([]byte, n)
	_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := ioReadFull(c.r, got); err != nil {
		t.Fatal(err)
	}
	expectPrefix(t, last(c.until("d", 10*time.Second)), "d OK")
	return got
}

// lmtpCheckDelivered wants the stored message to be msg byte for byte after the header
// lines that were put in front of it on the way: the backend's Return-Path,
// Delivered-To and Received, and Doorman's Received with the transaction id.
func lmtpCheckDelivered(t *testing.T, stored, msg []byte, txID string) {
	t.Helper()
	if !bytes.HasSuffix(stored, msg) {
		t.Fatalf("stored message does not end with the one sent:\n%q\nwant suffix\n%q", stored, msg)
	}
	added := string(stored[:len(stored)-len(msg)])
	for _, l := range strings.SplitAfter(added, "\r\n") {
		if l == "" {
			continue
		}
		if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, "Return-Path:") &&
			!strings.HasPrefix(l, "Delivered-To:") && !strings.HasPrefix(l, "Received:") {
			t.Fatalf("unexpected line added before the message: %q in\n%s", l, added)
		}
	}
	ours := "\tby " + lmtpHostname(t) + " with LMTP\r\n\tid " + txID + "\r\n\t(envelope-from <sender@example.org>)"
	if !strings.Contains(added, "Received: from client.example ([127.0.0.1])\r\n"+ours) {
		t.Fatalf("Doorman's Received header missing:\n%s", added)
	}
}

// lmtpSecondBackend is a Dovecot instance of its own for the tests that need two.
func lmtpSecondBackend(t *testing.T) *testenv.Dovecot {
	t.Helper()
	sharedBackend(t) // skips like the other tests when dovecot is missing
	return testenv.MustStartDovecot(t, testenv.DovecotOptions{
		Protocols: []string{"imap", "lmtp"},
		Users:     []testenv.User{{Name: "zed", Password: "secret"}, {Name: "yan", Password: "secret"}},
	})
}

// TestLMTPTwoBackends: one transaction, three recipients on two real Dovecots and one
// unknown user. Each recipient gets its own reply, in RCPT order, in Dovecot's words;
// both backends store the message byte for byte.
func TestLMTPTwoBackends(t *testing.T) {
	a := sharedBackend(t)
	b := lmtpSecondBackend(t)
	pa, pb := portOf(a.LMTPAddr), portOf(b.LMTPAddr)
	p := startProxyFor(t, "lmtp",
		passwdLine("alice@example.org", "", "proxy host=127.0.0.1 port="+pa)+
			passwdLine("bob@example.org", "", "proxy host=127.0.0.1 port="+pa)+
			passwdLine("zed@example.org", "", "proxy host=127.0.0.1 port="+pb), "")
	subject, msg := lmtpTestMessage(t)

	c := lmtpDial(t, p.addr)
	lmtpLHLO(c)
	c.send("MAIL FROM:<sender@example.org>\r\n")
	lmtpExpect(c, "250 2.1.0 OK")
	c.send("RCPT TO:<alice@example.org>\r\n")
	lmtpExpect(c, "250 2.1.5 OK")
	c.send("RCPT TO:<Zed@Example.org>\r\n") // a backend reply with a path would name the client's address
	lmtpExpect(c, "250 2.1.5 OK")
	c.send("RCPT TO:<nobody@example.org>\r\n")
	lmtpExpect(c, "550 5.1.1 <nobody@example.org> User doesn't exist: nobody@example.org")
	c.send("RCPT TO:<bob@example.org>\r\n")
	lmtpExpect(c, "250 2.1.5 OK")
	c.send("DATA\r\n")
	lmtpExpect(c, "354 OK")
	c.send(string(lmtpDotStuff(msg)))
	r1 := strings.TrimSuffix(strings.Join(lmtpReply(c, 30*time.Second), ""), "\r\n")
	sid := lmtpSessionOf(t, r1)
	if r1 != "250 2.0.0 <alice@example.org> "+sid+" Saved" {
		t.Fatalf("alice: %q", r1)
	}
	lmtpExpect(c, "250 2.0.0 <Zed@Example.org> "+sid+":R2 Saved")
	lmtpExpect(c, "250 2.0.0 <bob@example.org> "+sid+":R4 Saved")
	c.send("QUIT\r\n")
	lmtpExpect(c, "221 2.0.0 Bye")

	lmtpCheckDelivered(t, lmtpIMAPFetch(t, a.IMAPAddr, "alice", subject), msg, sid)
	lmtpCheckDelivered(t, lmtpIMAPFetch(t, a.IMAPAddr, "bob", subject), msg, sid)
	lmtpCheckDelivered(t, lmtpIMAPFetch(t, b.IMAPAddr, "zed", subject), msg, sid)

	// The backends got the client's address and our session ids through XCLIENT: each
	// connection is "<transaction>:P<n>".
	for _, x := range []struct {
		d  *testenv.Dovecot
		id string
	}{{a, sid + ":P1"}, {b, sid + ":P2"}} {
		if _, err := x.d.WaitLog("<"+x.id+">", 10*time.Second); err != nil {
			log, _ := x.d.Log()
			t.Fatalf("backend log has no session %s: %v\n%s", x.id, err, lmtpTail(log, 30))
		}
	}

	waitFor(t, func() bool { return p.logs.FilterMessage("session ended").Len() == 1 }, "one session-end line")
	e := p.logs.FilterMessage("session ended").All()[0].ContextMap()
	if e["session"] != sid || e["ended_by"] != "client" || e["reason"] != "quit" || e["messages"] != int64(1) {
		t.Fatalf("session end line: %v", e)
	}
	if e["in"].(int64) < int64(len(msg)) || e["out"].(int64) == 0 {
		t.Fatalf("byte counters: %v", e)
	}
	for _, l := range p.logs.All() {
		if l.Message != "lmtp listening" && l.ContextMap()["session"] != sid {
			t.Fatalf("log line without the session: %q %v", l.Message, l.ContextMap())
		}
		for _, v := range l.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, "Hello through Doorman") {
				t.Fatalf("message body in the log: %q", l.Message)
			}
		}
	}
	if n := p.logs.FilterMessage("sent message").Len(); n != 3 {
		t.Fatalf("%d 'sent message' lines, want 3", n)
	}
}

func lmtpTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestLMTPPythonSmtplib drives the proxy with Python's smtplib.LMTP.
func TestLMTPPythonSmtplib(t *testing.T) {
	a := sharedBackend(t)
	p := startProxyFor(t, "lmtp", passwdLine("carol@example.org", "", "proxy host=127.0.0.1 port="+portOf(a.LMTPAddr)), "")
	subject, msg := lmtpTestMessage(t)
	h, pt := hostPort(t, p.addr)
	out := pyRun(t, fmt.Sprintf(`
import smtplib
s = smtplib.LMTP(%q, %s)
refused = s.sendmail("sender@example.org", ["carol@example.org"], bytes.fromhex(%q))
assert refused == {}, refused
try:
    s.sendmail("sender@example.org", ["nobody@example.org"], b"Subject: x\r\n\r\nx\r\n")
    raise SystemExit("unknown user accepted")
except smtplib.SMTPRecipientsRefused as e:
    code, text = e.recipients["nobody@example.org"]
    print("refused", code, text.decode())
s.quit()
print("ok")
`, h, pt, hex.EncodeToString(msg)))
	if !strings.Contains(out, "refused 550 5.1.1 <nobody@example.org> User doesn't exist: nobody@example.org") ||
		!strings.Contains(out, "ok") {
		t.Fatalf("smtplib:\n%s", out)
	}
	stored := lmtpIMAPFetch(t, a.IMAPAddr, "carol", subject)
	if !bytes.HasSuffix(stored, msg) {
		t.Fatalf("stored %q", stored)
	}
}

// TestLMTPBackendDown: a recipient whose backend refuses connections gets 451 for
// itself only; the others of the transaction are delivered.
func TestLMTPBackendDown(t *testing.T) {
	a := sharedBackend(t)
	down, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startProxyFor(t, "lmtp",
		passwdLine("dave@example.org", "", "proxy host=127.0.0.1 port="+portOf(a.LMTPAddr))+
			passwdLine("erin@example.org", "", fmt.Sprintf("proxy host=127.0.0.1 port=%d proxy_timeout=5", down)), "")
	subject, msg := lmtpTestMessage(t)
	c := lmtpDial(t, p.addr)
	lmtpLHLO(c)
	c.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<erin@example.org>\r\nRCPT TO:<dave@example.org>\r\nDATA\r\n")
	lmtpExpect(c, "250 2.1.0 OK")
	r := strings.Join(lmtpReply(c, 30*time.Second), "")
	if !strings.HasPrefix(r, "451 4.4.0 Proxy failed (connect, session=") {
		t.Fatalf("erin: %q", r)
	}
	lmtpExpect(c, "250 2.1.5 OK")
	lmtpExpect(c, "354 OK")
	c.send(string(lmtpDotStuff(msg)))
	saved := strings.TrimSpace(strings.Join(lmtpReply(c, 30*time.Second), ""))
	sid := strings.TrimSuffix(lmtpSessionOf(t, saved), ":R2")
	if saved != "250 2.0.0 <dave@example.org> "+sid+":R2 Saved" {
		t.Fatalf("dave: %q", saved)
	}
	if r != "451 4.4.0 Proxy failed (connect, session="+sid+")\r\n" { // erin was RCPT number 1
		t.Fatalf("erin: %q (session %s)", r, sid)
	}
	c.send("QUIT\r\n")
	lmtpExpect(c, "221 2.0.0 Bye")
	lmtpCheckDelivered(t, lmtpIMAPFetch(t, a.IMAPAddr, "dave", subject), msg, sid)
}

// TestLMTPRefusals: no proxy field, passdb down, a loop to ourselves, a destuser that
// is not an address.
func TestLMTPRefusals(t *testing.T) {
	p := startProxyFor(t, "lmtp", passwdLine("local@example.org", "", "host=127.0.0.1")+
		passwdLine("loop@example.org", "", "proxy host=127.0.0.1 port=9")+
		passwdLine("tls@example.org", "", "proxy host=127.0.0.1 port=1 ssl=yes")+
		passwdLine("bad@example.org", "", "proxy host=127.0.0.1 port=1 destuser=@"), "")
	// The proxy's own port is only known now: rewrite the loop user's line.
	_, pp := hostPort(t, p.addr)
	lmtpRewritePasswd(t, p, "port=9", "port="+pp)
	c := lmtpDial(t, p.addr)
	c.send("MAIL FROM:<>\r\n")
	lmtpExpect(c, "250 2.1.0 OK")
	c.send("RCPT TO:<local@example.org>\r\n")
	lmtpExpect(c, "550 5.1.1 <local@example.org> No mail server is set for this user")
	c.send("RCPT TO:<loop@example.org>\r\n")
	lmtpExpect(c, "554 5.4.6 <loop@example.org> Proxying loops to itself")
	c.send("RCPT TO:<tls@example.org>\r\n")
	lmtpExpect(c, "451 4.3.0 <tls@example.org> Temporary internal error")
	c.send("RCPT TO:<bad@example.org>\r\n")
	lmtpExpect(c, "550 5.3.5 <bad@example.org> Internal user lookup failure")
	c.send("DATA\r\n")
	lmtpExpect(c, "503 5.5.0 No valid recipients")

	// A passdb that is down: temporary failure.
	addr, stop := routetest.StartRedis(t)
	stop()
	p2 := startProxyFor(t, "lmtp", "", fmt.Sprintf("passdb:\n  - {driver: redis, addrs: [%q]}\n", addr))
	c2 := lmtpDial(t, p2.addr)
	c2.send("MAIL FROM:<>\r\nRCPT TO:<alice@example.org>\r\n")
	lmtpExpect(c2, "250 2.1.0 OK")
	lmtpExpect(c2, "451 4.3.0 <alice@example.org> Temporary user lookup failure")
}

// lmtpRewritePasswd edits the proxy's passwd-file and reloads it.
func lmtpRewritePasswd(t *testing.T, p *proxy, old, new string) {
	t.Helper()
	for _, db := range p.srv.dbs {
		if f, ok := db.(*route.PasswdFile); ok {
			name := f.Path()
			data, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, bytes.ReplaceAll(data, []byte(old), []byte(new)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.srv.Reload(); err != nil {
		t.Fatal(err)
	}
}

// TestLMTPLargeMessage streams 20 MB through the proxy to a real backend. The proxy's
// heap must not grow with the message: it holds one read buffer and one encode buffer
// per connection, never the message.
func TestLMTPLargeMessage(t *testing.T) {
	a := sharedBackend(t)
	p := startProxyFor(t, "lmtp", passwdLine("erin@example.org", "", "proxy host=127.0.0.1 port="+portOf(a.LMTPAddr)), "")
	const size = 20 << 20
	subject, _ := lmtpTestMessage(t)
	msg := bytes.Replace(bigMessage(size), []byte("Subject: big\r\n"), []byte("Subject: "+subject+"\r\n"), 1)
	wire := lmtpDotStuff(msg)

	c := lmtpDial(t, p.addr)
	lmtpLHLO(c)
	c.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<erin@example.org>\r\nDATA\r\n")
	lmtpExpect(c, "250 2.1.0 OK")
	lmtpExpect(c, "250 2.1.5 OK")
	lmtpExpect(c, "354 OK")

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	_ = c.c.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	if _, err := c.c.Write(wire); err != nil {
		t.Fatal(err)
	}
	r := strings.TrimSpace(strings.Join(lmtpReply(c, 2*time.Minute), ""))
	close(stopSampling)
	wg.Wait()
	sid := lmtpSessionOf(t, r)
	if r != "250 2.0.0 <erin@example.org> "+sid+" Saved" {
		t.Fatalf("reply %q", r)
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("heap in use: base %d KB, peak %d KB, growth %d KB for a %d KB message",
		base>>10, peak.Load()>>10, growth>>10, len(msg)>>10)
	if growth > 4<<20 {
		t.Fatalf("heap grew by %d KB while streaming a %d KB message", growth>>10, len(msg)>>10)
	}
	c.send("QUIT\r\n")
	lmtpExpect(c, "221 2.0.0 Bye")

	stored := lmtpIMAPFetch(t, a.IMAPAddr, "erin", subject)
	lmtpCheckDelivered(t, stored, msg, sid)
}

// lmtpFakeBackend is an LMTP (or SMTP) server that records what Doorman sends: Dovecot's
// replies, XCLIENT and XRCPTFORWARD offered.
type lmtpFakeBackend struct {
	t    *testing.T
	ln   net.Listener
	smtp bool

	mu    sync.Mutex
	lines []string // commands, without CRLF
	data  []byte   // the last message as sent (dot-stuffed, final dot included)
	// dropInData closes the connection after this many message bytes (0: never).
	dropInData int
	// failMail answers MAIL with this reply.
	failMail string
}

func lmtpStartFake(t *testing.T, smtp bool) *lmtpFakeBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &lmtpFakeBackend{t: t, ln: ln, smtp: smtp}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *lmtpFakeBackend) port() string { return portOf(f.ln.Addr().String()) }

func (f *lmtpFakeBackend) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lines...)
}

func (f *lmtpFakeBackend) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	w := func(s string) { _, _ = c.Write([]byte(s + "\r\n")) }
	w("220 fake.backend Fake ready.")
	rcpts := 0
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		l = strings.TrimRight(l, "\r\n")
		f.mu.Lock()
		f.lines = append(f.lines, l)
		failMail, drop := f.failMail, f.dropInData
		f.mu.Unlock()
		verb := strings.ToUpper(strings.SplitN(l, " ", 2)[0])
		switch {
		case verb == "LHLO" && !f.smtp, verb == "EHLO" && f.smtp:
			w("250-fake.backend\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n" +
				"250-XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT\r\n250 XRCPTFORWARD")
		case verb == "XCLIENT":
			w("220 fake.backend Fake ready.")
		case verb == "MAIL" && failMail != "":
			w(failMail)
		case verb == "MAIL":
			w("250 2.1.0 OK")
		case verb == "RCPT" && strings.Contains(l, "<reject"):
			w("550 5.1.1 <" + strings.SplitN(strings.SplitN(l, "<", 2)[1], ">", 2)[0] + "> User doesn't exist here")
		case verb == "RCPT":
			rcpts++
			w("250 2.1.5 OK")
		case verb == "DATA":
			w("354 OK")
			var body []byte
			for {
				dl, err := r.ReadString('\n')
				body = append(body, dl...)
				if drop > 0 && len(body) >= drop {
					return
				}
				if err != nil {
					return
				}
				if dl == ".\r\n" {
					break
				}
			}
			f.mu.Lock()
			f.data = body
			f.mu.Unlock()
			if f.smtp {
				w("250 2.0.0 Ok: queued as ABC")
			} else {
				for i := 0; i < rcpts; i++ {
					w(fmt.Sprintf("250 2.0.0 <rcpt%d> fake saved", i+1))
				}
			}
			rcpts = 0
		case verb == "QUIT":
			w("221 2.0.0 Bye")
			return
		default:
			w("500 5.5.1 Unknown command")
		}
	}
}

// TestLMTPWireToBackend checks what a backend gets, byte for byte: XCLIENT with the
// client's address in Dovecot's field order, destuser rewriting the address (detail
// kept, ORCPT added), XRCPTFORWARD with the forward_ fields, the MAIL parameters, and
// a re-stuffed message with Doorman's Received header in front.
func TestLMTPWireToBackend(t *testing.T) {
	f := lmtpStartFake(t, false)
	p := startProxyFor(t, "lmtp",
		passwdLine("kate@example.org", "", "proxy host=127.0.0.1 port="+f.port()+" destuser=erin@backend forward_foo=bar forward_x=y2")+
			passwdLine("lena@example.org", "", "proxy host=127.0.0.1 port="+f.port())+
			passwdLine("reject@example.org", "", "proxy host=127.0.0.1 port="+f.port()), "")
	host := lmtpHostname(t)
	c := lmtpDial(t, p.addr)
	lmtpLHLO(c)
	c.send("MAIL FROM:<sender@example.org> BODY=8BITMIME\r\n")
	lmtpExpect(c, "250 2.1.0 OK")
	c.send("RCPT TO:<Kate+box@example.org>\r\n")
	lmtpExpect(c, "250 2.1.5 OK")
	c.send("RCPT TO:<reject@example.org>\r\n")
	lmtpExpect(c, "550 5.1.1 <reject@example.org> User doesn't exist here")
	c.send("RCPT TO:<lena@example.org>\r\n")
	lmtpExpect(c, "250 2.1.5 OK")
	c.send("DATA\r\n")
	lmtpExpect(c, "354 OK")
	c.send("Subject: wire\r\n\r\n..dotted\n.\r\n") // a bare LF ends a line too
	r := strings.TrimSpace(strings.Join(lmtpReply(c, 10*time.Second), ""))
	sid := lmtpSessionOf(t, r)
	if r != "250 2.0.0 <Kate+box@example.org> "+sid+" Saved" {
		t.Fatalf("kate: %q", r)
	}
	lmtpExpect(c, "250 2.0.0 <lena@example.org> "+sid+":R3 Saved")

	local := c.c.LocalAddr().(*net.TCPAddr)
	want := []string{
		"LHLO " + host,
		"XCLIENT HELO=client.example PROTO=LMTP SESSION=" + lmtp.Xtext(sid+":P1") +
			fmt.Sprintf(" TTL=5 PORT=%d ADDR=127.0.0.1", local.Port),
		"LHLO " + host,
		"MAIL FROM:<sender@example.org> BODY=8BITMIME",
		"RCPT TO:<erin+box@backend> ORCPT=rfc822;Kate+2Bbox@example.org XRCPTFORWARD=foo+3Dbar+09x+3Dy2",
		"RCPT TO:<reject@example.org>",
		"RCPT TO:<lena@example.org>",
		"DATA",
		"QUIT", // the transaction is over: the backend connection goes, as in Dovecot
	}
	waitFor(t, func() bool { cs := f.commands(); return cs[len(cs)-1] == "QUIT" }, "QUIT at the backend")
	got := f.commands()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("backend got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	f.mu.Lock()
	data := string(f.data)
	f.mu.Unlock()
	if !strings.HasPrefix(data, "Received: from client.example ([127.0.0.1])\r\n\tby "+host+" with LMTP\r\n\tid "+sid+
		"\r\n\t(envelope-from <sender@example.org>); ") {
		t.Fatalf("message at the backend:\n%q", data)
	}
	if !strings.HasSuffix(data, "\r\nSubject: wire\r\n\r\n..dotted\r\n.\r\n") {
		t.Fatalf("message at the backend:\n%q", data)
	}
	c.send("QUIT\r\n")
	lmtpExpect(c, "221 2.0.0 Bye")
}

// TestLMTPSMTPBackend: protocol=smtp speaks EHLO, and the one reply to the message goes
// to every recipient on that connection.
func TestLMTPSMTPBackend(t *testing.T) {
	f := lmtpStartFake(t, true)
	p := startProxyFor(t, "lmtp",
		passwdLine("a@example.org", "", "proxy protocol=smtp host=127.0.0.1 port="+f.port())+
			passwdLine("b@example.org", "", "proxy protocol=smtp host=127.0.0.1 port="+f.port()), "")
	c := lmtpDial(t, p.addr)
	c.send("LHLO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
	lmtpReply(c, 10*time.Second)
	lmtpExpect(c, "250 2.1.0 OK")
	lmtpExpect(c, "250 2.1.5 OK")
	lmtpExpect(c, "250 2.1.5 OK")
	lmtpExpect(c, "354 OK")
	c.send("hello\r\n.\r\n")
	r := strings.TrimSpace(strings.Join(lmtpReply(c, 10*time.Second), ""))
	sid := lmtpSessionOf(t, r)
	lmtpExpect(c, "250 2.0.0 <b@example.org> "+sid+":R2 Saved")
	if got := f.commands(); got[0] != "EHLO "+lmtpHostname(t) {
		t.Fatalf("backend got %q", got)
	}
}

// TestLMTPBackendFailures: a backend that refuses MAIL passes its reply to the
// recipient; one that drops the connection inside the message fails its recipients
// only, with Dovecot's "Proxy failed".
func TestLMTPBackendFailures(t *testing.T) {
	refuse := lmtpStartFake(t, false)
	refuse.failMail = "451 4.3.0 Mail refused for now"
	drop := lmtpStartFake(t, false)
	drop.dropInData = 64 << 10
	good := lmtpStartFake(t, false)
	p := startProxyFor(t, "lmtp",
		passwdLine("r@example.org", "", "proxy host=127.0.0.1 port="+refuse.port())+
			passwdLine("d@example.org", "", "proxy host=127.0.0.1 port="+drop.port())+
			passwdLine("g@example.org", "", "proxy host=127.0.0.1 port="+good.port()), "")
	c := lmtpDial(t, p.addr)
	c.send("MAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.org>\r\nRCPT TO:<d@example.org>\r\nRCPT TO:<g@example.org>\r\nDATA\r\n")
	lmtpExpect(c, "250 2.1.0 OK")
	lmtpExpect(c, "451 4.3.0 <r@example.org> Mail refused for now")
	lmtpExpect(c, "250 2.1.5 OK")
	lmtpExpect(c, "250 2.1.5 OK")
	lmtpExpect(c, "354 OK")
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 4096)
	c.send(string(body) + ".\r\n")
	r := strings.TrimSpace(strings.Join(lmtpReply(c, 30*time.Second), ""))
	if !strings.HasPrefix(r, "451 4.4.0 Proxy failed (connection lost, session=") {
		t.Fatalf("d: %q", r)
	}
	sid := strings.TrimSuffix(strings.TrimPrefix(r, "451 4.4.0 Proxy failed (connection lost, session="), ":R2)")
	lmtpExpect(c, "250 2.0.0 <g@example.org> "+sid+":R3 Saved")
	good.mu.Lock()
	n := len(good.data)
	good.mu.Unlock()
	if n < len(body) {
		t.Fatalf("good backend got %d bytes", n)
	}
}

// TestLMTPShutdown: stopping the server says goodbye to an idle client.
func TestLMTPShutdown(t *testing.T) {
	p := startProxyFor(t, "lmtp", passwdLine("x@example.org", "", "proxy host=127.0.0.1 port=1"), "")
	c := lmtpDial(t, p.addr)
	c.send("NOOP\r\n")
	lmtpExpect(c, "250 2.0.0 OK")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.srv.stopLMTP(ctx); err != nil {
		t.Fatal(err)
	}
	lmtpExpect(c, "421 4.3.2 "+lmtpHostname(t)+" Shutting down")
	if _, err := net.DialTimeout("tcp", p.addr, time.Second); err == nil {
		t.Fatal("still accepting after close")
	}
	waitFor(t, func() bool { return p.logs.FilterMessage("session ended").Len() == 1 }, "session end line")
}

// LMTP through two Doormans: the second trusts the first, takes its XCLIENT (address,
// session, TTL) and tells Dovecot the client's address; a loop of two LMTP proxies ends
// at TTL 0 with Dovecot's 554 reply.
func TestLMTPChainAndLoop(t *testing.T) {
	be := sharedBackend(t)
	second := startProxyFor(t, "lmtp", passwdLine("alice", "", "proxy nopassword host=127.0.0.1 port="+portOf(be.LMTPAddr)), `auth_username_format: "%Ln"`)
	first := startProxyFor(t, "lmtp", passwdLine("alice", "", "proxy nopassword host=127.0.0.1 port="+portOf(second.addr)), `auth_username_format: "%Ln"`)
	lmtpChainSend := func(addr, from string) string {
		t.Helper()
		c := dial(t, addr, from)
		expectPrefix(t, c.gr, "220 ")
		c.send("LHLO client.example\r\n")
		for l := c.line(5 * time.Second); strings.HasPrefix(l, "250-"); l = c.line(5 * time.Second) {
		}
		c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.org>\r\n")
		expectPrefix(t, c.line(5*time.Second), "250 ")
		reply := c.line(20 * time.Second)
		c.send("QUIT\r\n")
		c.line(5 * time.Second)
		c.c.Close()
		return reply
	}
	if got := lmtpChainSend(first.addr, "127.0.0.26"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("RCPT through two proxies: %q", got)
	}
	waitFor(t, func() bool {
		for _, e := range second.logs.FilterMessage("session ended").All() {
			if strings.HasPrefix(e.ContextMap()["remote"].(string), "127.0.0.26:") {
				return true
			}
		}
		return false
	}, "the second hop's session has the client's address")

	portA, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := startProxyFor(t, "lmtp", passwdLine("alice", "", fmt.Sprintf("proxy nopassword host=127.0.0.1 port=%d", portA)), `auth_username_format: "%Ln"`)
	a := startProxyOn(t, portA, "lmtp", passwdLine("alice", "", "proxy nopassword host=127.0.0.1 port="+portOf(b.addr)), `auth_username_format: "%Ln"`)
	got := lmtpChainSend(a.addr, "127.0.0.27")
	if !strings.HasPrefix(got, "554 5.4.6") || !strings.Contains(got, "looping") {
		t.Fatalf("LMTP proxy loop: %q", got)
	}
}
