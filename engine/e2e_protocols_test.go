package engine

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"doorman/engine/testenv"
)

// End-to-end tests of POP3, Submission and ManageSieve through Doorman, against the same
// real Dovecot as the IMAP tests, with real clients (poplib, smtplib, curl, swaks,
// sieve-connect).

func requireProtocol(t *testing.T, proto string) {
	t.Helper()
	if _, ok := protocols[proto]; !ok {
		t.Fatalf("protocol %s is not wired into the engine", proto)
	}
}

func pyRun(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return string(out)
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// deliver puts a message into a user's INBOX by LMTP straight to the backend.
func deliver(t *testing.T, lmtpAddr, user, body string) {
	t.Helper()
	h, p := hostPort(t, lmtpAddr)
	pyRun(t, fmt.Sprintf(`
import smtplib
s = smtplib.LMTP(%q, %s)
s.sendmail("sender@example.org", [%q], %q)
s.quit()
`, h, p, user+"@example.org", body))
}

func TestPOP3ThroughProxy(t *testing.T) {
	requireProtocol(t, "pop3")
	be := sharedBackend(t)
	port := portOf(be.POP3Addr)
	p := startProxyFor(t, "pop3", passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port)+
		passwdLine("bob", "", "proxy nopassword host=127.0.0.1 port="+port), "")
	body := "From: a@example.org\r\nSubject: pop3 through doorman\r\n\r\nhello pop3\r\n"
	deliver(t, be.LMTPAddr, "alice", body)

	h, pt := hostPort(t, p.addr)
	out := pyRun(t, fmt.Sprintf(`
import poplib
m = poplib.POP3(%q, %s)
print("greeting", m.getwelcome())
m.user("alice")
print(m.pass_("secret"))
n, size = m.stat()
assert n >= 1, n
resp, lines, octets = m.retr(n)
print("body", b"\r\n".join(lines).decode())
m.quit()
for user, pw in (("alice", "wrong"), ("nobody", "secret"), ("bob", "wrong")):
    m = poplib.POP3(%q, %s)
    m.user(user)
    try:
        m.pass_(pw)
        print("accepted", user)
    except poplib.error_proto as e:
        print("refused", user, e)
    m.quit()
`, h, pt, h, pt))
	for _, want := range []string{"hello pop3", "refused alice b'-ERR [AUTH] Authentication failed.'",
		"refused nobody b'-ERR [AUTH] Authentication failed.'", "refused bob"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}

	// curl's POP3 client lists the mailbox through the proxy.
	cout, err := exec.Command("curl", "-sS", "--max-time", "20", "--url", "pop3://"+p.addr+"/", "--user", "alice:secret").CombinedOutput()
	if err != nil || !strings.Contains(string(cout), "1 ") {
		t.Fatalf("curl pop3: %v\n%s", err, cout)
	}

	// Garbage before login gets POP3's own errors, then the session still works.
	c := dial(t, p.addr, "127.0.0.9")
	expectPrefix(t, c.gr, "+OK")
	c.send("HELLO\r\n")
	expectPrefix(t, c.line(5*time.Second), "-ERR")
	c.send("USER alice\r\n")
	expectPrefix(t, c.line(5*time.Second), "+OK")
	c.send("PASS secret\r\n")
	expectPrefix(t, c.line(10*time.Second), "+OK")
	c.send("QUIT\r\n")
	expectPrefix(t, c.line(5*time.Second), "+OK")
	// The backend saw the client's own address through XCLIENT.
	waitFor(t, func() bool {
		log, _ := be.Log()
		return strings.Contains(log, "pop3-login") && strings.Contains(log, "rip=127.0.0.9")
	}, "backend log shows pop3 rip=127.0.0.9")
}

