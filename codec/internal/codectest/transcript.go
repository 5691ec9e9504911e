package codectest

// Client-side transcripts: testdata/*.txt are conversations with the client side of the
// login phase. Each is replayed three ways, the client's bytes fed whole, byte by byte
// and in random pieces (several seeds), and every way must give the same output and
// actions.
//
// Format, one directive per line ("#" starts a comment line, blank lines are skipped):
//
//	O: key=value   session option, before anything else. Every protocol takes secured,
//	               plaintext, tls (STARTTLS/STLS available), implicit-tls and trusted (bool),
//	               nonce and host (SessionInfo.SASLNonce, SASLHost: text);
//	               the rest is the protocol's (Frontend.Option). Defaults: not
//	               secured, plaintext allowed, no TLS, no nonce, Frontend.Config.
//	C: bytes       the client sends bytes. Consecutive C: lines form one chunk, fed
//	               when the next non-C: line (or the end) comes.
//	S: bytes       the server sends bytes. The greeting is the first S: of every file.
//	A: action      the codec returns an action other than a write, in canonical form:
//	                 auth <tagkey>=a mech=LOGIN [authzid=z] user=alice pass=secret [token=t] [capability] [verified]
//	                 secret <tagkey>=a mech=CRAM-MD5 [authzid=z] user=alice [capability]
//	                 close reason=logout
//	                 id [key=value ...]
//	                 starttls
//	               values are Go-quoted when empty or holding a space, '"' or '='.
//	               <tagkey> is Frontend.TagKey, the protocol's name for
//	               Credentials.Tag ("tag", "helo"); a protocol without one has none.
//	E: event       the engine answers: "auth <status>" (ok, failed, tempfail,
//	               unavailable, serverbug, disabled, authzfailed), optionally followed
//	               by " text=<rest of line>" (escapes, no CRLF) or " reply=<bytes>";
//	               "secret <stored password>" (Resume with AuthOK and Secret, the
//	               answer to an ActSecret; a failure answers it as "auth <status>");
//	               "timeout"; "tls" (TLSStarted, whose writes, if any, follow as S:
//	               lines). After an event the runner calls Feed with the bytes held, as
//	               the engine does.
//	U: bytes       the bytes the codec has not consumed right now ("U:" alone: none).
//	               After a close, all the client sent since is unconsumed.
//	T: state       State() right now (command, literal, auth-continue, auth-wait,
//	               secret-wait, tls-wait, done, closed: those the protocol has).
//
// In C:, S:, U: and reply= bytes, CRLF is implied at the end of each line unless it ends
// with <noeol>. Other escapes: <CR> <LF> <NUL> <SP> <TAB> <lt> (a "<"), <xHH> (a byte in
// hex), <rep N text> (text N times; text may not hold ">"). A: lines, text= and the
// values Text parses take the same escapes, without the implied CRLF.
//
// S:, A: and E: lines are checked in order against what the codec did (adjacent S:
// bytes are compared as one stream, so how writes are cut up doesn't matter); U: and T:
// are checked where they stand.

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

// Session is a protocol's client-side session as the runners drive it: login.Frontend
// and the two calls each codec has with its own types, adapted.
type Session interface {
	login.Frontend
	// StateName is State().String().
	StateName() string
	// TLSStarted is the session's TLSStarted; what it returns (nil if the protocol's
	// TLSStarted returns nothing) is handled as Resume's actions are.
	TLSStarted() []login.Action
}

// Frontend is what the client-side runners (Transcripts, FuzzSession) need to know of a
// protocol whose configuration type is C.
type Frontend[C any] struct {
	// MinFiles: fewer testdata/*.txt files than this fails TestTranscripts.
	MinFiles int
	// Config returns the configuration a transcript starts from; nil: C's zero value.
	Config func() *C
	// Options are the setters of the protocol's O: keys (those beyond the SessionInfo
	// flags) for the configuration c: Text, Int, Int64 or the protocol's own.
	Options func(c *C) map[string]func(value string) error
	// New makes the session of one replay.
	New func(c *C, info login.SessionInfo) Session
	// TagKey names Credentials.Tag in A: auth lines; "": the protocol has no tag, and
	// an ActAuth with one fails the test.
	TagKey string
	// CapabilitySeen: the protocol sets Credentials.CapabilitySeen (shown as
	// "capability" in A: auth lines). If false, an ActAuth with it set fails the test.
	CapabilitySeen bool
	// ID: the protocol has an ID command (ActID). If false, an ActID fails the test.
	ID bool

	// FuzzNew makes the session of one fuzz run from the input's first byte: bits 1, 2
	// and 4 are already in info (Secured, PlaintextAllowed, TLSAvailable); the other
	// bits are the protocol's. maxHeld is how many unconsumed bytes the session may hold
	// in the command, literal and auth-continue states.
	FuzzNew func(flags byte, info login.SessionInfo) (s Session, maxHeld int)
	// FuzzFlags returns the protocol's bits of a transcript's seed (those FuzzNew reads
	// beyond 1, 2 and 4); nil: none.
	FuzzFlags func(c *C, info login.SessionInfo) byte
	// FuzzMaxInput keeps inputs well under the per-call output cap, which (on purpose)
	// makes a whole feed differ from a split one.
	FuzzMaxInput int
	// FuzzResults is what the fake engine answers, in turn, to each ActAuth.
	FuzzResults []login.AuthResult
	// FuzzReasons are the close reasons a session may give ("timeout" always may).
	FuzzReasons []string
	// ErrClosed is what Feed must return once the session has closed.
	ErrClosed error
}

