package codectest

import (
	"hash/fnv"
	"io/fs"
	"math/rand/v2"
	"slices"
	"testing"

	"doorman/codec/login"
)

// Bits of a FuzzSession input's first byte that every protocol reads the same way.
const (
	FuzzSecured          = 1
	FuzzPlaintextAllowed = 2
	FuzzTLSAvailable     = 4
)

// FuzzResults is a list for Frontend.FuzzResults: every status, a temporary failure
// and a disabled user with a text (disabledText: the protocol's), and a failure with
// the backend's own reply (failedReply, a whole reply of the protocol).
func FuzzResults(disabledText, failedReply string) []login.AuthResult {
	return []login.AuthResult{
		{Status: login.AuthFailed},
		{Status: login.AuthTempFail, Text: "Temporary authentication failure. [h:t]"},
		{Status: login.AuthUnavailable},
		{Status: login.AuthServerBug},
		{Status: login.AuthDisabled, Text: disabledText},
		{Status: login.AuthAuthzFailed},
		{Status: login.AuthFailed, Reply: []byte(failedReply)},
		{Status: login.AuthOK},
	}
}

// FuzzNonce is the SessionInfo.SASLNonce of every fuzz session.
const FuzzNonce = "ZnV6em5vbmNl"

// fuzzSecrets is what the fake engine answers, in turn, to each ActSecret: stored
// passwords of "secret" in each scheme a SecretExchange takes, one it can't use, and
// failures.
var fuzzSecrets = []login.AuthResult{
	{Status: login.AuthOK, Secret: "{PLAIN}secret"},
	{Status: login.AuthOK, Secret: "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"},
	{Status: login.AuthOK, Secret: "{SCRAM-SHA-256}4096,YjMzOlZkNCAVIgpIW7FI0Q==,OymJ0UNcIfX6GHz9pNElOcWP2zhohFU2wteX+v6Urrg=,Ofb8//IbF/Y++wFVE2OsXDyH647o9ZJFynMmeqz+IXo="},
	{Status: login.AuthFailed},
	{Status: login.AuthOK, Secret: "{SHA512-CRYPT}$6$x$y"},
	{Status: login.AuthTempFail},
}

// FuzzSession feeds arbitrary client bytes, seeded from the transcripts (testdata/*.txt
// of fsys). The first byte picks the session's settings (see Frontend.FuzzNew), the rest
// is what the client sends. Every input is replayed twice, whole and in pieces, and both
// must say the same; along the way Feed's promises are checked: no panic, consumed
// within bounds, nothing consumed between ActAuth and Resume, no unbounded holding,
// output bounded by input.
func FuzzSession[C any](f *testing.F, fsys fs.FS, fe *Frontend[C]) {
	files, _ := fs.Glob(fsys, "testdata/*.txt")
	for _, name := range files {
		tr, err := loadTranscript(fsys, name, fe)
		if err != nil {
			f.Fatal(err)
		}
		var flags byte
		if tr.info.Secured {
			flags |= FuzzSecured
		}
		if tr.info.PlaintextAllowed {
			flags |= FuzzPlaintextAllowed
		}
		if tr.info.TLSAvailable {
			flags |= FuzzTLSAvailable
		}
		if fe.FuzzFlags != nil {
			flags |= fe.FuzzFlags(tr.cfg, tr.info)
		}
		data := []byte{flags}
		for _, l := range tr.lines {
			if l.kind == 'C' {
				b, err := unescape(l.text)
				if err != nil {
					f.Fatal(err)
				}
				data = append(data, b...)
			}
		}
		if len(data) <= fe.FuzzMaxInput {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > fe.FuzzMaxInput {
			return
		}
		info := login.SessionInfo{
			Secured:          data[0]&FuzzSecured != 0,
			PlaintextAllowed: data[0]&FuzzPlaintextAllowed != 0,
			TLSAvailable:     data[0]&FuzzTLSAvailable != 0,
			SASLNonce:        FuzzNonce,
			SASLHost:         "fuzz.example",
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
		whole := fuzzRun(t, fe, data[0], info, [][]byte{in})
		split := fuzzRun(t, fe, data[0], info, pieces)
		if !slices.Equal(whole, split) {
			t.Fatalf("whole and split runs differ\nwhole: %q\nsplit: %q", whole, split)
		}
	})
}

// fuzzRun replays pieces against a new session and returns a log of what happened.
func fuzzRun[C any](t *testing.T, fe *Frontend[C], flags byte, info login.SessionInfo, pieces [][]byte) []string {
	s, maxHeld := fe.FuzzNew(flags, info)
	rules := fe.rules()
	var (
		log      []string
		pending  []byte
		fed, out int
		resumes  int
		secrets  int
	)
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
			if (a.Kind == login.ActAuth || a.Kind == login.ActSecret || a.Kind == login.ActClose || a.Kind == login.ActStartTLS) && i != len(acts)-1 {
				t.Fatalf("%s is not the last action", a.Kind)
			}
			if a.Kind == login.ActClose && !slices.Contains(fe.FuzzReasons, a.Reason) && a.Reason != "timeout" {
				t.Fatalf("unexpected close reason %q", a.Reason)
			}
			if err := rules.check(a); err != nil {
				t.Fatal(err)
			}
			log = append(log, "A"+rules.canon(a))
		}
	}
	feed := func() {
		before := s.StateName()
		n, acts, err := s.Feed(pending)
		switch {
		case before == "closed":
			if err != fe.ErrClosed || n != 0 || len(acts) != 0 {
				t.Fatalf("Feed after close: %d %v %v", n, acts, err)
			}
			return
		case err != nil:
			t.Fatalf("Feed: %v", err)
		case n < 0 || n > len(pending):
			t.Fatalf("consumed %d of %d", n, len(pending))
		case waiting(before) && (n != 0 || len(acts) != 0):
			t.Fatalf("state %s: consumed %d, %d actions", before, n, len(acts))
		}
		pending = pending[n:]
		record(acts)
		switch st := s.StateName(); st {
		case "command", "literal", "auth-continue":
			if len(pending) > maxHeld {
				t.Fatalf("state %s holds %d bytes", st, len(pending))
			}
		case "auth-wait", "secret-wait":
			// Until Resume, nothing more is consumed, however often Feed is called.
			if n, acts, _ := s.Feed(pending); n != 0 || len(acts) != 0 {
				t.Fatalf("consumed %d after %s", n, st)
			}
		}
	}
	settle := func() {
		for {
			switch s.StateName() {
			case "auth-wait":
				r := fe.FuzzResults[resumes%len(fe.FuzzResults)]
				resumes++
				log = append(log, "R"+r.Status.String())
				record(s.Resume(r))
			case "secret-wait":
				r := fuzzSecrets[secrets%len(fuzzSecrets)]
				secrets++
				log = append(log, "Rsecret"+r.Status.String())
				record(s.Resume(r))
			case "tls-wait":
				log = append(log, "Rtls")
				record(s.TLSStarted())
			default:
				return
			}
			if st := s.StateName(); st == "command" || st == "auth-continue" {
				feed() // a refused OAuth token's error challenge waits for a response
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
	if st := s.StateName(); st != "closed" && st != "done" {
		t.Fatalf("state %s after Timeout", st)
	}
	return log
}