func TestSubmissionThroughProxy(t *testing.T) {
	requireProtocol(t, "submission")
	be := sharedBackend(t)
	port := portOf(be.SubmissionAddr)
	p := startProxyFor(t, "submission", passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port)+
		passwdLine("carol", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port+" master=proxy pass=masterpw"), "")
	be.Sink.Reset()
	h, pt := hostPort(t, p.addr)
	out := pyRun(t, fmt.Sprintf(`
import smtplib
s = smtplib.SMTP(%q, %s, local_hostname="client.example", source_address=("127.0.0.12", 0))
s.ehlo()
s.login("alice", "secret")
s.sendmail("alice@example.org", ["someone@example.net"], b"Subject: via smtplib\r\n\r\nhello submission\r\n")
s.quit()
for user, pw in (("alice", "wrong"), ("nobody", "secret")):
    s = smtplib.SMTP(%q, %s)
    try:
        s.login(user, pw)
        print("accepted", user)
    except smtplib.SMTPAuthenticationError as e:
        print("refused", user, e.smtp_code)
`, h, pt, h, pt))
	if !strings.Contains(out, "refused alice 535") || !strings.Contains(out, "refused nobody 535") {
		t.Fatalf("wrong password or unknown user not refused with 535:\n%s", out)
	}
	msgs, err := be.Sink.WaitMessages(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msgs[0].Data), "hello submission") || msgs[0].To[0] != "someone@example.net" {
		t.Fatalf("relayed message: %+v", msgs[0])
	}

	// swaks, AUTH PLAIN through the master user (carol).
	sw, err := exec.Command("swaks", "--server", h, "--port", pt, "--auth", "PLAIN", "--auth-user", "carol",
		"--auth-password", "secret", "--from", "carol@example.org", "--to", "other@example.net",
		"--body", "hello from swaks", "--timeout", "20").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, sw)
	}
	if _, err := be.Sink.WaitMessages(2, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// curl's SMTP client.
	cmd := exec.Command("curl", "-sS", "--max-time", "20", "--url", "smtp://"+p.addr+"/client.example",
		"--mail-from", "alice@example.org", "--mail-rcpt", "third@example.net", "--user", "alice:secret", "-T", "-")
	cmd.Stdin = strings.NewReader("Subject: via curl\r\n\r\nhello from curl\r\n")
	if cout, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl smtp: %v\n%s", err, cout)
	}
	msgs, err = be.Sink.WaitMessages(3, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	// Before login: mail commands are refused, garbage gets SMTP's own error.
	c := dial(t, p.addr, "127.0.0.10")
	expectPrefix(t, c.gr, "220 ")
	c.send("MAIL FROM:<x@example.org>\r\n")
	expectPrefix(t, c.line(5*time.Second), "530 5.7.0")
	c.send("BOGUS\r\n")
	expectPrefix(t, c.line(5*time.Second), "500 ")
	c.send("QUIT\r\n")
	expectPrefix(t, c.line(5*time.Second), "221 ")
	// The backend logged the real client addresses (XCLIENT).
	waitFor(t, func() bool {
		log, _ := be.Log()
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "submission-login") && strings.Contains(l, "user=<alice>") && strings.Contains(l, "rip=127.0.0.12") {
				return true
			}
		}
		return false
	}, "backend log shows alice's submission login from rip=127.0.0.12")
}

