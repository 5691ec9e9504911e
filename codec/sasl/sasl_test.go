package sasl

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// turn is one call of Next: the response (none: nil) and what must come of it.
type turn struct {
	resp      string
	none      bool
	challenge string
	done      bool
	err       error
}

var exchangeCases = []struct {
	name  string
	mech  string
	turns []turn
	want  *Credentials // when the last turn is done
}{
	{"plain without initial response", "PLAIN", []turn{
		{none: true, challenge: ""},
		{resp: "\x00alice\x00secret", done: true},
	}, &Credentials{Authcid: []byte("alice"), Password: []byte("secret")}},
	{"plain initial response", "plain", []turn{
		{resp: "\x00alice\x00secret", done: true},
	}, &Credentials{Authcid: []byte("alice"), Password: []byte("secret")}},
	{"plain authzid", "Plain", []turn{
		{resp: "admin\x00alice\x00secret", done: true},
	}, &Credentials{Authzid: []byte("admin"), Authcid: []byte("alice"), Password: []byte("secret")}},
	{"plain authzid same as authcid", "PLAIN", []turn{
		{resp: "alice\x00alice\x00secret", done: true},
	}, &Credentials{Authcid: []byte("alice"), Password: []byte("secret")}},
	{"plain empty password", "PLAIN", []turn{
		{resp: "\x00alice\x00", done: true},
	}, &Credentials{Authcid: []byte("alice"), Password: []byte("")}},
	{"plain empty initial response", "PLAIN", []turn{{resp: "", err: ErrMalformed}}, nil},
	{"plain empty response", "PLAIN", []turn{{none: true}, {resp: "", err: ErrMalformed}}, nil},
	{"plain one NUL", "PLAIN", []turn{{resp: "alice\x00secret", err: ErrMalformed}}, nil},
	{"plain no NUL", "PLAIN", []turn{{resp: "alice", err: ErrMalformed}}, nil},
	{"plain three NULs", "PLAIN", []turn{{resp: "\x00alice\x00se\x00cret", err: ErrMalformed}}, nil},
	{"plain empty authcid", "PLAIN", []turn{{resp: "admin\x00\x00secret", err: ErrEmptyUser}}, nil},
	{"plain after done", "PLAIN", []turn{
		{resp: "\x00a\x00b", done: true},
		{resp: "\x00a\x00b", err: ErrSequence},
	}, nil},
	{"plain after failure", "PLAIN", []turn{
		{resp: "x", err: ErrMalformed},
		{resp: "\x00a\x00b", err: ErrSequence},
	}, nil},

	{"login without initial response", "LOGIN", []turn{
		{none: true, challenge: UsernamePrompt},
		{resp: "alice", challenge: PasswordPrompt},
		{resp: "secret", done: true},
	}, &Credentials{Authcid: []byte("alice"), Password: []byte("secret")}},
	{"login initial response", "login", []turn{
		{resp: "alice", challenge: PasswordPrompt},
		{resp: "secret", done: true},
	}, &Credentials{Authcid: []byte("alice"), Password: []byte("secret")}},
	{"login empty initial response", "LOGIN", []turn{
		{resp: "", challenge: UsernamePrompt},
		{resp: "alice", challenge: PasswordPrompt},
		{resp: "", done: true},
	}, &Credentials{Authcid: []byte("alice"), Password: []byte("")}},
	{"login empty user", "LOGIN", []turn{
		{none: true, challenge: UsernamePrompt},
		{resp: "", err: ErrEmptyUser},
	}, nil},
	{"login NUL in user", "LOGIN", []turn{
		{resp: "al\x00ice", challenge: PasswordPrompt}, // refused only with the password
		{resp: "secret", err: ErrNUL},
	}, nil},
	{"login NUL in password", "LOGIN", []turn{
		{resp: "alice", challenge: PasswordPrompt},
		{resp: "sec\x00ret", err: ErrNUL},
	}, nil},
	{"login after done", "LOGIN", []turn{
		{resp: "a", challenge: PasswordPrompt},
		{resp: "b", done: true},
		{resp: "c", err: ErrSequence},
	}, nil},
}

