package engine

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goproxy "github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"doorman/engine/testenv"
)

// startHAProxy runs a real HAProxy (Debian's package) in front of addr: one frontend
// sending a PROXY v1 header, one sending v2, both connecting from 127.0.0.50.
func startHAProxy(t *testing.T, addr string) (v1, v2 string) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("haproxy not installed")
		}
		t.Fatal("haproxy not installed")
	}
	p1, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p2, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 = fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("127.0.0.1:%d", p2)
	cfg := fmt.Sprintf(`global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend v1
    bind %s
    default_backend v1
backend v1
    server doorman %s send-proxy source 127.0.0.50
frontend v2
    bind %s
    default_backend v2
backend v2
    server doorman %s send-proxy-v2 source 127.0.0.50
`, v1, addr, v2, addr)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for _, a := range []string{v1, v2} {
		waitFor(t, func() bool {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		}, "haproxy listening on "+a+"\n"+out.String())
	}
	return v1, v2
}

func TestHAProxyListener(t *testing.T) {
	be := sharedBackend(t)
	dir := t.TempDir()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := os.WriteFile(filepath.Join(dir, "users.passwd"),
		[]byte(passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr))), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxyYAML(t, dir, fmt.Sprintf(`listeners:
  - {name: imap-lb, protocol: imap, address: %q, haproxy: yes}
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
haproxy_trusted_networks: [127.0.0.50/32]
haproxy_timeout: 1s
`, addr))
	v1, v2 := startHAProxy(t, addr)

	// Through HAProxy, v1 and v2: the backend sees the client's own address, not
	// HAProxy's, and so does Doorman's log.
	for _, c := range []struct{ lb, from string }{{v1, "127.0.0.14"}, {v2, "127.0.0.15"}} {
		cl := dial(t, c.lb, c.from)
		expectPrefix(t, cl.gr, "* OK [CAPABILITY IMAP4rev1")
		cl.send("a LOGIN alice secret\r\n")
		expectPrefix(t, last(cl.until("a", 10*time.Second)), "a OK")
		cl.send("b LOGOUT\r\n")
		cl.until("b", 10*time.Second)
		cl.c.Close()
		from := c.from
		waitFor(t, func() bool {
			log, _ := be.Log()
			return strings.Contains(log, "rip="+from)
		}, "backend log shows rip="+from)
		waitFor(t, func() bool {
			for _, e := range p.logs.FilterMessage("session ended").All() {
				if strings.HasPrefix(e.ContextMap()["remote"].(string), from+":") {
					return true
				}
			}
			return false
		}, "Doorman logs the session from "+from)
	}

	// Not from haproxy_trusted_networks: closed at once, without a greeting.
	expectEOF(t, addr, "127.0.0.1", "")
	// A trusted peer that sends no PROXY header, or a broken one: closed, no reply.
	expectEOF(t, addr, "127.0.0.50", "a LOGIN alice secret\r\n")
	expectEOF(t, addr, "127.0.0.50", "PROXY TCP4 1.2.3.4\n")
	// A header that never comes: closed after haproxy_timeout.
	expectEOF(t, addr, "127.0.0.50", "PROXY TCP4 ")
	for _, why := range []string{"not from haproxy_trusted_networks", "invalid PROXY header", "PROXY header timeout"} {
		why := why
		waitFor(t, func() bool {
			for _, e := range p.logs.FilterMessage("session ended").All() {
				m := e.ContextMap()
				if strings.HasPrefix(m["reason"].(string), why) && m["stage"] == "proxy-header" {
					return true
				}
			}
			return false
		}, "a session-end line: "+why)
	}
}

// A PROXY v2 header's TLVs: the SSL TLV with the client bit makes the session secured
// (plaintext login allowed, as Dovecot does for PP2_CLIENT_SSL); the unique id is logged
// with the session. The client address in the header is outside login_trusted_networks.
func TestHAProxyV2TLVs(t *testing.T) {
	dir := t.TempDir()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := os.WriteFile(filepath.Join(dir, "users.passwd"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxyYAML(t, dir, fmt.Sprintf(`listeners:
  - {name: imap-lb, protocol: imap, address: %q, haproxy: yes}
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
haproxy_trusted_networks: [127.0.0.50/32]
`, addr))
	header := func(clientTLS bool) []byte {
		h := goproxy.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5555},
			&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: port})
		tlvs := []goproxy.TLV{{Type: goproxy.PP2_TYPE_UNIQUE_ID, Value: []byte("lb-conn-42")}}
		if clientTLS {
			ssl, err := tlvparse.PP2SSL{Client: tlvparse.PP2_BITFIELD_CLIENT_SSL,
				TLV: []goproxy.TLV{{Type: goproxy.PP2_SUBTYPE_SSL_VERSION, Value: []byte("TLSv1.3")}}}.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			tlvs = append(tlvs, ssl)
		}
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
		b, err := h.Format()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	greeting := func(clientTLS bool) string {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.50")}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(header(clientTLS)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if g := greeting(false); !strings.Contains(g, "LOGINDISABLED") {
		t.Fatalf("a client outside login_trusted_networks without TLS may log in in plaintext: %q", g)
	}
	if g := greeting(true); strings.Contains(g, "LOGINDISABLED") || !strings.Contains(g, "AUTH=PLAIN") {
		t.Fatalf("TLS ended at the balancer did not make the session secured: %q", g)
	}
	waitFor(t, func() bool {
		for _, e := range p.logs.FilterMessage("session ended").All() {
			m := e.ContextMap()
			if m["lb_id"] == "lb-conn-42" && strings.HasPrefix(m["remote"].(string), "192.0.2.7:") {
				return true
			}
		}
		return false
	}, "a session-end line with the balancer's unique id and the header's client address")
}

