package managesieve

import (
	"encoding/base64"
	"strconv"

	"doorman/codec/internal/wire"
	"doorman/codec/login"
)

// XCLIENT from a trusted client (login_trusted_networks), as Pigeonhole 0.5.21's
// cmd_xclient (src/managesieve-login/client.c) takes it: atoms ADDR=, PORT=, SESSION=,
// TTL= and FORWARD= (base64 of tab-separated, tab-escaped name=value pairs), in any
// number and order, the last good one of each counting; other atoms are ignored. A
// value Dovecot refuses (ADDR not an address, PORT not 1-65535, TTL not an unsigned
// int, FORWARD not base64), or an argument that isn't an atom, makes it an invalid
// command ("Error in MANAGESIEVE command received by server.", counted). A SESSION
// longer than 64 bytes is ignored. Otherwise the answer is `OK "Updated"`, after an
// ActID that reports the values in IMAP ID's key names.
//
// Where Doorman differs: Dovecot keeps the values it took before it met a bad one even
// though it answers with the error; here a refused XCLIENT changes nothing (no ActID).

// maxSessionID is LOGIN_MAX_SESSION_ID_LEN.
const maxSessionID = 64

// span is a value's place in the command.
type span struct {
	start, end int
	set        bool
}

// xclientArgs is what a trusted client's XCLIENT has said so far.
type xclientArgs struct {
	stop                              bool // an argument that isn't an atom: refused
	bad                               bool // a value Dovecot refuses
	addr, port, session, ttl, forward span
}

// xclientArg takes one argument of a trusted client's XCLIENT.
func (s *Session) xclientArg(t token, cmd []byte) {
	x := &s.xc
	if x.stop {
		return
	}
	if t.kind != tokAtom {
		x.stop = true
		return
	}
	a := cmd[t.start:t.end]
	key := func(name string) (span, bool) {
		if len(a) < len(name) || !wire.EqualUpper(a[:len(name)], name) {
			return span{}, false
		}
		return span{start: t.start + len(name), end: t.end, set: true}, true
	}
	if v, ok := key("ADDR="); ok {
		if _, good := xclientAddr(cmd[v.start:v.end]); good {
			x.addr = v
		} else {
			x.bad = true
		}
	} else if v, ok := key("FORWARD="); ok {
		if _, err := base64.StdEncoding.Decode(s.xclientScratch(cmd[v.start:v.end]), cmd[v.start:v.end]); err == nil {
			x.forward = v
		} else {
			x.bad = true
		}
	} else if v, ok := key("PORT="); ok {
		if n, good := parseUint(cmd[v.start:v.end], 65535); good && n > 0 {
			x.port = v
		} else {
			x.bad = true
		}
	} else if v, ok := key("SESSION="); ok {
		if v.end-v.start <= maxSessionID {
			x.session = v
		}
	} else if v, ok := key("TTL="); ok {
		if _, good := parseUint(cmd[v.start:v.end], 1<<32-1); good {
			x.ttl = v
		} else {
			x.bad = true
		}
	}
}

// xclientScratch returns s.scratch with room for src decoded from base64.
func (s *Session) xclientScratch(src []byte) []byte {
	n := base64.StdEncoding.DecodedLen(len(src))
	if cap(s.scratch) < n {
		s.scratch = make([]byte, n)
	}
	return s.scratch[:n]
}

// xclient answers a complete XCLIENT (cmd, its LF included) from a trusted client.
func (s *Session) xclient(cmd []byte) {
	x := &s.xc
	if x.stop || x.bad {
		s.badCommand()
		return
	}
	// Keys and values go into one buffer, turned into one string: ends holds where each
	// key and each value ends.
	buf := s.idBuf[:0]
	ends := s.idEnds[:0]
	pair := func(k string, v []byte) {
		buf = append(buf, k...)
		ends = append(ends, len(buf))
		buf = append(buf, v...)
		ends = append(ends, len(buf))
	}
	if x.addr.set {
		ip, _ := xclientAddr(cmd[x.addr.start:x.addr.end])
		pair("x-originating-ip", ip)
	}
	if x.port.set {
		n, _ := parseUint(cmd[x.port.start:x.port.end], 65535)
		pair("x-originating-port", strconv.AppendUint(s.scratch[:0], n, 10))
	}
	if x.session.set {
		pair("x-session-id", cmd[x.session.start:x.session.end])
	}
	if x.ttl.set {
		n, _ := parseUint(cmd[x.ttl.start:x.ttl.end], 1<<32-1)
		pair("x-proxy-ttl", strconv.AppendUint(s.scratch[:0], n, 10))
	}
	if x.forward.set {
		src := cmd[x.forward.start:x.forward.end]
		dec := s.xclientScratch(src)
		n, _ := base64.StdEncoding.Decode(dec, src)
		dec = dec[:n]
		for len(dec) > 0 {
			field := dec
			if i := indexByte(dec, '\t'); i >= 0 {
				field, dec = dec[:i], dec[i+1:]
			} else {
				dec = nil
			}
			if len(field) == 0 {
				continue
			}
			// auth_fields_import_prefixed: name=value, tab-unescaped; no "=": an empty value.
			buf = append(buf, "x-forward-"...)
			eq := false
			for i := 0; i < len(field); i++ {
				c := field[i]
				if c == '=' && !eq {
					eq = true
					ends = append(ends, len(buf))
					continue
				}
				if c == '\001' {
					if i+1 == len(field) {
						break
					}
					i++
					switch c = field[i]; c {
					case '0':
						c = 0
					case '1':
						c = '\001'
					case 't':
						c = '\t'
					case 'r':
						c = '\r'
					case 'n':
						c = '\n'
					}
				}
				buf = append(buf, c)
			}
			if !eq {
				ends = append(ends, len(buf))
			}
			ends = append(ends, len(buf))
		}
	}
	s.idBuf, s.idEnds = buf, ends
	if len(ends) > 0 {
		// Several XCLIENTs can come in one Feed: each ActID gets its own part of
		// idParams, which Feed empties at its start.
		all := string(buf)
		first := len(s.idParams)
		start := 0
		for i := 0; i+1 < len(ends); i += 2 {
			k, v := ends[i], ends[i+1]
			s.idParams = append(s.idParams, login.IDParam{Key: all[start:k], Value: all[k:v]})
			start = v
		}
		n := len(s.idParams)
		s.out.Emit(login.Action{Kind: login.ActID, IDParams: s.idParams[first:n:n]})
	}
	s.out.B = append(s.out.B, txtXclientOK...)
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// parseUint reads a decimal number of at most max as Dovecot's str_to_uint and
// str_to_uintmax do: digits only, at least one.
func parseUint(b []byte, max uint64) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}

