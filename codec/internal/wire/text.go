package wire

import "unicode/utf8"

// TrimCR drops one trailing CR.
func TrimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// AppendText appends configured or passed-in text, with control characters (which
// would break the line) turned into spaces.
func AppendText(dst []byte, t string) []byte {
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c < ' ' || c == 0x7f {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

// EqualUpper compares b with the upper-case ASCII word w, ignoring b's case.
func EqualUpper(b []byte, w string) bool {
	if len(b) != len(w) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != w[i] {
			return false
		}
	}
	return true
}

// AppendUnescaped appends the body of a quoted string, b, to dst: if escaped, each
// backslash is dropped and the byte after it kept as it is.
func AppendUnescaped(dst, b []byte, escaped bool) []byte {
	if !escaped {
		return append(dst, b...)
	}
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			i++
		}
		dst = append(dst, b[i])
	}
	return dst
}

// UnescapedLen is the length AppendUnescaped would append.
func UnescapedLen(b []byte, escaped bool) int {
	if !escaped {
		return len(b)
	}
	n := 0
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			i++
		}
		n++
	}
	return n
}

// Sanitize is Dovecot's str_sanitize(s, max) for log texts: control bytes and invalid
// UTF-8 become '?', and a text over max bytes is cut (on a rune boundary) and ends in
// "...".
func Sanitize(b []byte, max int) string {
	out := make([]byte, 0, min(len(b), max+3))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if len(out)+n > max {
			// Make room for the ellipsis the way Dovecot does: drop whole runes.
			for len(out) > max-3 {
				_, m := utf8.DecodeLastRune(out)
				out = out[:len(out)-m]
			}
			return string(append(out, "..."...))
		}
		switch {
		case r == utf8.RuneError && n == 1, b[0] < 0x20, b[0] == 0x7f:
			out = append(out, '?')
			n = 1
		default:
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return string(out)
}

// AppendTabEscaped is Dovecot's str_append_tabescaped: \001, TAB, CR and LF become \001
// followed by '1', 't', 'r' or 'n'. (A NUL, which can't be in Dovecot's C string, is
// appended as it is.)
func AppendTabEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
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
