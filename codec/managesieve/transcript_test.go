package managesieve

// Transcript tests: testdata/*.txt are conversations with the client side of the login
// phase. Each is replayed three ways, the client's bytes fed whole, byte by byte and in
// random pieces (several seeds), and every way must give the same output and actions.
// The format is codec/imap's, with ManageSieve's options and actions:
//
//	O: key=value   session option, before anything else: secured, plaintext, tls
//	               (STARTTLS available), implicit-tls (bool); greeting, implementation,
//	               sieve, notify (text, with the escapes below); maxline, maxbad (int).
//	               Defaults: not secured, plaintext allowed, no TLS, the package
//	               defaults.
//	C: bytes       the client sends bytes. Consecutive C: lines form one chunk, fed
//	               when the next non-C: line (or the end) comes.
//	S: bytes       the server sends bytes. The greeting is the first S: of every file.
//	A: action      the codec returns an action other than a write, in canonical form:
//	                 auth mech=LOGIN [authzid=z] user=alice pass=secret
//	                 close reason=logout
//	                 starttls
//	               values are Go-quoted when empty or holding a space, '"' or '='.
//	E: event       the engine answers: "auth <status>" (ok, failed, tempfail,
//	               unavailable, serverbug, disabled, authzfailed), optionally followed
//	               by " text=<rest of line>" or " reply=<bytes>"; "timeout"; "tls"
//	               (TLSStarted, whose writes follow as S: lines). After an event the
//	               runner calls Feed with the bytes held, as the engine does.
//	U: bytes       the bytes the codec has not consumed right now ("U:" alone: none).
//	T: state       State() right now (command, literal, auth-continue, auth-wait,
//	               tls-wait, done, closed).
//
// In C:, S:, U: and reply= bytes, CRLF is implied at the end of each line unless it ends
// with <noeol>. Other escapes: <CR> <LF> <NUL> <SP> <TAB> <lt> (a "<"), <xHH> (a byte in
// hex), <rep N text> (text N times; text may not hold ">"). A: lines take the same
// escapes, without the implied CRLF.
//
// S:, A: and E: lines are checked in order against what the codec did (adjacent S:
// bytes are compared as one stream, so how writes are cut up doesn't matter); U: and T:
// are checked where they stand.

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

type tLine struct {
	no   int
	kind byte
	text string
}

type transcript struct {
	name  string
	cfg   Config
	info  login.SessionInfo
	lines []tLine
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("only %d transcripts", len(files))
	}
	for _, f := range files {
		tr, err := loadTranscript(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			want := tr.expected(t)
			splits := []splitter{{name: "whole"}, {name: "bytes", bytewise: true}}
			for seed := uint64(1); seed <= 6; seed++ {
				splits = append(splits, splitter{name: fmt.Sprintf("random%d", seed), rng: rand.New(rand.NewPCG(seed, 7))})
			}
			for _, sp := range splits {
				got := tr.run(t, sp)
				if g, w := renderLog(got), renderLog(want); g != w {
					t.Errorf("%s fed %s:\n%s", tr.name, sp.name, diffLogs(g, w))
					return
				}
			}
		})
	}
}

// splitter cuts a chunk of client bytes into the pieces given to Feed one at a time.
type splitter struct {
	name     string
	bytewise bool
	rng      *rand.Rand
}

func (sp splitter) split(b []byte) [][]byte {
	var out [][]byte
	switch {
	case sp.bytewise:
		for i := range b {
			out = append(out, b[i:i+1])
		}
	case sp.rng != nil:
		for len(b) > 0 {
			n := 1 + sp.rng.IntN(min(len(b), 1+sp.rng.IntN(40)))
			out = append(out, b[:n])
			b = b[n:]
		}
	default:
		out = append(out, b)
	}
	return out
}

// logEntry is one thing that happened: 'S' server bytes, 'A' an action, 'E' an event.
type logEntry struct {
	kind byte
	text string
}

func appendLog(log []logEntry, kind byte, text string) []logEntry {
	if kind == 'S' && len(log) > 0 && log[len(log)-1].kind == 'S' {
		log[len(log)-1].text += text
		return log
	}
	return append(log, logEntry{kind, text})
}

func renderLog(log []logEntry) string {
	var b strings.Builder
	for _, e := range log {
		if e.kind == 'S' {
			for _, l := range strings.SplitAfter(e.text, "\n") {
				if l != "" {
					fmt.Fprintf(&b, "S: %q\n", l)
				}
			}
			continue
		}
		fmt.Fprintf(&b, "%c: %s\n", e.kind, e.text)
	}
	return b.String()
}

// diffLogs shows where two rendered logs part.
func diffLogs(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	i := 0
	for i < len(g) && i < len(w) && g[i] == w[i] {
		i++
	}
	clip := func(lines []string) string {
		var b strings.Builder
		for _, l := range lines[max(0, i-2):min(len(lines), i+4)] {
			if len(l) > 160 {
				l = l[:160] + "..."
			}
			b.WriteString("    " + l + "\n")
		}
		return b.String()
	}
	return fmt.Sprintf("line %d differs\n--- got\n%s--- want\n%s", i+1, clip(g), clip(w))
}

