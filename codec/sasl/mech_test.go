package sasl

import (
	"bytes"
	"encoding/base64"
	"testing"
)

var xoauth2Cases = []struct {
	msg         string
	user, token string // "": refused
}{
	{"user=alice@example.com\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==\x01\x01", "alice@example.com", "vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg=="},
	{"auth=bearer tok\x01user=bob\x01\x01", "bob", "tok"},
	{"user=bob\x01x=1\x01auth=BEARER a-b.c_d~e+f/g\x01\x01", "bob", "a-b.c_d~e+f/g"},
	{"user=a\x01user=b\x01auth=Bearer t\x01\x01", "b", "t"},
	{"user=bob\x01auth=Bearer t\x01", "bob", "t"},
	{"user=bob\x01\x01", "", ""},                     // no token
	{"auth=Bearer t\x01\x01", "", ""},                // no user
	{"user=\x01auth=Bearer t\x01\x01", "", ""},       // empty user
	{"user=b\x00b\x01auth=Bearer t\x01\x01", "", ""}, // NUL
	{"user=bob\x01auth=Basic t\x01\x01", "", ""},
	{"user=bob\x01auth=Bearer \x01\x01", "", ""},
	{"user=bob\x01auth=Bearer t=x\x01\x01", "", ""},
	{"user=bob\x01auth=Bearer t t\x01\x01", "", ""},
	{"", "", ""},
}

func TestParseXOAuth2(t *testing.T) {
	for _, c := range xoauth2Cases {
		user, token, err := ParseXOAuth2([]byte(c.msg))
		if c.user == "" {
			if err != ErrOAuth {
				t.Errorf("%q: got %q %q %v, want ErrOAuth", c.msg, user, token, err)
			}
			continue
		}
		if err != nil || string(user) != c.user || string(token) != c.token {
			t.Errorf("%q: got %q %q %v", c.msg, user, token, err)
		}
	}
}

var oauthBearerCases = []struct {
	msg         string
	user, token string
}{
	// RFC 7628 section 4.1
	{"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==\x01\x01", "user@example.com", "vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg=="},
	{"y,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01", "a,b=c", "t"},
	{"n,a=u\x01auth=Bearer t\x01\x01", "u", "t"},
	{"n,,\x01auth=Bearer t\x01\x01", "", ""},               // no authzid: no user
	{"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01", "", ""}, // channel binding
	{"F,n,a=u,\x01auth=Bearer t\x01\x01", "", ""},
	{"n,a=u=2D,\x01auth=Bearer t\x01\x01", "", ""}, // bad escape
	{"n,a=u=2,\x01auth=Bearer t\x01\x01", "", ""},
	{"n,a=,\x01auth=Bearer t\x01\x01", "", ""},
	{"n,a=u,\x01auth=Bearer\x01\x01", "", ""},
	{"n,a=u,\x01host=h\x01\x01", "", ""},
	{"\x01auth=Bearer t\x01\x01", "", ""},
	{"", "", ""},
	{"x,a=u,\x01auth=Bearer t\x01\x01", "", ""},
}

func TestParseOAuthBearer(t *testing.T) {
	for _, c := range oauthBearerCases {
		user, token, err := ParseOAuthBearer([]byte(c.msg), nil)
		if c.user == "" {
			if err != ErrOAuth {
				t.Errorf("%q: got %q %q %v, want ErrOAuth", c.msg, user, token, err)
			}
			continue
		}
		if err != nil || string(user) != c.user || string(token) != c.token {
			t.Errorf("%q: got %q %q %v", c.msg, user, token, err)
		}
	}
}

