package submission

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var (
	benchEHLO   = []byte("EHLO client.example\r\n")
	benchAuth   = []byte("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
	benchNoop   = []byte("NOOP\r\n")
	benchConfig = &Config{Hostname: "mx.example", Greeting: "Doorman ready."}
	benchInfo   = SessionInfo{PlaintextAllowed: true}
)

// BenchmarkLoginExchange is a whole client-side login: new session, greeting, EHLO,
// AUTH PLAIN, the engine's OK.
func BenchmarkLoginExchange(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s := NewSession(benchConfig, benchInfo)
		_ = s.Greeting()
		if n, _, err := s.Feed(benchEHLO); err != nil || n != len(benchEHLO) {
			b.Fatalf("EHLO: %d %v", n, err)
		}
		n, acts, err := s.Feed(benchAuth)
		if err != nil || n != len(benchAuth) || len(acts) != 1 || acts[0].Kind != ActAuth {
			b.Fatalf("AUTH: %d %v %v", n, acts, err)
		}
		if acts := s.Resume(AuthResult{Status: AuthOK}); len(acts) != 1 {
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

// BenchmarkEHLO is the multi-line EHLO reply on a session that already exists.
func BenchmarkEHLO(b *testing.B) {
	s := NewSession(benchConfig, benchInfo)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchEHLO)))
	for b.Loop() {
		if n, _, _ := s.Feed(benchEHLO); n != len(benchEHLO) {
			b.Fatal(n)
		}
	}
}

// The steady state allocates nothing per command and two strings per login.
func TestAllocs(t *testing.T) {
	s := NewSession(benchConfig, benchInfo)
	s.Feed(benchEHLO) // let the buffers grow once
	for _, cmd := range [][]byte{benchNoop, benchEHLO} {
		if n := testing.AllocsPerRun(100, func() { s.Feed(cmd) }); n != 0 {
			t.Errorf("%q: %v allocations", cmd, n)
		}
	}
	login := func() {
		s.Feed(benchAuth)
		s.Resume(AuthResult{Status: AuthFailed})
	}
	login()
	if n := testing.AllocsPerRun(100, login); n > 2 {
		t.Errorf("failed AUTH: %v allocations", n)
	}
}

