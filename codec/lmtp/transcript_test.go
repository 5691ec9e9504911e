package lmtp

// Transcript tests: testdata/*.txt are conversations with the server side. Each is
// replayed with the client's bytes fed whole, byte by byte and in random pieces (several
// seeds); every way must give the same output and actions.
//
// Format, one directive per line ("#" starts a comment line, blank lines are skipped):
//
//	O: key=value   option, before anything else: hostname, greeting (text); maxline,
//	               maxbad, maxrcpt (int); trusted (1: SetTrusted(true)). Default
//	               hostname "mx.test".
//	C: bytes       the client sends bytes. Consecutive C: lines form one chunk, fed
//	               when the next non-C: line (or the end) comes.
//	S: bytes       the server sends bytes. The greeting is the first S: of every file.
//	B: bytes       message bytes the session hands over (ActBody), dot-stuffing removed;
//	               adjacent B: lines and actions are compared as one stream.
//	A: action      another action: "rcpt <index> <address> [orcpt=<type>;<addr>]",
//	               "data", "data-end", "reset", "close <reason>", "xclient addr=<a>
//	               port=<n> proto=<p> helo=<h> login=<l> session=<s> ttl=<n> timeout=<n>".
//	E: event       the engine answers: "rcpt <reply>" (ResumeRcpt), "finish <reply> |
//	               <reply> ..." (FinishData), "timeout", "shutdown"; a reply is written
//	               "<code> [<enhanced>] <text>". After an event the runner calls Feed
//	               with the bytes held, as the engine does.
//	T: state       State() right now.
//
// In C:, S: and B: bytes, CRLF is implied at the end of each line unless it ends with
// <noeol>. Other escapes: <CR> <LF> <TAB> <lt> (a "<"), <xHH> (a byte in hex),
// <rep N text> (text N times; text may not hold ">"). Any other "<" is itself, so paths
// read as written: "MAIL FROM:<a@b.example>".

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"doorman/codec/internal/codectest"
)

type tLine struct {
	no   int
	kind byte
	text string
}

type transcript struct {
	name    string
	cfg     Config
	trusted bool
	lines   []tLine
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("only %d transcripts", len(files))
	}
	for _, f := range files {
		tr, err := loadTranscript(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			want := tr.expected(t)
			for _, sp := range codectest.Splits(8, 11) {
				got := tr.run(t, sp)
				if g, w := renderLog(got), renderLog(want); g != w {
					t.Errorf("%s fed %s:\n%s", tr.name, sp.Name, diffLogs(g, w))
					return
				}
			}
		})
	}
}

type logEntry struct {
	kind byte
	text string
}

func appendLog(log []logEntry, kind byte, text string) []logEntry {
	if (kind == 'S' || kind == 'B') && len(log) > 0 && log[len(log)-1].kind == kind {
		log[len(log)-1].text += text
		return log
	}
	return append(log, logEntry{kind, text})
}

func renderLog(log []logEntry) string {
	var b strings.Builder
	for _, e := range log {
		if e.kind == 'S' || e.kind == 'B' {
			for _, l := range strings.SplitAfter(e.text, "\n") {
				if l != "" {
					fmt.Fprintf(&b, "%c: %q\n", e.kind, l)
				}
			}
			continue
		}
		fmt.Fprintf(&b, "%c: %s\n", e.kind, e.text)
	}
	return b.String()
}

func diffLogs(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	i := 0
	for i < len(g) && i < len(w) && g[i] == w[i] {
		i++
	}
	clip := func(lines []string) string {
		var b strings.Builder
		for _, l := range lines[max(0, i-3):min(len(lines), i+4)] {
			if len(l) > 160 {
				l = l[:160] + "..."
			}
			b.WriteString("    " + l + "\n")
		}
		return b.String()
	}
	return fmt.Sprintf("line %d differs\n--- got\n%s--- want\n%s", i+1, clip(g), clip(w))
}

