package imap

import (
	"bytes"
	"errors"
	"testing"
)

var (
	benchLogin  = []byte("a LOGIN alice secret\r\n")
	benchNoop   = []byte("a NOOP\r\n")
	benchConfig = &Config{Greeting: "Doorman ready."}
	benchInfo   = SessionInfo{PlaintextAllowed: true}
)

// BenchmarkLoginExchange is a whole client-side login: new session, greeting, LOGIN,
// the engine's OK.
func BenchmarkLoginExchange(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s := NewSession(benchConfig, benchInfo)
		_ = s.Greeting()
		n, acts, err := s.Feed(benchLogin)
		if err != nil || n != len(benchLogin) || len(acts) != 1 || acts[0].Kind != ActAuth {
			b.Fatalf("Feed: %d %v %v", n, acts, err)
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

// The steady state allocates nothing per command and two strings per login.
func TestAllocs(t *testing.T) {
	s := NewSession(benchConfig, benchInfo)
	s.Feed(benchNoop) // let the buffers grow once
	if n := testing.AllocsPerRun(100, func() { s.Feed(benchNoop) }); n != 0 {
		t.Errorf("NOOP: %v allocations", n)
	}
	login := func() {
		s.Feed(benchLogin)
		s.Resume(AuthResult{Status: AuthFailed})
	}
	login()
	if n := testing.AllocsPerRun(100, login); n > 2 {
		t.Errorf("failed LOGIN: %v allocations", n)
	}
}

func TestFeedContract(t *testing.T) {
	s := NewSession(nil, SessionInfo{})
	if n, acts, err := s.Feed([]byte("a LOGIN {5}\r\nal")); n != 0 || len(acts) != 1 || err != nil {
		t.Fatalf("partial LOGIN: %d %v %v", n, acts, err)
	}
	if _, _, err := s.Feed([]byte("a LOG")); !errors.Is(err, errShortInput) {
		t.Fatalf("short input: %v", err)
	}
	if acts := s.Resume(AuthResult{Status: AuthOK}); acts != nil {
		t.Fatalf("Resume without ActAuth: %v", acts)
	}
	acts := s.Timeout()
	if len(acts) != 1 || acts[0].Kind != ActClose || string(acts[0].Data) != "* BYE Disconnected for inactivity.\r\n" {
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
	want := "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ LOGINDISABLED] Doorman ready.\r\n"
	if g := string(s.Greeting()); g != want {
		t.Errorf("greeting %q, want %q", g, want)
	}
	s = NewSession(&Config{Greeting: "line\r\nbreak"}, SessionInfo{Secured: true})
	want = "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN] line  break\r\n"
	if g := string(s.Greeting()); g != want {
		t.Errorf("greeting %q, want %q", g, want)
	}
}

// Credentials are copies: they survive the input buffer being reused.
func TestCredentialsCopied(t *testing.T) {
	s := NewSession(nil, SessionInfo{Secured: true})
	in := []byte("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
	_, acts, _ := s.Feed(in)
	if len(acts) != 1 || acts[0].Kind != ActAuth {
		t.Fatalf("actions %v", acts)
	}
	c := acts[0].Creds
	clear(in)
	if c.Tag != "a" || c.User != "alice" || c.Pass != "secret" || c.Mech != "PLAIN" {
		t.Fatalf("credentials %+v", *c)
	}
}

// A client that pipelines commands without reading the answers is cut off once one call
// would produce more than srvMaxOutput.
func TestOutputCap(t *testing.T) {
	s := NewSession(nil, SessionInfo{PlaintextAllowed: true})
	in := bytes.Repeat([]byte("a CAPABILITY\r\n"), 2000)
	n, acts, err := s.Feed(in)
	if err != nil || n >= len(in) {
		t.Fatalf("consumed %d of %d, %v", n, len(in), err)
	}
	last := acts[len(acts)-1]
	if last.Kind != ActClose || last.Reason != "output buffer full" || s.State() != StateClosed {
		t.Fatalf("last action %s %q, state %s", last.Kind, last.Reason, s.State())
	}
}

// Two IDs in one Feed: each ActID keeps its own parameters (the fuzzer once found the
// second overwriting the first).
func TestTwoIDsInOneFeed(t *testing.T) {
	s := NewSession(nil, SessionInfo{Secured: true})
	_, acts, err := s.Feed([]byte("a ID (\"k1\" \"v1\")\r\nb ID (\"k2\" \"v2\" \"k3\" \"v3\")\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	var ids [][]IDParam
	for _, a := range acts {
		if a.Kind == ActID {
			ids = append(ids, a.IDParams)
		}
	}
	if len(ids) != 2 || len(ids[0]) != 1 || ids[0][0] != (IDParam{Key: "k1", Value: "v1"}) ||
		len(ids[1]) != 2 || ids[1][0] != (IDParam{Key: "k2", Value: "v2"}) || ids[1][1] != (IDParam{Key: "k3", Value: "v3"}) {
		t.Fatalf("ID params: %+v", ids)
	}
}
