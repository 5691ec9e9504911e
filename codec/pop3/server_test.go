package pop3

import (
	"bytes"
	"errors"
	"testing"

	"doorman/codec/login"
)

var (
	benchUser   = []byte("USER alice\r\n")
	benchLogin  = []byte("USER alice\r\nPASS secret\r\n")
	benchCapa   = []byte("CAPA\r\n")
	benchConfig = &Config{Greeting: "Doorman ready."}
	benchInfo   = login.SessionInfo{PlaintextAllowed: true}
)

// BenchmarkLoginExchange is a whole client-side login: new session, greeting, USER and
// PASS, the engine's OK.
func BenchmarkLoginExchange(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		s := NewSession(benchConfig, benchInfo)
		_ = s.Greeting()
		n, acts, err := s.Feed(benchLogin)
		if err != nil || n != len(benchLogin) || len(acts) != 2 || acts[1].Kind != login.ActAuth {
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
	b.SetBytes(int64(len(benchCapa)))
	for b.Loop() {
		if n, _, _ := s.Feed(benchCapa); n != len(benchCapa) {
			b.Fatal(n)
		}
	}
}

// The steady state allocates nothing per command and two strings per login.
func TestAllocs(t *testing.T) {
	s := NewSession(benchConfig, benchInfo)
	s.Feed(benchCapa) // let the buffers grow once
	if n := testing.AllocsPerRun(100, func() { s.Feed(benchCapa) }); n != 0 {
		t.Errorf("CAPA: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.Feed(benchUser) }); n != 0 {
		t.Errorf("USER: %v allocations", n)
	}
	logIn := func() {
		s.Feed(benchLogin)
		s.Resume(login.AuthResult{Status: login.AuthFailed})
	}
	logIn()
	if n := testing.AllocsPerRun(100, logIn); n > 2 {
		t.Errorf("failed USER/PASS: %v allocations", n)
	}
}

func TestFeedContract(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{})
	if n, acts, err := s.Feed([]byte("USER al")); n != 0 || len(acts) != 0 || err != nil {
		t.Fatalf("partial USER: %d %v %v", n, acts, err)
	}
	if _, _, err := s.Feed([]byte("US")); !errors.Is(err, errShortInput) {
		t.Fatalf("short input: %v", err)
	}
	if acts := s.Resume(login.AuthResult{Status: login.AuthOK}); acts != nil {
		t.Fatalf("Resume without ActAuth: %v", acts)
	}
	s.TLSStarted() // without STLS: nothing
	if s.State() != StateCommand {
		t.Fatalf("TLSStarted without STLS: %s", s.State())
	}
	acts := s.Timeout()
	if len(acts) != 1 || acts[0].Kind != login.ActClose || string(acts[0].Data) != "-ERR Disconnected for inactivity.\r\n" {
		t.Fatalf("Timeout: %v", acts)
	}
	if _, _, err := s.Feed([]byte("x")); err != ErrClosed {
		t.Fatalf("Feed after close: %v", err)
	}
	if acts := s.Timeout(); acts != nil {
		t.Fatalf("Timeout after close: %v", acts)
	}
	if State(0).String() != "unknown" || State(99).String() != "unknown" || StateDone.String() != "done" {
		t.Fatal("state names")
	}
}

func TestDefaults(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{})
	if g := string(s.Greeting()); g != "+OK Doorman ready.\r\n" {
		t.Errorf("greeting %q", g)
	}
	if s.maxLine != DefaultMaxLine || s.maxBad != DefaultMaxBadCommands || s.maxAuth != 0 {
		t.Errorf("limits %d %d %d", s.maxLine, s.maxBad, s.maxAuth)
	}
	// Plaintext is refused by default (the zero SessionInfo): no USER, no mechanisms.
	_, acts, _ := s.Feed([]byte("CAPA\r\n"))
	if len(acts) != 1 || !bytes.HasSuffix(acts[0].Data, []byte("AUTH-RESP-CODE\r\nSASL\r\n.\r\n")) {
		t.Errorf("CAPA %v", acts)
	}
}

// Credentials are copies: they survive the input buffer being reused.
func TestCredentialsCopied(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{Secured: true})
	in := []byte("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
	_, acts, _ := s.Feed(in)
	if len(acts) != 1 || acts[0].Kind != login.ActAuth {
		t.Fatalf("actions %v", acts)
	}
	c := acts[0].Creds
	clear(in)
	if c.Tag != "" || c.User != "alice" || c.Pass != "secret" || c.Mech != "PLAIN" {
		t.Fatalf("credentials %+v", *c)
	}
	// USER's copy and the scratch space are wiped once the login is handed over.
	s = NewSession(nil, login.SessionInfo{Secured: true})
	s.Feed([]byte("USER alice\r\nPASS Sekr1t\r\n"))
	if bytes.Contains(s.userArr[:], []byte("alice")) || bytes.Contains(s.scratchArr[:], []byte("Sekr1t")) {
		t.Fatal("login left in the session's buffers")
	}
}

// A client that pipelines commands without reading the answers is cut off once one call
// would produce more than srvMaxOutput.
func TestOutputCap(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{PlaintextAllowed: true})
	in := bytes.Repeat([]byte("CAPA\r\n"), 2000)
	n, acts, err := s.Feed(in)
	if err != nil || n >= len(in) {
		t.Fatalf("consumed %d of %d, %v", n, len(in), err)
	}
	last := acts[len(acts)-1]
	if last.Kind != login.ActClose || last.Reason != "output buffer full" || s.State() != StateClosed {
		t.Fatalf("last action %s %q, state %s", last.Kind, last.Reason, s.State())
	}
}

// A line of CRs never ends its command name: it runs into the line limit.
func TestOnlyCRs(t *testing.T) {
	s := NewSession(nil, login.SessionInfo{PlaintextAllowed: true})
	in := bytes.Repeat([]byte{'\r'}, DefaultMaxLine+2)
	if n, acts, _ := s.Feed(in); n != 0 || acts != nil {
		t.Fatalf("at the limit: %d %v", n, acts)
	}
	in = append(in, '\r')
	n, acts, _ := s.Feed(in)
	if n != DefaultMaxLine+2 || len(acts) != 1 || acts[0].Kind != login.ActClose || string(acts[0].Data) != "-ERR Input buffer full, aborting\r\n" {
		t.Fatalf("past the limit: %d %v", n, acts)
	}
}