func (tr *transcript) expected(t *testing.T) []logEntry {
	var log []logEntry
	for _, l := range tr.lines {
		switch l.kind {
		case 'S', 'B':
			b, err := unescapeLine(l.text)
			if err != nil {
				t.Fatalf("%s:%d: %v", tr.name, l.no, err)
			}
			log = appendLog(log, l.kind, string(b))
		case 'A', 'E':
			log = appendLog(log, l.kind, l.text)
		}
	}
	return log
}

type runner struct {
	t       *testing.T
	tr      *transcript
	s       *Session
	pending []byte
	log     []logEntry
}

func (tr *transcript) run(t *testing.T, sp codectest.Splitter) []logEntry {
	cfg := tr.cfg
	r := &runner{t: t, tr: tr, s: NewSession(&cfg)}
	r.s.SetTrusted(tr.trusted)
	r.log = appendLog(r.log, 'S', string(r.s.Greeting()))
	var chunk []byte
	flush := func() {
		for _, piece := range sp.Split(chunk) {
			r.pending = append(r.pending, piece...)
			r.feed()
		}
		chunk = nil
	}
	for _, l := range tr.lines {
		if l.kind != 'C' && len(chunk) > 0 {
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
			r.log = appendLog(r.log, 'E', l.text)
			r.event(l)
			r.feed()
		case 'T':
			if got := r.s.State().String(); got != l.text {
				t.Fatalf("%s:%d: state %s, want %s", tr.name, l.no, got, l.text)
			}
		}
	}
	if len(chunk) > 0 {
		flush()
	}
	return r.log
}

func (r *runner) feed() {
	for {
		if r.s.State() == StateClosed {
			return
		}
		n, acts, err := r.s.Feed(r.pending)
		if err != nil {
			r.t.Fatalf("Feed: %v", err)
		}
		if n < 0 || n > len(r.pending) {
			r.t.Fatalf("Feed consumed %d of %d", n, len(r.pending))
		}
		r.pending = r.pending[n:]
		r.record(acts)
		if n == 0 {
			return
		}
	}
}

func (r *runner) record(acts []Action) {
	for _, a := range acts {
		switch a.Kind {
		case ActWrite:
			r.log = appendLog(r.log, 'S', string(a.Data))
		case ActBody:
			r.log = appendLog(r.log, 'B', string(a.Data))
		case ActClose:
			r.log = appendLog(r.log, 'S', string(a.Data))
			r.log = appendLog(r.log, 'A', "close "+a.Reason)
		case ActRcpt:
			s := fmt.Sprintf("rcpt %d %s", a.Rcpt.Index, a.Rcpt.To)
			if a.Rcpt.OrcptType != "" {
				s += " orcpt=" + a.Rcpt.OrcptType + ";" + a.Rcpt.Orcpt
			}
			r.log = appendLog(r.log, 'A', s)
		case ActXCLIENT:
			x := a.XClient
			r.log = appendLog(r.log, 'A', fmt.Sprintf("xclient addr=%s port=%d proto=%s helo=%s login=%s session=%s ttl=%d timeout=%d",
				x.Addr, x.Port, x.Proto, x.Helo, x.Login, x.Session, x.TTL, x.Timeout))
		default:
			r.log = appendLog(r.log, 'A', a.Kind.String())
		}
	}
}

func (r *runner) event(l tLine) {
	verb, rest, _ := strings.Cut(l.text, " ")
	switch verb {
	case "rcpt":
		r.record(r.s.ResumeRcpt(parseTestReply(r.t, rest)))
	case "finish":
		var replies []Reply
		for _, p := range strings.Split(rest, "|") {
			replies = append(replies, parseTestReply(r.t, strings.TrimSpace(p)))
		}
		r.record(r.s.FinishData(replies))
	case "timeout":
		r.record(r.s.Timeout())
	case "shutdown":
		r.record(r.s.Shutdown())
	default:
		r.t.Fatalf("%s:%d: unknown event %q", r.tr.name, l.no, l.text)
	}
}

