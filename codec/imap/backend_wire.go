package imap

import (
	"bytes"
	"strconv"

	"doorman/codec/internal/wire"
)

// backendMaxQuotedEscapes is Dovecot's QUOTED_MAX_ESCAPE_CHARS: a string with more
// quoted-specials than this goes as a literal, which is then no longer than the quoted
// form for typical lengths.
const backendMaxQuotedEscapes = 4

// AppendString appends s to dst as an IMAP string, choosing as Dovecot's
// imap_append_string() does: a quoted string, with `"` and `\` escaped, unless s holds
// CR, LF, NUL or a byte >= 0x80, or more than 4 quoted-specials; then a synchronizing
// literal `{n}\r\n` followed by s. The caller must wait for the peer's `+` after the
// `{n}\r\n` before it sends s (BackendLogin does, or uses `{n+}` if the backend has
// LITERAL+).
func AppendString(dst []byte, s string) []byte {
	if backendQuotable(s) {
		return backendAppendQuoted(dst, s)
	}
	dst = backendAppendLiteralHeader(dst, len(s), false)
	return append(dst, s...)
}

// backendQuotable reports whether s may be written as a quoted string.
func backendQuotable(s string) bool {
	escapes := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			escapes++
			if escapes > backendMaxQuotedEscapes {
				return false
			}
		case c == '\r' || c == '\n' || c == 0 || c >= 0x80:
			return false
		}
	}
	return true
}

func backendAppendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}

// backendAppendLiteralHeader appends `{n}\r\n`, or `{n+}\r\n` if nonSync.
func backendAppendLiteralHeader(dst []byte, n int, nonSync bool) []byte {
	dst = append(dst, '{')
	dst = strconv.AppendInt(dst, int64(n), 10)
	if nonSync {
		dst = append(dst, '+')
	}
	return append(dst, "}\r\n"...)
}

// backendCaps is what the proxy cares about in a capability list.
type backendCaps struct {
	id, saslIR, loginDisabled, literalPlus, literalMinus, startTLS bool
}

func backendParseCaps(list []byte) (c backendCaps) {
	for len(list) > 0 {
		var word []byte
		if i := bytes.IndexByte(list, ' '); i >= 0 {
			word, list = list[:i], list[i+1:]
		} else {
			word, list = list, nil
		}
		switch {
		case backendEqualFold(word, "ID"):
			c.id = true
		case backendEqualFold(word, "SASL-IR"):
			c.saslIR = true
		case backendEqualFold(word, "LOGINDISABLED"):
			c.loginDisabled = true
		case backendEqualFold(word, "LITERAL+"):
			c.literalPlus = true
		case backendEqualFold(word, "LITERAL-"):
			c.literalMinus = true
		case backendEqualFold(word, "STARTTLS"):
			c.startTLS = true
		}
	}
	return c
}

// backendEqualFold is bytes.EqualFold for ASCII against a string, without converting.
func backendEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// backendCutPrefix is bytes.CutPrefix ignoring ASCII case.
func backendCutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || !backendEqualFold(b[:len(prefix)], prefix) {
		return b, false
	}
	return b[len(prefix):], true
}

// backendStatus reports whether b starts with the word (OK, NO, ...) followed by a space
// or the end, and returns what follows the space.
func backendStatus(b []byte, word string) ([]byte, bool) {
	rest, ok := backendCutPrefix(b, word)
	if !ok {
		return b, false
	}
	if len(rest) == 0 {
		return rest, true
	}
	if rest[0] != ' ' {
		return b, false
	}
	return rest[1:], true
}

// backendHasTag reports whether line is tagged with the one-letter tag.
func backendHasTag(line []byte, tag byte) bool {
	return len(line) >= 2 && line[0] == tag && line[1] == ' '
}

// backendUntagged reports whether line is `* <word>` followed by a space or the end.
func backendUntagged(line []byte, word string) bool {
	if !backendHasTag(line, '*') {
		return false
	}
	_, ok := backendStatus(line[2:], word)
	return ok
}

// backendAfterWord returns what follows the first word of b and one space.
func backendAfterWord(b []byte) []byte {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[i+1:]
	}
	return nil
}

// backendSanitize is Dovecot's str_sanitize(s, 160) for log texts.
func backendSanitize(b []byte) string { return wire.Sanitize(b, 160) }