// expected is the log the file asks for.
func (tr *transcript) expected(t *testing.T) []logEntry {
	var log []logEntry
	for _, l := range tr.lines {
		switch l.kind {
		case 'S':
			b, err := unescapeLine(l.text)
			if err != nil {
				t.Fatalf("%s:%d: %v", tr.name, l.no, err)
			}
			log = appendLog(log, 'S', string(b))
		case 'A':
			b, err := unescapeLine(l.text + "<noeol>")
			if err != nil {
				t.Fatalf("%s:%d: %v", tr.name, l.no, err)
			}
			log = appendLog(log, 'A', string(b))
		case 'E':
			log = appendLog(log, 'E', l.text)
		}
	}
	return log
}

// runner is one replay of a transcript.
type runner struct {
	t       *testing.T
	tr      *transcript
	s       *Session
	pending []byte
	log     []logEntry
	closed  bool
}

func (tr *transcript) run(t *testing.T, sp splitter) []logEntry {
	r := &runner{t: t, tr: tr, s: NewSession(&tr.cfg, tr.info)}
	r.log = appendLog(r.log, 'S', string(r.s.Greeting()))
	var chunk []byte
	flush := func() {
		for _, p := range sp.split(chunk) {
			r.feed(p)
		}
		chunk = nil
	}
	for _, l := range tr.lines {
		if l.kind != 'C' {
			flush()
		}
		switch l.kind {
		case 'C':
			b, err := unescapeLine(l.text)
			if err != nil {
				t.Fatalf("%s:%d: %v", tr.name, l.no, err)
			}
			chunk = append(chunk, b...)
		case 'E':
			r.event(l)
		case 'U':
			want := []byte{}
			if l.text != "" {
				var err error
				if want, err = unescapeLine(l.text); err != nil {
					t.Fatalf("%s:%d: %v", tr.name, l.no, err)
				}
			}
			if !bytes.Equal(r.pending, want) {
				t.Errorf("%s:%d (%s): unconsumed %q, want %q", tr.name, l.no, sp.name, r.pending, want)
			}
		case 'T':
			if got := r.s.State().String(); got != l.text {
				t.Errorf("%s:%d (%s): state %s, want %s", tr.name, l.no, sp.name, got, l.text)
			}
		}
	}
	flush()
	return r.log
}

// feed gives the codec one more piece, checking what Feed promises.
func (r *runner) feed(p []byte) {
	if r.closed {
		return
	}
	r.pending = append(r.pending, p...)
	before := r.s.State()
	n, acts, err := r.s.Feed(r.pending)
	if err != nil {
		r.t.Fatalf("%s: Feed: %v", r.tr.name, err)
	}
	if n < 0 || n > len(r.pending) {
		r.t.Fatalf("%s: consumed %d of %d", r.tr.name, n, len(r.pending))
	}
	if (before == StateAuthWait || before == StateTLSWait || before == StateDone) && (n != 0 || len(acts) != 0) {
		r.t.Fatalf("%s: in state %s Feed consumed %d and returned %d actions", r.tr.name, before, n, len(acts))
	}
	r.pending = r.pending[n:]
	r.record(acts)
}

func (r *runner) record(acts []login.Action) {
	for i, a := range acts {
		if (a.Kind == login.ActAuth || a.Kind == login.ActClose || a.Kind == login.ActStartTLS) && i != len(acts)-1 {
			r.t.Fatalf("%s: %s action is not the last one", r.tr.name, a.Kind)
		}
		if len(a.Data) > 0 {
			r.log = appendLog(r.log, 'S', string(a.Data))
		}
		if a.Kind == login.ActID {
			r.t.Fatalf("%s: ManageSieve has no ID", r.tr.name)
		}
		if a.Kind != login.ActWrite {
			r.log = appendLog(r.log, 'A', canonAction(a))
		}
		if a.Kind == login.ActClose {
			r.closed = true
		}
	}
}

func (r *runner) event(l tLine) {
	r.log = appendLog(r.log, 'E', l.text)
	word, rest, _ := strings.Cut(l.text, " ")
	switch word {
	case "timeout":
		r.record(r.s.Timeout())
	case "tls":
		r.pending = r.pending[:0] // the engine drops what came before the handshake
		r.record(r.s.TLSStarted())
	case "auth":
		status, extra, _ := strings.Cut(rest, " ")
		var res login.AuthResult
		for st := login.AuthOK; st <= login.AuthAuthzFailed; st++ {
			if st.String() == status {
				res.Status = st
			}
		}
		if res.Status == 0 {
			r.t.Fatalf("%s:%d: unknown status %q", r.tr.name, l.no, status)
		}
		switch {
		case strings.HasPrefix(extra, "text="):
			res.Text = extra[len("text="):]
		case strings.HasPrefix(extra, "reply="):
			b, err := unescapeLine(extra[len("reply="):])
			if err != nil {
				r.t.Fatalf("%s:%d: %v", r.tr.name, l.no, err)
			}
			res.Reply = b
		case extra != "":
			r.t.Fatalf("%s:%d: bad event %q", r.tr.name, l.no, l.text)
		}
		r.record(r.s.Resume(res))
	default:
		r.t.Fatalf("%s:%d: unknown event %q", r.tr.name, l.no, l.text)
	}
	if r.s.State() == StateCommand && !r.closed {
		n, acts, err := r.s.Feed(r.pending)
		if err != nil {
			r.t.Fatalf("%s: Feed: %v", r.tr.name, err)
		}
		r.pending = r.pending[n:]
		r.record(acts)
	}
}

