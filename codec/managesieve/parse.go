package managesieve

import (
	"unicode/utf8"

	"doorman/codec/internal/wire"
)

// The argument reader. It walks a command's bytes one at a time and keeps its place
// between Feed calls, so a command that arrives in pieces is never scanned twice. Nothing
// of a command is consumed until the whole command (literals included) is there: every
// position below is an offset from the first byte of the command, and tokens are
// offsets, not copies.
//
// What it accepts and the error texts it gives are those of Pigeonhole 0.5.21's
// managesieve-parser (src/lib-managesieve/managesieve-parser.c) as managesieve-login
// uses it: atoms, quoted strings and literals ({n} and {n+} alike, with no continuation:
// RFC 5804 wants clients to send {n+}), no lists. A SASL response (AUTHENTICATE's
// initial response, or a continuation line) is read the way Pigeonhole reads it, as a
// string stream: other checks, other texts, and its own size limit.

// saslMaxResponse is LOGIN_MAX_AUTH_BUF_SIZE: the longest SASL response string, counted
// after unescaping. Longer ends the session without a word, as Dovecot does
// ("Authentication response too large").
const saslMaxResponse = 8192

// syntaxError is a syntax error in a command. Its text goes on the wire as `NO "<text>"`;
// a fatal one ends the session with `BYE "<text>"` instead, and a silent one ends it
// without a word.
type syntaxError struct {
	text   string
	fatal  bool
	silent bool
}

var (
	errAtomChars     = &syntaxError{text: "Invalid characters in atom"}
	errAtom8bit      = &syntaxError{text: "8bit data in atom"}
	errQuotedUTF8    = &syntaxError{text: "Invalid UTF-8 character in quoted-string."}
	errNULInString   = &syntaxError{text: "NULs not allowed in strings"}
	errEscape        = &syntaxError{text: "Escaped quoted-string character is not a QUOTED-SPECIAL."}
	errStringChar    = &syntaxError{text: "String contains invalid character."}
	errLiteralPlus   = &syntaxError{text: "Expecting '}' after '+'"}
	errLiteralSize   = &syntaxError{text: "Invalid literal size"}
	errLiteralNumber = &syntaxError{text: "Literal size too large"} // the digits overflow: not fatal
	errLiteralTooBig = &syntaxError{text: "Literal size too large", fatal: true}
	errLiteralLF     = &syntaxError{text: "Missing LF after literal size"}
	errLiteralUTF8   = &syntaxError{text: "Invalid UTF-8 character in literal string."}

	// A SASL response string's errors (quoted_string_istream_read, reported by
	// managesieve_client_auth_read_response). A NUL is let through: the response then
	// ends there (Session.saslValue).
	errStreamChar   = &syntaxError{text: "Error in AUTHENTICATE response string: Quoted string contains an invalid character"}
	errStreamEscape = &syntaxError{text: "Error in AUTHENTICATE response string: Escaped quoted-string character is not a QUOTED-SPECIAL"}
	errSASLTooLarge = &syntaxError{text: "authentication response too large", silent: true}
)

// tokenKind says what a token is.
type tokenKind uint8

const (
	tokAtom    tokenKind = iota + 1
	tokQuoted            // a quoted string; start/end exclude the quotes
	tokLiteral           // a literal's data
)

// token is one argument, as offsets into the command.
type token struct {
	kind       tokenKind
	escaped    bool // a quoted string holding backslash escapes
	start, end int
	first      int // where the token's first byte is: its `"` or `{`, or start
}

// isString reports whether t is a quoted string or a literal (a ManageSieve "string").
func (t *token) isString() bool { return t.kind == tokQuoted || t.kind == tokLiteral }

// appendValue appends t's text to dst, with a quoted string's escapes removed.
func (t *token) appendValue(dst, cmd []byte) []byte {
	return wire.AppendUnescaped(dst, cmd[t.start:t.end], t.escaped)
}

// valueLen is the length appendValue would append.
func (t *token) valueLen(cmd []byte) int { return wire.UnescapedLen(cmd[t.start:t.end], t.escaped) }

// event is what the reader has to say after a call.
type event uint8

const (
	evMore  event = iota // the command goes on past the bytes given
	evToken              // an argument is complete: see tok
	evEOL                // the command ends; pos is just past its LF
	evError              // a syntax error: see err; pos is where skipping to the LF starts
)

// argState is where the reader is.
type argState uint8

const (
	argNext      argState = iota // between arguments
	argAtom                      // inside an atom
	argQuoted                    // inside a quoted string
	argQuotedEsc                 // just after a backslash in a quoted string
	argLitSize                   // inside "{...}"
	argLitCR                     // after "}": CRLF or LF must follow
	argLitLF                     // after "}\r": LF must follow
	argLitData                   // reading the literal's bytes
	argEOL                       // the arguments ended at a CR or LF: looking for the LF
)