func TestAppendOAuth(t *testing.T) {
	got := AppendXOAuth2(nil, "alice", "tok")
	if want := base64.StdEncoding.EncodeToString([]byte("user=alice\x01auth=Bearer tok\x01\x01")); string(got) != want {
		t.Errorf("AppendXOAuth2 = %s, want %s", got, want)
	}
	got = AppendOAuthBearer([]byte("x "), "a,b=c", "tok")
	if want := "x " + base64.StdEncoding.EncodeToString([]byte("n,a=a=2Cb=3Dc,\x01auth=Bearer tok\x01\x01")); string(got) != want {
		t.Errorf("AppendOAuthBearer = %s, want %s", got, want)
	}
	// What the client side sends, the server side reads.
	msg, _ := base64.StdEncoding.DecodeString(string(got[2:]))
	if u, tk, err := ParseOAuthBearer(msg, nil); err != nil || string(u) != "a,b=c" || string(tk) != "tok" {
		t.Errorf("round trip: %q %q %v", u, tk, err)
	}
}

// TestExchangeOAuth runs XOAUTH2 and OAUTHBEARER through the Exchange: with and without
// an initial response, and a refused message, which gets the JSON challenge first.
func TestExchangeOAuth(t *testing.T) {
	xo := []byte("user=bob\x01auth=Bearer tok\x01\x01")
	ob := []byte("n,a=bob,\x01auth=Bearer tok\x01\x01")
	for _, c := range []struct {
		mech string
		msg  []byte
		fail []byte
	}{{"xoauth2", xo, []byte(XOAuth2Failure)}, {"OAuthBearer", ob, []byte(OAuthBearerFailure)}} {
		var e Exchange
		if !e.Start([]byte(c.mech)) {
			t.Fatalf("Start(%s) failed", c.mech)
		}
		if ch, done, err := e.Next(c.msg); ch != nil || !done || err != nil {
			t.Fatalf("%s: Next = %q %v %v", c.mech, ch, done, err)
		}
		cr := e.Credentials()
		if string(cr.Authcid) != "bob" || string(cr.Token) != "tok" || cr.Password != nil || cr.Authzid != nil {
			t.Errorf("%s: credentials %+v", c.mech, cr)
		}
		e.Start([]byte(c.mech))
		if ch, done, err := e.Next(nil); ch == nil || len(ch) != 0 || done || err != nil {
			t.Fatalf("%s: Next(nil) = %q %v %v", c.mech, ch, done, err)
		}
		if _, done, err := e.Next(c.msg); !done || err != nil {
			t.Fatalf("%s: continued: %v %v", c.mech, done, err)
		}
		e.Start([]byte(c.mech))
		if ch, done, err := e.Next([]byte("junk")); !bytes.Equal(ch, c.fail) || done || err != nil {
			t.Fatalf("%s: refused: %q %v %v", c.mech, ch, done, err)
		}
		if _, _, err := e.Next([]byte{}); err != ErrOAuth {
			t.Fatalf("%s: answer to the error challenge: %v", c.mech, err)
		}
		e.Reset()
		if ch := e.FailToken(map[bool]string{true: XOAuth2, false: OAuthBearer}[c.mech == "xoauth2"]); !bytes.Equal(ch, c.fail) {
			t.Errorf("FailToken = %q", ch)
		}
		if _, _, err := e.Next([]byte("\x01")); err != ErrOAuth {
			t.Errorf("after FailToken: %v", err)
		}
	}
	if ch := new(Exchange).FailToken(Plain); ch != nil {
		t.Errorf("FailToken(PLAIN) = %q", ch)
	}
}

// RFC 2195 section 2's example.
const (
	cramChallenge = "<1896.697170952@postoffice.reston.mci.net>"
	cramResponse  = "tim b913a602c7eda7a495b4e6e7334d3890"
)