func TestManageSieveThroughProxy(t *testing.T) {
	requireProtocol(t, "managesieve")
	be := sharedBackend(t)
	port := portOf(be.SieveAddr)
	p := startProxyFor(t, "managesieve", passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port), "")
	h, pt := hostPort(t, p.addr)
	script := t.TempDir() + "/doorman.sieve"
	if err := writeFile(script, "require \"fileinto\";\nif header :contains \"subject\" \"sieve\" { fileinto \"INBOX\"; }\n"); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		cmd := exec.Command("sieve-connect", append([]string{"--server", h, "--port", pt, "--user", "alice",
			"--passwordfd", "0", "--clearchan", "--notlsverify"}, args...)...)
		cmd.Stdin = strings.NewReader("secret\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sieve-connect %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	// sieve-connect, a real ManageSieve client, uploads and lists a script.
	run("--localsieve", script, "--remotesieve", "fromclient", "--upload")
	if out := run("--list"); !strings.Contains(out, "fromclient") {
		t.Fatalf("sieve-connect --list does not show the uploaded script:\n%s", out)
	}
	// A raw ManageSieve exchange: the proxy's own greeting, a login through it, and a
	// real command at the backend.
	c := dial(t, p.addr, "127.0.0.11")
	for !strings.HasPrefix(c.gr, "OK") {
		c.gr = c.line(5 * time.Second)
	}
	// Garbage first: ManageSieve's own error, and the session goes on.
	c.send("FOO BAR\r\n")
	expectPrefix(t, c.line(5*time.Second), "NO \"Error in MANAGESIEVE command")
	c.send("AUTHENTICATE \"PLAIN\" \"" + b64("\x00alice\x00secret") + "\"\r\n")
	expectPrefix(t, c.line(10*time.Second), "OK")
	sieve := "keep;\r\n"
	c.send(fmt.Sprintf("PUTSCRIPT \"doorman\" {%d+}\r\n%s\r\n", len(sieve), sieve))
	expectPrefix(t, c.line(10*time.Second), "OK")
	c.send("LISTSCRIPTS\r\n")
	var listed []string
	for {
		l := c.line(10 * time.Second)
		listed = append(listed, l)
		if strings.HasPrefix(l, "OK") || strings.HasPrefix(l, "NO") {
			break
		}
	}
	if !strings.Contains(strings.Join(listed, ""), "\"doorman\"") {
		t.Fatalf("LISTSCRIPTS: %q", listed)
	}
	c.send("LOGOUT\r\n")

	// Wrong password: the proxy's refusal, in ManageSieve's form.
	d := dial(t, p.addr, "")
	for !strings.HasPrefix(d.gr, "OK") {
		d.gr = d.line(5 * time.Second)
	}
	d.send("AUTHENTICATE \"PLAIN\" \"" + b64("\x00alice\x00wrong") + "\"\r\n")
	if got := d.line(10 * time.Second); got != "NO \"Authentication failed.\"\r\n" {
		t.Fatalf("wrong password: %q", got)
	}
	d.send("AUTHENTICATE \"PLAIN\" \"" + b64("\x00nobody\x00secret") + "\"\r\n")
	if got := d.line(10 * time.Second); got != "NO \"Authentication failed.\"\r\n" {
		t.Fatalf("unknown user: %q", got)
	}
	waitFor(t, func() bool {
		log, _ := be.Log()
		return strings.Contains(log, "managesieve-login") && strings.Contains(log, "rip=127.0.0.11")
	}, "backend log shows managesieve rip=127.0.0.11")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

// A backend that is down: every protocol answers with its own form of Dovecot's
// "Account is temporarily unavailable." once the retries within login_proxy_timeout are spent.
func TestBackendDownEveryProtocol(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	passwd := passwdLine("alice", "{PLAIN}secret", fmt.Sprintf("proxy host=127.0.0.1 port=%d", port))
	for _, c := range []struct {
		proto, login, want string
	}{
		{"imap", "a LOGIN alice secret\r\n", "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n"},
		{"pop3", "USER alice\r\nPASS secret\r\n", "-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n"},
		{"submission", "EHLO client.example\r\nAUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n", "454 4.7.0 Account is temporarily unavailable.\r\n"},
		{"managesieve", "AUTHENTICATE \"PLAIN\" \"" + b64("\x00alice\x00secret") + "\"\r\n", "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n"},
	} {
		t.Run(c.proto, func(t *testing.T) {
			p := startProxyFor(t, c.proto, passwd, "login_proxy_timeout: 2s")
			cl := dial(t, p.addr, "")
			cl.send(c.login)
			deadline := time.Now().Add(2*time.Second + 5*time.Second)
			for {
				l := cl.line(time.Until(deadline))
				if l == c.want {
					return
				}
				if strings.Contains(l, "unavailable") || strings.HasPrefix(l, "NO") || strings.HasPrefix(l, "-ERR") || strings.HasPrefix(l, "4") || strings.HasPrefix(l, "5") {
					t.Fatalf("got %q, want %q", l, c.want)
				}
			}
		})
	}
}
