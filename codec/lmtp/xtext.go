package lmtp

import "errors"

// xtext (RFC 3461 §4): printable ASCII other than "+" and "=" stands for itself, every
// other byte is "+" and two upper-case hex digits. Dovecot writes XCLIENT values, ORCPT
// addresses and the XRCPTFORWARD list this way (lib-smtp smtp_xtext_encode).

const hexUpper = "0123456789ABCDEF"

func xtextPlain(c byte) bool { return c >= 33 && c <= 126 && c != '+' && c != '=' }

// AppendXtext appends the xtext encoding of s to dst.
func AppendXtext(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if xtextPlain(c) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '+', hexUpper[c>>4], hexUpper[c&15])
	}
	return dst
}

// Xtext returns the xtext encoding of s.
func Xtext(s string) string { return string(AppendXtext(nil, s)) }

// DecodeXtext decodes an xtext value. Like Dovecot (smtp_parser_parse_xtext) it accepts
// lower-case hex digits too; a "+" without two hex digits after it, or a byte that xtext
// cannot hold (space, "=", controls, 8-bit), is an error.
func DecodeXtext(s string) (string, error) {
	v, why := decodeXtext(s)
	if why != "" {
		return "", errors.New("lmtp: " + why)
	}
	return v, nil
}

// decodeXtext returns the decoded value, or Dovecot's reason text for the failure.
func decodeXtext(s string) (string, string) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) {
				return "", "Invalid hexchar after '+' in xtext"
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", "Invalid hexchar after '+' in xtext"
			}
			out = append(out, hi<<4|lo)
			i += 2
		case xtextPlain(c):
			out = append(out, c)
		default:
			return "", "Invalid character in xtext"
		}
	}
	return string(out), ""
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// AppendTabEscaped appends s escaped as Dovecot's str_append_tabescaped does, so a
// tab-separated list survives values holding tabs or line breaks: \001 → \0011,
// \t → \001t, \r → \001r, \n → \001n.
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
