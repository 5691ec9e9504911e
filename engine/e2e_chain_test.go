package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"doorman/engine/testenv"
)

// Doorman → Doorman → Dovecot: the second hop trusts the first (login_trusted_networks)
// and takes the client's address, session id and forward fields from its ID, so the
// backend logs the client's own address. A loop of two proxies is stopped by the TTL with
// Dovecot's reply, and both processes live on.
func TestChainKeepsClientAddressAndStopsLoops(t *testing.T) {
	be := sharedBackend(t)
	second := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	first := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(second.addr)+" forward_tenant=t1"), "")

	c := dial(t, first.addr, "127.0.0.16")
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c.send("b LOGOUT\r\n")
	c.until("b", 10*time.Second)
	c.c.Close()
	waitFor(t, func() bool {
		log, _ := be.Log()
		return strings.Contains(log, "rip=127.0.0.16")
	}, "backend log shows the original client 127.0.0.16 through two proxies")
	// The second hop logged the client, and the first hop's session id.
	waitFor(t, func() bool { return first.logs.FilterMessage("session ended").Len() == 1 }, "first hop's end line")
	firstID := first.logs.FilterMessage("session ended").All()[0].ContextMap()["session"].(string)
	waitFor(t, func() bool {
		for _, e := range second.logs.FilterMessage("session ended").All() {
			m := e.ContextMap()
			if strings.HasPrefix(m["remote"].(string), "127.0.0.16:") && m["session"] == firstID {
				return true
			}
		}
		return false
	}, "second hop's end line with the client's address and the first hop's session id")

	// A loop: A sends alice to B, B sends her back to A.
	portA, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := startProxy(t, passwdLine("alice", "", fmt.Sprintf("proxy nopassword host=127.0.0.1 port=%d", portA)), "")
	a := startProxyAt(t, portA, passwdLine("alice", "", "proxy nopassword host=127.0.0.1 port="+portOf(b.addr)))
	l := dial(t, a.addr, "")
	l.send("a LOGIN alice secret\r\n")
	if got := last(l.until("a", 20*time.Second)); got != "a NO [SERVERBUG] Account is temporarily unavailable.\r\n" {
		for _, p := range []*proxy{a, b} {
			for _, e := range p.logs.FilterMessage("login failed").All() {
				t.Logf("%s: %v", p.addr, e.ContextMap())
			}
		}
		t.Fatalf("proxy loop: %q", got)
	}
	waitFor(t, func() bool {
		for _, p := range []*proxy{a, b} {
			for _, e := range p.logs.FilterMessage("login failed").All() {
				if strings.Contains(e.ContextMap()["reason"].(string), "TTL reached zero") {
					return true
				}
			}
		}
		return false
	}, "a hop logged that the TTL reached zero")
	// Both still serve.
	for _, p := range []*proxy{a, b} {
		d := dial(t, p.addr, "")
		d.send("z NOOP\r\n")
		expectPrefix(t, last(d.until("z", 5*time.Second)), "z OK")
	}
}

