package codectest

// Backend login transcripts: testdata/backend/*.txt, one login each. Format:
//
//	# comment; blank lines are ignored
//	=user alice                  params, before the first B: line; =user, =pass,
//	                             =master, =mech, =tag, =helo, =session, =addr take the
//	                             rest of the line (=tag and =helo are two names of
//	                             ClientTag: Submission's is the client's EHLO domain)
//	=id x-session-id abc         one ID pair: key, one space, value; repeatable, in order
//	=client 192.0.2.7 51234 sid 4  Client's RemoteIP, RemotePort, SessionID and TTL
//	=port 40365                  =port, =ttl: Client.RemotePort, Client.TTL
//	=forward foo bar             one forward_ field: key, one space, value; repeatable
//	=flags nopipelining tls ...  not-trusted client-capability nopipelining tls
//	                             starttls noauth
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
// A protocol ignores the params it has no use for (see login.BackendParams).
//
// Escapes in <bytes> and param values: \\ \r \n \t \0 \xHH, and \{N}c for N copies of c.
//
// Each transcript is replayed with each B: block fed whole, byte by byte and in random
// splits (several seeds), always re-feeding what Feed left unconsumed; the proxy output
// and the results must be the same in every run. A last run feeds all backend bytes up
// to each R:/E:/U: at once, as if the backend had pipelined its answers.

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"strconv"
	"strings"
	"testing"

	"doorman/codec/login"
)

// BackendLogin is a protocol's backend login as the runners drive it.
type BackendLogin interface {
	login.Backend
	Result() login.BackendResult
	TLSStarted() (out []byte, res login.BackendResult)
}

// Backend is what the backend runners (BackendTranscripts, FuzzBackendLogin) need to
// know of a protocol.
type Backend struct {
	// New starts a login.
	New func(p *login.BackendParams) BackendLogin

	// FuzzParams makes the params of a fuzz run from its bits.
	FuzzParams func(bits uint8) *login.BackendParams
	// FuzzBits are the bits that make (roughly) a transcript's params, for its seed.
	FuzzBits func(p *login.BackendParams) uint8
	// FuzzMoreBits are added to a transcript's bits for its second seed (fed in chunks
	// of 7 bytes).
	FuzzMoreBits uint8
	// FuzzMaxHeld, if not 0, is how many bytes a login may leave unconsumed while it is
	// pending.
	FuzzMaxHeld int
	// FuzzCheckWrite, if set, checks what one Feed wrote to the backend.
	FuzzCheckWrite func(out []byte) error
	// FuzzCheckReply, if set, checks the ClientReply of a final result (it ends in CRLF).
	FuzzCheckReply func(p *login.BackendParams, res login.BackendResult) error
	// FuzzCheckOut, if set, checks all a run wrote to the backend.
	FuzzCheckOut func(p *login.BackendParams, out []byte) error
}

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
		case 't':
			out = append(out, '\t')
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

// param applies one =key value line.
func (t *backendTranscript) param(key string, v string) error {
	p := &t.params
	num := func(dst *int) error {
		n, err := strconv.Atoi(v)
		*dst = n
		return err
	}
	switch key {
	case "tag", "helo":
		p.ClientTag = v
	case "user":
		p.User = v
	case "pass":
		p.Pass = v
	case "master":
		p.Master = v
	case "mech":
		p.Mech = v
	case "token":
		p.Token = v
	case "id":
		k, val, _ := strings.Cut(v, " ")
		p.ID = append(p.ID, login.BackendIDField{Key: k, Value: val})
	case "session":
		p.Client.SessionID = v
	case "addr":
		p.Client.RemoteIP = v
	case "port":
		return num(&p.Client.RemotePort)
	case "ttl":
		return num(&p.Client.TTL)
	case "client":
		f := strings.Fields(v)
		if len(f) != 4 {
			return fmt.Errorf("=client wants ip port session ttl")
		}
		c := &p.Client
		c.RemoteIP, c.SessionID = f[0], f[2]
		var err1, err2 error
		c.RemotePort, err1 = strconv.Atoi(f[1])
		c.TTL, err2 = strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return fmt.Errorf("bad =client numbers")
		}
	case "forward":
		k, val, _ := strings.Cut(v, " ")
		p.Client.Forward = append(p.Client.Forward, login.KV{Key: k, Value: val})
	case "flags":
		for _, f := range strings.Fields(v) {
			switch f {
			case "not-trusted":
				p.NotTrusted = true
			case "client-capability":
				p.ClientSentCapability = true
			case "nopipelining":
				p.NoPipelining = true
			case "tls":
				p.TLS = true
			case "starttls":
				p.StartTLS = true
			case "noauth":
				p.NoAuth = true
			default:
				return fmt.Errorf("unknown flag %q", f)
			}
		}
	default:
		return fmt.Errorf("unknown param %q", key)
	}
	return nil
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
			if err := t.param(key, string(v)); err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
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

func backendLoadTranscripts(tb testing.TB, fsys fs.FS) []*backendTranscript {
	tb.Helper()
	files, err := fs.Glob(fsys, "testdata/backend/*.txt")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no transcripts: %v", err)
	}
	var ts []*backendTranscript
	for _, f := range files {
		src, err := fs.ReadFile(fsys, f)
		if err != nil {
			tb.Fatal(err)
		}
		t, err := backendParseTranscript(path.Base(f), string(src))
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
	b       BackendLogin
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
	if p.Token != "" && strings.Contains(res.Text, p.Token) {
		r.t.Fatalf("%s: Text holds the token: %q", r.tr.name, res.Text)
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

func (r *backendReplay) run(newLogin func(*login.BackendParams) BackendLogin) {
	t := r.t
	r.b = newLogin(&r.tr.params)
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

// BackendTranscripts replays every testdata/backend/*.txt of fsys (a package's
// directory) as a subtest named after the file, with subtests whole, bytewise,
// random1..random8 and all.
func BackendTranscripts(t *testing.T, fsys fs.FS, be *Backend) {
	for _, tr := range backendLoadTranscripts(t, fsys) {
		t.Run(strings.TrimSuffix(tr.name, ".txt"), func(t *testing.T) {
			t.Run("whole", func(t *testing.T) {
				(&backendReplay{t: t, tr: tr}).run(be.New)
			})
			t.Run("bytewise", func(t *testing.T) {
				(&backendReplay{t: t, tr: tr, split: func(int) int { return 1 }}).run(be.New)
			})
			for seed := uint64(1); seed <= 8; seed++ {
				t.Run(fmt.Sprintf("random%d", seed), func(t *testing.T) {
					rng := rand.New(rand.NewPCG(seed, 0xd00a))
					split := func(left int) int { return 1 + rng.IntN(min(left, 1+rng.IntN(64))) }
					(&backendReplay{t: t, tr: tr, split: split}).run(be.New)
				})
			}
			t.Run("all", func(t *testing.T) {
				(&backendReplay{t: t, tr: tr, all: true}).run(be.New)
			})
		})
	}
}