// expectEOF connects from the given address, sends what is given and expects the
// connection to be closed without a byte of reply.
func expectEOF(t *testing.T, addr, from, send string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if send != "" {
		_, _ = c.Write([]byte(send))
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || len(got) != 0 {
		t.Fatalf("from %s after %q: got %q, %v; want a close without reply", from, send, got, err)
	}
}

// Beyond Dovecot: passdb proxy_protocol=v2 (or v1) makes Doorman tell the backend who the
// client is with a PROXY header, here to a real Dovecot listener with haproxy=yes.
func TestProxyProtocolToBackend(t *testing.T) {
	testenv.RequireDovecot(t)
	hport, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	be := testenv.MustStartDovecot(t, testenv.DovecotOptions{
		Users: []testenv.User{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"}},
		ExtraConfig: fmt.Sprintf(`haproxy_trusted_networks = 127.0.0.0/8
service imap-login {
  inet_listener imap_haproxy {
    address = 127.0.0.1
    port = %d
    haproxy = yes
  }
}
`, hport),
	})
	p := startProxy(t,
		passwdLine("alice", "{PLAIN}secret", fmt.Sprintf("proxy host=127.0.0.1 port=%d proxy_protocol=v2", hport))+
			passwdLine("bob", "{PLAIN}secret", fmt.Sprintf("proxy host=127.0.0.1 port=%d proxy_protocol=v1", hport))+
			passwdLine("carol", "{PLAIN}secret", fmt.Sprintf("proxy host=127.0.0.1 port=%d proxy_protocol=v3", hport)), "")
	for _, c := range []struct{ user, from string }{{"alice", "127.0.0.23"}, {"bob", "127.0.0.24"}} {
		cl := dial(t, p.addr, c.from)
		cl.send("a LOGIN " + c.user + " secret\r\n")
		expectPrefix(t, last(cl.until("a", 10*time.Second)), "a OK")
		from := c.from
		waitFor(t, func() bool {
			log, _ := be.Log()
			return strings.Contains(log, "rip="+from)
		}, "backend log shows rip="+from+" from the PROXY header")
	}
	cl := dial(t, p.addr, "")
	cl.send("a LOGIN carol secret\r\n")
	expectPrefix(t, last(cl.until("a", 10*time.Second)), "a NO [UNAVAILABLE]")
}

// LMTP listeners take the PROXY header too: the client's address is the header's, and a
// peer outside haproxy_trusted_networks is closed without a greeting.
func TestHAProxyLMTP(t *testing.T) {
	be := sharedBackend(t)
	dir := t.TempDir()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := os.WriteFile(filepath.Join(dir, "users.passwd"),
		[]byte(passwdLine("alice", "", "proxy nopassword host=127.0.0.1 port="+portOf(be.LMTPAddr))), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxyYAML(t, dir, fmt.Sprintf(`listeners:
  - {name: lmtp-lb, protocol: lmtp, address: %q, haproxy: yes}
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [127.0.0.0/8]
haproxy_trusted_networks: [127.0.0.50/32]
auth_username_format: "%%Ln"
`, addr))
	expectEOF(t, addr, "127.0.0.1", "")

	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.50")}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The header and the first command in one write, before the greeting.
	if _, err := c.Write([]byte("PROXY TCP4 198.51.100.20 127.0.0.1 40000 24\r\nLHLO client.example\r\n")); err != nil {
		t.Fatal(err)
	}
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	expectPrefix(t, cl.line(5*time.Second), "220 ")
	for l := cl.line(5 * time.Second); strings.HasPrefix(l, "250-"); l = cl.line(5 * time.Second) {
	}
	cl.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
	expectPrefix(t, cl.line(5*time.Second), "250 ")
	expectPrefix(t, cl.line(10*time.Second), "250 ")
	expectPrefix(t, cl.line(10*time.Second), "354 ")
	cl.send("Subject: via haproxy\r\n\r\nhello\r\n.\r\nQUIT\r\n")
	expectPrefix(t, cl.line(10*time.Second), "250 2.0.0 <alice@example.org>")
	c.Close()
	waitFor(t, func() bool {
		for _, e := range p.logs.FilterMessage("session ended").All() {
			if strings.HasPrefix(e.ContextMap()["remote"].(string), "198.51.100.20:") {
				return true
			}
		}
		return false
	}, "the LMTP session's end line has the header's client address")
}
