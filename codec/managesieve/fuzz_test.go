package managesieve

import (
	"hash/fnv"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"doorman/codec/login"
)

// FuzzSession feeds arbitrary client bytes, seeded from the transcripts. The first byte
// picks the session's settings, the rest is what the client sends. Every input is
// replayed twice, whole and in pieces, and both must say the same; along the way
// Feed's promises are checked: no panic, consumed within bounds, nothing consumed
// between ActAuth and Resume, no unbounded holding, output bounded by input.
func FuzzSession(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txt")
	for _, name := range files {
		tr, err := loadTranscript(name)
		if err != nil {
			f.Fatal(err)
		}
		var flags byte
		if tr.info.Secured {
			flags |= 1
		}
		if tr.info.PlaintextAllowed {
			flags |= 2
		}
		if tr.info.TLSAvailable {
			flags |= 4
		}
		if tr.cfg.MaxLine > 0 {
			flags |= 8
		}
		data := []byte{flags}
		for _, l := range tr.lines {
			if l.kind == 'C' {
				b, err := unescapeLine(l.text)
				if err != nil {
					f.Fatal(err)
				}
				data = append(data, b...)
			}
		}
		if len(data) <= fuzzMaxInput {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > fuzzMaxInput {
			return
		}
		info := login.SessionInfo{Secured: data[0]&1 != 0, PlaintextAllowed: data[0]&2 != 0, TLSAvailable: data[0]&4 != 0}
		// A short SIEVE list keeps CAPABILITY's answer, and so a whole feed's output,
		// under the per-call cap, which (on purpose) makes a whole feed differ from a
		// split one.
		cfg := &Config{Sieve: "fileinto vacation"}
		if data[0]&8 != 0 {
			cfg.MaxLine = 64 // reach the limits with short inputs
		}
		if data[0]&16 != 0 {
			cfg.MaxBadCommands = 10
		}
		in := data[1:]
		h := fnv.New64a()
		h.Write(data)
		rng := rand.New(rand.NewPCG(h.Sum64(), 1))
		var pieces [][]byte
		for rest := in; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(8))
			pieces = append(pieces, rest[:n])
			rest = rest[n:]
		}
		whole := fuzzRun(t, cfg, info, [][]byte{in})
		split := fuzzRun(t, cfg, info, pieces)
		if !slices.Equal(whole, split) {
			t.Fatalf("whole and split runs differ\nwhole: %q\nsplit: %q", whole, split)
		}
	})
}

// fuzzMaxInput keeps inputs small enough that one call's output stays under the cap.
const fuzzMaxInput = 2048

// fuzzResults is what the fake engine answers, in turn, to each ActAuth.
var fuzzResults = []login.AuthResult{
	{Status: login.AuthFailed},
	{Status: login.AuthTempFail, Text: "Temporary authentication failure. [h:t]"},
	{Status: login.AuthUnavailable},
	{Status: login.AuthServerBug},
	{Status: login.AuthDisabled, Text: "No mail server is set for this user."},
	{Status: login.AuthAuthzFailed},
	{Status: login.AuthFailed, Reply: []byte("NO \"Authentication failed.\"\r\n")},
	{Status: login.AuthOK},
}

var fuzzReasons = []string{
	"logout", "too many bad commands", "line too long", "literal too large",
	"authentication response too large", "output buffer full", "timeout",
}

// fuzzRun replays pieces against a new session and returns a log of what happened.
func fuzzRun(t *testing.T, cfg *Config, info login.SessionInfo, pieces [][]byte) []string {
	s := NewSession(cfg, info)
	var (
		log      []string
		pending  []byte
		fed, out int
		resumes  int
	)
	maxHeld := s.maxLine + 2 + 2*saslMaxResponse + 2
	record := func(acts []login.Action) {
		for i, a := range acts {
			out += len(a.Data)
			if len(a.Data) > 0 {
				if n := len(log); n > 0 && log[n-1][0] == 'S' {
					log[n-1] += string(a.Data)
				} else {
					log = append(log, "S"+string(a.Data))
				}
			}
			if a.Kind == login.ActWrite {
				continue
			}
			if (a.Kind == login.ActAuth || a.Kind == login.ActClose || a.Kind == login.ActStartTLS) && i != len(acts)-1 {
				t.Fatalf("%s is not the last action", a.Kind)
			}
			if a.Kind == login.ActClose && !slices.Contains(fuzzReasons, a.Reason) {
				t.Fatalf("unexpected close reason %q", a.Reason)
			}
			log = append(log, "A"+canonAction(a))
		}
	}
	feed := func() {
		before := s.State()
		n, acts, err := s.Feed(pending)
		switch {
		case before == StateClosed:
			if err != ErrClosed || n != 0 || len(acts) != 0 {
				t.Fatalf("Feed after close: %d %v %v", n, acts, err)
			}
			return
		case err != nil:
			t.Fatalf("Feed: %v", err)
		case n < 0 || n > len(pending):
			t.Fatalf("consumed %d of %d", n, len(pending))
		case (before == StateAuthWait || before == StateTLSWait || before == StateDone) && (n != 0 || len(acts) != 0):
			t.Fatalf("state %s: consumed %d, %d actions", before, n, len(acts))
		}
		pending = pending[n:]
		record(acts)
		switch st := s.State(); st {
		case StateCommand, StateLiteral, StateAuthContinue:
			if len(pending) > maxHeld {
				t.Fatalf("state %s holds %d bytes", st, len(pending))
			}
		case StateAuthWait:
			// Until Resume, nothing more is consumed, however often Feed is called.
			if n, acts, _ := s.Feed(pending); n != 0 || len(acts) != 0 {
				t.Fatalf("consumed %d after ActAuth", n)
			}
		}
	}
	settle := func() {
		for {
			switch s.State() {
			case StateAuthWait:
				r := fuzzResults[resumes%len(fuzzResults)]
				resumes++
				log = append(log, "R"+r.Status.String())
				record(s.Resume(r))
			case StateTLSWait:
				log = append(log, "Rtls")
				record(s.TLSStarted())
			default:
				return
			}
			if s.State() == StateCommand {
				feed()
			}
		}
	}
	for _, p := range pieces {
		pending = append(pending, p...)
		fed += len(p)
		feed()
		settle()
	}
	record(s.Timeout())
	settle()
	if out > 2048+64*fed {
		t.Fatalf("%d bytes out for %d in", out, fed)
	}
	if st := s.State(); st != StateClosed && st != StateDone {
		t.Fatalf("state %s after Timeout", st)
	}
	return log
}
