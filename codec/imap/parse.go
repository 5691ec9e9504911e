package imap

import "doorman/codec/internal/wire"

// The command reader. It walks the client's bytes one at a time and keeps its place
// between Feed calls, so a command that arrives in pieces is never scanned twice and a
// `+ OK` for a synchronizing literal goes out exactly once. Nothing of a command is
// consumed until the whole command (literals included) is there: every position below is
// an offset from the first byte of the command, and tokens are offsets, not copies.
//
// What it accepts and the error texts it gives are those of Dovecot 2.3's imap-parser
// (src/lib-imap/imap-parser.c) as imap-login uses it: tag and command name are read as
// atoms (imap_parser_read_tag, imap_parser_read_command_name), arguments as atoms,
// quoted strings, literals and parenthesized lists.

// srvTagMaxLen is Dovecot's IMAP_TAG_MAX_LEN: LOGIN_MAX_MASTER_PREFIX_LEN (128) - 2.
const srvTagMaxLen = 126

// srvLiteralSizeCap stops a literal size from overflowing while its digits are read.
// Dovecot fails with the same text when the size overflows uoff_t; any size this big
// is over the line limit anyway.
const srvLiteralSizeCap = 1 << 40

// cmdSyntaxError is a syntax error in a command's arguments. Its text is what goes on
// the wire after "<tag> BAD "; fatal errors end the session with "* BYE <text>" instead.
type cmdSyntaxError struct {
	text  string
	fatal bool
}

var (
	errAtomChars       = &cmdSyntaxError{text: "Invalid characters in atom"}
	errAtom8bit        = &cmdSyntaxError{text: "8bit data in atom"}
	errUnexpectedParen = &cmdSyntaxError{text: "Unexpected ')'"}
	errMissingParen    = &cmdSyntaxError{text: "Missing ')'"}
	errMissingQuote    = &cmdSyntaxError{text: "Missing '\"'"}
	errNULInString     = &cmdSyntaxError{text: "NULs not allowed in strings"}
	errCRWithoutLF     = &cmdSyntaxError{text: "CR sent without LF"}
	errLiteral8        = &cmdSyntaxError{text: "literal8 not allowed here"}
	errLiteralSize     = &cmdSyntaxError{text: "Invalid literal size"}
	errLiteralPlus     = &cmdSyntaxError{text: "Expecting '}' after '+'"}
	errLiteralLF       = &cmdSyntaxError{text: "Missing LF after literal size"}
	errLiteralTooBig   = &cmdSyntaxError{text: "Literal size too large", fatal: true}
)

// cmdTokenKind says what a cmdToken is.
type cmdTokenKind uint8

const (
	tokAtom    cmdTokenKind = iota + 1 // an atom, NIL included
	tokQuoted                          // a quoted string; start/end exclude the quotes
	tokLiteral                         // a literal's data
	tokOpen                            // "("
	tokClose                           // ")"
)

// cmdToken is one argument, or a list bracket, as offsets into the command.
type cmdToken struct {
	kind       cmdTokenKind
	escaped    bool // a quoted string holding backslash escapes
	start, end int
	depth      int // list depth the token sits at; an "(" has the depth outside it
}

// isNIL reports whether t is the atom NIL, which Dovecot matches case-insensitively.
func (t *cmdToken) isNIL(cmd []byte) bool {
	if t.kind != tokAtom || t.end-t.start != 3 {
		return false
	}
	b := cmd[t.start:t.end]
	return b[0]|0x20 == 'n' && b[1]|0x20 == 'i' && b[2]|0x20 == 'l'
}

// isString reports whether t is a quoted string or a literal (an IMAP "string").
func (t *cmdToken) isString() bool { return t.kind == tokQuoted || t.kind == tokLiteral }

// isAstring reports whether t can stand for an astring: an atom (NIL too, which RFC 3501
// reads as the text "NIL" there), a quoted string or a literal.
func (t *cmdToken) isAstring() bool { return t.kind == tokAtom || t.isString() }

// appendValue appends t's text to dst, with a quoted string's escapes removed.
func (t *cmdToken) appendValue(dst, cmd []byte) []byte {
	return wire.AppendUnescaped(dst, cmd[t.start:t.end], t.escaped)
}