func TestExchange(t *testing.T) {
	var e Exchange // one Exchange for every case: Start must forget the last one
	for _, c := range exchangeCases {
		if !e.Start([]byte(c.mech)) {
			t.Fatalf("%s: Start(%q) = false", c.name, c.mech)
		}
		if want := strings.ToUpper(c.mech); e.Mechanism() != want {
			t.Errorf("%s: Mechanism() = %q, want %q", c.name, e.Mechanism(), want)
		}
		for i, tn := range c.turns {
			resp := []byte(tn.resp)
			if tn.none {
				resp = nil
			}
			ch, done, err := e.Next(resp)
			if err != tn.err || done != tn.done || (err == nil && !done && string(ch) != tn.challenge) {
				t.Errorf("%s: turn %d: Next(%q) = %q, %v, %v; want %q, %v, %v",
					c.name, i, resp, ch, done, err, tn.challenge, tn.done, tn.err)
			}
			if err == nil && !done && ch == nil {
				t.Errorf("%s: turn %d: nil challenge", c.name, i)
			}
		}
		if got := e.Credentials(); c.want != nil && !equalCreds(got, *c.want) {
			t.Errorf("%s: credentials %q, want %q", c.name, got, *c.want)
		}
	}
}

func equalCreds(a, b Credentials) bool {
	return (a.Authzid == nil) == (b.Authzid == nil) && bytes.Equal(a.Authzid, b.Authzid) &&
		bytes.Equal(a.Authcid, b.Authcid) && bytes.Equal(a.Password, b.Password)
}

func TestExchangeStart(t *testing.T) {
	var e Exchange
	if _, _, err := e.Next([]byte("\x00a\x00b")); err != ErrSequence {
		t.Errorf("Next before Start: %v", err)
	}
	for _, m := range []string{"", "CRAM-MD5", "PLAIN ", "PLAI", "XOAUTH", "SCRAM-SHA-256", "LOGİN"} {
		if e.Start([]byte(m)) || e.Mechanism() != "" {
			t.Errorf("Start(%q) accepted, mechanism %q", m, e.Mechanism())
		}
		if _, _, err := e.Next(nil); err != ErrSequence {
			t.Errorf("Next after Start(%q): %v", m, err)
		}
	}
}

// The user name LOGIN keeps is wiped by Reset, by a failure, and by the next Start.
func TestExchangeWipes(t *testing.T) {
	var e Exchange
	for _, end := range []func(){
		func() { e.Reset() },
		func() { e.Next([]byte("pass\x00word")) },
		func() { e.Start([]byte("PLAIN")) },
	} {
		e.Start([]byte("LOGIN"))
		e.Next([]byte("alice"))
		end()
		if bytes.Contains(e.user[:cap(e.user)], []byte("alice")) {
			t.Fatal("user name left in the Exchange")
		}
	}
}

var decodeCases = []struct {
	in, want string
	ok       bool
}{
	{"", "", true},
	{"YWJj", "abc", true},
	{"YWI=", "ab", true},
	{"YQ==", "a", true},
	{"AGFsaWNlAHNlY3JldA==", "\x00alice\x00secret", true},
	{" Y W\tJ j ", "abc", true},   // blanks anywhere
	{"YW\r\nJj\r\n", "abc", true}, // line ends too
	{"Y Q = =", "a", true},
	{"\t", "", true},
	{"=", "", false}, // "=" for an empty response is the protocols' business
	{"YQ", "", false},
	{"YQ=", "", false},
	{"YWJ", "", false},
	{"YQ==YQ==", "", false},
	{"YQ== YQ==", "", false},
	{"YQ==x", "", false},
	{"Y!Jj", "", false},
	{"YWJj\x00", "", false},
	{"*", "", false},
	{"YWJ\vj", "", false}, // only SP and HT are blanks
	{"YWJj====", "", false},
}

