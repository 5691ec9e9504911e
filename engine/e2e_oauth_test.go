package engine

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"doorman/engine/testenv"
)

// OAuth2 through the proxy: a Dovecot backend with an oauth2 passdb that asks a tiny
// introspection endpoint (idp below) about the tokens Doorman forwards with proxy_mech=%m.

// idp is an RFC 7662 introspection endpoint that knows one token per user and records
// what it was asked.
type idp struct {
	srv    *httptest.Server
	tokens map[string]string // token → user
	slow   time.Duration     // /slow answers after this long

	mu    sync.Mutex
	asked []idpRequest
}

type idpRequest struct {
	Path, Token, ClientID, ClientSecret string
}

func newIDP(users ...string) *idp {
	d := &idp{tokens: map[string]string{}, slow: 3 * time.Second}
	for _, u := range users {
		var b [12]byte
		_, _ = rand.Read(b[:])
		d.tokens["tok-"+u+"-"+hex.EncodeToString(b[:])] = u
	}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	return d
}

func (d *idp) token(user string) string {
	for tok, u := range d.tokens {
		if u == user {
			return tok
		}
	}
	panic("no token for " + user)
}

func (d *idp) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		http.Error(w, "POST a form", http.StatusBadRequest)
		return
	}
	req := idpRequest{Path: r.URL.Path, Token: r.PostForm.Get("token")}
	req.ClientID, req.ClientSecret, _ = r.BasicAuth()
	d.mu.Lock()
	d.asked = append(d.asked, req)
	d.mu.Unlock()
	if r.URL.Path == "/slow" {
		select {
		case <-time.After(d.slow):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	user, ok := d.tokens[req.Token]
	if !ok {
		_, _ = w.Write([]byte(`{"active":false}`))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "username": user, "sub": "id-" + user, "scope": "mail"})
}

// requests returns what was asked about token so far.
func (d *idp) requests(token string) []idpRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []idpRequest
	for _, r := range d.asked {
		if r.Token == token {
			out = append(out, r)
		}
	}
	return out
}

var (
	oauthOnce    sync.Once
	oauthBackend *testenv.Dovecot
	oauthIDP     *idp
	oauthErr     error
)

