package pop3

import (
	"bytes"
	"strconv"

	"doorman/codec/internal/wire"
	"doorman/codec/login"
	"doorman/codec/sasl"
)

// The ID key names an XCLIENT field is reported under (login.SessionInfo.Trusted).
const (
	idKeyAddr    = "x-originating-ip"
	idKeyPort    = "x-originating-port"
	idKeySession = "x-session-id"
	idKeyTTL     = "x-proxy-ttl"
	idKeyForward = "x-forward-"
)

// xclientMaxSessionID is LOGIN_MAX_SESSION_ID_LEN: a longer SESSION is ignored, as
// Dovecot ignores it (no error).
const xclientMaxSessionID = 64

// cmdXCLIENT is Dovecot 2.3.21's cmd_xclient (src/pop3-login/client.c). xoip: the
// command was XOIP, which Dovecot runs as XCLIENT with "ADDR=" put before its
// arguments. A trusted client's fields are checked; if all are good the client gets
// "+OK Updated" and the engine one ActID with the fields under ID's key names, else
// "-ERR Invalid parameters" and nothing is reported. Unknown fields are ignored, a later
// field overrides an earlier one of the same name.
func (s *Session) cmdXCLIENT(args []byte, xoip bool) {
	if !s.info.Trusted {
		s.out.B = append(s.out.B, txtXCLIENTIgnored...)
		return
	}
	var (
		addr, port, session, ttl string
		hasAddr, hasPort         bool
		hasSession, hasTTL       bool
		forward                  []byte
		hasForward               bool
		ok                       = true
	)
	first := true
	for len(args) > 0 || first {
		var tok []byte
		if i := bytes.IndexByte(args, ' '); i >= 0 {
			tok, args = args[:i], args[i+1:]
		} else {
			tok, args = args, nil
		}
		isAddr := first && xoip
		first = false
		key, value, found := bytes.Cut(tok, []byte{'='})
		if !isAddr {
			if !found {
				continue
			}
			isAddr = wire.EqualUpper(key, "ADDR")
		} else {
			value = tok
		}
		switch {
		case isAddr:
			if a, good := parseIP(value); good {
				addr, hasAddr = a, true
			} else {
				ok = false
			}
		case wire.EqualUpper(key, "PORT"):
			if n, good := parseUint(value, 65535); good && n != 0 {
				port, hasPort = strconv.FormatUint(n, 10), true
			} else {
				ok = false
			}
		case wire.EqualUpper(key, "SESSION"):
			if len(value) <= xclientMaxSessionID {
				session, hasSession = string(value), true
			}
		case wire.EqualUpper(key, "TTL"):
			if n, good := parseUint(value, 1<<32-1); good {
				ttl, hasTTL = strconv.FormatUint(n, 10), true
			} else {
				ok = false
			}
		case wire.EqualUpper(key, "FORWARD"):
			dec, err := sasl.AppendDecode(forward[:0], value)
			if err != nil {
				ok = false
			} else {
				forward, hasForward = dec, true
			}
		}
	}
	if !ok {
		clear(forward)
		s.out.B = append(s.out.B, txtXCLIENTInvalid...)
		return
	}
	s.out.B = append(s.out.B, txtXCLIENTUpdated...)
	// A new slice each time: two XCLIENTs in one Feed give two ActIDs.
	var params []login.IDParam
	if hasAddr {
		params = append(params, login.IDParam{Key: idKeyAddr, Value: addr})
	}
	if hasPort {
		params = append(params, login.IDParam{Key: idKeyPort, Value: port})
	}
	if hasSession {
		params = append(params, login.IDParam{Key: idKeySession, Value: session})
	}
	if hasTTL {
		params = append(params, login.IDParam{Key: idKeyTTL, Value: ttl})
	}
	if hasForward {
		params = appendForward(params, forward)
		clear(forward)
	}
	if len(params) > 0 {
		s.out.Emit(login.Action{Kind: login.ActID, IDParams: params})
	}
}

// appendForward adds the forward fields: Dovecot keeps the decoded FORWARD as a C string
// (cut at a NUL) of tab-separated, tab-escaped key=value pairs, which the auth process
// imports as forward_<key>. A field without "=" isn't a forward field, and one with an
// empty key has no name: both are left out.
func appendForward(params []login.IDParam, b []byte) []login.IDParam {
	b = srvCString(b)
	if len(b) == 0 {
		return params
	}
	for field := range bytes.SplitSeq(b, []byte{'\t'}) {
		f := tabUnescape(field)
		k, v, found := bytes.Cut(f, []byte{'='})
		if !found || len(k) == 0 {
			continue
		}
		params = append(params, login.IDParam{Key: idKeyForward + string(k), Value: string(v)})
	}
	return params
}

// tabUnescape is Dovecot's str_tabunescape: \001 escapes the byte after it ("0" NUL,
// "1" \001, "t" HT, "r" CR, "n" LF, any other itself).
func tabUnescape(b []byte) []byte {
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

// parseUint is Dovecot's str_to_uintmax with a bound: one or more decimal digits and
// nothing else, at most max.
func parseUint(b []byte, max uint64) (uint64, bool) {
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

// parseIP is Dovecot's net_addr2ip: IPv4 as inet_aton reads it (a single number, and
// octal and hex parts, are allowed), or, if there is a ':', IPv6 as inet_pton reads it,
// perhaps in brackets. It returns the address as net_ip2addr (inet_ntop) writes it.
func parseIP(b []byte) (string, bool) {
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
	v, ok := parseInetAton(b)
	if !ok {
		return "", false
	}
	return formatIPv4(nil, [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

func formatIPv4(dst []byte, a [4]byte) string {
	for i, p := range a {
		if i > 0 {
			dst = append(dst, '.')
		}
		dst = strconv.AppendUint(dst, uint64(p), 10)
	}
	return string(dst)
}

// parseInetAton is glibc's inet_aton: up to four parts, each decimal, octal (0...) or
// hex (0x...); the last fills the bytes left. Whitespace may end the address, and then
// anything may follow.
func parseInetAton(b []byte) (uint32, bool) {
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

// formatIPv6 is glibc's inet_ntop6: the longest run of two or more zero groups (the
// first if tied) becomes "::", and an IPv4-compatible or -mapped address ends in
// dotted IPv4.
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
		if i == 6 && best == 0 && (bestLen == 6 || (bestLen == 7 && w[7] != 1) || (bestLen == 5 && w[5] == 0xffff)) {
			return formatIPv4(out, [4]byte{ip[12], ip[13], ip[14], ip[15]})
		}
		out = strconv.AppendUint(out, uint64(w[i]), 16)
	}
	if best >= 0 && best+bestLen == 8 {
		out = append(out, ':')
	}
	return string(out)
}
