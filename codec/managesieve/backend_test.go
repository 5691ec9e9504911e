package managesieve

// Backend login transcripts: testdata/backend/*.txt, one login each. The format is
// codec/imap's, with ManageSieve's params:
//
//	# comment; blank lines are ignored
//	=user alice                  params, before the first B: line (=user, =pass,
//	                             =master, =mech, =addr, =session take the rest of the line)
//	=port 44837                  =port, =ttl: numbers
//	=forward foo bar             one forward_ field: name, one space, value; repeatable
//	=flags starttls not-trusted  flags: starttls tls not-trusted
//	B: <bytes>     bytes from the backend; CRLF is appended (B-: without)
//	P: <bytes>     bytes the proxy writes to the backend; CRLF is appended (P-: without)
//	S: <state>     State() expected here
//	R: <outcome>   outcome expected here: pending ok auth-failed tempfail protocol-error
//	               remote-config internal starttls
//	C: <bytes>     a line of the expected ClientReply, CRLF appended (follows R:)
//	T: <text>      the expected Text (follows R:)
//	U: <bytes>     backend bytes expected to be left unconsumed here; CRLF appended (U-: without)
//	E: tls         the engine did the TLS handshake: unconsumed bytes are dropped and
//	               TLSStarted's output counts as proxy output
//
// Escapes in <bytes> and param values: \\ \r \n \0 \xHH, and \{N}c for N copies of c.
//
// Each transcript is replayed with each B: block fed whole, byte by byte and in random
// splits (several seeds), always re-feeding what Feed left unconsumed; the proxy output
// and the results must be the same in every run. A last run feeds all backend bytes up
// to each R:/E:/U: at once, as if the backend had pipelined its answers.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"doorman/codec/login"
)

type backendStep struct {
	kind  string // B P S R E U
	data  []byte
	reply []byte // R: expected ClientReply
	text  *string
	line  int
}

type backendTranscript struct {
	name   string
	params login.BackendParams
	steps  []backendStep
}

func backendUnescape(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(s) {
			return nil, fmt.Errorf("trailing backslash")
		}
		switch s[i] {
		case '\\':
			out = append(out, '\\')
		case 'r':
			out = append(out, '\r')
		case 'n':
			out = append(out, '\n')
		case '0':
			out = append(out, 0)
		case 'x':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("short \\x escape")
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, err
			}
			out = append(out, byte(v))
			i += 2
		case '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 || i+j+1 >= len(s) {
				return nil, fmt.Errorf("bad \\{N}c escape")
			}
			n, err := strconv.Atoi(s[i+1 : i+j])
			if err != nil {
				return nil, err
			}
			out = append(out, bytes.Repeat([]byte{s[i+j+1]}, n)...)
			i += j + 1
		default:
			return nil, fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return out, nil
}

func backendParseTranscript(name, src string) (*backendTranscript, error) {
	t := &backendTranscript{name: name}
	var lastR *backendStep
	for n, raw := range strings.Split(src, "\n") {
		line := strings.TrimSuffix(raw, "\r")
		lineNo := n + 1
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '=' {
			key, val, _ := strings.Cut(line[1:], " ")
			v, err := backendUnescape(val)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
			}
			switch key {
			case "user":
				t.params.User = string(v)
			case "pass":
				t.params.Pass = string(v)
			case "master":
				t.params.Master = string(v)
			case "mech":
				t.params.Mech = string(v)
			case "addr":
				t.params.Client.RemoteIP = string(v)
			case "session":
				t.params.Client.SessionID = string(v)
			case "port", "ttl":
				n, err := strconv.Atoi(string(v))
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
				}
				if key == "port" {
					t.params.Client.RemotePort = n
				} else {
					t.params.Client.TTL = n
				}
			case "forward":
				k, val, _ := strings.Cut(string(v), " ")
				t.params.Client.Forward = append(t.params.Client.Forward, login.KV{Key: k, Value: val})
			case "flags":
				for _, f := range strings.Fields(string(v)) {
					switch f {
					case "not-trusted":
						t.params.NotTrusted = true
					case "tls":
						t.params.TLS = true
					case "starttls":
						t.params.StartTLS = true
					default:
						return nil, fmt.Errorf("%s:%d: unknown flag %q", name, lineNo, f)
					}
				}
			default:
				return nil, fmt.Errorf("%s:%d: unknown param %q", name, lineNo, key)
			}
			continue
		}
		head, body, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: no ':'", name, lineNo)
		}
		body = strings.TrimPrefix(body, " ")
		crlf := true
		if strings.HasSuffix(head, "-") {
			head, crlf = strings.TrimSuffix(head, "-"), false
		}
		data, err := backendUnescape(body)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		if crlf {
			data = append(data, "\r\n"...)
		}
		switch head {
		case "B", "P", "U":
			t.steps = append(t.steps, backendStep{kind: head, data: data, line: lineNo})
		case "S", "E":
			t.steps = append(t.steps, backendStep{kind: head, data: []byte(body), line: lineNo})
		case "R":
			t.steps = append(t.steps, backendStep{kind: "R", data: []byte(body), line: lineNo})
			lastR = &t.steps[len(t.steps)-1]
		case "C", "T":
			if lastR == nil || t.steps[len(t.steps)-1].kind != "R" {
				return nil, fmt.Errorf("%s:%d: %s: must follow R:", name, lineNo, head)
			}
			if head == "C" {
				lastR.reply = append(lastR.reply, data...)
			} else {
				s := body
				lastR.text = &s
			}
		default:
			return nil, fmt.Errorf("%s:%d: unknown line kind %q", name, lineNo, head)
		}
	}
	return t, nil
}