// canonAction writes a non-write action the way A: lines do.
func canonAction(a login.Action) string {
	var b strings.Builder
	b.WriteString(a.Kind.String())
	kv := func(k, v string) {
		b.WriteString(" " + k + "=" + canonValue(v))
	}
	switch a.Kind {
	case login.ActAuth:
		c := a.Creds
		if c.Tag != "" || c.CapabilitySeen {
			panic("ManageSieve credentials with a tag or CapabilitySeen")
		}
		kv("mech", c.Mech)
		if c.Authzid != "" {
			kv("authzid", c.Authzid)
		}
		kv("user", c.User)
		kv("pass", c.Pass)
	case login.ActClose:
		kv("reason", a.Reason)
	}
	return b.String()
}

func canonValue(v string) string {
	if v == "" || strings.ContainsAny(v, " \"=") || strconv.Quote(v) != `"`+v+`"` {
		return strconv.Quote(v)
	}
	return v
}

func loadTranscript(path string) (*transcript, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tr := &transcript{name: filepath.Base(path), info: login.SessionInfo{PlaintextAllowed: true}}
	for i, raw := range strings.Split(string(data), "\n") {
		no := i + 1
		line := strings.TrimRight(raw, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		if len(line) < 2 || line[1] != ':' || !strings.ContainsRune("OCSAEUT", rune(line[0])) {
			return nil, fmt.Errorf("%s:%d: bad line %q", path, no, line)
		}
		kind, text := line[0], strings.TrimPrefix(line[2:], " ")
		if kind == 'O' {
			if len(tr.lines) > 0 {
				return nil, fmt.Errorf("%s:%d: O: after other lines", path, no)
			}
			if err := tr.option(text); err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, no, err)
			}
			continue
		}
		tr.lines = append(tr.lines, tLine{no: no, kind: kind, text: text})
	}
	return tr, nil
}

func (tr *transcript) option(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("option %q without =", kv)
	}
	flag := func(p *bool) error {
		b, err := strconv.ParseBool(v)
		*p = b
		return err
	}
	num := func(p *int) error {
		n, err := strconv.Atoi(v)
		*p = n
		return err
	}
	text := func(p *string) error {
		b, err := unescapeLine(v + "<noeol>")
		*p = string(b)
		return err
	}
	switch k {
	case "secured":
		return flag(&tr.info.Secured)
	case "plaintext":
		return flag(&tr.info.PlaintextAllowed)
	case "tls":
		return flag(&tr.info.TLSAvailable)
	case "implicit-tls":
		return flag(&tr.info.TLS)
	case "greeting":
		return text(&tr.cfg.Greeting)
	case "implementation":
		return text(&tr.cfg.Implementation)
	case "sieve":
		return text(&tr.cfg.Sieve)
	case "notify":
		return text(&tr.cfg.Notify)
	case "maxline":
		return num(&tr.cfg.MaxLine)
	case "maxbad":
		return num(&tr.cfg.MaxBadCommands)
	default:
		return fmt.Errorf("unknown option %q", k)
	}
}

// unescapeLine turns a C:/S:/U: text into bytes (see the format above).
func unescapeLine(s string) ([]byte, error) {
	eol := true
	if strings.HasSuffix(s, "<noeol>") {
		s, eol = strings.TrimSuffix(s, "<noeol>"), false
	}
	var b []byte
	for len(s) > 0 {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b = append(b, s...)
			break
		}
		b = append(b, s[:i]...)
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			return nil, fmt.Errorf("unclosed < in %q", s)
		}
		tok := s[i+1 : i+j]
		s = s[i+j+1:]
		switch {
		case tok == "CR":
			b = append(b, '\r')
		case tok == "LF":
			b = append(b, '\n')
		case tok == "NUL":
			b = append(b, 0)
		case tok == "SP":
			b = append(b, ' ')
		case tok == "TAB":
			b = append(b, '\t')
		case tok == "lt":
			b = append(b, '<')
		case len(tok) == 3 && tok[0] == 'x':
			n, err := strconv.ParseUint(tok[1:], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad escape <%s>", tok)
			}
			b = append(b, byte(n))
		case strings.HasPrefix(tok, "rep "):
			ns, text, _ := strings.Cut(tok[4:], " ")
			n, err := strconv.Atoi(ns)
			if err != nil {
				return nil, fmt.Errorf("bad escape <%s>", tok)
			}
			b = append(b, strings.Repeat(text, n)...)
		default:
			return nil, fmt.Errorf("unknown escape <%s>", tok)
		}
	}
	if eol {
		b = append(b, '\r', '\n')
	}
	return b, nil
}
