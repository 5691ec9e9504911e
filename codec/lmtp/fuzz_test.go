package lmtp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
)

const fuzzMaxInput = 1 << 14

// clientBytes are the C: bytes of every transcript, seeds for the fuzzers.
func clientBytes(f *testing.F) [][]byte {
	files, _ := filepath.Glob("testdata/*.txt")
	var out [][]byte
	for _, name := range files {
		tr, err := loadTranscript(name)
		if err != nil {
			f.Fatal(err)
		}
		var data []byte
		for _, l := range tr.lines {
			if l.kind == 'C' {
				b, err := unescapeLine(l.text)
				if err != nil {
					f.Fatal(err)
				}
				data = append(data, b...)
			}
		}
		out = append(out, data)
	}
	return out
}

// FuzzSession feeds arbitrary client bytes: the first byte picks settings and how the
// engine answers recipients, the rest is what the client sends. Every input is replayed
// whole and in random pieces, which must agree; Feed's promises are checked along the
// way: consumed within bounds, nothing consumed while an answer is awaited, nothing
// after close, body bytes never more than the input.
func FuzzSession(f *testing.F) {
	for _, d := range clientBytes(f) {
		if len(d) < fuzzMaxInput {
			f.Add(append([]byte{0}, d...))
			f.Add(append([]byte{3}, d...))
			f.Add(append([]byte{8}, d...))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > fuzzMaxInput {
			return
		}
		cfg := Config{Hostname: "mx.test"}
		if data[0]&1 != 0 {
			cfg.MaxLine = 24
		}
		if data[0]&2 != 0 {
			cfg.MaxRecipients = 2
		}
		accept := data[0]&4 == 0
		trusted := data[0]&8 != 0
		in := data[1:]
		whole := fuzzReplay(t, cfg, accept, trusted, [][]byte{in})
		rng := rand.New(rand.NewPCG(uint64(len(in)), 3))
		var pieces [][]byte
		for b := in; len(b) > 0; {
			n := 1 + rng.IntN(min(len(b), 17))
			pieces = append(pieces, b[:n])
			b = b[n:]
		}
		split := fuzzReplay(t, cfg, accept, trusted, pieces)
		if whole != split {
			t.Fatalf("whole and split disagree:\n%s\n---\n%s", whole, split)
		}
	})
}

func fuzzReplay(t *testing.T, cfg Config, accept, trusted bool, pieces [][]byte) string {
	s := NewSession(&cfg)
	s.SetTrusted(trusted)
	var log strings.Builder
	log.Write(s.Greeting())
	var pending []byte
	total := 0
	bodyBytes := 0
	do := func(acts []Action) {
		for _, a := range acts {
			switch a.Kind {
			case ActWrite, ActClose:
				log.Write(a.Data)
				if a.Kind == ActClose {
					log.WriteString("[close " + a.Reason + "]")
				}
			case ActBody:
				bodyBytes += len(a.Data)
				log.Write(a.Data)
			case ActXCLIENT:
				if a.XClient == nil {
					t.Fatal("ActXCLIENT without fields")
				}
				fmt.Fprintf(&log, "[xclient %+v]", *a.XClient)
			default:
				fmt.Fprintf(&log, "[%s]", a.Kind)
			}
		}
	}
	for _, p := range pieces {
		pending = append(pending, p...)
		total += len(p)
		for s.State() != StateClosed {
			before := s.State()
			n, acts, err := s.Feed(pending)
			if err != nil {
				t.Fatal(err)
			}
			if n < 0 || n > len(pending) {
				t.Fatalf("consumed %d of %d", n, len(pending))
			}
			if (before == StateRcpt || before == StateDataEnd) && n != 0 {
				t.Fatalf("consumed %d in state %s", n, before)
			}
			pending = pending[n:]
			do(acts)
			switch s.State() {
			case StateRcpt:
				r := NewReply(550, "5.1.1", "no")
				if accept {
					r = NewReply(250, "2.1.5", "OK")
				}
				do(s.ResumeRcpt(r))
				continue
			case StateDataEnd:
				var replies []Reply
				for range s.Accepted() {
					replies = append(replies, NewReply(250, "2.0.0", "Saved"))
				}
				do(s.FinishData(replies))
				continue
			}
			if n == 0 {
				break
			}
		}
		if s.State() == StateClosed {
			break
		}
		// Only an incomplete command line may be held, and never a long one.
		if len(pending) > cfg.maxLine()+maxVerb+2 {
			t.Fatalf("holding %d bytes", len(pending))
		}
	}
	if bodyBytes > total {
		t.Fatalf("body %d bytes from %d input", bodyBytes, total)
	}
	return log.String()
}

