package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tlsIP is the ListenIP of the TLS backends: not 127.0.0.1, where the
// tests' connections come from, because Dovecot counts a connection whose
// remote IP equals its local IP as secure (see DovecotOptions.SSL).
const tlsIP = "127.0.0.4"

// Dovecot's replies to a plain-text login under ssl = required.
const (
	imapAlert        = "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it anyway. If anyone was listening, the password was exposed."
	imapPrivacy      = "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
	imapAuthPrivacy  = "NO [PRIVACYREQUIRED] Authentication not allowed until SSL/TLS is enabled." // to AUTHENTICATE
	pop3Privacy      = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
	submissionNoAuth = "530 5.7.0 TLS required."
)

func TestCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ca.CertFile != filepath.Join(dir, "ca.pem") || !ca.Cert.IsCA {
		t.Fatalf("CA %+v", ca)
	}
	// the pool from the file, as Dovecot or a proxy would load it
	caPEM, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("no certificate in %s", ca.CertFile)
	}

	certFile, keyFile, err := ca.Issue("server", "localhost", "127.0.0.1", "::1")
	if err != nil {
		t.Fatal(err)
	}
	if certFile != filepath.Join(dir, "server.pem") || keyFile != filepath.Join(dir, "server-key.pem") {
		t.Fatalf("files %s %s", certFile, keyFile)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode(), err)
	}
	server, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := server.Leaf
	now := time.Now()
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) || len(leaf.IPAddresses) != 2 ||
		!leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("SANs: DNS %q IP %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || leaf.IsCA {
		t.Errorf("ExtKeyUsage %v, IsCA %v", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if leaf.NotBefore.After(now.Add(-59*time.Minute)) || leaf.NotAfter.Before(now.Add(23*time.Hour)) || leaf.NotAfter.After(now.Add(25*time.Hour)) {
		t.Errorf("validity %v .. %v", leaf.NotBefore, leaf.NotAfter)
	}
	clientFile, clientKey, err := ca.Issue("client", "client.example.org")
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.LoadX509KeyPair(clientFile, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	if client.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Errorf("two certificates with serial %v", leaf.SerialNumber)
	}
	selfFile, selfKey, err := SelfSigned(dir, "self", "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	self, err := tls.LoadX509KeyPair(selfFile, selfKey)
	if err != nil {
		t.Fatal(err)
	}
	sl := self.Leaf
	if sl.CheckSignature(sl.SignatureAlgorithm, sl.RawTBSCertificate, sl.Signature) != nil ||
		string(sl.RawIssuer) != string(sl.RawSubject) || sl.CheckSignatureFrom(ca.Cert) == nil {
		t.Errorf("SelfSigned is not self-signed: issuer %v", sl.Issuer)
	}

	// Both ends verify: the server requires a client certificate from the CA.
	addr := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	selfAddr := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{self}})
	for _, tc := range []struct {
		name, addr, serverName string
		cert                   *tls.Certificate
		want                   string // "" (success) or the kind of error
	}{
		{"dns name", addr, "localhost", &client, ""},
		{"ip", addr, "", &client, ""}, // ServerName from the address
		{"wrong name", addr, "example.org", &client, "hostname"},
		{"self-signed server", selfAddr, "localhost", &client, "authority"},
		{"self-signed client", addr, "localhost", &self, "client refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// (with Certificates, Go would send no certificate the
			// server's CA list does not name)
			err := tlsHello(tc.addr, &tls.Config{RootCAs: pool, ServerName: tc.serverName,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return tc.cert, nil }})
			var hostname x509.HostnameError
			var authority x509.UnknownAuthorityError
			switch tc.want {
			case "":
				if err != nil {
					t.Fatal(err)
				}
			case "hostname":
				if !errors.As(err, &hostname) {
					t.Fatalf("got %v, want a HostnameError", err)
				}
			case "authority":
				if !errors.As(err, &authority) {
					t.Fatalf("got %v, want an UnknownAuthorityError", err)
				}
			case "client refused":
				// the server's alert, seen when reading
				if err == nil || !strings.Contains(err.Error(), "remote error: tls: unknown certificate authority") {
					t.Fatalf("got %v, want the server to refuse the client certificate", err)
				}
			}
		})
	}

	// OpenSSL (Dovecot's library) reads the files the same way.
	if _, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command("openssl", "verify", "-CAfile", ca.CertFile, certFile).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("openssl verify %s: %v %s", certFile, err, out)
		}
		if out, err := exec.Command("openssl", "verify", "-CAfile", ca.CertFile, selfFile).CombinedOutput(); err == nil {
			t.Errorf("openssl verify %s: accepted: %s", selfFile, out)
		}
		if out, err := exec.Command("openssl", "pkey", "-in", keyFile, "-noout").CombinedOutput(); err != nil {
			t.Errorf("openssl pkey %s: %v %s", keyFile, err, out)
		}
	}
}

