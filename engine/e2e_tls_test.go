package engine

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"doorman/engine/testenv"
)

// TLS end to end: real clients (openssl s_client, curl, Python, swaks, sieve-connect) with
// TLS to Doorman, and Doorman with TLS to a real Dovecot that refuses plaintext logins.

// tlsFixture is a test CA and the certificate Doorman shows: localhost, 127.0.0.1 and
// mail.example.org.
type tlsFixture struct {
	ca        *testenv.CA
	dir       string
	cert, key string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := testenv.NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("doorman", "localhost", "127.0.0.1", "mail.example.org")
	if err != nil {
		t.Fatal(err)
	}
	return &tlsFixture{ca: ca, dir: dir, cert: cert, key: key}
}

func (fx *tlsFixture) clientConfig(name string) *tls.Config {
	return &tls.Config{RootCAs: fx.ca.Pool(), ServerName: name}
}

// startTLSProxy runs Doorman with the fixture's certificate; listeners is the YAML list's
// body, one "- {...}" per line.
func startTLSProxy(t *testing.T, fx *tlsFixture, listeners, passwd, extra string) *proxy {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "users.passwd"), []byte(passwd), 0o600); err != nil {
		t.Fatal(err)
	}
	yml := fmt.Sprintf(`listeners:
%s
passdb:
  - {driver: passwd-file, path: users.passwd}
ssl_cert: %q
ssl_key: %q
auth_failure_delay: 200ms
%s
`, listeners, fx.cert, fx.key, extra)
	return startProxyYAML(t, dir, yml)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// dialTLS connects with TLS (verified against the fixture's CA) and reads the greeting.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) *client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, r: bufio.NewReaderSize(c, 64<<10)}
	cl.gr = cl.line(10 * time.Second)
	return cl
}

// startTLS upgrades a plain client after its STARTTLS was accepted.
func (c *client) startTLS(cfg *tls.Config) {
	c.t.Helper()
	if c.r.Buffered() > 0 {
		c.t.Fatalf("%d bytes buffered before the TLS handshake", c.r.Buffered())
	}
	tc := tls.Client(c.c, cfg)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("STARTTLS handshake: %v", err)
	}
	_ = tc.SetDeadline(time.Time{})
	c.c = tc
	c.r = bufio.NewReaderSize(tc, 64<<10)
}