func TestAppendDecode(t *testing.T) {
	for _, c := range decodeCases {
		for _, dst := range [][]byte{nil, []byte("pre"), make([]byte, 0, 2), make([]byte, 1, 100)} {
			prefix := string(dst)
			got, err := AppendDecode(dst, []byte(c.in))
			if (err == nil) != c.ok {
				t.Errorf("AppendDecode(%q, %q): error %v", prefix, c.in, err)
				continue
			}
			if err != nil {
				if err != ErrBase64 || string(got) != prefix {
					t.Errorf("AppendDecode(%q, %q) = %q, %v", prefix, c.in, got, err)
				}
				continue
			}
			if got == nil || string(got) != prefix+c.want {
				t.Errorf("AppendDecode(%q, %q) = %q (nil: %v), want %q", prefix, c.in, got, got == nil, prefix+c.want)
			}
			if string(dst) != prefix {
				t.Errorf("AppendDecode changed dst to %q", dst)
			}
		}
	}
}

// What AppendDecode held of a response is wiped: the squeezed copy always, the decoded
// bytes when decoding failed.
func TestAppendDecodeWipes(t *testing.T) {
	buf := make([]byte, 0, 256)
	in := []byte(base64.StdEncoding.EncodeToString([]byte("\x00alice\x00Sekr1t")))
	spaced := bytes.Join(bytes.SplitAfter(in, []byte("c")), []byte(" "))
	out, err := AppendDecode(buf, spaced)
	if err != nil || string(out) != "\x00alice\x00Sekr1t" {
		t.Fatalf("AppendDecode = %q, %v", out, err)
	}
	if bytes.Contains(buf[len(out):cap(buf)], in[4:12]) {
		t.Fatal("squeezed response left in the buffer")
	}
	bad := append(append([]byte{}, in...), '!')
	if _, err := AppendDecode(buf[:0], bad); err != ErrBase64 {
		t.Fatalf("AppendDecode(bad) = %v", err)
	}
	if bytes.Contains(buf[:cap(buf)], []byte("alice")) {
		t.Fatal("decoded response left in the buffer after a failure")
	}
}

func TestCancelled(t *testing.T) {
	for in, want := range map[string]bool{"*": true, "": false, "**": false, " *": false, "*\r": false, "Kg==": false} {
		if Cancelled([]byte(in)) != want {
			t.Errorf("Cancelled(%q) = %v", in, !want)
		}
	}
}

