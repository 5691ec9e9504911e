package engine

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// CRAM-MD5 and SCRAM-SHA-256 from clients, against the shared Dovecot: the proxy checks
// the proof against the passdb's stored secret and logs in to the backend as the master
// user (there is no client password to forward).

// doveadmSCRAM is `doveadm pw -s SCRAM-SHA-256 -p secret` (Dovecot 2.3), used when
// doveadm can't be run.
const doveadmSCRAM = "{SCRAM-SHA-256}4096,YjMzOlZkNCAVIgpIW7FI0Q==,OymJ0UNcIfX6GHz9pNElOcWP2zhohFU2wteX+v6Urrg=,Ofb8//IbF/Y++wFVE2OsXDyH647o9ZJFynMmeqz+IXo="

// scramSecret asks doveadm for a fresh {SCRAM-SHA-256} secret of password.
func scramSecret(t *testing.T, password string) string {
	out, err := exec.Command("doveadm", "pw", "-s", "SCRAM-SHA-256", "-p", password).Output()
	if s := strings.TrimSpace(string(out)); err == nil && strings.HasPrefix(s, "{SCRAM-SHA-256}") {
		return s
	}
	if password != "secret" {
		t.Skipf("doveadm pw not available: %v", err)
	}
	return doveadmSCRAM
}

// pythonSCRAM logs in with SCRAM-SHA-256, done by hand, through imaplib's AUTHENTICATE,
// then SELECTs INBOX. It prints "ok", or "no: <error>" for a refused login.
const pythonSCRAM = `
import base64, hashlib, hmac, imaplib, os, sys
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cnonce = base64.b64encode(os.urandom(18)).decode()
bare = "n=%s,r=%s" % (user, cnonce)
state = {}
def step(challenge):
    if "first" not in state:
        state["first"] = True
        return ("n,," + bare).encode()
    msg = challenge.decode()
    if msg.startswith("v="):
        assert msg == "v=" + base64.b64encode(state["server_sig"]).decode(), msg
        return b""
    f = dict(kv.split("=", 1) for kv in msg.split(","))
    assert f["r"].startswith(cnonce), f
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(f["s"]), int(f["i"]))
    ck = hmac.new(salted, b"Client Key", "sha256").digest()
    without = "c=biws,r=" + f["r"]
    auth = (bare + "," + msg + "," + without).encode()
    sig = hmac.new(hashlib.sha256(ck).digest(), auth, "sha256").digest()
    sk = hmac.new(salted, b"Server Key", "sha256").digest()
    state["server_sig"] = hmac.new(sk, auth, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(ck, sig))
    return (without + ",p=" + base64.b64encode(proof).decode()).encode()
m = imaplib.IMAP4(host, port)
assert "AUTH=SCRAM-SHA-256" in m.capabilities, m.capabilities
try:
    typ, _ = m.authenticate("SCRAM-SHA-256", step)
except imaplib.IMAP4.error as e:
    print("no: %s" % e)
    sys.exit(0)
assert typ == "OK", typ
typ, data = m.select("INBOX")
assert typ == "OK", (typ, data)
m.logout()
print("ok")
`