func TestImplicitTLSEveryProtocol(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	imaps, pop3s, smtps := freeAddr(t), freeAddr(t), freeAddr(t)
	fields := func(addr string) string { return "proxy host=127.0.0.1 port=" + portOf(addr) }
	// One passdb for three protocols: the port comes from the listener's protocol default
	// otherwise, so each user here is for one protocol.
	passwd := passwdLine("alice", "{PLAIN}secret", fields(be.IMAPAddr)) +
		passwdLine("bob", "{PLAIN}secret", fields(be.POP3Addr)) +
		passwdLine("carol", "{PLAIN}secret", fields(be.SubmissionAddr))
	startTLSProxy(t, fx, fmt.Sprintf(`  - {name: imaps, protocol: imap, address: %q, ssl: true}
  - {name: pop3s, protocol: pop3, address: %q, ssl: true}
  - {name: smtps, protocol: submission, address: %q, ssl: true}`, imaps, pop3s, smtps), passwd, "")

	// openssl s_client, verifying the chain and the name.
	cmd := exec.Command("openssl", "s_client", "-connect", imaps, "-CAfile", fx.ca.CertFile,
		"-verify_return_error", "-verify_hostname", "localhost", "-quiet", "-crlf", "-ign_eof")
	cmd.Stdin = strings.NewReader("a LOGIN alice secret\nb SELECT INBOX\nc LOGOUT\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "a OK") || !strings.Contains(string(out), "b OK [READ-WRITE]") {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}

	// curl over imaps, pop3s and smtps.
	out, err = exec.Command("curl", "-sS", "--max-time", "20", "--cacert", fx.ca.CertFile,
		"--url", "imaps://"+imaps+"/", "--user", "alice:secret").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "INBOX") {
		t.Fatalf("curl imaps: %v\n%s", err, out)
	}
	out, err = exec.Command("curl", "-sS", "--max-time", "20", "--cacert", fx.ca.CertFile,
		"--url", "pop3s://"+pop3s+"/", "--user", "bob:secret").CombinedOutput()
	if err != nil {
		t.Fatalf("curl pop3s: %v\n%s", err, out)
	}
	mail := filepath.Join(t.TempDir(), "mail.txt")
	if err := writeFile(mail, "From: carol@example.org\r\nSubject: smtps via curl\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("curl", "-sS", "--max-time", "20", "--cacert", fx.ca.CertFile,
		"--url", "smtps://"+smtps+"/", "--user", "carol:secret", "--mail-from", "carol@example.org",
		"--mail-rcpt", "someone@example.net", "--upload-file", mail).CombinedOutput()
	if err != nil {
		t.Fatalf("curl smtps: %v\n%s", err, out)
	}

	// Python's IMAP4_SSL, POP3_SSL and SMTP_SSL with certificate checks on.
	ih, ip := hostPort(t, imaps)
	ph, pp := hostPort(t, pop3s)
	sh, sp := hostPort(t, smtps)
	py := pyRun(t, fmt.Sprintf(`
import imaplib, poplib, smtplib, ssl
ctx = ssl.create_default_context(cafile=%q)
m = imaplib.IMAP4_SSL(%q, %s, ssl_context=ctx)
print("imap", m.login("alice", "secret")[0])
m.logout()
p = poplib.POP3_SSL(%q, %s, context=ctx)
p.user("bob")
print("pop3", p.pass_("secret"))
p.quit()
s = smtplib.SMTP_SSL(%q, %s, context=ctx)
s.login("carol", "secret")
s.sendmail("carol@example.org", ["x@example.net"], "Subject: smtp_ssl\r\n\r\nhello\r\n")
print("smtp sent")
s.quit()
`, fx.ca.CertFile, ih, ip, ph, pp, sh, sp))
	for _, want := range []string{"imap OK", "pop3 b'+OK", "smtp sent"} {
		if !strings.Contains(py, want) {
			t.Errorf("python: missing %q in:\n%s", want, py)
		}
	}

	// swaks on implicit TLS, verifying the certificate.
	out, err = exec.Command("swaks", "--server", sh, "--port", sp, "--tlsc", "--tls-verify",
		"--tls-ca-path", fx.ca.CertFile, "--tls-sni", "localhost", "--auth", "PLAIN", "--auth-user", "carol",
		"--auth-password", "secret", "--from", "carol@example.org", "--to", "y@example.net").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "250 ") {
		t.Fatalf("swaks --tlsc: %v\n%s", err, out)
	}
}

