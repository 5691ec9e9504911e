package managesieve

import "doorman/codec/internal/wire"

// response is what BackendLogin needs of one backend response: a status line
// (`OK|NO|BYE [(<code> ...)] [<string>]`) or a capability line (`<string> [<string>]`).
// Unlike Pigeonhole, which feeds each line to its command parser (and asserts when a
// literal leaves it wanting more), strings may be quoted or literals, and an OK may
// carry a resp-code.
type response struct {
	status  string // "OK", "NO" or "BYE" if the first word is that atom (any case)
	hasCode bool   // a resp-code follows the status
	code0   int    // the resp-code's first word is resp[code0:code1]
	code1   int
	toks    [2]token // the first two arguments: after the status and resp-code, if any
	n       int      // how many arguments there are (a capability line: up to 2)
	err     string   // a syntax error, for the logs
}

// isString reports whether argument i is a quoted string or a literal.
func (r *response) isString(i int) bool { return i < r.n && r.toks[i].isString() }

// value returns argument i's text, unescaped.
func (r *response) value(resp []byte, i int) []byte {
	t := &r.toks[i]
	if !t.escaped {
		return resp[t.start:t.end]
	}
	return t.appendValue(nil, resp)
}

// code returns the resp-code's first word.
func (r *response) code(resp []byte) []byte { return resp[r.code0:r.code1] }

// parseResponse reads a complete response (as framed by BackendLogin.frame). With full
// false it reads as Pigeonhole reads the capabilities (read_args(parser, 2)): a status
// line ends at its status word, a capability line after two arguments. With full, a
// status line is read to its end.
func parseResponse(resp []byte, full bool) (r response) {
	pos := 0
	first := true
	for {
		for pos < len(resp) && resp[pos] == ' ' {
			pos++
		}
		if pos == len(resp) || resp[pos] == '\r' || resp[pos] == '\n' {
			return r
		}
		if r.status != "" && r.n == 0 && !r.hasCode && resp[pos] == '(' {
			end, ok := skipRespCode(resp, pos)
			if !ok {
				r.err = "Missing ')'"
				return r
			}
			w := pos + 1
			for w < end && !isAtomSpecial(resp[w]) {
				w++
			}
			r.hasCode, r.code0, r.code1 = true, pos+1, w
			pos = end
			continue
		}
		t, next, err := readBackendToken(resp, pos)
		if err != "" {
			r.err = err
			return r
		}
		pos = next
		if first {
			first = false
			if t.kind == tokAtom {
				switch w := resp[t.start:t.end]; {
				case wire.EqualUpper(w, "OK"):
					r.status = "OK"
				case wire.EqualUpper(w, "NO"):
					r.status = "NO"
				case wire.EqualUpper(w, "BYE"):
					r.status = "BYE"
				}
				if r.status != "" {
					if !full {
						return r
					}
					continue
				}
			}
		}
		if r.n < len(r.toks) {
			r.toks[r.n] = t
		}
		r.n++
		if !full && r.status == "" && r.n == len(r.toks) {
			return r
		}
	}
}

// readBackendToken reads the atom, quoted string or literal at pos.
func readBackendToken(resp []byte, pos int) (t token, next int, err string) {
	switch c := resp[pos]; {
	case c == '"':
		t = token{kind: tokQuoted, start: pos + 1, first: pos}
		for i := pos + 1; i < len(resp); i++ {
			switch resp[i] {
			case '\\':
				t.escaped = true
				i++
			case '"':
				t.end = i
				return t, i + 1, ""
			case '\r', '\n':
				return t, 0, "Missing '\"'"
			}
		}
		return t, 0, "Missing '\"'"
	case c == '{':
		i := pos + 1
		n := 0
		for i < len(resp) && resp[i] >= '0' && resp[i] <= '9' && n <= backendMaxLine {
			n = n*10 + int(resp[i]-'0')
			i++
		}
		if i == pos+1 {
			return t, 0, "Invalid literal size"
		}
		if i < len(resp) && resp[i] == '+' {
			i++
		}
		if i >= len(resp) || resp[i] != '}' {
			return t, 0, "Invalid literal size"
		}
		i++
		if i < len(resp) && resp[i] == '\r' {
			i++
		}
		if i >= len(resp) || resp[i] != '\n' {
			return t, 0, "Missing LF after literal size"
		}
		i++
		if len(resp)-i < n {
			return t, 0, "Literal size too large"
		}
		return token{kind: tokLiteral, start: i, end: i + n, first: pos}, i + n, ""
	case isAtomSpecial(c):
		return t, 0, "Invalid characters in atom"
	}
	i := pos
	for i < len(resp) && !isAtomSpecial(resp[i]) {
		i++
	}
	return token{kind: tokAtom, start: pos, end: i, first: pos}, i, ""
}

// skipRespCode returns where the parenthesized resp-code at pos ends (after its ")").
// Strings inside it may hold parentheses.
func skipRespCode(resp []byte, pos int) (int, bool) {
	for i := pos + 1; i < len(resp); {
		switch c := resp[i]; c {
		case ')':
			return i + 1, true
		case '"', '{':
			_, next, err := readBackendToken(resp, i)
			if err != "" {
				return 0, false
			}
			i = next
		case '\r', '\n':
			return 0, false
		default:
			i++
		}
	}
	return 0, false
}

// isAtomSpecial reports whether c ends an atom in a backend response. This reader is
// laxer than the grammar: only what would make the response ambiguous stops an atom.
func isAtomSpecial(c byte) bool {
	return c == ' ' || c == '\r' || c == '\n' || c == '(' || c == ')' || c == '"' || c == '{'
}

// literalAtEnd reports whether line ends with a literal's announcement, `{n}` or
// `{n+}` after a space (or alone), and returns n.
func literalAtEnd(line []byte) (int, bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false
	}
	end := len(line) - 1
	if line[end-1] == '+' {
		end--
	}
	i := end
	for i > 0 && line[i-1] >= '0' && line[i-1] <= '9' {
		i--
	}
	if i == end || i == 0 || line[i-1] != '{' || (i >= 2 && line[i-2] != ' ') {
		return 0, false
	}
	n := 0
	for _, c := range line[i:end] {
		n = n*10 + int(c-'0')
		if n > backendMaxLine {
			return backendMaxLine + 1, true // too long either way
		}
	}
	return n, true
}

// isOK reports whether the response starts with "OK" and a space or its end, as
// Dovecot tests a line (strncasecmp(line, "OK", 2)).
func isOK(resp []byte) bool {
	line := trimEOL(resp)
	return len(line) >= 2 && wire.EqualUpper(line[:2], "OK") && (len(line) == 2 || line[2] == ' ')
}

// trimEOL drops the LF that ends a response, and the CR before it.
func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	return wire.TrimCR(b)
}

// appendAtom appends an XCLIENT value. Dovecot writes it as it is; a byte that can't
// be in an atom (a space or line break above all, which would smuggle in more
// arguments or commands) becomes '?' here.
func appendAtom(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if atomCharError(c) != nil {
			c = '?'
		}
		dst = append(dst, c)
	}
	return dst
}

// appendTabEscaped appends s escaped as Dovecot's str_append_tabescaped does: NUL, 0x01,
// TAB, CR and LF become 0x01 followed by '0', '1', 't', 'r', 'n'.
func appendTabEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0:
			dst = append(dst, 1, '0')
		case 1:
			dst = append(dst, 1, '1')
		case '\t':
			dst = append(dst, 1, 't')
		case '\r':
			dst = append(dst, 1, 'r')
		case '\n':
			dst = append(dst, 1, 'n')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