// Text is the setter of a text option: the value takes the escapes of C: lines, without
// the implied CRLF.
func Text(p *string) func(string) error {
	return func(v string) error {
		b, err := unescape(v + "<noeol>")
		*p = string(b)
		return err
	}
}

// Words is the setter of a list option: the value's space-separated words.
func Words(p *[]string) func(string) error {
	return func(v string) error {
		*p = strings.Fields(v)
		return nil
	}
}

// Int is the setter of a numeric option.
func Int(p *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		*p = n
		return err
	}
}

// Int64 is the setter of a 64-bit numeric option.
func Int64(p *int64) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		*p = n
		return err
	}
}

// Adapt makes a Session of a codec's session, whose State's type is S (for example
// codectest.Adapt[imap.State](s)) and whose TLSStarted returns nothing or the actions.
func Adapt[S fmt.Stringer, T interface {
	login.Frontend
	State() S
}](s T) Session {
	a := adapted[S, T]{s: s}
	switch f := any(s).(type) {
	case interface{ TLSStarted() []login.Action }:
		a.tls = f.TLSStarted
	case interface{ TLSStarted() }:
		a.tls = func() []login.Action { f.TLSStarted(); return nil }
	default:
		panic(fmt.Sprintf("codectest.Adapt: %T has no TLSStarted", s))
	}
	return a
}

type adapted[S fmt.Stringer, T interface {
	login.Frontend
	State() S
}] struct {
	s   T
	tls func() []login.Action
}

func (a adapted[S, T]) Greeting() []byte                            { return a.s.Greeting() }
func (a adapted[S, T]) Feed(in []byte) (int, []login.Action, error) { return a.s.Feed(in) }
func (a adapted[S, T]) Resume(r login.AuthResult) []login.Action    { return a.s.Resume(r) }
func (a adapted[S, T]) Timeout() []login.Action                     { return a.s.Timeout() }
func (a adapted[S, T]) StateName() string                           { return a.s.State().String() }
func (a adapted[S, T]) TLSStarted() []login.Action                  { return a.tls() }

type tLine struct {
	no   int
	kind byte
	text string
}

type transcript[C any] struct {
	name  string
	cfg   *C
	info  login.SessionInfo
	lines []tLine
}

// Transcripts replays every testdata/*.txt of fsys (a package's directory) as a subtest
// named after the file.
func Transcripts[C any](t *testing.T, fsys fs.FS, fe *Frontend[C]) {
	files, err := fs.Glob(fsys, "testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < fe.MinFiles {
		t.Fatalf("only %d transcripts", len(files))
	}
	for _, f := range files {
		tr, err := loadTranscript(fsys, f, fe)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(strings.TrimSuffix(path.Base(f), ".txt"), func(t *testing.T) {
			want := tr.expected(t)
			for _, sp := range Splits(6, 7) {
				got := tr.run(t, fe, sp)
				if g, w := renderLog(got), renderLog(want); g != w {
					t.Errorf("%s fed %s:\n%s", tr.name, sp.Name, diffLogs(g, w))
					return
				}
			}
		})
	}
}

// Splitter cuts a chunk of input into the pieces given to Feed one at a time: whole, a
// byte at a time, or at random points. Every transcript harness replays its files with
// the same Splitters, so the three ways are defined once.
type Splitter struct {
	Name     string
	bytewise bool
	rng      *rand.Rand
}

// Splits is the usual set: whole, byte by byte, and seeds random splitters seeded from
// 1 to seeds on stream.
func Splits(seeds int, stream uint64) []Splitter {
	splits := []Splitter{{Name: "whole"}, {Name: "bytes", bytewise: true}}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		splits = append(splits, Splitter{Name: fmt.Sprintf("random%d", seed), rng: rand.New(rand.NewPCG(seed, stream))})
	}
	return splits
}

