package lmtp

import (
	"errors"
	"strconv"
	"strings"
)

// Reply is one SMTP/LMTP reply: a status code, an optional enhanced status code
// (RFC 2034) and one or more lines of text. Replies are written in one place,
// Reply.Append, whoever made them: this package, or a backend whose reply is forwarded.
type Reply struct {
	Code     int
	Enhanced string   // "2.1.5"; "" for none
	Lines    []string // the text of each line, without code and enhanced code; at least one
}

// NewReply makes a one-line reply.
func NewReply(code int, enhanced, text string) Reply {
	return Reply{Code: code, Enhanced: enhanced, Lines: []string{text}}
}

// Success reports a 2xx reply.
func (r *Reply) Success() bool { return r.Code >= 200 && r.Code < 300 }

// Append appends the reply's wire form: "250-2.1.5 text\r\n" for every line but the last,
// "250 2.1.5 text\r\n" for the last.
func (r *Reply) Append(dst []byte) []byte {
	lines := r.Lines
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, l := range lines {
		dst = strconv.AppendInt(dst, int64(r.Code), 10)
		if i == len(lines)-1 {
			dst = append(dst, ' ')
		} else {
			dst = append(dst, '-')
		}
		if r.Enhanced != "" {
			dst = append(dst, r.Enhanced...)
			if l != "" {
				dst = append(dst, ' ')
			}
		}
		dst = append(dst, l...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// String is the wire form without the final CRLF, lines joined by CRLF: for logs.
func (r Reply) String() string {
	b := r.Append(nil)
	return strings.TrimSuffix(string(b), "\r\n")
}

// WithDefaultEnhanced returns r with enh as its enhanced code if it has none.
func (r Reply) WithDefaultEnhanced(enh string) Reply {
	if r.Enhanced == "" {
		r.Enhanced = enh
	}
	return r
}

// WithPath is Dovecot's smtp_server_reply_replace_path: when the first line's text
// starts with a path ("<...>") that path becomes "<path>", the client's own address;
// otherwise, if add is set, "<path> " is put in front of the text.
func (r Reply) WithPath(path string, add bool) Reply {
	if len(r.Lines) == 0 {
		r.Lines = []string{""}
	}
	first := r.Lines[0]
	lines := append([]string(nil), r.Lines...)
	if strings.HasPrefix(first, "<") {
		if end := strings.IndexByte(first, '>'); end > 0 {
			lines[0] = "<" + path + ">" + first[end+1:]
			r.Lines = lines
			return r
		}
	}
	if add {
		lines[0] = "<" + path + "> " + first
		r.Lines = lines
	}
	return r
}

// parseEnhanced reads an enhanced status code at the start of text: class "." subject
// "." detail, class 2, 4 or 5 and equal to the reply's class, subject and detail one to
// three digits, then a space or the end. It returns the code and the text after it.
func parseEnhanced(code int, text string) (enh, rest string, ok bool) {
	if len(text) < 5 || text[0] < '2' || text[0] > '5' || text[0] == '3' || int(text[0]-'0') != code/100 || text[1] != '.' {
		return "", text, false
	}
	i := 2
	for part := 0; part < 2; part++ {
		start := i
		for i < len(text) && i-start < 4 && text[i] >= '0' && text[i] <= '9' {
			i++
		}
		if n := i - start; n == 0 || n > 3 {
			return "", text, false
		}
		if part == 0 {
			if i >= len(text) || text[i] != '.' {
				return "", text, false
			}
			i++
		}
	}
	switch {
	case i == len(text):
		return text[:i], "", true
	case text[i] == ' ':
		return text[:i], text[i+1:], true
	}
	return "", text, false
}

// ReplyParser reads replies from a backend, one at a time. It is fed every byte not yet
// consumed; partial lines stay with the caller.
type ReplyParser struct {
	// MaxLine is the longest line accepted, CRLF included; 0 means 4096 (Dovecot's
	// LMTP_MAX_REPLY_SIZE).
	MaxLine int
	// MaxLines bounds the lines of one reply; 0 means 256.
	MaxLines int

	cur     Reply
	started bool
}

// ErrBadReply is returned for a reply that breaks the syntax: no three-digit code,
// different codes in one reply, a line too long, too many lines, a bare CR or a control
// character. The connection is then unusable.
var ErrBadReply = errors.New("lmtp: bad reply")

// Feed parses complete lines from in. When a reply's last line has been read it returns
// the reply and the bytes consumed up to and including that line; otherwise reply is
// nil and consumed covers the complete lines read so far (remembered by the parser).
func (p *ReplyParser) Feed(in []byte) (consumed int, reply *Reply, err error) {
	maxLine := p.MaxLine
	if maxLine <= 0 {
		maxLine = 4096
	}
	maxLines := p.MaxLines
	if maxLines <= 0 {
		maxLines = 256
	}
	for {
		rest := in[consumed:]
		nl := -1
		for i := 0; i < len(rest) && i < maxLine; i++ {
			if rest[i] == '\n' {
				nl = i
				break
			}
		}
		if nl < 0 {
			if len(rest) >= maxLine {
				return consumed, nil, ErrBadReply
			}
			return consumed, nil, nil
		}
		line := rest[:nl]
		consumed += nl + 1
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		last, err := p.line(line)
		if err != nil {
			return consumed, nil, err
		}
		if len(p.cur.Lines) > maxLines {
			return consumed, nil, ErrBadReply
		}
		if last {
			r := p.cur
			p.cur = Reply{}
			p.started = false
			return consumed, &r, nil
		}
	}
}

// line takes one line without its line ending.
func (p *ReplyParser) line(b []byte) (last bool, err error) {
	if len(b) < 3 || b[0] < '2' || b[0] > '5' || b[1] < '0' || b[1] > '9' || b[2] < '0' || b[2] > '9' {
		return false, ErrBadReply
	}
	code := int(b[0]-'0')*100 + int(b[1]-'0')*10 + int(b[2]-'0')
	var text []byte
	switch {
	case len(b) == 3:
		last = true
	case b[3] == ' ':
		last, text = true, b[4:]
	case b[3] == '-':
		text = b[4:]
	default:
		return false, ErrBadReply
	}
	for _, c := range text {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false, ErrBadReply
		}
	}
	if p.started && code != p.cur.Code {
		return false, ErrBadReply
	}
	t := string(text)
	if !p.started {
		p.started = true
		p.cur.Code = code
		if enh, rest, ok := parseEnhanced(code, t); ok {
			p.cur.Enhanced, t = enh, rest
		}
	} else if p.cur.Enhanced != "" {
		if enh, rest, ok := parseEnhanced(code, t); ok && enh == p.cur.Enhanced {
			t = rest
		}
	}
	p.cur.Lines = append(p.cur.Lines, t)
	return last, nil
}

// Capabilities is what a backend's LHLO/EHLO reply advertises.
type Capabilities struct {
	Pipelining, EnhancedStatusCodes, EightBitMIME, Chunking, StartTLS bool
	// XRcptForward: RCPT accepts XRCPTFORWARD= (Dovecot's forward_ fields).
	XRcptForward bool
	// XClient lists the XCLIENT attributes the backend accepts, upper-cased; nil when
	// XCLIENT is not advertised.
	XClient []string
}

// ParseCapabilities reads the keywords of an LHLO/EHLO reply (every line after the first).
func ParseCapabilities(r *Reply) Capabilities {
	var c Capabilities
	for i, l := range r.Lines {
		if i == 0 {
			continue // the server's name
		}
		kw, params, _ := strings.Cut(l, " ")
		switch strings.ToUpper(kw) {
		case "PIPELINING":
			c.Pipelining = true
		case "ENHANCEDSTATUSCODES":
			c.EnhancedStatusCodes = true
		case "8BITMIME":
			c.EightBitMIME = true
		case "CHUNKING":
			c.Chunking = true
		case "STARTTLS":
			c.StartTLS = true
		case "XRCPTFORWARD":
			c.XRcptForward = true
		case "XCLIENT":
			c.XClient = []string{}
			for _, f := range strings.Fields(params) {
				c.XClient = append(c.XClient, strings.ToUpper(f))
			}
		}
	}
	return c
}

func (c *Capabilities) xclientHas(field string) bool {
	for _, f := range c.XClient {
		if f == field {
			return true
		}
	}
	return false
}