// FuzzDotDecoder: whole and in pieces the decoder reads the same; what it decodes,
// encoded again and decoded, stays the same.
func FuzzDotDecoder(f *testing.F) {
	for _, d := range clientBytes(f) {
		f.Add(d, uint8(3))
	}
	f.Add([]byte("a\r\n.\rb\r\n..\r\n.\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		if len(in) > fuzzMaxInput {
			return
		}
		out, n, done := decodeAll(in, 0, 0)
		out2, n2, done2 := decodeAll(in, int(step%7)+1, int(step%3)+1)
		if !bytes.Equal(out, out2) || n != n2 || done != done2 {
			t.Fatalf("whole %q %d %v, pieces %q %d %v", out, n, done, out2, n2, done2)
		}
		if len(out) > n+2 {
			t.Fatalf("%d bytes out of %d read", len(out), n)
		}
		if done {
			checkRoundTrip(t, out)
		}
	})
}

// FuzzDotEncoder: anything encoded decodes back (normalized), read to its end exactly.
func FuzzDotEncoder(f *testing.F) {
	f.Add([]byte(".\r\n.\n\r.\r\r\n"))
	for _, d := range clientBytes(f) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > fuzzMaxInput {
			return
		}
		checkRoundTrip(t, msg)
	})
}

// FuzzReplyParser: whole and byte by byte give the same replies; what a reply writes
// parses back to the same reply.
func FuzzReplyParser(f *testing.F) {
	f.Add([]byte("220 vm Dovecot ready.\r\n250-vm\r\n250-8BITMIME\r\n250 XRCPTFORWARD\r\n550-5.1.1 a\r\n550 5.1.1 b\r\n"))
	f.Add([]byte("250 2.1.5 OK\r\n451 4.3.0\r\n250\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > fuzzMaxInput {
			return
		}
		parse := func(step int) (out []string, failed bool) {
			p := ReplyParser{MaxLine: 64}
			var buf []byte
			for i := 0; i < len(in); i += step {
				buf = append(buf, in[i:min(len(in), i+step)]...)
				for {
					n, r, err := p.Feed(buf)
					if n < 0 || n > len(buf) {
						t.Fatalf("consumed %d of %d", n, len(buf))
					}
					buf = buf[n:]
					if err != nil {
						return out, true
					}
					if r == nil {
						break
					}
					if len(r.Lines) == 0 {
						t.Fatal("reply without lines")
					}
					out = append(out, fmt.Sprintf("%d|%s|%q", r.Code, r.Enhanced, r.Lines))
					// Written out again, it reads back the same.
					var q ReplyParser
					w := r.Append(nil)
					m, r2, err := q.Feed(w)
					if err != nil || r2 == nil || m != len(w) || r2.String() != r.String() {
						t.Fatalf("%q rewritten %q reads %v %v", r, w, r2, err)
					}
				}
			}
			return out, false
		}
		a, fa := parse(len(in) + 1)
		b, fb := parse(1)
		if fa != fb || strings.Join(a, "\n") != strings.Join(b, "\n") {
			t.Fatalf("whole %v %v, bytewise %v %v", a, fa, b, fb)
		}
	})
}

// FuzzXtext: decode(encode(s)) == s, and what decodes re-encodes to a decodable value.
func FuzzXtext(f *testing.F) {
	f.Add("foo=bar\tx=y2")
	f.Add("a+2Bb")
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := DecodeXtext(Xtext(s)); err != nil || d != s {
			t.Fatalf("%q: %q %v", s, d, err)
		}
		if d, err := DecodeXtext(s); err == nil {
			if d2, err := DecodeXtext(Xtext(d)); err != nil || d2 != d {
				t.Fatalf("%q", s)
			}
		}
	})
}

// FuzzParseCommand: MAIL and RCPT argument parsing never panics, and an accepted
// recipient's address, written out, parses back to itself.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"TO:<alice@example.org>", "TO:<\"a b\"@c> ORCPT=rfc822;x+40y", "FROM:<> BODY=8BITMIME",
		"TO:<@a,@b:c@[1.2.3.4]>", "FROM:<a..b@c>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if rc, r := parseRcpt(s); r == nil {
			a, rest, why := parsePath("<"+rc.To.String()+">", false)
			if why != "" || rest != "" || a != rc.To {
				t.Fatalf("%q: %+v rewritten %q reparsed %+v %q", s, rc.To, rc.To.String(), a, why)
			}
			var out []byte
			out = AppendRcptTo(out, &RcptOut{To: rc.To, Rcpt: rc, AddOrcpt: true})
			if !bytes.HasSuffix(out, []byte("\r\n")) || bytes.Count(out, []byte("\n")) != 1 {
				t.Fatalf("%q: RCPT line %q", s, out)
			}
		} else if r.Code/100 != 5 && r.Code != 451 {
			t.Fatalf("%q: reply %v", s, r)
		}
		if m, r := parseMail(s); r == nil {
			out := AppendMailFrom(nil, m)
			if bytes.Count(out, []byte("\n")) != 1 {
				t.Fatalf("%q: MAIL line %q", s, out)
			}
		}
	})
}