func TestCertNames(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "a/b", "..", "ca"} {
		if _, _, err := ca.Issue(name, "localhost"); err == nil {
			t.Errorf("Issue(%q) accepted", name)
		}
	}
	if _, _, err := SelfSigned(dir, "../x", "localhost"); err == nil {
		t.Error("SelfSigned(../x) accepted")
	}
	// a second CA is a different one
	ca2, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca2.Issue("x", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Error("certificate of one CA verifies against another")
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca2.Pool(), DNSName: "localhost"}); err != nil {
		t.Error(err)
	}
}

// tlsServer serves "hello\n" over TLS on 127.0.0.1 until the test ends.
func tlsServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "hello\n")
			}()
		}
	}()
	return l.Addr().String()
}

// tlsHello connects to a tlsServer and expects its "hello" (with TLS 1.3
// a refused client certificate shows only when reading).
func tlsHello(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "hello\n" {
		return errors.New("unexpected " + line)
	}
	return nil
}

// startTLSDovecot starts a backend on tlsIP with a certificate from a new
// CA for "localhost" and tlsIP.
func startTLSDovecot(t *testing.T, opts DovecotOptions) (*Dovecot, *CA) {
	t.Helper()
	RequireDovecotProtocols(t, opts.Protocols...)
	ca, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts.SSLCert, opts.SSLKey, err = ca.Issue("dovecot", "localhost", tlsIP)
	if err != nil {
		t.Fatal(err)
	}
	opts.Users = testUsers
	opts.ListenIP = tlsIP
	return MustStartDovecot(t, opts), ca
}

// dialIMAPS connects over implicit TLS and expects "* OK".
func dialIMAPS(t *testing.T, addr string, cfg *tls.Config) *imapConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
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

// dialTLSText connects over implicit TLS for a line-based protocol.
func dialTLSText(t *testing.T, name, addr string, cfg *tls.Config) *textConn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s %s: %v", name, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &textConn{t: t, name: name, c: c, r: bufio.NewReader(c)}
}

// rawIMAP connects without reading the greeting.
func rawIMAP(t *testing.T, d *net.Dialer, addr string) *imapConn {
	t.Helper()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &imapConn{t: t, c: c, r: bufio.NewReader(c)}
}

// startTLS upgrades ic after a tagged OK to STARTTLS.
func (ic *imapConn) startTLS(cfg *tls.Config) {
	ic.t.Helper()
	if n := ic.r.Buffered(); n != 0 {
		ic.t.Fatalf("%d bytes after the STARTTLS reply", n)
	}
	tc := tls.Client(ic.c, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		ic.t.Fatalf("STARTTLS handshake: %v", err)
	}
	ic.c, ic.r = tc, bufio.NewReader(tc)
}