func TestFeedContract(t *testing.T) {
	s := NewSession(nil, SessionInfo{})
	if n, acts, err := s.Feed([]byte("NOOP x")); n != 0 || acts != nil || err != nil {
		t.Fatalf("partial NOOP: %d %v %v", n, acts, err)
	}
	if _, _, err := s.Feed([]byte("NOO")); !errors.Is(err, errShortInput) {
		t.Fatalf("short input: %v", err)
	}
	if acts := s.Resume(AuthResult{Status: AuthOK}); acts != nil {
		t.Fatalf("Resume without ActAuth: %v", acts)
	}
	acts := s.Timeout()
	if len(acts) != 1 || acts[0].Kind != ActClose || string(acts[0].Data) != "421 4.4.2 localhost Disconnected for inactivity.\r\n" {
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
	s := NewSession(nil, SessionInfo{})
	if g := string(s.Greeting()); g != "220 localhost Doorman ready.\r\n" {
		t.Errorf("greeting %q", g)
	}
	s = NewSession(&Config{Hostname: "mx\r\n", Greeting: "line\r\nbreak"}, SessionInfo{})
	if g := string(s.Greeting()); g != "220 mx   line  break\r\n" {
		t.Errorf("greeting %q", g)
	}
}

// Credentials are copies: they survive the input buffer being reused.
func TestCredentialsCopied(t *testing.T) {
	s := NewSession(nil, SessionInfo{Secured: true})
	in := []byte("EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
	_, acts, _ := s.Feed(in)
	if len(acts) != 2 || acts[1].Kind != ActAuth {
		t.Fatalf("actions %v", acts)
	}
	c := acts[1].Creds
	clear(in)
	if c.Tag != "client.example" || c.User != "alice" || c.Pass != "secret" || c.Mech != "PLAIN" {
		t.Fatalf("credentials %+v", *c)
	}
}

// A client that pipelines commands without reading the answers is cut off once one call
// would produce more than srvMaxOutput.
func TestOutputCap(t *testing.T) {
	s := NewSession(nil, SessionInfo{PlaintextAllowed: true})
	in := bytes.Repeat([]byte("EHLO client.example\r\n"), 2000)
	n, acts, err := s.Feed(in)
	if err != nil || n >= len(in) {
		t.Fatalf("consumed %d of %d, %v", n, len(in), err)
	}
	last := acts[len(acts)-1]
	if last.Kind != ActClose || last.Reason != "output buffer full" || s.State() != StateClosed {
		t.Fatalf("last action %s %q, state %s", last.Kind, last.Reason, s.State())
	}
}

func TestHeloDomain(t *testing.T) {
	for _, c := range []struct {
		in      string
		literal bool
		want    string // "!" for invalid
	}{
		{"client.example", true, "client.example"},
		{"client.example trailing words", true, "client.example"},
		{"Client-1.Example", false, "Client-1.Example"},
		{"_srv.example", false, "_srv.example"},
		{"-x-", false, "-x-"},
		{"a..b", true, "!"},
		{"a.", true, "!"},
		{".a", true, "!"},
		{"a!b", true, "!"},
		{"a\tb", true, "!"},
		{"[192.0.2.1]", true, "[192.0.2.1]"},
		{"[192.0.2.1]", false, "!"},
		{"[192.0.2.1] x", true, "[192.0.2.1]"},
		{"[192.0.2.1]x", true, "!"},
		{"[0192.000.2.255]", true, "[0192.000.2.255]"},
		{"[192.0.2.256]", true, "!"},
		{"[192.0.2]", true, "!"},
		{"[192.0.2.1.5]", true, "!"},
		{"[192.0.2.1", true, "!"},
		{"[IPv6:::1]", true, "[IPv6:::1]"},
		{"[ipv6:2001:DB8::1]", true, "[ipv6:2001:DB8::1]"},
		{"[IPv6:1:2:3:4:5:6:7:8]", true, "[IPv6:1:2:3:4:5:6:7:8]"},
		{"[IPv6:1:2:3:4:5:6:7::8]", true, "!"},
		{"[IPv6:1:2:3:4:5:6:7]", true, "!"},
		{"[IPv6:::ffff:192.0.2.1]", true, "[IPv6:::ffff:192.0.2.1]"},
		{"[IPv6:::ffff:192.0.2.01]", true, "!"},
		{"[IPv6:1::2::3]", true, "!"},
		{"[IPv6:12345::]", true, "!"},
		{"[IPv6::1]", true, "!"},
		{"[IPv6:1:]", true, "!"},
		{"[IPv6:]", true, "!"},
		{"[x-tag:anything.at=all]", true, "[x-tag:anything.at=all]"},
		{"[x-:y]", true, "!"},
		{"[-:y]", true, "!"},
		{"[tag:]", true, "!"},
		{"[tag:a\\b]", true, "!"},
		{"[]", true, "!"},
		{"", true, "!"},
	} {
		got, ok := srvHeloDomain([]byte(c.in), c.literal)
		g := string(got)
		if !ok {
			g = "!"
		}
		if g != c.want {
			t.Errorf("%q (literal %v): %q, want %q", c.in, c.literal, g, c.want)
		}
	}
}

func TestStringError(t *testing.T) {
	for in, want := range map[string]string{
		"":           "",
		"atom":       "",
		`"q s"`:      "",
		`"a\"b"`:     "",
		`"a\`:        `Invalid character after '\' in quoted string`,
		`"a`:         "Premature end of quoted string",
		"\"a\tb\"":   "Invalid character in quoted string",
		`"a"b`:       "Invalid character in string",
		"a b":        "Invalid character in string",
		"(":          "Invalid character in string",
		"a.b":        "Invalid character in string",
		"!#$%&'*+-/": "",
	} {
		if got := srvStringError([]byte(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// Every text on the wire ends a reply line properly and none holds a control byte.
func TestTexts(t *testing.T) {
	for _, txt := range []string{
		txtUnknownCommand, txtAuthRequired, txtInvalidSyntax, txtLineTooLong, txtMissingHostname,
		txtOK, txtInvalidParams, txtBye, txtStartTLSOK, txtTLSActive, txtTLSDisabled,
		txtXCLIENTUntrusted, txtAuthMissingMech, txtAuthInvalidResponse, txtUnsupportedMech,
		txtPlaintextDisabled, txtAuthAborted, txtBadBase64Initial, txtBadBase64Continued,
		txtAuthFailed, txtLoggedIn,
	} {
		if len(txt) < 4 || txt[3] != ' ' || strings.ContainsAny(txt, "\r\n") {
			t.Errorf("bad reply text %q", txt)
		}
	}
}

func TestXCLIENTAddr(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":          "192.0.2.1",
		"1":                  "0.0.0.1",
		"127.1":              "127.0.0.1",
		"10.1.65535":         "10.1.255.255",
		"0x7F.0.0.01":        "127.0.0.1",
		"4294967295":         "255.255.255.255",
		"192.0.2.1 trailing": "192.0.2.1",
		"4294967296":         "!",
		"10.1.65536":         "!",
		"256.0.0.1":          "!",
		"08.0.0.1":           "!",
		"0x":                 "!",
		"1.2.3.4.5":          "!",
		"1.2.3.":             "!",
		"":                   "!",
		"IPv6:::1":           "::1",
		"[::1]":              "::1",
		"IPV6:1.2.3.4":       "!",
		"[::1":               "!",
		"::1]":               "!",
	} {
		got, ok := xclientAddr([]byte(in))
		if !ok {
			got = "!"
		}
		if got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
