package sasl

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
)

// Stored passwords of "secret" as Dovecot 2.3's `doveadm pw -s <scheme> -p secret`
// printed them.
const (
	dovecotSCRAM = "{SCRAM-SHA-256}4096,YjMzOlZkNCAVIgpIW7FI0Q==,OymJ0UNcIfX6GHz9pNElOcWP2zhohFU2wteX+v6Urrg=,Ofb8//IbF/Y++wFVE2OsXDyH647o9ZJFynMmeqz+IXo="
	dovecotCRAM  = "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"
)

func TestDovecotStoredFormats(t *testing.T) {
	s, err := ParseSCRAMSecret(strings.TrimPrefix(dovecotSCRAM, "{SCRAM-SHA-256}"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := NewSCRAMSecret("secret", s.Salt, s.Iterations)
	if err != nil {
		t.Fatal(err)
	}
	if again.StoredKey != s.StoredKey || again.ServerKey != s.ServerKey || "{SCRAM-SHA-256}"+again.String() != dovecotSCRAM {
		t.Errorf("derived %s, doveadm has %s", again, dovecotSCRAM)
	}
	if got := "{CRAM-MD5}" + CRAMMD5Secret("secret"); got != dovecotCRAM {
		t.Errorf("CRAMMD5Secret = %s, doveadm has %s", got, dovecotCRAM)
	}
}

// scramClient runs the client side of SCRAM-SHA-256 for password against server-first:
// client-final and the server-final it must get.
func scramClient(t testing.TB, gs2, bare, serverFirst, password string) (final, serverFinal string) {
	f := map[string]string{}
	for _, kv := range strings.Split(serverFirst, ",") {
		f[kv[:1]] = kv[2:]
	}
	salt, err := base64.StdEncoding.DecodeString(f["s"])
	it, err2 := strconv.Atoi(f["i"])
	if err != nil || err2 != nil {
		t.Fatalf("server-first %q", serverFirst)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, it, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	ck := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(ck)
	without := "c=" + base64.StdEncoding.EncodeToString([]byte(gs2)) + ",r=" + f["r"]
	auth := bare + "," + serverFirst + "," + without
	sig := hmacSHA256(stored[:], auth)
	for i := range ck {
		ck[i] ^= sig[i]
	}
	sk := hmacSHA256(salted, "Server Key")
	return without + ",p=" + base64.StdEncoding.EncodeToString(ck),
		"v=" + base64.StdEncoding.EncodeToString(hmacSHA256(sk, auth))
}

func TestSecretExchange(t *testing.T) {
	var x SecretExchange
	if x.Start(Plain, "n", "h") || x.Start(CRAMMD5, "", "h") || x.Start(CRAMMD5, "a,b", "h") {
		t.Fatal("Start took a bad mechanism or nonce")
	}
	// CRAM-MD5 against each stored form.
	for _, stored := range []string{"{PLAIN}secret", "{cleartext}secret", dovecotCRAM} {
		if !x.Start(CRAMMD5, "bm9uY2U", "mail.example") {
			t.Fatal("Start")
		}
		ch, st, err := x.Next([]byte("ignored"))
		if err != nil || st != SecretContinue || !bytes.HasPrefix(ch, []byte("<bm9uY2U.")) || !bytes.HasSuffix(ch, []byte("@mail.example>")) {
			t.Fatalf("challenge %q %v %v", ch, st, err)
		}
		m := hmac.New(md5.New, []byte("secret"))
		m.Write(ch)
		if _, st, err = x.Next([]byte("alice " + hex.EncodeToString(m.Sum(nil)))); st != SecretLookup || err != nil {
			t.Fatalf("%v %v", st, err)
		}
		if u, z := x.User(); string(u) != "alice" || z != nil {
			t.Fatalf("user %q %q", u, z)
		}
		if _, st, err = x.Secret(stored); st != SecretDone || err != nil || !x.Verified() {
			t.Fatalf("%s: %v %v %v", stored, st, err, x.Verified())
		}
	}
	x.Start(CRAMMD5, "n", "h")
	x.Next(nil)
	x.Next([]byte("alice 00000000000000000000000000000000"))
	if _, st, err := x.Secret("{PLAIN}secret"); st != SecretDone || err != nil || x.Verified() {
		t.Fatal("a wrong digest verified")
	}
	x.Start(CRAMMD5, "n", "h")
	x.Next(nil)
	x.Next([]byte("alice 00000000000000000000000000000000"))
	if _, _, err := x.Secret(dovecotSCRAM); err != ErrSecret {
		t.Fatalf("CRAM-MD5 with a SCRAM secret: %v", err)
	}
	// SCRAM-SHA-256 against each stored form, with a wrong password too.
	for _, c := range []struct {
		stored, pass string
		ok           bool
	}{{dovecotSCRAM, "secret", true}, {"{PLAIN}secret", "secret", true}, {dovecotSCRAM, "wrong", false}} {
		x.Start(SCRAMSHA256, "bm9uY2U", "h")
		ch, st, err := x.Next(nil)
		if len(ch) != 0 || st != SecretContinue || err != nil {
			t.Fatalf("first challenge %q %v %v", ch, st, err)
		}
		if _, st, err = x.Next([]byte("n,a=bob,n=alice,r=cn")); st != SecretLookup || err != nil {
			t.Fatalf("%v %v", st, err)
		}
		if u, z := x.User(); string(u) != "alice" || string(z) != "bob" {
			t.Fatalf("user %q %q", u, z)
		}
		sf, st, err := x.Secret(c.stored)
		if st != SecretContinue || err != nil {
			t.Fatalf("%v %v", st, err)
		}
		final, want := scramClient(t, "n,a=bob,", "n=alice,r=cn", string(sf), c.pass)
		sfin, st, err := x.Next([]byte(final))
		if !c.ok {
			if st != SecretDone || err != nil || x.Verified() {
				t.Fatalf("wrong password: %v %v %v", st, err, x.Verified())
			}
			continue
		}
		if string(sfin) != want || st != SecretContinue || err != nil {
			t.Fatalf("server-final %q (want %q) %v %v", sfin, want, st, err)
		}
		if !x.Final() {
			t.Fatal("not Final")
		}
		if _, st, err = x.Next(nil); st != SecretDone || err != nil || !x.Verified() {
			t.Fatalf("end: %v %v", st, err)
		}
		if u, _ := x.User(); string(u) != "alice" {
			t.Fatalf("user once done %q", u)
		}
	}
	x.Start(SCRAMSHA256, "n", "h")
	if _, _, err := x.Next([]byte("p=tls-unique,,n=alice,r=x")); err != ErrSCRAM || x.Active() {
		t.Fatalf("channel binding: %v", err)
	}
}

// FuzzSecretExchange drives a SecretExchange with arbitrary messages: the first byte
// picks the mechanism and the stored secret, the rest is split at newlines into the
// client's messages. It must not panic, must end or keep asking, and Verified is never
// true without a lookup.
func FuzzSecretExchange(f *testing.F) {
	f.Add([]byte("\x00\nalice 0123456789abcdef0123456789abcdef"))
	f.Add([]byte("\x01n,,n=alice,r=abc\nc=biws,r=abcbm9uY2U.1,p=AAAA\n"))
	f.Add([]byte("\x03n,a=b,n=a=3Dlice,r=abc\nc=bixhPWIs,r=abcbm9uY2U.1,p=" + strings.Repeat("A", 43) + "=\n\n"))
	f.Add([]byte("\x05y,,n=alice,r=abc,ext=1\n*\n"))
	secrets := []string{"{PLAIN}secret", dovecotCRAM, dovecotSCRAM, "{SHA512-CRYPT}x", "{PLAIN}", "{SCRAM-SHA-256}1,AA==,AA==,AA=="}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		mech := CRAMMD5
		if data[0]&1 != 0 {
			mech = SCRAMSHA256
		}
		stored := secrets[int(data[0]>>1)%len(secrets)]
		var x SecretExchange
		if !x.Start(mech, "bm9uY2U", "h") {
			t.Fatal("Start")
		}
		msgs := bytes.Split(data[1:], []byte{'\n'})
		var first []byte // nil: no initial response
		if data[0]&0x80 != 0 {
			first, msgs = msgs[0], msgs[1:]
		}
		_, st, err := x.Next(first)
		looked := false
		for _, m := range msgs {
			switch {
			case err != nil:
				if x.Active() {
					t.Fatal("active after an error")
				}
				return
			case st == SecretDone:
				if x.Verified() && !looked {
					t.Fatal("verified without a secret")
				}
				return
			case st == SecretLookup:
				looked = true
				u, _ := x.User()
				if len(u) == 0 || bytes.IndexByte(u, 0) >= 0 {
					t.Fatalf("user %q", u)
				}
				_, st, err = x.Secret(stored)
				continue
			}
			_, st, err = x.Next(m)
		}
	})
}

func TestSecretMechanisms(t *testing.T) {
	m, err := ParseMechanisms([]string{"plain", "scram-sha-256", "CRAM-MD5", "login"})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(m.AppendAdvertised(nil, " ", false)); got != " SCRAM-SHA-256 CRAM-MD5" {
		t.Errorf("without plaintext %q", got)
	}
	w := m.WithoutSecret()
	if got := string(w.AppendAdvertised(nil, " ", true)); got != " PLAIN LOGIN" {
		t.Errorf("WithoutSecret %q", got)
	}
	if SecretMechanism([]byte("cram-md5")) != CRAMMD5 || SecretMechanism([]byte("Scram-Sha-256")) != SCRAMSHA256 || SecretMechanism([]byte("PLAIN")) != "" {
		t.Error("SecretMechanism")
	}
}