func TestDovecotTLSRequired(t *testing.T) {
	d, ca := startTLSDovecot(t, DovecotOptions{SSL: "required", TLSPorts: true, TrustedNetworks: "none",
		Protocols: []string{"pop3", "submission"}})
	seen := map[string]bool{}
	for _, addr := range []string{d.IMAPAddr, d.IMAPSAddr, d.POP3Addr, d.POP3SAddr, d.SubmissionAddr, d.SubmissionsAddr} {
		if host, _, _ := net.SplitHostPort(addr); host != tlsIP || seen[addr] {
			t.Fatalf("address %q not on %s or used twice", addr, tlsIP)
		}
		seen[addr] = true
	}
	conf, err := os.ReadFile(d.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "\nssl = required\nssl_cert = </") || strings.Contains(string(conf), "disable_plaintext_auth") {
		t.Errorf("config:\n%s", conf)
	}
	verify := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}

	t.Run("imaps", func(t *testing.T) {
		for _, serverName := range []string{"localhost", tlsIP} {
			ic := dialIMAPS(t, d.IMAPSAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: serverName})
			if cs := ic.c.(*tls.Conn).ConnectionState(); len(cs.VerifiedChains) == 0 || cs.PeerCertificates[0].Subject.CommonName != "localhost" {
				t.Fatalf("%s: verified %d chains, peer %v", serverName, len(cs.VerifiedChains), cs.PeerCertificates[0].Subject)
			}
			ic.expect("a", "LOGIN alice secret", "OK")
			ic.expect("b", "SELECT INBOX", "OK")
			ic.expect("z", "LOGOUT", "OK")
		}
	})
	t.Run("imaps other CA", func(t *testing.T) {
		other, err := NewCA(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", d.IMAPSAddr, &tls.Config{RootCAs: other.Pool(), ServerName: "localhost"})
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("got %v, want an UnknownAuthorityError", err)
		}
	})
	t.Run("openssl s_client", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("no openssl")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "openssl", "s_client", "-connect", d.IMAPSAddr, "-CAfile", ca.CertFile,
			"-verify_return_error", "-verify_hostname", "localhost", "-crlf", "-quiet")
		cmd.Stdin = strings.NewReader("a LOGIN alice secret\nb LOGOUT\n")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "\n* OK ") || !strings.Contains(string(out), "\na OK ") {
			t.Fatalf("openssl s_client: %v\n%s", err, out)
		}
	})
	t.Run("starttls", func(t *testing.T) {
		ic := rawIMAP(t, &net.Dialer{Timeout: 5 * time.Second}, d.IMAPAddr)
		if g := ic.line(); !strings.HasPrefix(g, "* OK [CAPABILITY ") || !strings.Contains(g, " STARTTLS") || !strings.Contains(g, " LOGINDISABLED") {
			t.Fatalf("greeting %q, want STARTTLS and LOGINDISABLED", g)
		}
		ic.expect("a", "STARTTLS", "OK")
		ic.startTLS(verify)
		if u := ic.expect("b", "CAPABILITY", "OK"); !contains(u, "* CAPABILITY ") || strings.Contains(u[0], "LOGINDISABLED") || !strings.Contains(u[0], "AUTH=PLAIN") {
			t.Fatalf("CAPABILITY after STARTTLS: %q", u)
		}
		ic.expect("c", "LOGIN alice secret", "OK")
		ic.expect("d", "SELECT INBOX", "OK")
	})
	t.Run("plain text refused", func(t *testing.T) {
		ic := dialIMAP(t, d.IMAPAddr)
		u, st := ic.cmd("a", "LOGIN alice secret")
		if !slices.Equal(u, []string{imapAlert}) || st != imapPrivacy {
			t.Fatalf("LOGIN: %q %q", u, st)
		}
		u, st = ic.cmd("b", "AUTHENTICATE PLAIN "+plainIR("", "alice", "secret"))
		if len(u) != 0 || st != imapAuthPrivacy {
			t.Fatalf("AUTHENTICATE PLAIN: %q %q", u, st)
		}
		ic.expect("c", "SELECT INBOX", "BAD") // not logged in
	})
	t.Run("same IP counts as secure", func(t *testing.T) {
		// what DovecotOptions.SSL warns about: local IP = remote IP
		ic := rawIMAP(t, &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(tlsIP)}}, d.IMAPAddr)
		if g := ic.line(); strings.Contains(g, "LOGINDISABLED") {
			t.Fatalf("greeting %q", g)
		}
		ic.expect("a", "LOGIN alice secret", "OK")
	})
	t.Run("pop3", func(t *testing.T) {
		pc := dialTLSText(t, "pop3s", d.POP3SAddr, verify)
		pc.expect("+OK")
		pc.cmd("USER alice", "+OK")
		pc.cmd("PASS secret", "+OK")
		pc.cmd("STAT", "+OK")
		pc.cmd("QUIT", "+OK")

		pc = dialText(t, "pop3", d.POP3Addr)
		pc.expect("+OK")
		if l := pc.cmd("USER alice", "-ERR"); l != pop3Privacy {
			t.Fatalf("USER on the plain port: %q", l)
		}
	})
	t.Run("submission", func(t *testing.T) {
		sc := dialTLSText(t, "submissions", d.SubmissionsAddr, verify)
		sc.smtp("", "220")
		if ehlo := sc.smtp("EHLO client.example.org", "250"); !contains(ehlo, "250-AUTH PLAIN") {
			t.Errorf("EHLO over TLS: %q", ehlo)
		}
		sc.smtp("AUTH PLAIN "+plainIR("", "alice", "secret"), "235")
		sc.smtp("QUIT", "221")

		sc = dialText(t, "submission", d.SubmissionAddr)
		sc.smtp("", "220")
		if ehlo := sc.smtp("EHLO client.example.org", "250"); !contains(ehlo, "250-STARTTLS") || contains(ehlo, "250-AUTH") {
			t.Errorf("EHLO on the plain port: %q", ehlo)
		}
		if r := sc.smtp("AUTH PLAIN "+plainIR("", "alice", "secret"), "530"); r[0] != submissionNoAuth {
			t.Fatalf("AUTH on the plain port: %q", r)
		}
	})
}