func TestSTARTTLSEveryProtocol(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	imap, pop3, sub, sieve := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	fields := func(addr string) string { return "proxy host=127.0.0.1 port=" + portOf(addr) }
	passwd := passwdLine("alice", "{PLAIN}secret", fields(be.IMAPAddr)) +
		passwdLine("bob", "{PLAIN}secret", fields(be.POP3Addr)) +
		passwdLine("carol", "{PLAIN}secret", fields(be.SubmissionAddr)) +
		passwdLine("dave", "{PLAIN}secret", fields(be.SieveAddr))
	startTLSProxy(t, fx, fmt.Sprintf(`  - {name: imap, protocol: imap, address: %q}
  - {name: pop3, protocol: pop3, address: %q}
  - {name: submission, protocol: submission, address: %q}
  - {name: sieve, protocol: managesieve, address: %q}`, imap, pop3, sub, sieve), passwd, "")

	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", fx.ca.CertFile,
		"--url", "imap://"+imap+"/", "--user", "alice:secret").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "INBOX") {
		t.Fatalf("curl imap STARTTLS: %v\n%s", err, out)
	}
	out, err = exec.Command("curl", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", fx.ca.CertFile,
		"--url", "pop3://"+pop3+"/", "--user", "bob:secret").CombinedOutput()
	if err != nil {
		t.Fatalf("curl pop3 STLS: %v\n%s", err, out)
	}
	ih, ip := hostPort(t, imap)
	ph, pp := hostPort(t, pop3)
	sh, sp := hostPort(t, sub)
	py := pyRun(t, fmt.Sprintf(`
import imaplib, poplib, smtplib, ssl
ctx = ssl.create_default_context(cafile=%q)
m = imaplib.IMAP4(%q, %s)
print("imap starttls", m.starttls(ssl_context=ctx)[0])
print("imap", m.login("alice", "secret")[0])
m.logout()
p = poplib.POP3(%q, %s)
print("pop3 stls", p.stls(context=ctx))
p.user("bob")
print("pop3", p.pass_("secret"))
p.quit()
s = smtplib.SMTP(%q, %s)
s.starttls(context=ctx)
s.login("carol", "secret")
s.sendmail("carol@example.org", ["x@example.net"], "Subject: starttls\r\n\r\nhello\r\n")
print("smtp sent")
s.quit()
`, fx.ca.CertFile, ih, ip, ph, pp, sh, sp))
	for _, want := range []string{"imap starttls OK", "imap OK", "pop3 b'+OK", "smtp sent"} {
		if !strings.Contains(py, want) {
			t.Errorf("python: missing %q in:\n%s", want, py)
		}
	}
	out, err = exec.Command("swaks", "--server", sh, "--port", sp, "--tls", "--tls-verify",
		"--tls-ca-path", fx.ca.CertFile, "--tls-sni", "localhost", "--auth", "PLAIN", "--auth-user", "carol",
		"--auth-password", "secret", "--from", "carol@example.org", "--to", "y@example.net").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "250 ") {
		t.Fatalf("swaks --tls: %v\n%s", err, out)
	}
	vh, vp := hostPort(t, sieve)
	sc := exec.Command("sieve-connect", "--server", vh, "--port", vp, "--user", "dave", "--passwordfd", "0",
		"--tlscafile", fx.ca.CertFile, "--tlshostname", "localhost", "--noclearchan", "--list")
	sc.Stdin = strings.NewReader("secret\n")
	out, err = sc.CombinedOutput()
	if err != nil {
		t.Fatalf("sieve-connect over STARTTLS: %v\n%s", err, out)
	}
}