// xclientAddr checks an ADDR= value as Dovecot's net_addr2ip does (IPv6, also in
// brackets, as inet_pton takes it; IPv4 as inet_aton takes it, "127.1" and "0x7f.1"
// included) and returns it as the engine parses it: IPv6 as it came without the
// brackets, IPv4 in dotted-quad form.
func xclientAddr(a []byte) ([]byte, bool) {
	if indexByte(a, ':') >= 0 {
		if len(a) >= 2 && a[0] == '[' && a[len(a)-1] == ']' {
			a = a[1 : len(a)-1]
		}
		if !validIPv6(a) {
			return nil, false
		}
		return a, true
	}
	v, ok := inetAton(a)
	if !ok {
		return nil, false
	}
	var out []byte
	for i := 3; i >= 0; i-- {
		out = strconv.AppendUint(out, uint64(v>>(8*i)&0xff), 10)
		if i > 0 {
			out = append(out, '.')
		}
	}
	return out, true
}

// inetAton is glibc's inet_aton for a string without white space: one to four numbers
// (decimal, octal with a leading 0, hex with 0x), the last filling the bytes left.
func inetAton(a []byte) (uint32, bool) {
	var parts [4]uint64
	np := 0
	i := 0
	for {
		if i >= len(a) || a[i] < '0' || a[i] > '9' {
			return 0, false
		}
		base := uint64(10)
		if a[i] == '0' {
			base = 8
			i++
			if i < len(a) && (a[i] == 'x' || a[i] == 'X') {
				base = 16
				i++
			}
		}
		var v uint64
		for ; i < len(a); i++ {
			c := a[i]
			var d uint64
			switch {
			case '0' <= c && c <= '9':
				d = uint64(c - '0')
				if base == 8 && d >= 8 {
					return 0, false
				}
			case base == 16 && 'a' <= c && c <= 'f':
				d = uint64(c-'a') + 10
			case base == 16 && 'A' <= c && c <= 'F':
				d = uint64(c-'A') + 10
			default:
				goto end
			}
			v = v*base + d
			if v > 0xffffffff {
				return 0, false
			}
		}
	end:
		if i < len(a) && a[i] == '.' {
			if np >= 3 {
				return 0, false
			}
			parts[np] = v
			np++
			i++
			continue
		}
		if i < len(a) {
			return 0, false
		}
		parts[np] = v
		np++
		break
	}
	for j := 0; j < np-1; j++ {
		if parts[j] > 0xff {
			return 0, false
		}
	}
	last := parts[np-1]
	if last > uint64(0xffffffff)>>(8*(np-1)) {
		return 0, false
	}
	var v uint64
	for j := 0; j < np-1; j++ {
		v |= parts[j] << (8 * (3 - j))
	}
	return uint32(v | last), true
}

// validIPv6 is glibc's inet_pton for AF_INET6.
func validIPv6(a []byte) bool {
	i := 0
	if len(a) > 0 && a[0] == ':' {
		if len(a) < 2 || a[1] != ':' {
			return false
		}
		i = 1
	}
	groups, ndig := 0, 0
	dbl := false
	curtok := i
	for i < len(a) {
		c := a[i]
		i++
		switch {
		case '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F':
			if ndig == 4 {
				return false
			}
			ndig++
		case c == ':':
			curtok = i
			if ndig == 0 {
				if dbl {
					return false
				}
				dbl = true
				continue
			}
			if i == len(a) {
				return false
			}
			if groups++; groups > 8 {
				return false
			}
			ndig = 0
		case c == '.' && groups <= 6 && validIPv4Strict(a[curtok:]):
			groups += 2
			ndig = 0
			i = len(a)
		default:
			return false
		}
	}
	if ndig > 0 {
		groups++
	}
	if groups > 8 {
		return false
	}
	if dbl {
		return groups < 8
	}
	return groups == 8
}

// validIPv4Strict is glibc's inet_pton for AF_INET: four decimal numbers up to 255, no
// leading zeros.
func validIPv4Strict(a []byte) bool {
	parts, ndig, v := 0, 0, 0
	for _, c := range a {
		switch {
		case '0' <= c && c <= '9':
			if ndig > 0 && v == 0 {
				return false
			}
			v = v*10 + int(c-'0')
			if v > 255 {
				return false
			}
			if ndig == 0 {
				if parts++; parts > 4 {
					return false
				}
			}
			ndig++
		case c == '.' && ndig > 0:
			if parts == 4 {
				return false
			}
			ndig, v = 0, 0
		default:
			return false
		}
	}
	return parts == 4 && ndig > 0
}