func runPythonSCRAM(t *testing.T, addr, user, password string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("python3", "-c", pythonSCRAM, host, port, user, password).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestSCRAMSHA256AgainstStoredSecret(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	master := " master=proxy pass=masterpw"
	p := startProxy(t,
		passwdLine("alice", scramSecret(t, "secret"), "proxy host=127.0.0.1 port="+port+master)+
			passwdLine("bob", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port+master)+
			passwdLine("carol", "{SHA512-CRYPT}$6$IyXK4rPaQBWnoHiq$xMvBQVz1LIqHKR1d3hN5iB7aBVZ9jmbeZ7wXUqlAx3Ld2bYmvbnFSgUsJz0ipgy9fZKhFeiz0bbnOVyYP70Rc0", "proxy host=127.0.0.1 port="+port+master),
		"auth_mechanisms: plain login scram-sha-256 cram-md5\n")

	// The stored SCRAM secret; a {PLAIN} password, from which the proxy derives one.
	for _, user := range []string{"alice", "bob"} {
		if got := runPythonSCRAM(t, p.addr, user, "secret"); got != "ok" {
			t.Fatalf("%s: %s", user, got)
		}
	}
	// A wrong password: the IMAP failure reply, after the proxy checked the proof.
	if got := runPythonSCRAM(t, p.addr, "alice", "wrong"); !strings.Contains(got, "[AUTHENTICATIONFAILED] Authentication failed.") {
		t.Fatalf("wrong password: %s", got)
	}
	waitFor(t, func() bool { return loginFailedWith(p, "alice", "SCRAM-SHA-256 proof mismatch") }, "proof mismatch logged")
	// A password scheme SCRAM can't use.
	if got := runPythonSCRAM(t, p.addr, "carol", "secret"); !strings.Contains(got, "[AUTHENTICATIONFAILED]") {
		t.Fatalf("crypt password: %s", got)
	}
	waitFor(t, func() bool { return loginFailedWith(p, "carol", "password scheme not usable") }, "unusable scheme logged")
	// The same passdb entry still takes a PLAIN login: the password is checked against
	// the stored SCRAM secret.
	c := dial(t, p.addr, "")
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	c2 := dial(t, p.addr, "")
	c2.send("a LOGIN alice wrong\r\n")
	expectPrefix(t, last(c2.until("a", 10*time.Second)), "a NO [AUTHENTICATIONFAILED]")
}

func loginFailedWith(p *proxy, user, reason string) bool {
	for _, e := range p.logs.FilterMessage("login failed").All() {
		m := e.ContextMap()
		if m["user"] == user && strings.Contains(fmt.Sprint(m["reason"]), reason) {
			return true
		}
	}
	return false
}

func TestCRAMMD5WithCurl(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	p := startProxy(t,
		passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port+" master=proxy pass=masterpw")+
			passwdLine("dave", "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56", "proxy host=127.0.0.1 port="+port+" master=proxy pass=masterpw"),
		"auth_mechanisms: plain login cram-md5\n")
	for _, user := range []string{"alice", "dave"} {
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "--login-options", "AUTH=CRAM-MD5",
			"--url", "imap://"+p.addr+"/", "--user", user+":secret").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "INBOX") {
			t.Fatalf("curl CRAM-MD5 as %s: %v\n%s", user, err, out)
		}
	}
	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--login-options", "AUTH=CRAM-MD5",
		"--url", "imap://"+p.addr+"/", "--user", "alice:nope").CombinedOutput()
	if err == nil {
		t.Fatalf("curl CRAM-MD5 with a wrong password succeeded:\n%s", out)
	}
	waitFor(t, func() bool { return loginFailedWith(p, "alice", "CRAM-MD5 proof mismatch") }, "proof mismatch logged")
}

// cramLogin runs CRAM-MD5 by hand on an IMAP connection and returns the tagged reply.
func cramLogin(t *testing.T, c *client, user, password string) string {
	t.Helper()
	c.send("a AUTHENTICATE CRAM-MD5\r\n")
	l := c.line(10 * time.Second)
	if !strings.HasPrefix(l, "+ ") {
		t.Fatalf("challenge %q", l)
	}
	ch, err := base64.StdEncoding.DecodeString(strings.TrimSpace(l[2:]))
	if err != nil || !strings.HasPrefix(string(ch), "<") || !strings.HasSuffix(string(ch), ">") {
		t.Fatalf("challenge %q: %v", ch, err)
	}
	m := hmac.New(md5.New, []byte(password))
	m.Write(ch)
	c.send(base64.StdEncoding.EncodeToString([]byte(user+" "+hex.EncodeToString(m.Sum(nil)))) + "\r\n")
	return last(c.until("a", 10*time.Second))
}

func TestCRAMMD5NeedsAPassdbPassword(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	p := startProxy(t,
		passwdLine("erin", "", "nopassword proxy host=127.0.0.1 port="+port)+
			passwdLine("bob", "{PLAIN}secret", "proxy host=127.0.0.1 port="+port),
		"auth_mechanisms: plain login cram-md5\n")
	// nopassword: no stored password to check a digest against.
	c := dial(t, p.addr, "")
	expectPrefix(t, cramLogin(t, c, "erin", "secret"), "a NO [AUTHENTICATIONFAILED]")
	waitFor(t, func() bool { return loginFailedWith(p, "erin", "no password stored") }, "nopassword reason logged")
	// Password forwarding: the digest is right, but there is no password for the backend.
	c = dial(t, p.addr, "")
	expectPrefix(t, cramLogin(t, c, "bob", "secret"), "a NO [UNAVAILABLE]")
	waitFor(t, func() bool { return loginFailedWith(p, "bob", "proxy: password not given") }, "password not given logged")
	// The same user with PLAIN forwards the password as before.
	c.send("b LOGIN bob secret\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
}
