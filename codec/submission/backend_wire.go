package submission

import (
	"bytes"
	"encoding/base64"

	"doorman/codec/internal/wire"
)

// backendReplyStatus reads an SMTP reply line's status as submission_proxy_parse_line
// does: valid is three digits, then SP (the last line) or "-" (more follow), and a
// status from 200 to 559. For an invalid line, status is what Dovecot's str_parse_uint
// made of it (0 if the fourth byte isn't a separator), which matters only for the check
// that a multi-line reply keeps its status.
func backendReplyStatus(line []byte) (status int, valid bool) {
	if len(line) < 4 || line[3] != ' ' && line[3] != '-' {
		return 0, false
	}
	i := 0
	for i < 3 && '0' <= line[i] && line[i] <= '9' {
		status = status*10 + int(line[i]-'0')
		i++
	}
	return status, i == 3 && status >= 200 && status < 560
}

// backendStripEnhanced drops an enhanced status code ("2.7.0 ") from the start of a
// reply text, as Dovecot's strip_enhanced_code does once the backend has advertised
// ENHANCEDSTATUSCODES: a class digit 2, 4 or 5, then up to three digits twice, each
// after a dot, then a space.
func backendStripEnhanced(text []byte) []byte {
	if len(text) < 2 || text[0] != '2' && text[0] != '4' && text[0] != '5' || text[1] != '.' {
		return text
	}
	i := 2
	for part := 0; part < 2; part++ {
		for n := 0; n < 3 && i < len(text) && '0' <= text[i] && text[i] <= '9'; n++ {
			i++
		}
		sep := byte('.')
		if part == 1 {
			sep = ' '
		}
		if i >= len(text) || text[i] != sep {
			return text
		}
		i++
	}
	return text[i:]
}

// backendListHas reports whether the space-separated list holds word, ignoring case.
func backendListHas(list []byte, word string) bool {
	for len(list) > 0 {
		var w []byte
		if i := bytes.IndexByte(list, ' '); i >= 0 {
			w, list = list[:i], list[i+1:]
		} else {
			w, list = list, nil
		}
		if backendEqualFold(w, word) {
			return true
		}
	}
	return false
}

// backendAppendXtext appends v as RFC 3461 xtext: "!" to "~" as they are but for "+"
// and "=", everything else as "+XX".
func backendAppendXtext(dst, v []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range v {
		if '!' <= c && c <= '~' && c != '+' && c != '=' {
			dst = append(dst, c)
		} else {
			dst = append(dst, '+', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// backendBase64 reports whether a 334 text is base64 (blanks ignored, as Dovecot's
// decoder ignores them).
func backendBase64(text []byte) bool {
	if bytes.ContainsAny(text, " \t") {
		text = bytes.ReplaceAll(bytes.ReplaceAll(text, []byte{' '}, nil), []byte{'\t'}, nil)
	}
	_, err := base64.StdEncoding.DecodeString(string(text))
	return err == nil
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

// backendSanitize is Dovecot's str_sanitize(s, max) for log texts.
func backendSanitize(b []byte, max int) string { return wire.Sanitize(b, max) }