func TestCRAMMD5(t *testing.T) {
	if got := string(AppendCRAMMD5Challenge(nil, "1896.697170952", "postoffice.reston.mci.net")); got != cramChallenge {
		t.Errorf("challenge %q", got)
	}
	user, digest, err := ParseCRAMMD5([]byte(cramResponse))
	if err != nil || string(user) != "tim" {
		t.Fatalf("ParseCRAMMD5: %q %q %v", user, digest, err)
	}
	if !VerifyCRAMMD5(cramChallenge, string(digest), []byte("tanstaaftanstaaf")) {
		t.Error("RFC 2195 example does not verify")
	}
	if VerifyCRAMMD5(cramChallenge, string(digest), []byte("tanstaaftanstaafx")) {
		t.Error("wrong password verifies")
	}
	if VerifyCRAMMD5(cramChallenge, "B913A602C7EDA7A495B4E6E7334D3890", []byte("tanstaaftanstaaf")) {
		t.Error("upper-case hex verifies (Dovecot compares lower-case)")
	}
	secret := CRAMMD5Secret("tanstaaftanstaaf")
	if len(secret) != 64 {
		t.Fatalf("CRAMMD5Secret = %q", secret)
	}
	if !VerifyCRAMMD5Secret(cramChallenge, string(digest), []byte(secret)) {
		t.Error("{CRAM-MD5} secret does not verify")
	}
	if VerifyCRAMMD5Secret(cramChallenge, string(digest), []byte(CRAMMD5Secret("x"))) ||
		VerifyCRAMMD5Secret(cramChallenge, string(digest), []byte("zz")) {
		t.Error("wrong {CRAM-MD5} secret verifies")
	}
	long := string(bytes.Repeat([]byte("k"), 100))
	if !VerifyCRAMMD5Secret("c", hexHMAC(long, "c"), []byte(CRAMMD5Secret(long))) {
		t.Error("long key")
	}
	for _, bad := range []string{"", "tim", " b913a602c7eda7a495b4e6e7334d3890", "tim b913a602", "t\x00m b913a602c7eda7a495b4e6e7334d3890"} {
		if _, _, err := ParseCRAMMD5([]byte(bad)); err != ErrCRAM {
			t.Errorf("ParseCRAMMD5(%q) = %v", bad, err)
		}
	}
	if u, _, err := ParseCRAMMD5([]byte("a b b913a602c7eda7a495b4e6e7334d3890")); err != nil || string(u) != "a b" {
		t.Errorf("user with a space: %q %v", u, err)
	}
}

func hexHMAC(key, msg string) string {
	var b bytes.Buffer
	for _, c := range hmacMD5([]byte(key), msg) {
		b.WriteString("0123456789abcdef"[c>>4 : c>>4+1])
		b.WriteString("0123456789abcdef"[c&15 : c&15+1])
	}
	return b.String()
}