// The same chain for POP3, Submission and ManageSieve: the first Doorman tells the second,
// which trusts it, who the client is by XCLIENT; the second tells Dovecot the same way.
func TestChainXCLIENT(t *testing.T) {
	be := sharedBackend(t)
	for i, c := range []struct {
		proto, backend, login, ok, service string
	}{
		{"pop3", be.POP3Addr, "USER alice\r\nPASS secret\r\n", "+OK Logged in", "pop3-login"},
		{"submission", be.SubmissionAddr, "EHLO client.example\r\nAUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n", "235 ", "submission-login"},
		{"managesieve", be.SieveAddr, "AUTHENTICATE \"PLAIN\" \"" + b64("\x00alice\x00secret") + "\"\r\n", "OK \"Logged in", "managesieve-login"},
	} {
		t.Run(c.proto, func(t *testing.T) {
			second := startProxyFor(t, c.proto, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(c.backend)), "")
			first := startProxyFor(t, c.proto, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(second.addr)), "")
			from := fmt.Sprintf("127.0.0.%d", 20+i)
			cl := dial(t, first.addr, from)
			cl.send(c.login)
			for {
				l := cl.line(10 * time.Second)
				if strings.HasPrefix(l, c.ok) {
					break
				}
				if strings.HasPrefix(l, "-ERR") || strings.HasPrefix(l, "NO") || strings.HasPrefix(l, "4") || strings.HasPrefix(l, "5") {
					t.Fatalf("login through two proxies: %q", l)
				}
			}
			cl.c.Close()
			waitFor(t, func() bool {
				log, _ := be.Log()
				for _, l := range strings.Split(log, "\n") {
					if strings.Contains(l, c.service) && strings.Contains(l, "rip="+from) {
						return true
					}
				}
				return false
			}, "backend log shows "+c.service+" rip="+from+" through two proxies")
		})
	}
}

// proxy_maybe: proxied when the destination is elsewhere; refused (Doorman has no local
// store to log in to) when it is this server, by the address the client connected to or
// by auth_proxy_self.
func TestProxyMaybe(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	p := startProxy(t,
		passwdLine("alice", "{PLAIN}secret", "proxy_maybe host=127.0.0.1 port="+port)+
			passwdLine("bob", "{PLAIN}secret", "proxy_maybe host=127.0.0.1")+
			passwdLine("carol", "{PLAIN}secret", "proxy_maybe host=127.0.0.99"),
		"auth_proxy_self: [127.0.0.99]")
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	for _, user := range []string{"bob", "carol"} {
		d := dial(t, p.addr, "")
		d.send("b LOGIN " + user + " secret\r\n")
		if got := last(d.until("b", 10*time.Second)); got != "b NO [CONTACTADMIN] No mail server is set for this user.\r\n" {
			t.Fatalf("%s: %q", user, got)
		}
	}
}

// imap_id_retain: the client's own ID reaches the backend, but none of its x- keys (an
// untrusted client cannot pass itself off as another address through Doorman).
func TestIMAPIDRetain(t *testing.T) {
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
	startProxyYAML(t, dir, fmt.Sprintf(`listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: passwd-file, path: users.passwd}
login_trusted_networks: [192.0.2.0/24]
disable_plaintext_auth: no
imap_id_retain: yes
`, addr))
	c := dial(t, addr, "127.0.0.25")
	c.send("a ID (\"name\" \"retained-client\" \"x-originating-ip\" \"198.51.100.9\")\r\n")
	c.until("a", 5*time.Second)
	c.send("b LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
	waitFor(t, func() bool {
		log, _ := be.Log()
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "retained-client") {
				return !strings.Contains(l, "198.51.100.9")
			}
		}
		return false
	}, "the backend's ID log shows the client's name and not its x-originating-ip")
	waitFor(t, func() bool {
		log, _ := be.Log()
		return strings.Contains(log, "rip=127.0.0.25") && !strings.Contains(log, "rip=198.51.100.9")
	}, "the backend saw the real client address")
}

// A passdb that sends a user back to this very listener: refused at once with Dovecot's
// reply, and the process goes on serving.
func TestSelfLoopRefused(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startProxyAt(t, port, passwdLine("alice", "{PLAIN}secret", fmt.Sprintf("proxy host=127.0.0.1 port=%d", port)))
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\n")
	if got := last(c.until("a", 10*time.Second)); got != "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n" {
		t.Fatalf("self loop: %q", got)
	}
	waitFor(t, func() bool {
		for _, e := range p.logs.FilterMessage("login failed").All() {
			if e.ContextMap()["reason"] == "Proxying loops to itself" {
				return true
			}
		}
		return false
	}, "the login failed line says the proxy loops to itself")
	c.send("b NOOP\r\n")
	expectPrefix(t, last(c.until("b", 5*time.Second)), "b OK")
}