func backendLoadTranscripts(tb testing.TB) []*backendTranscript {
	tb.Helper()
	files, err := filepath.Glob("testdata/backend/*.txt")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no transcripts: %v", err)
	}
	var ts []*backendTranscript
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		t, err := backendParseTranscript(filepath.Base(f), string(src))
		if err != nil {
			tb.Fatal(err)
		}
		ts = append(ts, t)
	}
	return ts
}

// backendReplay drives one transcript. split chooses the size of each chunk handed to
// Feed (nil: a whole block at once); all merges the B: blocks up to each R:/E:/U:.
type backendReplay struct {
	t       *testing.T
	tr      *backendTranscript
	b       *BackendLogin
	split   func(left int) int
	all     bool
	pending []byte // unconsumed backend bytes
	block   []byte // backend bytes not fed yet
	gotOut  []byte
	wantOut []byte
}

func (r *backendReplay) feed() {
	r.t.Helper()
	for len(r.block) > 0 {
		n := len(r.block)
		if r.split != nil {
			n = r.split(n)
		}
		r.pending = append(r.pending, r.block[:n]...)
		r.block = r.block[n:]
		r.feedPending()
	}
}

func (r *backendReplay) feedPending() {
	r.t.Helper()
	before := r.b.Result()
	consumed, out, res := r.b.Feed(r.pending)
	if consumed < 0 || consumed > len(r.pending) {
		r.t.Fatalf("%s: consumed %d of %d", r.tr.name, consumed, len(r.pending))
	}
	if before.Outcome != login.BackendPending && (consumed != 0 || out != nil) {
		r.t.Fatalf("%s: Feed after %v consumed %d, wrote %q", r.tr.name, before.Outcome, consumed, out)
	}
	if res.Outcome != r.b.Result().Outcome {
		r.t.Fatalf("%s: Feed returned %v, Result() %v", r.tr.name, res.Outcome, r.b.Result().Outcome)
	}
	r.gotOut = append(r.gotOut, out...)
	r.pending = append(r.pending[:0], r.pending[consumed:]...)
	r.checkSecrets(res)
}

func (r *backendReplay) checkSecrets(res login.BackendResult) {
	r.t.Helper()
	p := r.tr.params
	if p.Pass != "" && !strings.Contains("<hidden>", p.Pass) && strings.Contains(res.Text, p.Pass) {
		r.t.Fatalf("%s: Text holds the password: %q", r.tr.name, res.Text)
	}
}

func (r *backendReplay) checkOut(line int) {
	r.t.Helper()
	if r.all && r.b.Result().Outcome.Final() && bytes.HasPrefix(r.wantOut, r.gotOut) {
		// All answers came in one read, the last ending the login: what the login
		// would still have written is moot, and Feed doesn't return it.
		return
	}
	if !bytes.Equal(r.gotOut, r.wantOut) {
		r.t.Fatalf("%s:%d: proxy wrote\n%q\nwant\n%q", r.tr.name, line, r.gotOut, r.wantOut)
	}
}

