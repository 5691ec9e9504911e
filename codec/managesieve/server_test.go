package managesieve

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"doorman/codec/login"
)

var (
	benchAuth   = []byte("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHNlY3JldA==\"\r\n")
	benchNoop   = []byte("NOOP\r\n")
	benchConfig = &Config{Greeting: "Doorman ready."}
	benchInfo   = login.SessionInfo{PlaintextAllowed: true}
)

// BenchmarkLoginExchange is a whole client-side login: new session, greeting,
// AUTHENTICATE PLAIN with an initial response, the engine's OK.
func BenchmarkLoginExchange(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s := NewSession(benchConfig, benchInfo)
		_ = s.Greeting()
		n, acts, err := s.Feed(benchAuth)
		if err != nil || n != len(benchAuth) || len(acts) != 1 || acts[0].Kind != login.ActAuth {
			b.Fatalf("Feed: %d %v %v", n, acts, err)
		}
		if acts := s.Resume(login.AuthResult{Status: login.AuthOK}); len(acts) != 1 {
			b.Fatalf("Resume: %v", acts)
		}
	}
}

// BenchmarkCommand is a pre-login command on a session that already exists.
func BenchmarkCommand(b *testing.B) {
	s := NewSession(benchConfig, benchInfo)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchNoop)))
	for b.Loop() {
		if n, _, _ := s.Feed(benchNoop); n != len(benchNoop) {
			b.Fatal(n)
		}
	}
}

// The steady state allocates nothing per command and two strings per login.
func TestAllocs(t *testing.T) {
	s := NewSession(benchConfig, benchInfo)
	s.Feed(benchNoop) // let the buffers grow once
	if n := testing.AllocsPerRun(100, func() { s.Feed(benchNoop) }); n != 0 {
		t.Errorf("NOOP: %v allocations", n)
	}
	tag := []byte("NOOP \"tag\"\r\n")
	s.Feed(tag)
	if n := testing.AllocsPerRun(100, func() { s.Feed(tag) }); n != 0 {
		t.Errorf("NOOP with a tag: %v allocations", n)
	}
	login1 := func() {
		s.Feed(benchAuth)
		s.Resume(login.AuthResult{Status: login.AuthFailed})
	}
	login1()
	if n := testing.AllocsPerRun(100, login1); n > 2 {
		t.Errorf("failed AUTHENTICATE: %v allocations", n)
	}
}

func TestFeedContract(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{})
	if n, acts, err := s.Feed([]byte("NOOP {5+}\r\nab")); n != 0 || acts != nil || err != nil {
		t.Fatalf("partial NOOP: %d %v %v", n, acts, err)
	}
	if _, _, err := s.Feed([]byte("NOOP")); !errors.Is(err, errShortInput) {
		t.Fatalf("short input: %v", err)
	}
	if acts := s.Resume(login.AuthResult{Status: login.AuthOK}); acts != nil {
		t.Fatalf("Resume without ActAuth: %v", acts)
	}
	if acts := s.TLSStarted(); acts != nil {
		t.Fatalf("TLSStarted without ActStartTLS: %v", acts)
	}
	acts := s.Timeout()
	if len(acts) != 1 || acts[0].Kind != login.ActClose || string(acts[0].Data) != "BYE \"Disconnected for inactivity.\"\r\n" {
		t.Fatalf("Timeout: %v", acts)
	}
	if _, _, err := s.Feed([]byte("x")); err != ErrClosed {
		t.Fatalf("Feed after close: %v", err)
	}
	if acts := s.Timeout(); acts != nil {
		t.Fatalf("Timeout after close: %v", acts)
	}
}

