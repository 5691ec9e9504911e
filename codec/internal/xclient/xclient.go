// Package xclient holds what the login codecs' trusted-client XCLIENT commands share:
// Dovecot's net_addr2ip (inet_aton for IPv4, inet_pton for IPv6, perhaps in brackets),
// str_to_uint with a bound, and the FORWARD field's decoding (base64 of tab-separated,
// tab-escaped key=value pairs). Each protocol keeps its own keywords and error texts.
package xclient

import (
	"bytes"
	"strconv"

	"doorman/codec/login"
	"doorman/codec/sasl"
)

// ForwardPrefix is the ID key prefix a forwarded field is reported under.
const ForwardPrefix = "x-forward-"

// DecodeForward decodes FORWARD's base64 value (as sasl.AppendDecode reads it) and
// appends its fields to params as x-forward-<key> pairs (see AppendForward). scratch
// is reused for the decoding and returned for reuse; it is cleared after use. On bad
// base64 it returns params unchanged and false.
func DecodeForward(params []login.IDParam, scratch, v []byte) ([]login.IDParam, []byte, bool) {
	dec, err := sasl.AppendDecode(scratch[:0], v)
	if err != nil {
		clear(dec)
		return params, dec[:0], false
	}
	params = AppendForward(params, dec)
	clear(dec)
	return params, dec[:0], true
}

// ValidForward reports whether v is a FORWARD value DecodeForward takes, using scratch
// (returned for reuse) for the decoding.
func ValidForward(scratch, v []byte) ([]byte, bool) {
	dec, err := sasl.AppendDecode(scratch[:0], v)
	clear(dec)
	return dec[:0], err == nil
}

// AppendForward adds the forward fields of b, FORWARD's decoded value: Dovecot keeps it
// as a C string (cut at a NUL) of tab-separated, tab-escaped key=value pairs, which the
// auth process imports as forward_<key>. A field without "=" isn't a forward field, and
// one with an empty key has no name: both are left out.
func AppendForward(params []login.IDParam, b []byte) []login.IDParam {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return params
	}
	for field := range bytes.SplitSeq(b, []byte{'\t'}) {
		f := TabUnescape(field)
		k, v, found := bytes.Cut(f, []byte{'='})
		if !found || len(k) == 0 {
			continue
		}
		params = append(params, login.IDParam{Key: ForwardPrefix + string(k), Value: string(v)})
	}
	return params
}

// TabUnescape is Dovecot's str_tabunescape: \001 escapes the byte after it ("0" NUL,
// "1" \001, "t" HT, "r" CR, "n" LF, any other itself).
func TabUnescape(b []byte) []byte {
	i := bytes.IndexByte(b, 1)
	if i < 0 {
		return b
	}
	out := append([]byte(nil), b[:i]...)
	for ; i < len(b); i++ {
		c := b[i]
		if c != 1 {
			out = append(out, c)
			continue
		}
		if i+1 == len(b) {
			break
		}
		i++
		switch b[i] {
		case '0':
			c = 0
		case '1':
			c = 1
		case 't':
			c = '\t'
		case 'r':
			c = '\r'
		case 'n':
			c = '\n'
		default:
			c = b[i]
		}
		out = append(out, c)
	}
	return out
}