func (r *backendReplay) run() {
	t := r.t
	r.b = NewBackendLogin(&r.tr.params)
	r.feedPending() // Feed(nil) before any byte: nothing, or an Internal result
	for _, st := range r.tr.steps {
		// Everything but another B: ends a block; when blocks are merged, P: and S:
		// don't either.
		if st.kind != "B" && !(r.all && (st.kind == "P" || st.kind == "S")) {
			r.feed()
		}
		switch st.kind {
		case "B":
			if !r.all {
				r.checkOut(st.line)
			}
			r.block = append(r.block, st.data...)
		case "P":
			r.wantOut = append(r.wantOut, st.data...)
		case "S":
			if r.all {
				continue
			}
			r.checkOut(st.line)
			if got := r.b.State(); got != string(st.data) {
				t.Fatalf("%s:%d: state %q, want %q", r.tr.name, st.line, got, st.data)
			}
		case "E":
			r.checkOut(st.line)
			if string(st.data) != "tls" {
				t.Fatalf("%s:%d: unknown event %q", r.tr.name, st.line, st.data)
			}
			r.pending = r.pending[:0]
			out, res := r.b.TLSStarted()
			r.gotOut = append(r.gotOut, out...)
			r.checkSecrets(res)
		case "U":
			r.checkOut(st.line)
			if !bytes.Equal(r.pending, st.data) {
				t.Fatalf("%s:%d: unconsumed %q, want %q", r.tr.name, st.line, r.pending, st.data)
			}
		case "R":
			r.checkOut(st.line)
			res := r.b.Result()
			if got := res.Outcome.String(); got != string(st.data) {
				t.Fatalf("%s:%d: outcome %s (%q), want %s", r.tr.name, st.line, got, res.Text, st.data)
			}
			if !bytes.Equal(res.ClientReply, st.reply) {
				t.Fatalf("%s:%d: client reply\n%q\nwant\n%q", r.tr.name, st.line, res.ClientReply, st.reply)
			}
			if st.text != nil && res.Text != *st.text {
				t.Fatalf("%s:%d: text %q, want %q", r.tr.name, st.line, res.Text, *st.text)
			}
		}
	}
	r.feed()
	r.checkOut(0)
}

func TestBackendTranscripts(t *testing.T) {
	for _, tr := range backendLoadTranscripts(t) {
		t.Run(strings.TrimSuffix(tr.name, ".txt"), func(t *testing.T) {
			t.Run("whole", func(t *testing.T) {
				(&backendReplay{t: t, tr: tr}).run()
			})
			t.Run("bytewise", func(t *testing.T) {
				(&backendReplay{t: t, tr: tr, split: func(int) int { return 1 }}).run()
			})
			for seed := uint64(1); seed <= 8; seed++ {
				t.Run(fmt.Sprintf("random%d", seed), func(t *testing.T) {
					rng := rand.New(rand.NewPCG(seed, 0xd00a))
					split := func(left int) int { return 1 + rng.IntN(min(left, 1+rng.IntN(64))) }
					(&backendReplay{t: t, tr: tr, split: split}).run()
				})
			}
			t.Run("all", func(t *testing.T) {
				(&backendReplay{t: t, tr: tr, all: true}).run()
			})
		})
	}
}

func TestBackendFailureReply(t *testing.T) {
	for o, want := range map[login.BackendOutcome]string{
		login.BackendProtocolError: "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n",
		login.BackendInternal:      "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n",
		login.BackendTempFail:      "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n",
		login.BackendRemoteConfig:  "NO \"Account is temporarily unavailable.\"\r\n",
		login.BackendOK:            "",
		login.BackendAuthFailed:    "",
	} {
		if got := string(BackendFailureReply(nil, o)); got != want {
			t.Errorf("%v: %q, want %q", o, got, want)
		}
	}
}