// sharedOAuthBackend starts, once, the idp (tokens for alice and bob) and a Dovecot whose
// oauth2 passdb asks it (users alice and bob also have the password "secret").
func sharedOAuthBackend(t *testing.T) (*testenv.Dovecot, *idp) {
	t.Helper()
	if err := testenv.Available(); err != nil {
		t.Skipf("dovecot not installed: %v", err)
	}
	oauthOnce.Do(func() {
		oauthIDP = newIDP("alice", "bob")
		stopAtExit = append(stopAtExit, oauthIDP.srv.Close)
		oauthBackend, oauthErr = testenv.StartDovecot(testenv.DovecotOptions{
			Users:                  []testenv.User{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"}},
			OAuth2IntrospectionURL: oauthIDP.srv.URL + "/introspect",
			ExtraConfig:            "auth_debug = yes",
		})
		if oauthErr == nil {
			stopAtExit = append(stopAtExit, func() { _ = oauthBackend.Stop() })
		}
	})
	if oauthErr != nil {
		t.Fatalf("start dovecot with oauth2 passdb: %v", oauthErr)
	}
	return oauthBackend, oauthIDP
}

// oauthPasswd is Doorman's passdb for the OAuth tests: the token goes on to the backend.
func oauthPasswd(be *testenv.Dovecot, users ...string) string {
	var b strings.Builder
	for _, u := range users {
		b.WriteString(passwdLine(u, "", "nopassword proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)+" proxy_mech=%m"))
	}
	return b.String()
}

// waitBackendLogin waits until the backend log has one more login of user with mech than
// before (a count taken from the log before the login).
func backendLogins(be *testenv.Dovecot, user, mech string) int {
	log, _ := be.Log()
	return strings.Count(log, "Login: user=<"+user+">, method="+mech+",")
}

func waitBackendLogins(t *testing.T, be *testenv.Dovecot, user, mech string, want int) {
	t.Helper()
	waitFor(t, func() bool { return backendLogins(be, user, mech) >= want },
		fmt.Sprintf("backend log: %d logins of %s with %s", want, user, mech))
}

func TestOAuthCurlThroughProxy(t *testing.T) {
	be, d := sharedOAuthBackend(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl not installed: %v", err)
	}
	tok := d.token("alice")
	for _, tc := range []struct{ mechs, want string }{
		// curl takes OAUTHBEARER when it is offered, else XOAUTH2.
		{"plain login xoauth2 oauthbearer", "OAUTHBEARER"},
		{"plain login xoauth2", "XOAUTH2"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			p := startProxy(t, oauthPasswd(be, "alice"), "auth_mechanisms: "+tc.mechs)
			before := backendLogins(be, "alice", tc.want)
			asked := len(d.requests(tok))
			out, err := exec.Command("curl", "-sS", "--max-time", "20", "--url", "imap://"+p.addr+"/",
				"--user", "alice:", "--oauth2-bearer", tok).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "INBOX") {
				t.Fatalf("curl listed no INBOX:\n%s", out)
			}
			waitBackendLogins(t, be, "alice", tc.want, before+1)
			// The backend (no client credentials), not Doorman, checked the token.
			if r := d.requests(tok); len(r) != asked+1 || r[len(r)-1].ClientID != "" {
				t.Fatalf("introspection requests for the token: %+v (had %d)", r, asked)
			}
			// A wrong token: the backend refuses, curl fails.
			out, err = exec.Command("curl", "-sS", "--max-time", "20", "--url", "imap://"+p.addr+"/",
				"--user", "alice:", "--oauth2-bearer", "not-a-token").CombinedOutput()
			if err == nil {
				t.Fatalf("curl with a bad token succeeded:\n%s", out)
			}
			assertNoToken(t, p, tok)
		})
	}
}

// assertNoToken fails if the token reached Doorman's log.
func assertNoToken(t *testing.T, p *proxy, tok string) {
	t.Helper()
	for _, e := range p.logs.All() {
		if strings.Contains(e.Message, tok) {
			t.Fatalf("the token reached the log: %q", e.Message)
		}
		for k, v := range e.ContextMap() {
			if strings.Contains(fmt.Sprint(v), tok) {
				t.Fatalf("the token reached the log: %s=%v", k, v)
			}
		}
	}
}

func TestOAuthImaplibXOAUTH2(t *testing.T) {
	be, d := sharedOAuthBackend(t)
	p := startProxy(t, oauthPasswd(be, "alice"), "auth_mechanisms: plain login xoauth2 oauthbearer")
	host, port, _ := net.SplitHostPort(p.addr)
	before := backendLogins(be, "alice", "XOAUTH2")
	script := fmt.Sprintf(`
import imaplib
m = imaplib.IMAP4(%q, %s)
assert "AUTH=XOAUTH2" in m.capabilities, m.capabilities
typ, _ = m.authenticate("XOAUTH2", lambda _: b"user=alice\x01auth=Bearer %s\x01\x01")
assert typ == "OK", typ
typ, data = m.select("INBOX")
assert typ == "OK", (typ, data)
m.logout()
print("ok")
`, host, port, d.token("alice"))
	out, err := exec.Command("python3", "-c", script).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("imaplib: %v\n%s", err, out)
	}
	waitBackendLogins(t, be, "alice", "XOAUTH2", before+1)
	// The backend's oauth2 passdb did it (after its passwd-file, which the token is not
	// the password of).
	log, _ := be.Log()
	if !strings.Contains(log, "oauth2(alice,") {
		t.Fatalf("the backend log shows no oauth2 passdb lookup for alice:\n%s", tail(log))
	}
	assertNoToken(t, p, d.token("alice"))
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

func oauthBearerIR(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("n,a=" + user + ",\x01auth=Bearer " + token + "\x01\x01"))
}