// valueLen is the length appendValue would append.
func (t *cmdToken) valueLen(cmd []byte) int { return wire.UnescapedLen(cmd[t.start:t.end], t.escaped) }

// cmdEvent is what the reader has to say after a call.
type cmdEvent uint8

const (
	evMore     cmdEvent = iota // the command goes on past the bytes given
	evToken                    // an argument (or bracket) is complete: see tok
	evContinue                 // a synchronizing literal was announced: send "+ OK"
	evEOL                      // the command ends; pos is just past its LF
	evError                    // a syntax error: see err; pos is where skipping starts
)

// argState is where the reader is inside the arguments.
type argState uint8

const (
	argNext      argState = iota // between arguments
	argAtom                      // inside an atom
	argTilde                     // read "~": an atom, or a literal8 we refuse
	argQuoted                    // inside a quoted string
	argQuotedEsc                 // just after a backslash in a quoted string
	argLitSize                   // inside "{...}"
	argLitCR                     // after "}": CRLF or LF must follow
	argLitLF                     // after "}\r": LF must follow
	argLitData                   // reading the literal's bytes
	argEOLCR                     // a CR between arguments: LF must follow
)

// cmdArgReader reads a command's arguments. The zero value is ready to read arguments
// that begin at offset 0; start sets another starting point.
type cmdArgReader struct {
	pos        int
	st         argState
	depth      int
	argStart   int
	escaped    bool
	litSize    int
	litNonSync bool

	tok cmdToken        // set when next returns evToken
	err *cmdSyntaxError // set when next returns evError
}

// start resets the reader to read arguments from offset pos.
func (r *cmdArgReader) start(pos int) { *r = cmdArgReader{pos: pos} }