// A command pipelined behind STARTTLS in the same packet came in plaintext: it must be
// dropped, never run inside the TLS session.
func TestSTARTTLSInjectionIsDropped(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	addr := freeAddr(t)
	p := startTLSProxy(t, fx, fmt.Sprintf("  - {name: imap, protocol: imap, address: %q}", addr),
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	c := dial(t, addr, "")
	c.send("a STARTTLS\r\nb LOGIN alice secret\r\n")
	expectPrefix(t, c.line(5*time.Second), "a OK Begin TLS negotiation now.")
	c.startTLS(fx.clientConfig("localhost"))
	c.send("c NOOP\r\n")
	got := c.line(5 * time.Second)
	expectPrefix(t, got, "c OK")
	waitFor(t, func() bool {
		return p.logs.FilterMessage("dropped plaintext pipelined after STARTTLS").Len() == 1
	}, "a log line about the dropped bytes")
	// Still not logged in: a command that needs a login is refused by the codec.
	c.send("d SELECT INBOX\r\n")
	expectPrefix(t, c.line(5*time.Second), "d BAD")
}

func TestLoginDisabledWithoutTLS(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	imap, pop3 := freeAddr(t), freeAddr(t)
	passwd := passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)) +
		passwdLine("bob", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.POP3Addr))
	// No login_trusted_networks, and the client on 127.0.0.9 is not the proxy's own
	// address: the connection is not secured.
	startTLSProxy(t, fx, fmt.Sprintf(`  - {name: imap, protocol: imap, address: %q}
  - {name: pop3, protocol: pop3, address: %q}`, imap, pop3), passwd, "")
	c := dial(t, imap, "127.0.0.9")
	if !strings.Contains(c.gr, " STARTTLS LOGINDISABLED") || strings.Contains(c.gr, "AUTH=PLAIN") {
		t.Fatalf("greeting on a plain connection: %q", c.gr)
	}
	c.send("a LOGIN alice secret\r\n")
	lines := c.until("a", 5*time.Second)
	expectPrefix(t, lines[0], "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS")
	expectPrefix(t, last(lines), "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
	c.send("b STARTTLS\r\n")
	expectPrefix(t, c.line(5*time.Second), "b OK")
	c.startTLS(fx.clientConfig("localhost"))
	c.send("c CAPABILITY\r\n")
	caps := c.until("c", 5*time.Second)
	if !strings.Contains(caps[0], "AUTH=PLAIN") || strings.Contains(caps[0], "LOGINDISABLED") || strings.Contains(caps[0], "STARTTLS") {
		t.Fatalf("capabilities after STARTTLS: %q", caps[0])
	}
	c.send("d LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("d", 10*time.Second)), "d OK")
	c.send("e SELECT INBOX\r\n")
	expectPrefix(t, last(c.until("e", 10*time.Second)), "e OK")

	pc := dial(t, pop3, "127.0.0.9")
	pc.send("CAPA\r\n")
	capa := ""
	for l := pc.line(5 * time.Second); l != ".\r\n"; l = pc.line(5 * time.Second) {
		capa += l
	}
	if !strings.Contains(capa, "STLS") || strings.Contains(capa, "USER") {
		t.Fatalf("POP3 CAPA on a plain connection:\n%s", capa)
	}
	pc.send("USER bob\r\n")
	expectPrefix(t, pc.line(5*time.Second), "-ERR")
}

// The TLS test backend: a Dovecot with ssl=required on its own address and no trusted
// networks, so it refuses every plaintext login from the proxy.
var (
	tlsBackendOnce sync.Once
	tlsBackendFx   *tlsFixture
	tlsBackendDC   *testenv.Dovecot
	tlsBackendErr  error
)

func tlsBackend(t *testing.T) (*testenv.Dovecot, *testenv.CA) {
	t.Helper()
	sharedBackend(t) // the same requirements, and its Stop at the end of the package
	tlsBackendOnce.Do(func() {
		dir, err := os.MkdirTemp("", "doorman-tlsbackend")
		if err != nil {
			tlsBackendErr = err
			return
		}
		ca, err := testenv.NewCA(dir)
		if err != nil {
			tlsBackendErr = err
			return
		}
		cert, key, err := ca.Issue("backend", "imap.backend.test", "127.0.0.4")
		if err != nil {
			tlsBackendErr = err
			return
		}
		tlsBackendFx = &tlsFixture{ca: ca, dir: dir, cert: cert, key: key}
		tlsBackendDC, tlsBackendErr = testenv.StartDovecot(testenv.DovecotOptions{
			ListenIP:        "127.0.0.4",
			TrustedNetworks: "none",
			SSL:             "required",
			SSLCert:         cert,
			SSLKey:          key,
			TLSPorts:        true,
			Protocols:       []string{"imap", "pop3"},
			Users:           []testenv.User{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"}},
		})
		if tlsBackendErr == nil {
			stopAtExit = append(stopAtExit, func() { _ = tlsBackendDC.Stop(); os.RemoveAll(dir) })
		}
	})
	if tlsBackendErr != nil {
		t.Fatalf("start TLS dovecot: %v", tlsBackendErr)
	}
	return tlsBackendDC, tlsBackendFx.ca
}

func TestTLSToBackend(t *testing.T) {
	be, beCA := tlsBackend(t)
	fx := newTLSFixture(t)
	imaps := portOf(be.IMAPSAddr)
	plain := portOf(be.IMAPAddr)
	passwd := passwdLine("alice", "{PLAIN}secret", "proxy host=imap.backend.test hostip=127.0.0.4 ssl=yes port="+imaps) +
		passwdLine("bob", "{PLAIN}secret", "proxy host=127.0.0.4 starttls=yes port="+plain) +
		passwdLine("carol", "{PLAIN}secret", "proxy host=127.0.0.4 port="+plain) +
		passwdLine("dave", "{PLAIN}secret", "proxy host=wrong.backend.test hostip=127.0.0.4 ssl=yes port="+imaps) +
		passwdLine("erin", "{PLAIN}secret", "proxy host=wrong.backend.test hostip=127.0.0.4 ssl=any-cert port="+imaps+" destuser=alice")
	addr := freeAddr(t)
	p := startTLSProxy(t, fx, fmt.Sprintf("  - {name: imap, protocol: imap, address: %q}", addr), passwd,
		fmt.Sprintf("login_trusted_networks: [127.0.0.0/8]\nlogin_proxy_max_reconnects: 0\nssl_client_ca_file: %q", beCA.CertFile))

	for _, user := range []string{"alice", "bob"} {
		c := dial(t, addr, "")
		c.send("a LOGIN " + user + " secret\r\n")
		expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
		c.send("b SELECT INBOX\r\n")
		expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK [READ-WRITE]")
		c.send("c LOGOUT\r\n")
		expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
	}
	// Without TLS this backend refuses the login; the proxy passes its refusal on.
	c := dial(t, addr, "")
	c.send("a LOGIN carol secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a NO")
	// A certificate that does not name the host: a temporary failure, and a log line that says why.
	c.send("b LOGIN dave secret\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b NO [UNAVAILABLE]")
	waitFor(t, func() bool {
		for _, e := range p.logs.FilterMessage("login failed").All() {
			if r, _ := e.ContextMap()["reason"].(string); strings.Contains(r, "TLS handshake with backend") &&
				strings.Contains(r, "wrong.backend.test") && strings.Contains(r, "certificate") {
				return true
			}
		}
		return false
	}, "a login-failed line naming the certificate problem")
	// any-cert skips the check.
	c.send("c LOGIN erin secret\r\n")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
}

// A backend whose certificate no CA vouches for is refused unless any-cert.
func TestTLSToSelfSignedBackend(t *testing.T) {
	sharedBackend(t)
	dir := t.TempDir()
	cert, key, err := testenv.SelfSigned(dir, "self", "127.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	be, err := testenv.StartDovecot(testenv.DovecotOptions{
		ListenIP: "127.0.0.5", TrustedNetworks: "none", SSL: "required", SSLCert: cert, SSLKey: key,
		TLSPorts: true, Users: []testenv.User{{Name: "alice", Password: "secret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Stop() })
	fx := newTLSFixture(t)
	port := portOf(be.IMAPSAddr)
	addr := freeAddr(t)
	p := startTLSProxy(t, fx, fmt.Sprintf("  - {name: imap, protocol: imap, address: %q}", addr),
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.5 ssl=yes port="+port)+
			passwdLine("bob", "{PLAIN}secret", "proxy host=127.0.0.5 ssl=any-cert port="+port+" destuser=alice"),
		fmt.Sprintf("login_trusted_networks: [127.0.0.0/8]\nlogin_proxy_max_reconnects: 0\nssl_client_ca_file: %q", fx.ca.CertFile))
	c := dial(t, addr, "")
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a NO [UNAVAILABLE]")
	waitFor(t, func() bool {
		for _, e := range p.logs.FilterMessage("login failed").All() {
			if r, _ := e.ContextMap()["reason"].(string); strings.Contains(r, "certificate signed by unknown authority") {
				return true
			}
		}
		return false
	}, "a login-failed line about the unknown authority")
	c.send("b LOGIN bob secret\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
}

// 20 MB up and down with TLS on both legs: client ⇄ Doorman (implicit TLS) ⇄ Dovecot (ssl=yes).
func TestBigMessageOverTLS(t *testing.T) {
	be, beCA := tlsBackend(t)
	fx := newTLSFixture(t)
	addr := freeAddr(t)
	startTLSProxy(t, fx, fmt.Sprintf("  - {name: imaps, protocol: imap, address: %q, ssl: true}", addr),
		passwdLine("bob", "{PLAIN}secret", "proxy host=127.0.0.4 ssl=yes port="+portOf(be.IMAPSAddr)),
		fmt.Sprintf("ssl_client_ca_file: %q", beCA.CertFile))
	c := dialTLS(t, addr, fx.clientConfig("mail.example.org"))
	expectPrefix(t, c.gr, "* OK [CAPABILITY IMAP4rev1")
	c.send("a LOGIN bob secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c.send("m CREATE big20\r\n")
	c.until("m", 10*time.Second)
	msg := bigMessage(20 << 20)
	c.send(fmt.Sprintf("b APPEND big20 {%d}\r\n", len(msg)))
	expectPrefix(t, c.line(10*time.Second), "+ ")
	c.send(string(msg) + "\r\n")
	expectPrefix(t, last(c.until("b", 60*time.Second)), "b OK")
	c.send("c SELECT big20\r\n")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
	c.send("d FETCH 1 BODY.PEEK[]\r\n")
	head := c.line(60 * time.Second)
	var n int
	if _, err := fmt.Sscanf(head[strings.Index(head, "{"):], "{%d}", &n); err != nil || n != len(msg) {
		t.Fatalf("fetch header %q: size %d, want %d", head, n, len(msg))
	}
	got := make([]byte, n)
	_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := ioReadFull(c.r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("fetched message differs from the appended one")
	}
	expectPrefix(t, last(c.until("d", 10*time.Second)), "d OK")
	c.send("e DELETE big20\r\n")
	c.until("e", 10*time.Second)
}

// local_name picks the certificate by SNI; SIGHUP (Reload) swaps certificates for new
// connections while a session on the old one goes on.
func TestSNIAndCertificateReload(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	otherCert, otherKey, err := fx.ca.Issue("other", "other.example.net", "*.wild.example.net")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startTLSProxy(t, fx, fmt.Sprintf("  - {name: imaps, protocol: imap, address: %q, ssl: true}", addr),
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		fmt.Sprintf("local_name:\n  other.example.net: {ssl_cert: %q, ssl_key: %q}\n  \"*.wild.example.net\": {ssl_cert: %q, ssl_key: %q}",
			otherCert, otherKey, otherCert, otherKey))
	leaf := func(name string) string {
		c, err := tls.Dial("tcp", addr, fx.clientConfig(name))
		if err != nil {
			t.Fatalf("dial with SNI %q: %v", name, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	def, other := leaf("localhost"), leaf("other.example.net")
	if def == other {
		t.Fatal("SNI other.example.net got the default certificate")
	}
	if w := leaf("imap.wild.example.net"); w != other {
		t.Fatal("the wildcard name did not get its certificate")
	}

	old := dialTLS(t, addr, fx.clientConfig("localhost"))
	old.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(old.until("a", 10*time.Second)), "a OK")

	// Replace the default certificate's files, then reload.
	newCert, newKey, err := fx.ca.Issue("doorman2", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{newCert: fx.cert, newKey: fx.key} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := leaf("localhost"); got == def {
		t.Fatal("after the reload new connections still get the old certificate")
	}
	old.send("b SELECT INBOX\r\n")
	expectPrefix(t, last(old.until("b", 10*time.Second)), "b OK")

	// A broken file keeps the certificates in use.
	if err := os.WriteFile(fx.cert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.srv.Reload(); err == nil {
		t.Fatal("reload of a broken certificate reported no error")
	}
	leaf("localhost")
}

// Hosts that share ssl_session_ticket_keys resume each other's TLS sessions.
func TestSessionTicketsAcrossHosts(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	keys := filepath.Join(t.TempDir(), "tickets")
	if err := writeFile(keys, "# shared by every proxy host\n"+strings.Repeat("ab", 32)+"\n"); err != nil {
		t.Fatal(err)
	}
	passwd := passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr))
	a, b := freeAddr(t), freeAddr(t)
	extra := fmt.Sprintf("ssl_session_ticket_keys: %q", keys)
	startTLSProxy(t, fx, fmt.Sprintf("  - {name: imaps, protocol: imap, address: %q, ssl: true}", a), passwd, extra)
	startTLSProxy(t, fx, fmt.Sprintf("  - {name: imaps, protocol: imap, address: %q, ssl: true}", b), passwd, extra)
	cfg := fx.clientConfig("localhost")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	first := dialTLS(t, a, cfg) // reading the greeting also reads the TLS 1.3 ticket
	if first.c.(*tls.Conn).ConnectionState().DidResume {
		t.Fatal("the first connection resumed")
	}
	first.c.Close()
	second := dialTLS(t, b, cfg)
	if !second.c.(*tls.Conn).ConnectionState().DidResume {
		t.Fatal("the second host did not resume the first host's session")
	}
	expectPrefix(t, second.gr, "* OK")
}

// A client that speaks plaintext to an implicit-TLS port fails its handshake alone.
func TestTLSHandshakeFailure(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	addr := freeAddr(t)
	p := startTLSProxy(t, fx, fmt.Sprintf("  - {name: imaps, protocol: imap, address: %q, ssl: true}", addr),
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("a LOGIN alice secret\r\n\r\n\r\n"))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			break // closed (after a TLS alert)
		}
	}
	conn.Close()
	waitFor(t, func() bool {
		for _, e := range p.logs.FilterMessage("session ended").All() {
			m := e.ContextMap()
			if m["stage"] == "tls" && strings.HasPrefix(m["reason"].(string), "TLS handshake failed") {
				return true
			}
		}
		return false
	}, "a session-end line for the failed handshake")
	c := dialTLS(t, addr, fx.clientConfig("localhost"))
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
}

// ssl_max_handshakes caps the handshakes under way: a client stalled inside its handshake
// holds the only slot, so a second client's handshake waits (the loop still serves), and
// gets its turn when the first one's ssl_handshake_timeout ends it.
func TestHandshakeSlots(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	addr := freeAddr(t)
	p := startTLSProxy(t, fx, fmt.Sprintf("  - {name: imaps, protocol: imap, address: %q, ssl: true}", addr),
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		"ssl_max_handshakes: 1\nssl_handshake_timeout: 3s")
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	// A record header announcing a ClientHello that never comes.
	if _, err := stalled.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let its handshake take the slot

	waiting, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	tc := tls.Client(waiting, fx.clientConfig("localhost"))
	_ = tc.SetDeadline(time.Now().Add(700 * time.Millisecond))
	if err := tc.Handshake(); err == nil {
		t.Fatal("a handshake completed while the only slot was held")
	}
	waitFor(t, func() bool {
		for _, e := range p.logs.FilterMessage("session ended").All() {
			if r, _ := e.ContextMap()["reason"].(string); r == "TLS handshake failed: timed out" {
				return true
			}
		}
		return false
	}, "the stalled handshake ends at ssl_handshake_timeout")
	c := dialTLS(t, addr, fx.clientConfig("localhost"))
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
}

// ssl=required: plaintext logins are refused even from loopback and trusted networks.
func TestSSLRequired(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	addr := freeAddr(t)
	startTLSProxy(t, fx, fmt.Sprintf("  - {name: imap, protocol: imap, address: %q}", addr),
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		"ssl: required\nlogin_trusted_networks: [127.0.0.0/8]")
	c := dial(t, addr, "127.0.0.1")
	if !strings.Contains(c.gr, "STARTTLS LOGINDISABLED") {
		t.Fatalf("greeting under ssl=required: %q", c.gr)
	}
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 5*time.Second)), "a NO [PRIVACYREQUIRED]")
	c.send("b STARTTLS\r\n")
	expectPrefix(t, c.line(5*time.Second), "b OK")
	c.startTLS(fx.clientConfig("localhost"))
	c.send("c LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
}

// A haproxy listener with implicit TLS: the PROXY header comes in plaintext, then the
// handshake; the header's client is the one the backend hears of.
func TestHAProxyThenTLS(t *testing.T) {
	be := sharedBackend(t)
	fx := newTLSFixture(t)
	addr := freeAddr(t)
	startTLSProxy(t, fx, fmt.Sprintf("  - {name: imaps, protocol: imap, address: %q, ssl: true, haproxy: true}", addr),
		passwdLine("erin", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		"haproxy_trusted_networks: [127.0.0.0/8]\nlogin_trusted_networks: [127.0.0.0/8]")
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, port, _ := net.SplitHostPort(addr)
	if _, err := raw.Write([]byte("PROXY TCP4 198.51.100.77 127.0.0.1 40123 " + port + "\r\n")); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, fx.clientConfig("localhost"))
	cl := &client{t: t, c: tc, r: bufio.NewReader(tc)}
	expectPrefix(t, cl.line(10*time.Second), "* OK")
	cl.send("a LOGIN erin secret\r\n")
	expectPrefix(t, last(cl.until("a", 10*time.Second)), "a OK")
	waitFor(t, func() bool {
		log, _ := be.Log()
		return strings.Contains(log, "user=<erin>") && strings.Contains(log, "rip=198.51.100.77")
	}, "backend log shows the PROXY header's client for erin")
}