// argReader reads a command's arguments. start sets where they begin.
type argReader struct {
	pos        int
	st         argState
	first      int // first byte of the token being read
	argStart   int
	escaped    bool
	litSize    uint64
	litNonSync bool
	// stream: the next string is a SASL response, read as Pigeonhole reads a string
	// stream. streamLen counts its bytes after unescaping.
	stream    bool
	streamLen int

	tok token        // set when next returns evToken
	err *syntaxError // set when next returns evError
}

// start resets the reader to read arguments from offset pos.
func (r *argReader) start(pos int) { *r = argReader{pos: pos} }

// toEOL makes the reader skip whatever is left of the line, up to its LF.
func (r *argReader) toEOL() { r.st = argEOL }

// inSASLString reports whether the reader is inside the data of a SASL response string,
// which has its own size limit instead of the line's.
func (r *argReader) inSASLString() bool {
	return r.stream && (r.st == argQuoted || r.st == argQuotedEsc || r.st == argLitData)
}

// next reads on from r.pos and stops at the first thing worth reporting. cmd holds the
// command from its first byte; maxLine bounds the size of a literal (Pigeonhole refuses
// a literal that would take the line past its limit).
func (r *argReader) next(cmd []byte, maxLine int) event {
	for r.pos < len(cmd) {
		c := cmd[r.pos]
		switch r.st {
		case argNext:
			switch c {
			case ' ':
				r.pos++
			case '\r', '\n':
				r.st = argEOL
			case '"':
				r.st, r.first, r.argStart, r.escaped, r.streamLen = argQuoted, r.pos, r.pos+1, false, 0
				r.pos++
			case '{':
				r.st, r.first, r.litSize, r.litNonSync = argLitSize, r.pos, 0, false
				r.pos++
			default:
				if e := atomCharError(c); e != nil {
					return r.fail(e)
				}
				r.st, r.first, r.argStart = argAtom, r.pos, r.pos
				r.pos++
			}
		case argEOL:
			if c == '\n' {
				r.pos++
				return evEOL
			}
			r.pos++
		case argAtom:
			if c == ' ' || c == ')' || c == '\r' || c == '\n' {
				r.tok = token{kind: tokAtom, start: r.argStart, end: r.pos, first: r.first}
				r.st = argNext
				return evToken
			}
			if e := atomCharError(c); e != nil {
				return r.fail(e)
			}
			r.pos++
		case argQuoted:
			if r.stream {
				if ev, done := r.streamQuoted(cmd); done {
					return ev
				}
				continue
			}
			switch {
			case c == '"':
				if !utf8.Valid(cmd[r.argStart:r.pos]) {
					return r.fail(errQuotedUTF8)
				}
				r.tok = token{kind: tokQuoted, escaped: r.escaped, start: r.argStart, end: r.pos, first: r.first}
				r.st = argNext
				r.pos++
				return evToken
			case c == 0:
				return r.fail(errNULInString)
			case c == '\\':
				r.st, r.escaped = argQuotedEsc, true
			case c == '\r' || c == '\n':
				return r.fail(errStringChar)
			}
			r.pos++
		case argQuotedEsc:
			if c != '"' && c != '\\' {
				if r.stream {
					return r.fail(errStreamEscape)
				}
				return r.fail(errEscape)
			}
			r.st = argQuoted
			r.pos++
			if r.stream {
				if r.streamLen++; r.streamLen > saslMaxResponse {
					return r.fail(errSASLTooLarge)
				}
			}
		case argLitSize:
			switch {
			case c == '}':
				r.pos++
				if r.stream {
					// A SASL response has no line limit, only its own.
					if r.litSize > saslMaxResponse {
						return r.fail(errSASLTooLarge)
					}
				} else if r.litSize > uint64(max(maxLine-r.pos-2, 0)) {
					// r.pos bytes of the line are read: the literal must leave room for
					// the CRLF after its header within the line limit, so that a
					// command, literals included, is never longer than MaxLine and
					// its CRLF. (Pigeonhole doesn't count those two bytes: it takes a
					// literal two bytes longer [V].)
					return r.fail(errLiteralTooBig)
				}
				r.st = argLitCR
			case r.litNonSync:
				return r.fail(errLiteralPlus)
			case c == '+':
				r.litNonSync = true
				r.pos++
			case c >= '0' && c <= '9':
				d := uint64(c - '0')
				if r.litSize > (^uint64(0)-d)/10 {
					return r.fail(errLiteralNumber)
				}
				r.litSize = r.litSize*10 + d
				r.pos++
			default:
				return r.fail(errLiteralSize)
			}
		case argLitCR:
			switch c {
			case '\r':
				r.st = argLitLF
				r.pos++
			case '\n':
				r.pos++
				r.st, r.argStart = argLitData, r.pos
			default:
				return r.fail(errLiteralLF)
			}
		case argLitLF:
			if c != '\n' {
				return r.fail(errLiteralLF)
			}
			r.pos++
			r.st, r.argStart = argLitData, r.pos
		case argLitData:
			if ev, done := r.literalData(cmd); done {
				return ev
			}
			return evMore
		}
	}
	// A literal of size 0 is complete without any byte of data.
	if r.st == argLitData && r.litSize == 0 {
		ev, _ := r.literalData(cmd)
		return ev
	}
	return evMore
}