// next reads on from r.pos and stops at the first thing worth reporting. cmd holds the
// command from its first byte; maxLine bounds the size of a literal (Dovecot refuses a
// literal that would take the line past its limit).
func (r *cmdArgReader) next(cmd []byte, maxLine int) cmdEvent {
	for r.pos < len(cmd) {
		c := cmd[r.pos]
		switch r.st {
		case argNext:
			switch c {
			case ' ':
				r.pos++
			case '\r':
				r.st = argEOLCR
				r.pos++
			case '\n':
				return r.eol()
			case '"':
				r.st, r.argStart, r.escaped = argQuoted, r.pos+1, false
				r.pos++
			case '~':
				r.st, r.argStart = argTilde, r.pos
				r.pos++
			case '{':
				r.st, r.litSize, r.litNonSync = argLitSize, 0, false
				r.pos++
			case '(':
				r.tok = cmdToken{kind: tokOpen, start: r.pos, end: r.pos + 1, depth: r.depth}
				r.depth++
				r.pos++
				return evToken
			case ')':
				if r.depth == 0 {
					return r.fail(errUnexpectedParen)
				}
				r.depth--
				r.tok = cmdToken{kind: tokClose, start: r.pos, end: r.pos + 1, depth: r.depth}
				r.pos++
				return evToken
			default:
				if e := srvAtomCharError(c); e != nil {
					return r.fail(e)
				}
				r.st, r.argStart = argAtom, r.pos
				r.pos++
			}
		case argEOLCR:
			if c != '\n' {
				return r.fail(errCRWithoutLF)
			}
			return r.eol()
		case argTilde:
			if c == '{' {
				return r.fail(errLiteral8)
			}
			r.st = argAtom // "~" was the atom's first byte; look at c as the next one
		case argAtom:
			switch {
			case c == ' ' || c == '\r' || c == '\n' || (c == ')' && r.depth > 0):
				r.tok = cmdToken{kind: tokAtom, start: r.argStart, end: r.pos, depth: r.depth}
				r.st = argNext
				return evToken
			case c == ')':
				return r.fail(errUnexpectedParen)
			}
			if e := srvAtomCharError(c); e != nil {
				return r.fail(e)
			}
			r.pos++
		case argQuoted:
			switch c {
			case '"':
				r.tok = cmdToken{kind: tokQuoted, escaped: r.escaped, start: r.argStart, end: r.pos, depth: r.depth}
				r.st = argNext
				r.pos++
				return evToken
			case '\\':
				r.st, r.escaped = argQuotedEsc, true
			case 0:
				return r.fail(errNULInString)
			case '\r', '\n':
				return r.fail(errMissingQuote)
			}
			r.pos++
		case argQuotedEsc:
			switch c {
			case 0:
				return r.fail(errNULInString)
			case '\r', '\n':
				// Escaping a line break doesn't make it part of the string.
				return r.fail(errMissingQuote)
			}
			r.st = argQuoted
			r.pos++
		case argLitSize:
			switch {
			case c == '}':
				r.pos++
				// r.pos bytes of the line are read; Dovecot refuses a literal that
				// would not fit in what is left of the line limit, and fails right
				// after one that leaves no room for the CRLF after its header.
				if r.litSize > maxLine-r.pos-2 {
					return r.fail(errLiteralTooBig)
				}
				r.st = argLitCR
				if !r.litNonSync {
					return evContinue
				}
			case r.litNonSync:
				return r.fail(errLiteralPlus)
			case c == '+':
				r.litNonSync = true
				r.pos++
			case c >= '0' && c <= '9':
				r.litSize = r.litSize*10 + int(c-'0')
				if r.litSize >= srvLiteralSizeCap {
					return r.fail(errLiteralTooBig)
				}
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
			end := r.argStart + r.litSize
			if len(cmd) < end {
				r.pos = len(cmd)
				return evMore
			}
			r.tok = cmdToken{kind: tokLiteral, start: r.argStart, end: end, depth: r.depth}
			r.st, r.pos = argNext, end
			return evToken
		}
	}
	// A literal of size 0 is complete without any byte of data.
	if r.st == argLitData && r.litSize == 0 {
		r.tok = cmdToken{kind: tokLiteral, start: r.argStart, end: r.argStart, depth: r.depth}
		r.st = argNext
		return evToken
	}
	return evMore
}

// eol ends the command at the LF under r.pos.
func (r *cmdArgReader) eol() cmdEvent {
	if r.depth > 0 {
		return r.fail(errMissingParen)
	}
	r.pos++
	return evEOL
}

// fail reports err. r.pos stays on the offending byte: the rest of the line, from there
// to its LF, is skipped.
func (r *cmdArgReader) fail(err *cmdSyntaxError) cmdEvent {
	r.err = err
	return evError
}

// srvAtomCharError says why c can't be in an atom argument, or nil if it can. Dovecot's
// argument parser is laxer than RFC 3501's atom (it lets "%", "*", "]" and "\" through).
func srvAtomCharError(c byte) *cmdSyntaxError {
	switch {
	case c >= 0x80:
		return errAtom8bit
	case c <= ' ' || c == 0x7f || c == '(' || c == ')' || c == '{' || c == '"':
		return errAtomChars
	}
	return nil
}

// wordResult is the outcome of reading a tag or a command name.
type wordResult uint8

const (
	wordMore wordResult = iota // no end in sight yet
	wordOK                     // read; the reader stands after it (and one space)
	wordBad                    // empty, too long or a character that can't be there
)

// srvReadWord reads a tag (tag=true) or command name that starts at offset start, going
// on from offset from (bytes before it were already found fine). It reads the way
// Dovecot's imap_parser_read_next_atom does: the word ends at a space, which is skipped,
// or at CR/LF, which are left for what follows. end is where the word ends, or the
// offending byte; next is where reading goes on.
func srvReadWord(cmd []byte, start, from int, tag bool) (res wordResult, end, next int) {
	for i := max(start, from); i < len(cmd); i++ {
		c := cmd[i]
		switch c {
		case ' ', '\r', '\n':
			if i == start {
				return wordBad, i, i
			}
			if c == ' ' {
				return wordOK, i, i + 1
			}
			return wordOK, i, i
		case '(', ')', '{', '%', '*', '"', '\\', ']':
			return wordBad, i, i
		case '+':
			if tag {
				return wordBad, i, i
			}
		default:
			if c < ' ' || c >= 0x80 {
				return wordBad, i, i
			}
		}
		if tag && i-start >= srvTagMaxLen {
			// Dovecot reads the whole tag first and then refuses it for its length;
			// the reply and what gets skipped are the same.
			return wordBad, i, i
		}
	}
	return wordMore, len(cmd), len(cmd)
}