func TestDefaults(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{TLSAvailable: true})
	want := `"IMPLEMENTATION" "Doorman"` + "\r\n" +
		`"SIEVE" "` + DefaultSieve + `"` + "\r\n" +
		`"NOTIFY" "mailto"` + "\r\n" +
		`"SASL" ""` + "\r\n" +
		`"STARTTLS"` + "\r\n" +
		`"VERSION" "1.0"` + "\r\n" +
		`OK "Doorman ready."` + "\r\n"
	if g := string(s.Greeting()); g != want {
		t.Errorf("greeting %q, want %q", g, want)
	}
	// Notify alone keeps the default SIEVE list and takes the configured NOTIFY.
	s = NewSession(&Config{Notify: "xmpp"}, login.SessionInfo{Secured: true})
	if g := string(s.Greeting()); !strings.Contains(g, `"NOTIFY" "xmpp"`) || !strings.Contains(g, `"SIEVE" "fileinto `) ||
		!strings.Contains(g, `"SASL" "PLAIN LOGIN"`) {
		t.Errorf("greeting %q", g)
	}
}

// Credentials are copies: they survive the input buffer being reused.
func TestCredentialsCopied(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{Secured: true})
	in := []byte("AUTHENTICATE \"PLAIN\" \"YWRtaW4AYWxpY2UAc2VjcmV0\"\r\n")
	_, acts, _ := s.Feed(in)
	if len(acts) != 1 || acts[0].Kind != login.ActAuth {
		t.Fatalf("actions %v", acts)
	}
	c := acts[0].Creds
	clear(in)
	if c.Authzid != "admin" || c.User != "alice" || c.Pass != "secret" || c.Mech != "PLAIN" || c.Tag != "" {
		t.Fatalf("credentials %+v", *c)
	}
	if bytes.Contains(s.saslBuf[:cap(s.saslBuf)], []byte("secret")) || bytes.Contains(s.scratch[:cap(s.scratch)], []byte("secret")) {
		t.Fatal("password left in the session's buffers")
	}
}

// A client that pipelines commands without reading the answers is cut off once one call
// would produce more than maxOutput.
func TestOutputCap(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{PlaintextAllowed: true})
	in := bytes.Repeat([]byte("CAPABILITY\r\n"), 2000)
	n, acts, err := s.Feed(in)
	if err != nil || n >= len(in) {
		t.Fatalf("consumed %d of %d, %v", n, len(in), err)
	}
	last := acts[len(acts)-1]
	if last.Kind != login.ActClose || last.Reason != "output buffer full" || s.State() != StateClosed {
		t.Fatalf("last action %s %q, state %s", last.Kind, last.Reason, s.State())
	}
}

func TestAppendQuoted(t *testing.T) {
	for _, c := range []struct {
		in       string
		compress bool
		want     string
	}{
		{"", true, `""`},
		{"Logged in.", true, `"Logged in."`},
		{"  a \t b  ", true, `"a b "`},
		{"  a \t b  ", false, "\"  a \t b  \""},
		{"a\t\"b", false, `"a \"b"`}, // escaping rewrites, and a tab becomes a space
		{"a\tb", true, "\"a\tb\""},   // nothing to change: as it is (Pigeonhole's shortcut)
		{`say "hi" \o/`, true, `"say \"hi\" \\o/"`},
		{"two\r\nlines", false, "{10}\r\ntwo\r\nlines"},
		{"a \"q\"\nb", true, "{7}\r\na \"q\"\nb"}, // no escapes in a literal
		{"bad \xff\xfe utf8", true, "\"bad \uFFFD utf8\""},
	} {
		if got := string(appendQuoted([]byte("x "), c.in, c.compress)); got != "x "+c.want {
			t.Errorf("appendQuoted(%q, %v) = %q, want %q", c.in, c.compress, got, "x "+c.want)
		}
	}
}

// The greeting never lets a configured value break a line or a quoted string.
func TestCapabilityValues(t *testing.T) {
	s := NewSession(&Config{Implementation: "a\"b\\c", Sieve: "x\r\ny", Greeting: "hi\r\nthere"}, login.SessionInfo{})
	want := "\"IMPLEMENTATION\" \"a\\\"b\\\\c\"\r\n\"SIEVE\" \"x  y\"\r\n\"SASL\" \"\"\r\n\"VERSION\" \"1.0\"\r\nOK {9}\r\nhi\r\nthere\r\n"
	if g := string(s.Greeting()); g != want {
		t.Errorf("greeting %q, want %q", g, want)
	}
}