func xoauth2IR(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

func TestOAuthBearerRawAndBackendRefusal(t *testing.T) {
	be, d := sharedOAuthBackend(t)
	p := startProxy(t, oauthPasswd(be, "alice", "bob"), "auth_mechanisms: plain login xoauth2 oauthbearer")

	before := backendLogins(be, "bob", "OAUTHBEARER")
	c := dial(t, p.addr, "")
	if !strings.Contains(c.gr, "AUTH=OAUTHBEARER") || !strings.Contains(c.gr, "AUTH=XOAUTH2") {
		t.Fatalf("greeting does not offer the OAuth mechanisms: %q", c.gr)
	}
	c.send("a AUTHENTICATE OAUTHBEARER " + oauthBearerIR("bob", d.token("bob")) + "\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c.send("b SELECT INBOX\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK [READ-WRITE]")
	waitBackendLogins(t, be, "bob", "OAUTHBEARER", before+1)

	// alice's token is not bob's: the backend's oauth2 passdb refuses it, and its NO
	// reaches the client (Doorman answered the backend's error challenge).
	bad := d.token("alice")
	asked := len(d.requests(bad))
	for i, ir := range []string{oauthBearerIR("bob", bad), xoauth2IR("bob", "no-such-token-either")} {
		mech := []string{"OAUTHBEARER", "XOAUTH2"}[i]
		c := dial(t, p.addr, "")
		c.send("a AUTHENTICATE " + mech + " " + ir + "\r\n")
		lines := c.until("a", 15*time.Second)
		if got := last(lines); got != "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n" {
			t.Fatalf("%s: the backend's refusal: %q", mech, got)
		}
		if len(lines) != 1 {
			t.Fatalf("%s: the client got more than the NO: %q", mech, lines)
		}
		// The session goes on: a good login works after the refusal.
		c.send("b AUTHENTICATE " + mech + " " + oauthBearerOrXOAuth2(mech, "bob", d.token("bob")) + "\r\n")
		expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
	}
	if r := d.requests(bad); len(r) != asked+1 {
		t.Fatalf("the backend did not ask about the refused token once: %+v", r)
	}
	waitFor(t, func() bool {
		return p.logs.FilterMessage("login failed").Len() >= 2
	}, "two failed logins in Doorman's log")
	for _, e := range p.logs.FilterMessage("login failed").All() {
		m := e.ContextMap()
		if m["stage"] == "lookup" || m["target"] == "" || !strings.HasPrefix(fmt.Sprint(m["reason"]), "backend:") {
			t.Fatalf("the refusal was not the backend's: %v", m)
		}
	}
	assertNoToken(t, p, bad)
	assertNoToken(t, p, d.token("bob"))
}

func oauthBearerOrXOAuth2(mech, user, token string) string {
	if mech == "OAUTHBEARER" {
		return oauthBearerIR(user, token)
	}
	return xoauth2IR(user, token)
}

// With oauth2_introspection_url Doorman checks the token itself: a bad one never gets as
// far as the backend.
func TestOAuthIntrospectionAtProxy(t *testing.T) {
	be, d := sharedOAuthBackend(t)
	p := startProxy(t, oauthPasswd(be, "alice", "bob"), fmt.Sprintf(`auth_mechanisms: plain login xoauth2 oauthbearer
oauth2_introspection_url: %s/introspect
oauth2_client_id: doorman
oauth2_client_secret: s3cret`, d.srv.URL))

	// A good token: Doorman asks (with its client credentials), then the backend does.
	good := d.token("alice")
	asked := len(d.requests(good))
	before := backendLogins(be, "alice", "XOAUTH2")
	c := dial(t, p.addr, "")
	c.send("a AUTHENTICATE XOAUTH2 " + xoauth2IR("alice", good) + "\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c.send("b SELECT INBOX\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK [READ-WRITE]")
	waitBackendLogins(t, be, "alice", "XOAUTH2", before+1)
	r := d.requests(good)
	if len(r) != asked+2 || r[asked].ClientID != "doorman" || r[asked].ClientSecret != "s3cret" || r[asked+1].ClientID != "" {
		t.Fatalf("introspection requests: %+v", r[asked:])
	}

	// Bad tokens: an unknown one, and bob's for alice. Doorman sends the mechanism's
	// error challenge, the client answers it, and gets NO; no backend connection.
	for i, tc := range []struct{ mech, ir, answer, why string }{
		{"XOAUTH2", xoauth2IR("alice", "no-such-token"), "", "not active"},
		{"OAUTHBEARER", oauthBearerIR("alice", d.token("bob")), "AQ==", "is not the user"},
	} {
		c := dial(t, p.addr, "")
		c.send("a AUTHENTICATE " + tc.mech + " " + tc.ir + "\r\n")
		l := c.line(10 * time.Second)
		if !strings.HasPrefix(l, "+ ") {
			t.Fatalf("%s: want the error challenge, got %q", tc.mech, l)
		}
		js, err := base64.StdEncoding.DecodeString(strings.TrimSpace(l[2:]))
		var ch map[string]any
		if err != nil || json.Unmarshal(js, &ch) != nil || ch["status"] == nil {
			t.Fatalf("%s: challenge %q is not a JSON error: %s", tc.mech, l, js)
		}
		c.send(tc.answer + "\r\n")
		if got := last(c.until("a", 10*time.Second)); got != "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n" {
			t.Fatalf("%s: %q", tc.mech, got)
		}
		waitFor(t, func() bool { return p.logs.FilterMessage("login failed").Len() == i+1 }, "login failed line")
		m := p.logs.FilterMessage("login failed").All()[i].ContextMap()
		if m["stage"] != "lookup" || m["target"] != "" || !strings.Contains(fmt.Sprint(m["reason"]), tc.why) {
			t.Fatalf("%s: the refusal was not Doorman's own: %v", tc.mech, m)
		}
		// The session still works.
		c.send("b AUTHENTICATE XOAUTH2 " + xoauth2IR("alice", good) + "\r\n")
		expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
	}
	if r := d.requests("no-such-token"); len(r) != 1 || r[0].ClientID != "doorman" {
		t.Fatalf("the unknown token was not asked about by Doorman alone: %+v", r)
	}
	assertNoToken(t, p, good)
	assertNoToken(t, p, "no-such-token")
}

// A slow introspection endpoint is a temporary failure; without introspection a passdb
// entry with a password refuses a token (it is not a password).
func TestOAuthIntrospectionTimeoutAndNoNopassword(t *testing.T) {
	be, d := sharedOAuthBackend(t)
	p := startProxy(t, oauthPasswd(be, "alice"), fmt.Sprintf(`auth_mechanisms: xoauth2
oauth2_introspection_url: %s/slow
oauth2_timeout: 300ms`, d.srv.URL))
	c := dial(t, p.addr, "")
	start := time.Now()
	c.send("a AUTHENTICATE XOAUTH2 " + xoauth2IR("alice", d.token("alice")) + "\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a NO [UNAVAILABLE]")
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("oauth2_timeout not applied: %v", el)
	}
	c.send("b AUTHENTICATE PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")) + "\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b NO [ALERT] Unsupported authentication mechanism")

	p2 := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)+" proxy_mech=%m"),
		"auth_mechanisms: plain login xoauth2")
	c = dial(t, p2.addr, "")
	c.send("a AUTHENTICATE XOAUTH2 " + xoauth2IR("alice", d.token("alice")) + "\r\n")
	expectPrefix(t, c.line(10*time.Second), "+ ")
	c.send("\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a NO [AUTHENTICATIONFAILED]")
	waitFor(t, func() bool { return p2.logs.FilterMessage("login failed").Len() == 1 }, "login failed line")
	if m := p2.logs.FilterMessage("login failed").All()[0].ContextMap(); !strings.Contains(fmt.Sprint(m["reason"]), "nopassword") {
		t.Fatalf("reason: %v", m)
	}
	// The password still works, and proxy_mech=%m then logs in with PLAIN.
	before := backendLogins(be, "alice", "PLAIN")
	c.send("b LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
	waitBackendLogins(t, be, "alice", "PLAIN", before+1)
}