func TestAppendPlain(t *testing.T) {
	// The verbatim master-user example of Dovecot's documentation.
	if got := string(AppendProxyPlain(nil, "carol", "proxyadm", "masterpw")); got != "Y2Fyb2wAcHJveHlhZG0AbWFzdGVycHc=" {
		t.Errorf("AppendProxyPlain(master) = %s", got)
	}
	if got := string(AppendProxyPlain([]byte("AUTH PLAIN "), "u", "", "w")); got != "AUTH PLAIN dQB1AHc=" {
		t.Errorf("AppendProxyPlain = %s", got)
	}
	// Every length around the buffer's size, for each field.
	for n := range 100 {
		long := strings.Repeat("x", n)
		for _, f := range [][3]string{{long, "a", "b"}, {"", long, "pw"}, {"z", "a", long}, {long, long, long}} {
			want := base64.StdEncoding.EncodeToString([]byte(f[0] + "\x00" + f[1] + "\x00" + f[2]))
			if got := string(AppendPlain([]byte("pre"), f[0], f[1], f[2])); got != "pre"+want {
				t.Fatalf("AppendPlain(%q) = %s, want pre%s", f, got, want)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	for _, e := range []Error{ErrBase64, ErrMalformed, ErrEmptyUser, ErrNUL, ErrSequence, 0, 200} {
		if !strings.HasPrefix(e.Error(), "sasl: ") {
			t.Errorf("%d: %q", e, e.Error())
		}
	}
	var err error = ErrNUL
	if !errors.Is(err, ErrNUL) || errors.Is(err, ErrEmptyUser) {
		t.Error("errors.Is")
	}
}

// Once the buffers have grown, nothing allocates: not a LOGIN exchange, not decoding
// (with blanks or without), not encoding PLAIN.
func TestAllocs(t *testing.T) {
	var e Exchange
	mechLogin, mechPlain := []byte("LOGIN"), []byte("PLAIN")
	user, pass, msg := []byte("alice"), []byte("secret"), []byte("\x00alice\x00secret")
	login := func() {
		e.Start(mechLogin)
		e.Next(nil)
		e.Next(user)
		if _, done, _ := e.Next(pass); !done {
			t.Fatal("not done")
		}
		e.Reset()
	}
	login()
	if n := testing.AllocsPerRun(100, login); n != 0 {
		t.Errorf("LOGIN exchange: %v allocations", n)
	}
	plain := func() {
		e.Start(mechPlain)
		if _, _, err := e.Next(msg); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.Next(nil); err != ErrSequence {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, plain); n != 0 {
		t.Errorf("PLAIN exchange: %v allocations", n)
	}
	bad := []byte("alice\x00secret")
	failed := func() {
		e.Start(mechPlain)
		if _, _, err := e.Next(bad); err != ErrMalformed {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, failed); n != 0 {
		t.Errorf("failed PLAIN exchange: %v allocations", n)
	}
	buf := make([]byte, 0, 128)
	for _, in := range [][]byte{[]byte("AGFsaWNlAHNlY3JldA=="), []byte("AGFsaWNl AHNlY3JldA=="), {}, []byte("!!")} {
		if n := testing.AllocsPerRun(100, func() { AppendDecode(buf[:0], in) }); n != 0 {
			t.Errorf("AppendDecode(%q): %v allocations", in, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { AppendProxyPlain(buf[:0], "alice", "master", "secret") }); n != 0 {
		t.Errorf("AppendProxyPlain: %v allocations", n)
	}
}

func BenchmarkExchangePlain(b *testing.B) {
	var e Exchange
	buf := make([]byte, 0, 64)
	in := []byte("AGFsaWNlAHNlY3JldA==")
	b.ReportAllocs()
	for b.Loop() {
		e.Start([]byte("PLAIN"))
		data, _ := AppendDecode(buf[:0], in)
		if _, done, _ := e.Next(data); !done {
			b.Fatal("not done")
		}
	}
}

func BenchmarkAppendProxyPlain(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendProxyPlain(buf[:0], "alice", "", "secret")
	}
}

// Each challenge Next returns has its text, and the protocols' texts are their base64.
func TestChallenges(t *testing.T) {
	enc := func(s string) string { return "+ " + base64.StdEncoding.EncodeToString([]byte(s)) + "\r\n" }
	ch := Challenges{Empty: enc(""), Username: enc(UsernamePrompt), Password: enc(PasswordPrompt)}
	if ch.Username != "+ VXNlcm5hbWU6\r\n" || ch.Password != "+ UGFzc3dvcmQ6\r\n" || ch.Empty != "+ \r\n" {
		t.Fatalf("prompts %q", ch)
	}
	var e Exchange
	e.Start([]byte(Plain))
	if c, _, _ := e.Next(nil); ch.Text(c) != ch.Empty {
		t.Errorf("PLAIN: %q", ch.Text(c))
	}
	e.Start([]byte(Login))
	if c, _, _ := e.Next(nil); ch.Text(c) != ch.Username {
		t.Errorf("LOGIN user: %q", ch.Text(c))
	}
	if c, _, _ := e.Next([]byte("alice")); ch.Text(c) != ch.Password {
		t.Errorf("LOGIN password: %q", ch.Text(c))
	}
}