// ParseUint is Dovecot's str_to_uintmax with a bound: one or more decimal digits and
// nothing else, at most max.
func ParseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// ParseAddr is Dovecot's net_addr2ip: IPv4 as inet_aton reads it (a single number, and
// octal and hex parts, are allowed), or, if there is a ':', IPv6 as inet_pton reads it,
// perhaps in brackets. It returns the address in one form for every codec: IPv4 as a
// dotted quad, IPv6 as net/netip's Addr.String writes it (RFC 5952: lower case, the
// longest run of two or more zero groups, the first if tied, as "::"; an IPv4-mapped
// address ends in dotted IPv4).
func ParseAddr(b []byte) (string, bool) {
	if bytes.IndexByte(b, ':') >= 0 {
		if len(b) > 0 && b[0] == '[' && b[len(b)-1] == ']' {
			b = b[1 : len(b)-1]
		}
		ip, ok := parseIPv6(b)
		if !ok {
			return "", false
		}
		return formatIPv6(ip), true
	}
	v, ok := inetAton(b)
	if !ok {
		return "", false
	}
	return appendIPv4(nil, [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func appendIPv4(dst []byte, a [4]byte) string {
	for i, p := range a {
		if i > 0 {
			dst = append(dst, '.')
		}
		dst = strconv.AppendUint(dst, uint64(p), 10)
	}
	return string(dst)
}

// inetAton is glibc's inet_aton: up to four parts, each decimal, octal (0...) or
// hex (0x...); the last fills the bytes left. Whitespace may end the address, and then
// anything may follow.
func inetAton(b []byte) (uint32, bool) {
	var parts [3]uint64
	np := 0
	i := 0
	at := func(i int) byte {
		if i < len(b) {
			return b[i]
		}
		return 0
	}
	var val uint64
	digit := false
	for {
		c := at(i)
		if c < '0' || c > '9' {
			return 0, false
		}
		val, digit = 0, false
		base := uint64(10)
		if c == '0' {
			i++
			c = at(i)
			if c == 'x' || c == 'X' {
				base = 16
				i++
				c = at(i)
			} else {
				base, digit = 8, true
			}
		}
		for {
			var d uint64
			switch {
			case '0' <= c && c <= '9':
				if base == 8 && c >= '8' {
					return 0, false
				}
				d = uint64(c - '0')
			case base == 16 && 'a' <= c && c <= 'f':
				d = uint64(c-'a') + 10
			case base == 16 && 'A' <= c && c <= 'F':
				d = uint64(c-'A') + 10
			default:
				goto partDone
			}
			val = val*base + d
			if val > 0xffffffff {
				return 0, false
			}
			digit = true
			i++
			c = at(i)
		}
	partDone:
		if c != '.' {
			break
		}
		if np > 2 || val > 0xff {
			return 0, false
		}
		parts[np] = val
		np++
		i++
	}
	if i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\v', '\f', '\r':
		default:
			return 0, false
		}
	}
	if !digit {
		return 0, false
	}
	limits := [4]uint64{0xffffffff, 0xffffff, 0xffff, 0xff}
	if val > limits[np] {
		return 0, false
	}
	for k := 0; k < np; k++ {
		val |= parts[k] << (24 - 8*k)
	}
	return uint32(val), true
}

// parseIPv6 is glibc's inet_pton6.
func parseIPv6(b []byte) ([16]byte, bool) {
	var ip [16]byte
	tp, colonp := 0, -1
	i := 0
	if len(b) > 0 && b[0] == ':' {
		if len(b) < 2 || b[1] != ':' {
			return ip, false
		}
		i++
	}
	curtok := i
	sawXdigit := false
	val := 0
	digits := 0
	for i < len(b) {
		c := b[i]
		i++
		var d int
		switch {
		case '0' <= c && c <= '9':
			d = int(c - '0')
		case 'a' <= c && c <= 'f':
			d = int(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = int(c-'A') + 10
		default:
			d = -1
		}
		if d >= 0 {
			if digits >= 4 {
				return ip, false
			}
			val = val<<4 | d
			digits++
			sawXdigit = true
			continue
		}
		if c == ':' {
			curtok = i
			if !sawXdigit {
				if colonp >= 0 {
					return ip, false
				}
				colonp = tp
				continue
			}
			if i == len(b) {
				return ip, false
			}
			if tp+2 > 16 {
				return ip, false
			}
			ip[tp], ip[tp+1] = byte(val>>8), byte(val)
			tp += 2
			sawXdigit, val, digits = false, 0, 0
			continue
		}
		if c == '.' && tp+4 <= 16 {
			v4, ok := parseInetPton4(b[curtok:])
			if !ok {
				return ip, false
			}
			copy(ip[tp:], v4[:])
			tp += 4
			sawXdigit = false
			break
		}
		return ip, false
	}
	if sawXdigit {
		if tp+2 > 16 {
			return ip, false
		}
		ip[tp], ip[tp+1] = byte(val>>8), byte(val)
		tp += 2
	}
	if colonp >= 0 {
		if tp == 16 {
			return ip, false
		}
		n := tp - colonp
		copy(ip[16-n:], ip[colonp:tp])
		clear(ip[colonp : 16-n])
		tp = 16
	}
	if tp != 16 {
		return ip, false
	}
	return ip, true
}

// parseInetPton4 is glibc's inet_pton4: exactly four decimal parts, no leading zeros.
func parseInetPton4(b []byte) ([4]byte, bool) {
	var a [4]byte
	octets, sawDigit := 0, false
	var cur uint
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			if sawDigit && cur == 0 {
				return a, false
			}
			cur = cur*10 + uint(c-'0')
			if cur > 255 {
				return a, false
			}
			if !sawDigit {
				octets++
				if octets > 4 {
					return a, false
				}
				sawDigit = true
			}
		case c == '.' && sawDigit:
			if octets == 4 {
				return a, false
			}
			a[octets-1] = byte(cur)
			cur, sawDigit = 0, false
		default:
			return a, false
		}
	}
	if octets < 4 || !sawDigit {
		return a, false
	}
	a[3] = byte(cur)
	return a, true
}

// formatIPv6 writes ip as netip.Addr.String does: the longest run of two or more zero
// groups (the first if tied) becomes "::", and an IPv4-mapped address ends in dotted
// IPv4. (glibc's inet_ntop would also write an IPv4-compatible ::a.b.c.d in dotted form.)
func formatIPv6(ip [16]byte) string {
	var w [8]int
	for i := range w {
		w[i] = int(ip[2*i])<<8 | int(ip[2*i+1])
	}
	best, bestLen, cur, curLen := -1, 0, -1, 0
	for i := 0; i < 8; i++ {
		if w[i] == 0 {
			if cur < 0 {
				cur, curLen = i, 1
			} else {
				curLen++
			}
			continue
		}
		if cur >= 0 && (best < 0 || curLen > bestLen) {
			best, bestLen = cur, curLen
		}
		cur = -1
	}
	if cur >= 0 && (best < 0 || curLen > bestLen) {
		best, bestLen = cur, curLen
	}
	if best >= 0 && bestLen < 2 {
		best = -1
	}
	var out []byte
	for i := 0; i < 8; i++ {
		if best >= 0 && i >= best && i < best+bestLen {
			if i == best {
				out = append(out, ':')
			}
			continue
		}
		if i != 0 {
			out = append(out, ':')
		}
		if i == 6 && best == 0 && bestLen == 5 && w[5] == 0xffff {
			return appendIPv4(out, [4]byte{ip[12], ip[13], ip[14], ip[15]})
		}
		out = strconv.AppendUint(out, uint64(w[i]), 16)
	}
	if best >= 0 && best+bestLen == 8 {
		out = append(out, ':')
	}
	return string(out)
}