// RFC 7677 section 3's example.
const (
	scramClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	scramServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	scramServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	scramClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	scramServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func rfc7677Secret(t testing.TB) SCRAMSecret {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	s, err := NewSCRAMSecret("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSCRAMSHA256(t *testing.T) {
	secret := rfc7677Secret(t)
	p, err := ParseSCRAMSecret(secret.String())
	if err != nil || p.String() != secret.String() || p.StoredKey != secret.StoredKey {
		t.Fatalf("ParseSCRAMSecret(%q) = %v %v", secret.String(), p, err)
	}
	var s SCRAMServer
	user, authzid, err := s.ClientFirst([]byte(scramClientFirst))
	if err != nil || string(user) != "user" || authzid != nil {
		t.Fatalf("ClientFirst: %q %q %v", user, authzid, err)
	}
	sf, err := s.ServerFirst(p, scramServerNonce)
	if err != nil || string(sf) != scramServerFirst {
		t.Fatalf("ServerFirst = %q %v", sf, err)
	}
	final, err := s.ClientFinal([]byte(scramClientFinal))
	if err != nil || string(final) != scramServerFinal {
		t.Fatalf("ClientFinal = %q %v", final, err)
	}
	if _, err := s.ClientFinal([]byte(scramClientFinal)); err != ErrSequence {
		t.Errorf("ClientFinal again: %v", err)
	}

	// A wrong password, a wrong nonce, a wrong binding.
	wrong, _ := NewSCRAMSecret("pencil2", secret.Salt, 4096)
	for _, c := range []struct {
		sec   SCRAMSecret
		final string
		err   error
	}{
		{wrong, scramClientFinal, ErrProof},
		{secret, "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", ErrProof},
		{secret, "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", ErrProof},
		{secret, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!", ErrSCRAM},
		{secret, "c=biws,r=x", ErrSCRAM},
	} {
		s.ClientFirst([]byte(scramClientFirst))
		s.ServerFirst(c.sec, scramServerNonce)
		if _, err := s.ClientFinal([]byte(c.final)); err != c.err {
			t.Errorf("%q: %v, want %v", c.final, err, c.err)
		}
	}

	for _, bad := range []string{"", "p=tls-unique,,n=user,r=x", "n,,n=,r=x", "n,,r=x", "n,,n=user", "n,,n=u=2Xr,r=x", "n,b,n=user,r=x", "n,,n=user,r=a b", "n,,m=x,n=user,r=x"} {
		if _, _, err := s.ClientFirst([]byte(bad)); err != ErrSCRAM {
			t.Errorf("ClientFirst(%q) = %v", bad, err)
		}
	}
	u, az, err := s.ClientFirst([]byte("y,a=adm=2Cin,n=us=3Der,r=abc,ext=1"))
	if err != nil || string(u) != "us=er" || string(az) != "adm,in" {
		t.Errorf("ClientFirst with authzid: %q %q %v", u, az, err)
	}
	if _, err := s.ServerFirst(secret, "a,b"); err != ErrSCRAM {
		t.Errorf("ServerFirst with a bad nonce: %v", err)
	}
	for _, bad := range []string{"", "4096,a,b", "x,W22ZaJ0SNY7soEsUEjb6gQ==,AA==,AA==", "4096,W22ZaJ0SNY7soEsUEjb6gQ==,AA==,AA=="} {
		if _, err := ParseSCRAMSecret(bad); err != ErrSCRAM {
			t.Errorf("ParseSCRAMSecret(%q) = %v", bad, err)
		}
	}
}

func TestMechanisms(t *testing.T) {
	var zero Mechanisms
	if got := zero.List(); len(got) != 2 || got[0] != Plain || got[1] != Login {
		t.Errorf("zero value lists %q", got)
	}
	m, err := ParseMechanisms([]string{"xoauth2", "plain", "PLAIN", "digest-md5", "oauthbearer"})
	if err == nil || err.Error() != "sasl: unsupported mechanisms: digest-md5" {
		t.Errorf("error %v", err)
	}
	if got := string(m.AppendAdvertised(nil, " AUTH=", true)); got != " AUTH=XOAUTH2 AUTH=PLAIN AUTH=OAUTHBEARER" {
		t.Errorf("advertised %q", got)
	}
	if got := string(m.AppendAdvertised(nil, " ", false)); got != "" {
		t.Errorf("advertised without plaintext %q", got)
	}
	if m.Lookup([]byte("OAuthBearer")) != OAuthBearer || m.Lookup([]byte("LOGIN")) != "" {
		t.Error("Lookup")
	}
	if d, err := ParseMechanisms(nil); err != nil || len(d.List()) != 2 {
		t.Errorf("default %v %v", d.List(), err)
	}
	for _, c := range []struct {
		in, name string
		ok       bool
	}{{"", "", true}, {"plain", Plain, true}, {"XOAuth2", XOAuth2, true}, {"oauthbearer", OAuthBearer, true}, {"LOGIN", "", false}, {"CRAM-MD5", "", false}} {
		if name, ok := ProxyMech(c.in); name != c.name || ok != c.ok {
			t.Errorf("ProxyMech(%q) = %q %v", c.in, name, ok)
		}
	}
	if why := CheckProxy(XOAuth2, "u", "", "", "t ok"); why == "" {
		t.Error("CheckProxy took a token with a space")
	}
	if why := CheckProxy(OAuthBearer, "u", "", "", "tok=="); why != "" {
		t.Errorf("CheckProxy: %s", why)
	}
}