// parseTestReply reads "<code> [<enhanced>] <text>".
func parseTestReply(t *testing.T, s string) Reply {
	code, rest, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(code)
	if err != nil {
		t.Fatalf("bad reply %q", s)
	}
	if enh, text, ok := parseEnhanced(n, rest); ok {
		return NewReply(n, enh, text)
	}
	return NewReply(n, "", rest)
}

func loadTranscript(path string) (*transcript, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tr := &transcript{name: filepath.Base(path), cfg: Config{Hostname: "mx.test"}}
	for i, raw := range strings.Split(string(data), "\n") {
		no := i + 1
		if raw == "" || strings.HasPrefix(raw, "#") {
			continue
		}
		if len(raw) < 2 || raw[1] != ':' {
			return nil, fmt.Errorf("%s:%d: bad line %q", path, no, raw)
		}
		kind, text := raw[0], strings.TrimPrefix(raw[2:], " ")
		switch kind {
		case 'O':
			k, v, _ := strings.Cut(text, "=")
			atoi := func() int {
				n, err := strconv.Atoi(v)
				if err != nil {
					panic(fmt.Sprintf("%s:%d: %v", path, no, err))
				}
				return n
			}
			switch k {
			case "hostname":
				tr.cfg.Hostname = v
			case "greeting":
				tr.cfg.Greeting = v
			case "maxline":
				tr.cfg.MaxLine = atoi()
			case "maxbad":
				tr.cfg.MaxBadCommands = atoi()
			case "maxrcpt":
				tr.cfg.MaxRecipients = atoi()
			case "trusted":
				tr.trusted = atoi() != 0
			default:
				return nil, fmt.Errorf("%s:%d: unknown option %q", path, no, k)
			}
		case 'C', 'S', 'B', 'A', 'E', 'T':
			tr.lines = append(tr.lines, tLine{no, kind, text})
		default:
			return nil, fmt.Errorf("%s:%d: unknown directive %c", path, no, kind)
		}
	}
	return tr, nil
}

func isEscape(esc string) bool {
	switch {
	case esc == "CR", esc == "LF", esc == "TAB", esc == "lt", strings.HasPrefix(esc, "rep "):
		return true
	case len(esc) == 3 && esc[0] == 'x':
		_, err := strconv.ParseUint(esc[1:], 16, 8)
		return err == nil
	}
	return false
}

// unescapeLine turns a transcript line into bytes (see the file comment).
func unescapeLine(s string) ([]byte, error) {
	eol := true
	if strings.HasSuffix(s, "<noeol>") {
		s = strings.TrimSuffix(s, "<noeol>")
		eol = false
	}
	var b bytes.Buffer
	for len(s) > 0 {
		if s[0] != '<' {
			b.WriteByte(s[0])
			s = s[1:]
			continue
		}
		end := strings.IndexByte(s, '>')
		if end < 0 || !isEscape(s[1:end]) {
			b.WriteByte('<') // not an escape: "<alice>" is text
			s = s[1:]
			continue
		}
		esc := s[1:end]
		s = s[end+1:]
		switch {
		case esc == "CR":
			b.WriteByte('\r')
		case esc == "LF":
			b.WriteByte('\n')
		case esc == "TAB":
			b.WriteByte('\t')
		case esc == "lt":
			b.WriteByte('<')
		case len(esc) == 3 && esc[0] == 'x':
			v, err := strconv.ParseUint(esc[1:], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad escape <%s>", esc)
			}
			b.WriteByte(byte(v))
		case strings.HasPrefix(esc, "rep "):
			f := strings.SplitN(esc, " ", 3)
			if len(f) != 3 {
				return nil, fmt.Errorf("bad escape <%s>", esc)
			}
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return nil, fmt.Errorf("bad escape <%s>", esc)
			}
			b.WriteString(strings.Repeat(f[2], n))
		default:
			return nil, fmt.Errorf("unknown escape <%s>", esc)
		}
	}
	if eol {
		b.WriteString("\r\n")
	}
	return b.Bytes(), nil
}
