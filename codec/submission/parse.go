package submission

import "doorman/codec/internal/wire"

// The grammar bits the client side needs, as lib-smtp's smtp-parser.c and
// smtp-syntax.c read them (RFC 5321 with Dovecot's leniencies).

// srvIsAlpha: a command name's letters.
func srvIsAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// srvIsTextstr: textstring = HT / SP / printable US-ASCII.
func srvIsTextstr(c byte) bool { return c == '\t' || ' ' <= c && c <= '~' }

// srvIsAtext: RFC 5322 atext.
func srvIsAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '/', '=', '?', '^', '_', '`', '{', '|', '}', '~':
		return true
	}
	return false
}

// srvIsQtext: qtextSMTP, what a quoted string holds without a backslash.
func srvIsQtext(c byte) bool {
	return c == ' ' || c == '!' || '#' <= c && c <= '[' || ']' <= c && c <= '~'
}

// srvIsDcontent: what a general address literal holds (printable, not "[", "\", "]").
func srvIsDcontent(c byte) bool { return '!' <= c && c <= 'Z' || '^' <= c && c <= '~' }

// srvIsLetDig: letters, digits, and the "-" and "_" Dovecot allows anywhere in a
// sub-domain.
func srvIsLetDig(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func srvIsAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// srvStringError checks NOOP's optional argument, String = Atom / Quoted-string, the
// way smtp_string_parse does, and returns its complaint ("" if none).
func srvStringError(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	i := 0
	if p[0] == '"' {
		i = 1
		for {
			for i < len(p) && srvIsQtext(p[i]) {
				i++
			}
			if i >= len(p) || p[i] != '\\' {
				break
			}
			i++
			if i >= len(p) || p[i] < ' ' || p[i] > '~' {
				return `Invalid character after '\' in quoted string`
			}
			i++
		}
		if i >= len(p) {
			return "Premature end of quoted string"
		}
		if p[i] != '"' {
			return "Invalid character in quoted string"
		}
		i++
	} else {
		for i < len(p) && srvIsAtext(p[i]) {
			i++
		}
	}
	if i < len(p) {
		return "Invalid character in string"
	}
	return ""
}

// srvHeloDomain reads the domain of EHLO (literal true: an address literal will do) or
// HELO, as smtp_helo_domain_parse does: what follows the domain, after a space, is
// ignored. It returns the domain as the client wrote it.
func srvHeloDomain(p []byte, literal bool) ([]byte, bool) {
	n, res := srvDomain(p)
	if res == 0 && literal {
		n, res = srvAddressLiteral(p)
	}
	if res <= 0 || n < len(p) && p[n] != ' ' {
		return nil, false
	}
	return p[:n], true
}

// srvDomain reads sub-domain *("." sub-domain) at the start of p. res is 1 for a domain
// of n bytes, 0 if p doesn't start like one, -1 if it is broken.
func srvDomain(p []byte) (n, res int) {
	if len(p) == 0 || !srvIsLetDig(p[0]) {
		return 0, 0
	}
	i := 0
	for {
		if i >= len(p) || !srvIsLetDig(p[i]) {
			return i, -1 // an empty sub-domain or a stray byte
		}
		for i < len(p) && srvIsLetDig(p[i]) {
			i++
		}
		if i >= len(p) || p[i] != '.' {
			return i, 1
		}
		i++
	}
}

// srvAddressLiteral reads "[" (IPv4 / "IPv6:" IPv6 / tag ":" 1*dcontent) "]".
func srvAddressLiteral(p []byte) (n, res int) {
	if len(p) == 0 || p[0] != '[' {
		return 0, 0
	}
	i := 1
	if j, r := srvIPv4Literal(p, i); r != 0 {
		if r < 0 {
			return j, -1
		}
		i = j
	} else {
		// Standardized-tag = Ldh-str: letters, digits and "-", not ending in "-".
		start, lastAlnum := i, -1
		for i < len(p) && (srvIsAlnum(p[i]) || p[i] == '-') {
			if srvIsAlnum(p[i]) {
				lastAlnum = i
			}
			i++
		}
		if lastAlnum < 0 {
			return i, -1
		}
		tag := p[start : lastAlnum+1]
		i = lastAlnum + 1
		if i >= len(p) || p[i] != ':' {
			return i, -1
		}
		i++
		start = i
		for i < len(p) && srvIsDcontent(p[i]) {
			i++
		}
		if i == start {
			return i, -1
		}
		if wire.EqualUpper(tag, "IPV6") && !srvIPv6(p[start:i]) {
			return i, -1
		}
	}
	if i >= len(p) || p[i] != ']' {
		return i, -1
	}
	return i + 1, 1
}

// srvIPv4Literal reads Snum 3("." Snum) from p[i:], as smtp_parser_parse_ipv4_address
// does (leading zeros allowed, each number at most 255). res is 0 if p[i] is not a
// digit.
func srvIPv4Literal(p []byte, i int) (n, res int) {
	j, r := srvSnum(p, i)
	if r <= 0 {
		return j, r
	}
	i = j
	for k := 0; k < 3 && i < len(p); k++ {
		if p[i] != '.' {
			return i, -1
		}
		if j, r = srvSnum(p, i+1); r <= 0 {
			return j, -1
		}
		i = j
	}
	return i, 1
}

func srvSnum(p []byte, i int) (n, res int) {
	if i >= len(p) || p[i] < '0' || p[i] > '9' {
		return i, 0
	}
	v := 0
	for i < len(p) && '0' <= p[i] && p[i] <= '9' {
		v = v*10 + int(p[i]-'0')
		if v > 255 {
			return i, -1
		}
		i++
	}
	return i, 1
}

// srvIPv6 reports whether p is an IPv6 address as glibc's inet_pton reads one: up to
// eight groups of 1-4 hex digits, one "::", an optional dotted IPv4 tail.
func srvIPv6(p []byte) bool {
	const size = 16
	if len(p) == 0 {
		return false
	}
	i := 0
	if p[0] == ':' {
		if len(p) < 2 || p[1] != ':' {
			return false
		}
		i = 1
	}
	tp, colon := 0, -1
	digits, val := 0, 0
	curtok := i
	for i < len(p) {
		c := p[i]
		i++
		if d := srvHex(c); d >= 0 {
			if digits == 4 {
				return false
			}
			val = val<<4 | d
			digits++
			continue
		}
		if c == ':' {
			curtok = i
			if digits == 0 {
				if colon >= 0 {
					return false
				}
				colon = tp
				continue
			}
			if i == len(p) || tp+2 > size {
				return false
			}
			tp += 2
			digits, val = 0, 0
			continue
		}
		if c == '.' && tp+4 <= size && srvIPv4Dotted(p[curtok:]) {
			tp += 4
			digits = 0
			break
		}
		return false
	}
	if digits > 0 {
		if tp+2 > size {
			return false
		}
		tp += 2
	}
	if colon >= 0 {
		if tp == size {
			return false // "::" standing for nothing
		}
		tp = size
	}
	return tp == size
}

// srvIPv4Dotted is glibc's inet_pton4: four numbers up to 255, no leading zeros.
func srvIPv4Dotted(p []byte) bool {
	octets, cur, sawDigit := 0, 0, false
	for _, c := range p {
		switch {
		case '0' <= c && c <= '9':
			if sawDigit && cur == 0 {
				return false
			}
			cur = cur*10 + int(c-'0')
			if cur > 255 {
				return false
			}
			if !sawDigit {
				octets++
				if octets > 4 {
					return false
				}
				sawDigit = true
			}
		case c == '.' && sawDigit:
			if octets == 4 {
				return false
			}
			cur, sawDigit = 0, false
		default:
			return false
		}
	}
	return octets == 4
}

func srvHex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