func TestOAuthConfig(t *testing.T) {
	dir := t.TempDir()
	base := "listeners: [{name: i, protocol: imap, address: \"127.0.0.1:1143\"}]\npassdb: [{driver: redis, addrs: [\"127.0.0.1:6379\"]}]\n"
	cfg, err := ParseConfig([]byte(base), dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AuthMechanisms != "plain login" || cfg.OAuth2UsernameAttribute != "username" || time.Duration(cfg.OAuth2Timeout) != 2*time.Second {
		t.Fatalf("defaults: %q %q %v", cfg.AuthMechanisms, cfg.OAuth2UsernameAttribute, cfg.OAuth2Timeout)
	}
	if _, err := ParseConfig([]byte(base+"auth_mechanisms: PLAIN, xoauth2 OAUTHBEARER\n"), dir); err != nil {
		t.Fatalf("mechanisms in any case, commas: %v", err)
	}
	for yml, want := range map[string]string{
		"auth_mechanisms: plain digest-md5\n":    "auth_mechanisms: sasl: unsupported mechanisms: digest-md5",
		"oauth2_introspection_url: ftp://x/\n":   "oauth2_introspection_url:",
		"oauth2_introspection_url: http://\n":    "oauth2_introspection_url:",
		"oauth2_timeout: -1s\n":                  "oauth2_timeout: must not be negative",
		"auth_mechanisms: plain login xoauth3\n": "xoauth3",
	} {
		if _, err := ParseConfig([]byte(base+yml), dir); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yml, err, want)
		}
	}
}

func TestBackendMech(t *testing.T) {
	for _, tc := range []struct{ proxyMech, client, want string }{
		{"", "XOAUTH2", ""},
		{"%m", "XOAUTH2", "XOAUTH2"},
		{"%{mech}", "OAUTHBEARER", "OAUTHBEARER"},
		{"%Lm", "OAUTHBEARER", "OAUTHBEARER"},
		{"%m", "PLAIN", "PLAIN"},
		{"%m", "LOGIN", "PLAIN"},
		{"xoauth2", "PLAIN", "xoauth2"},
	} {
		if got := backendMech(tc.proxyMech, tc.client); got != tc.want {
			t.Errorf("backendMech(%q, %q) = %q, want %q", tc.proxyMech, tc.client, got, tc.want)
		}
	}
}