// TestDovecotTLSRequiredTrusted shows the other exemption of ssl =
// required: clients in login_trusted_networks (by default 127.0.0.0/8)
// count as secure.
func TestDovecotTLSRequiredTrusted(t *testing.T) {
	d, _ := startTLSDovecot(t, DovecotOptions{SSL: "required"})
	if d.IMAPSAddr != "" || d.POP3SAddr != "" || d.SubmissionsAddr != "" {
		t.Fatalf("TLS addresses without TLSPorts: %q %q %q", d.IMAPSAddr, d.POP3SAddr, d.SubmissionsAddr)
	}
	dialIMAP(t, d.IMAPAddr).expect("a", "LOGIN alice secret", "OK")
}

func TestDovecotTLSYes(t *testing.T) {
	d, ca := startTLSDovecot(t, DovecotOptions{SSL: "yes", TLSPorts: true, TrustedNetworks: "none"})
	if d.IMAPSAddr == "" || d.POP3SAddr != "" || d.SubmissionsAddr != "" {
		t.Fatalf("TLS addresses with IMAP only: %q %q %q", d.IMAPSAddr, d.POP3SAddr, d.SubmissionsAddr)
	}
	// plain text stays allowed, though the connection is not secure
	ic := rawIMAP(t, &net.Dialer{Timeout: 5 * time.Second}, d.IMAPAddr)
	if g := ic.line(); !strings.Contains(g, " STARTTLS") || !strings.Contains(g, " AUTH=PLAIN") || strings.Contains(g, "LOGINDISABLED") {
		t.Fatalf("greeting %q", g)
	}
	ic.expect("a", "LOGIN alice secret", "OK")

	ic = dialIMAP(t, d.IMAPAddr)
	ic.expect("a", "STARTTLS", "OK")
	ic.startTLS(&tls.Config{RootCAs: ca.Pool(), ServerName: tlsIP})
	ic.expect("b", "LOGIN bob hunter2", "OK")

	dialIMAPS(t, d.IMAPSAddr, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}).expect("a", "LOGIN bob hunter2", "OK")
}

func TestSSLOptionErrors(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("d", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opts DovecotOptions
		want string
	}{
		{DovecotOptions{SSL: "maybe", SSLCert: cert, SSLKey: key}, `SSL "maybe"`},
		{DovecotOptions{SSL: "yes", SSLCert: cert}, "needs SSLCert and SSLKey"},
		{DovecotOptions{SSL: "required", SSLCert: cert, SSLKey: filepath.Join(dir, "missing.pem")}, "missing.pem"},
		{DovecotOptions{TLSPorts: true}, "TLSPorts needs SSL"},
		{DovecotOptions{SSL: "no", TLSPorts: true, SSLCert: cert, SSLKey: key}, "TLSPorts needs SSL"},
	} {
		if _, err := StartDovecot(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error with %q", tc.opts, err, tc.want)
		}
	}
}

// TestConfigWithoutSSL pins the configuration other tests rely on when
// the SSL options are unset.
func TestConfigWithoutSSL(t *testing.T) {
	protos, err := normProtocols([]string{"pop3"})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dovecot{Protocols: protos, listenIP: defaultListenIP, Dir: "/d", Instance: "i", BaseDir: "/b", LogPath: "/d/log"}
	conf := d.config(DovecotOptions{}, map[string]int{"imap": 1143, "pop3": 1110})
	for _, want := range []string{
		"\nssl = no\ndisable_plaintext_auth = no\n",
		"\n  inet_listener imaps {\n    port = 0\n  }\n",
		"\n  inet_listener pop3s {\n    port = 0\n  }\n",
		"\nlogin_trusted_networks = 127.0.0.0/8\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "ssl_") || strings.Contains(conf, "ssl = yes") {
		t.Errorf("config has TLS settings:\n%s", conf)
	}
}