// Split cuts b.
func (sp Splitter) Split(b []byte) [][]byte {
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
func (tr *transcript[C]) expected(t *testing.T) []logEntry {
	var log []logEntry
	for _, l := range tr.lines {
		switch l.kind {
		case 'S':
			b, err := unescape(l.text)
			if err != nil {
				t.Fatalf("%s:%d: %v", tr.name, l.no, err)
			}
			log = appendLog(log, 'S', string(b))
		case 'A':
			b, err := unescape(l.text + "<noeol>")
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
	name    string
	rules   actionRules
	s       Session
	pending []byte
	log     []logEntry
	closed  bool
}

func (tr *transcript[C]) run(t *testing.T, fe *Frontend[C], sp Splitter) []logEntry {
	r := &runner{t: t, name: tr.name, rules: fe.rules(), s: fe.New(tr.cfg, tr.info)}
	r.log = appendLog(r.log, 'S', string(r.s.Greeting()))
	var chunk []byte
	flush := func() {
		for _, p := range sp.Split(chunk) {
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
			b, err := unescape(l.text)
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
				if want, err = unescape(l.text); err != nil {
					t.Fatalf("%s:%d: %v", tr.name, l.no, err)
				}
			}
			if !bytes.Equal(r.pending, want) {
				t.Errorf("%s:%d (%s): unconsumed %q, want %q", tr.name, l.no, sp.Name, r.pending, want)
			}
		case 'T':
			if got := r.s.StateName(); got != l.text {
				t.Errorf("%s:%d (%s): state %s, want %s", tr.name, l.no, sp.Name, got, l.text)
			}
		}
	}
	flush()
	return r.log
}

// waiting reports whether a session in state st must consume nothing and say nothing
// when fed.
func waiting(st string) bool {
	return st == "auth-wait" || st == "secret-wait" || st == "tls-wait" || st == "done"
}

// feed gives the codec one more piece, checking what Feed promises.
func (r *runner) feed(p []byte) {
	r.pending = append(r.pending, p...)
	if r.closed {
		return // what comes after the close is never consumed
	}
	before := r.s.StateName()
	n, acts, err := r.s.Feed(r.pending)
	if err != nil {
		r.t.Fatalf("%s: Feed: %v", r.name, err)
	}
	if n < 0 || n > len(r.pending) {
		r.t.Fatalf("%s: consumed %d of %d", r.name, n, len(r.pending))
	}
	if waiting(before) && (n != 0 || len(acts) != 0) {
		r.t.Fatalf("%s: in state %s Feed consumed %d and returned %d actions", r.name, before, n, len(acts))
	}
	r.pending = r.pending[n:]
	r.record(acts)
}

func (r *runner) record(acts []login.Action) {
	for i, a := range acts {
		if (a.Kind == login.ActAuth || a.Kind == login.ActSecret || a.Kind == login.ActClose || a.Kind == login.ActStartTLS) && i != len(acts)-1 {
			r.t.Fatalf("%s: %s action is not the last one", r.name, a.Kind)
		}
		if len(a.Data) > 0 {
			r.log = appendLog(r.log, 'S', string(a.Data))
		}
		if err := r.rules.check(a); err != nil {
			r.t.Fatalf("%s: %v", r.name, err)
		}
		if a.Kind != login.ActWrite {
			r.log = appendLog(r.log, 'A', r.rules.canon(a))
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
	case "secret":
		b, err := unescape(rest + "<noeol>")
		if err != nil {
			r.t.Fatalf("%s:%d: %v", r.name, l.no, err)
		}
		r.record(r.s.Resume(login.AuthResult{Status: login.AuthOK, Secret: string(b)}))
	case "auth":
		status, extra, _ := strings.Cut(rest, " ")
		var res login.AuthResult
		for st := login.AuthOK; st <= login.AuthAuthzFailed; st++ {
			if st.String() == status {
				res.Status = st
			}
		}
		if res.Status == 0 {
			r.t.Fatalf("%s:%d: unknown status %q", r.name, l.no, status)
		}
		switch {
		case strings.HasPrefix(extra, "text="):
			if err := Text(&res.Text)(extra[len("text="):]); err != nil {
				r.t.Fatalf("%s:%d: %v", r.name, l.no, err)
			}
		case strings.HasPrefix(extra, "reply="):
			b, err := unescape(extra[len("reply="):])
			if err != nil {
				r.t.Fatalf("%s:%d: %v", r.name, l.no, err)
			}
			res.Reply = b
		case extra != "":
			r.t.Fatalf("%s:%d: bad event %q", r.name, l.no, l.text)
		}
		r.record(r.s.Resume(res))
	default:
		r.t.Fatalf("%s:%d: unknown event %q", r.name, l.no, l.text)
	}
	if st := r.s.StateName(); (st == "command" || st == "auth-continue") && !r.closed {
		n, acts, err := r.s.Feed(r.pending)
		if err != nil {
			r.t.Fatalf("%s: Feed: %v", r.name, err)
		}
		r.pending = r.pending[n:]
		r.record(acts)
	}
}

// actionRules is what a protocol's actions may hold, and how A: lines name the tag.
type actionRules struct {
	tagKey      string
	capSeen, id bool
}

func (fe *Frontend[C]) rules() actionRules {
	return actionRules{tagKey: fe.TagKey, capSeen: fe.CapabilitySeen, id: fe.ID}
}

// check fails an action the protocol can't have.
func (ru actionRules) check(a login.Action) error {
	switch {
	case a.Kind == login.ActID && !ru.id:
		return fmt.Errorf("an ActID, and the protocol has no ID")
	case a.Kind != login.ActAuth && a.Kind != login.ActSecret:
	case a.Kind == login.ActSecret && (a.Creds.Pass != "" || a.Creds.Token != "" || a.Creds.Verified):
		return fmt.Errorf("an ActSecret with a password, token or Verified")
	case a.Creds.Verified && a.Creds.Pass != "":
		return fmt.Errorf("verified credentials with a password")
	case ru.tagKey == "" && a.Creds.Tag != "":
		return fmt.Errorf("credentials with a tag %q, and the protocol has none", a.Creds.Tag)
	case !ru.capSeen && a.Creds.CapabilitySeen:
		return fmt.Errorf("credentials with CapabilitySeen, which the protocol doesn't set")
	}
	return nil
}

// canon writes a non-write action the way A: lines do.
func (ru actionRules) canon(a login.Action) string {
	tagKey := ru.tagKey
	var b strings.Builder
	b.WriteString(a.Kind.String())
	kv := func(k, v string) {
		b.WriteString(" " + k + "=" + canonValue(v))
	}
	switch a.Kind {
	case login.ActAuth, login.ActSecret:
		c := a.Creds
		if tagKey != "" {
			kv(tagKey, c.Tag)
		}
		kv("mech", c.Mech)
		if c.Authzid != "" {
			kv("authzid", c.Authzid)
		}
		kv("user", c.User)
		if a.Kind == login.ActAuth {
			kv("pass", c.Pass)
		}
		if c.Token != "" {
			kv("token", c.Token)
		}
		if c.CapabilitySeen {
			b.WriteString(" capability")
		}
		if c.Verified {
			b.WriteString(" verified")
		}
	case login.ActClose:
		kv("reason", a.Reason)
	case login.ActID:
		for _, p := range a.IDParams {
			kv(canonValue(p.Key), p.Value)
		}
	}
	return b.String()
}

func canonValue(v string) string {
	if v == "" || strings.ContainsAny(v, " \"=") || strconv.Quote(v) != `"`+v+`"` {
		return strconv.Quote(v)
	}
	return v
}

func loadTranscript[C any](fsys fs.FS, name string, fe *Frontend[C]) (*transcript[C], error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	tr := &transcript[C]{name: path.Base(name), info: login.SessionInfo{PlaintextAllowed: true}}
	if fe.Config != nil {
		tr.cfg = fe.Config()
	} else {
		tr.cfg = new(C)
	}
	for i, raw := range strings.Split(string(data), "\n") {
		no := i + 1
		line := strings.TrimRight(raw, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		if len(line) < 2 || line[1] != ':' || !strings.ContainsRune("OCSAEUT", rune(line[0])) {
			return nil, fmt.Errorf("%s:%d: bad line %q", name, no, line)
		}
		kind, text := line[0], strings.TrimPrefix(line[2:], " ")
		if kind == 'O' {
			if len(tr.lines) > 0 {
				return nil, fmt.Errorf("%s:%d: O: after other lines", name, no)
			}
			if err := tr.option(fe, text); err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, no, err)
			}
			continue
		}
		tr.lines = append(tr.lines, tLine{no: no, kind: kind, text: text})
	}
	return tr, nil
}

func (tr *transcript[C]) option(fe *Frontend[C], kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("option %q without =", kv)
	}
	flag := func(p *bool) error {
		b, err := strconv.ParseBool(v)
		*p = b
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
	case "trusted":
		return flag(&tr.info.Trusted)
	case "nonce":
		tr.info.SASLNonce = v
		return nil
	case "host":
		tr.info.SASLHost = v
		return nil
	}
	set := fe.Options(tr.cfg)[k]
	if set == nil {
		return fmt.Errorf("unknown option %q", k)
	}
	return set(v)
}

// unescape turns a C:/S:/U: text into bytes (see the format above).
func unescape(s string) ([]byte, error) {
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