// literalData completes a literal once all its bytes are there.
func (r *argReader) literalData(cmd []byte) (event, bool) {
	end := r.argStart + int(r.litSize)
	if len(cmd) < end {
		r.pos = len(cmd)
		return evMore, false
	}
	if !r.stream && !utf8.Valid(cmd[r.argStart:end]) {
		// Pigeonhole skips from the start of the data to the next LF, which may be
		// inside the literal.
		r.pos = r.argStart
		return r.fail(errLiteralUTF8), true
	}
	r.tok = token{kind: tokLiteral, start: r.argStart, end: end, first: r.first}
	r.st, r.pos = argNext, end
	return evToken, true
}

// streamQuoted reads on in a quoted SASL response. done says it has something to report.
func (r *argReader) streamQuoted(cmd []byte) (event, bool) {
	for r.pos < len(cmd) {
		switch c := cmd[r.pos]; c {
		case '"':
			r.tok = token{kind: tokQuoted, escaped: r.escaped, start: r.argStart, end: r.pos, first: r.first}
			r.st = argNext
			r.pos++
			return evToken, true
		case '\\':
			r.st, r.escaped = argQuotedEsc, true
			r.pos++
			return 0, false
		case '\r', '\n':
			return r.fail(errStreamChar), true
		}
		r.pos++
		if r.streamLen++; r.streamLen > saslMaxResponse {
			return r.fail(errSASLTooLarge), true
		}
	}
	return evMore, true
}

// fail reports err. r.pos stays on the offending byte: the rest of the line, from there
// to its LF, is skipped.
func (r *argReader) fail(err *syntaxError) event {
	r.err = err
	return evError
}

// atomCharError says why c can't be in an atom, or nil if it can (ATOM-SPECIALS:
// "(" / ")" / "{" / SP / CTL / QUOTED-SPECIALS, and no 8-bit bytes).
func atomCharError(c byte) *syntaxError {
	switch {
	case c <= ' ' || c == 0x7f || c == '(' || c == ')' || c == '{' || c == '"' || c == '\\':
		return errAtomChars
	case c >= 0x80:
		return errAtom8bit
	}
	return nil
}

// appendQuoted appends s as a ManageSieve string the way Pigeonhole's
// managesieve_quote_append() does: a quoted string with `"` and `\` escaped, or, if s
// holds CR or LF, a literal {n}. With compress (reply texts), leading white space is
// dropped and runs of spaces and tabs become one space. Invalid UTF-8 becomes U+FFFD.
// (Pigeonhole counts a literal's size before that replacement; this counts after.)
func appendQuoted[T ~string | ~[]byte](dst []byte, s T, compress bool) []byte {
	// First pass, as Pigeonhole's: does s need a literal, escapes, or compressing?
	literal, modify, escapes := false, false, 0
	lwsp := true
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t':
			if lwsp && compress {
				modify = true
			}
			lwsp = true
		case '"', '\\':
			escapes++
			lwsp = false
		case '\r', '\n':
			literal, lwsp = true, true
		default:
			lwsp = false
		}
	}
	if !literal {
		dst = append(dst, '"')
	}
	v := len(dst)
	if !modify && (literal || escapes == 0) {
		dst = append(dst, s...)
	} else {
		lwsp = true
		for i := 0; i < len(s); i++ {
			switch c := s[i]; c {
			case '"', '\\':
				if !literal {
					dst = append(dst, '\\')
				}
				dst = append(dst, c)
				lwsp = false
			case ' ', '\t':
				if !lwsp || !compress {
					dst = append(dst, ' ')
				}
				lwsp = true
			case '\r', '\n':
				dst = append(dst, c)
				lwsp = true
			default:
				dst = append(dst, c)
				lwsp = false
			}
		}
	}
	if !utf8.Valid(dst[v:]) {
		fixed := validUTF8(dst[v:])
		dst = append(dst[:v], fixed...)
	}
	if !literal {
		return append(dst, '"')
	}
	// The literal's header goes before the value, now that its length is known.
	var hb [24]byte
	h := appendLiteralHeader(hb[:0], len(dst)-v)
	n := len(dst)
	dst = append(dst, h...)
	copy(dst[v+len(h):], dst[v:n])
	copy(dst[v:], h)
	return dst
}

// validUTF8 returns b with invalid UTF-8 replaced by U+FFFD, never two in a row
// (uni_utf8_get_valid_data).
func validUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			if !hasSuffixReplacement(out) {
				out = utf8.AppendRune(out, utf8.RuneError)
			}
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

func hasSuffixReplacement(b []byte) bool {
	const rep = "\uFFFD"
	return len(b) >= len(rep) && string(b[len(b)-len(rep):]) == rep
}

// appendLiteralHeader appends "{n}\r\n".
func appendLiteralHeader(dst []byte, n int) []byte {
	var digits [20]byte
	i := len(digits)
	for {
		i--
		digits[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	dst = append(dst, '{')
	dst = append(dst, digits[i:]...)
	return append(dst, "}\r\n"...)
}