// Reset must forget everything of the previous login, and the password must not stay
// in b's buffers.
func TestBackendReset(t *testing.T) {
	p := &login.BackendParams{User: "u", Pass: "Sekr1t"}
	b := NewBackendLogin(p)
	_, out, _ := b.Feed([]byte("\"SASL\" \"PLAIN\"\r\n\"XCLIENT\"\r\nOK\r\n"))
	if string(out) != "XCLIENT ADDR= PORT=0 SESSION= TTL=0\r\n" {
		t.Fatalf("wrote %q", out)
	}
	_, out, _ = b.Feed([]byte("OK\r\n"))
	if !strings.Contains(string(out), "AUTHENTICATE") {
		t.Fatalf("wrote %q", out)
	}
	if _, _, res := b.Feed([]byte("OK\r\n")); res.Outcome != login.BackendOK {
		t.Fatalf("outcome %v", res.Outcome)
	}
	for _, buf := range [][]byte{b.out[:cap(b.out)], b.scratch[:cap(b.scratch)]} {
		if bytes.Contains(buf, []byte("Sekr1t")) || bytes.Contains(buf, []byte("dQB1AFNla3IxdA")) {
			t.Fatal("password left in a buffer after the login")
		}
	}
	b.Reset(&login.BackendParams{User: "v", Pass: "w"})
	if b.State() != "none" || b.Result().Outcome != login.BackendPending {
		t.Fatalf("after Reset: %s %v", b.State(), b.Result().Outcome)
	}
	_, out, _ = b.Feed([]byte("\"SASL\" \"PLAIN\"\r\nOK\r\n"))
	if string(out) != "AUTHENTICATE \"PLAIN\" \"dgB2AHc=\"\r\n" {
		t.Fatalf("after Reset wrote %q", out)
	}
}

// Feed before any byte (before connecting) says whether the parameters are usable;
// TLSStarted out of turn changes nothing.
func TestBackendBeforeConnect(t *testing.T) {
	b := NewBackendLogin(&login.BackendParams{User: "u", Pass: "p"})
	if n, out, res := b.Feed(nil); n != 0 || out != nil || res.Outcome != login.BackendPending {
		t.Fatalf("Feed(nil): %d %q %v", n, out, res.Outcome)
	}
	if out, res := b.TLSStarted(); out != nil || res.Outcome != login.BackendPending {
		t.Fatalf("TLSStarted: %q %v", out, res.Outcome)
	}
}

// An engine that hands Feed fewer bytes than it left unconsumed gets a fresh look, not
// one that goes on where the lost bytes left off.
func TestBackendShortRefeed(t *testing.T) {
	b := NewBackendLogin(&login.BackendParams{User: "u", Pass: "p"})
	if n, _, _ := b.Feed([]byte("\"SASL\" {10}\r\nPLA")); n != 0 {
		t.Fatalf("consumed %d of a partial response", n)
	}
	n, out, res := b.Feed([]byte("OK\r\n"))
	if n != 4 || out != nil || res.Outcome != login.BackendRemoteConfig {
		t.Fatalf("%d %q %v", n, out, res.Outcome)
	}
}

var (
	backendBenchCaps = []byte("\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\"SIEVE\" \"fileinto reject envelope " +
		"encoded-character vacation subaddress comparator-i;ascii-numeric relational regex imap4flags copy include " +
		"variables body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext\"\r\n" +
		"\"NOTIFY\" \"mailto\"\r\n\"SASL\" \"PLAIN LOGIN\"\r\n\"VERSION\" \"1.0\"\r\n\"XCLIENT\"\r\nOK \"Dovecot ready.\"\r\n")
	backendBenchUpdated = []byte("OK \"Updated\"\r\n")
	backendBenchOK      = []byte("OK \"Logged in.\"\r\n")
)

// BenchmarkBackendLogin is one whole login (capabilities, XCLIENT, AUTHENTICATE,
// replies) on a reused BackendLogin, as a pooled one would be used.
func BenchmarkBackendLogin(b *testing.B) {
	p := &login.BackendParams{
		User: "alice", Pass: "secret",
		Client: login.ClientInfo{SessionID: "ui/c+NhgJa9/AAAz", RemoteIP: "127.0.0.51", RemotePort: 44837, TTL: 4,
			Forward: []login.KV{{Key: "foo", Value: "bar"}}},
	}
	l := NewBackendLogin(p)
	b.ReportAllocs()
	for b.Loop() {
		l.Reset(p)
		if _, out, _ := l.Feed(backendBenchCaps); len(out) == 0 {
			b.Fatal("no XCLIENT")
		}
		if _, out, _ := l.Feed(backendBenchUpdated); len(out) == 0 {
			b.Fatal("no AUTHENTICATE")
		}
		if _, _, res := l.Feed(backendBenchOK); res.Outcome != login.BackendOK {
			b.Fatal(res.Outcome)
		}
	}
}
