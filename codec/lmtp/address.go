package lmtp

import "strings"

// Address is a mailbox of a MAIL or RCPT path: the local part as it reads unquoted, and
// the domain (or address literal), "" when the path had none (LMTP allows a recipient
// without a domain). The zero Address is the null path "<>".
type Address struct {
	Local  string
	Domain string
}

// IsNull reports the null path.
func (a Address) IsNull() bool { return a.Local == "" && a.Domain == "" }

// String is the address as Dovecot writes it (smtp_address_write): the local part as a
// dot-string when it is one, else quoted; then "@" and the domain if there is one.
func (a Address) String() string {
	if a.IsNull() {
		return ""
	}
	return string(a.Append(nil))
}

// Append appends the encoded address (see String).
func (a Address) Append(dst []byte) []byte {
	if a.IsNull() {
		return dst
	}
	if isDotString(a.Local) {
		dst = append(dst, a.Local...)
	} else {
		dst = append(dst, '"')
		for i := 0; i < len(a.Local); i++ {
			c := a.Local[i]
			if c == '"' || c == '\\' {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		}
		dst = append(dst, '"')
	}
	if a.Domain != "" {
		dst = append(dst, '@')
		dst = append(dst, a.Domain...)
	}
	return dst
}

// isDotString: Atom *("." Atom), every atom non-empty.
func isDotString(s string) bool {
	if s == "" {
		return false
	}
	prevDot := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		if !isAtext(c) {
			return false
		}
		prevDot = false
	}
	return !prevDot
}

// isAtext is RFC 5322 atext.
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Username splits the recipient delimiter's detail off the local part as Dovecot does
// (smtp_address_detail_parse): at the first byte of the local part found in delims. It
// returns the user name (local part without detail, then "@domain" if there is a domain),
// the delimiter found (0 if none) and the detail.
func (a Address) Username(delims string) (user string, delim byte, detail string) {
	local := a.Local
	if delims != "" {
		if i := strings.IndexAny(local, delims); i >= 0 {
			delim, detail = local[i], local[i+1:]
			local = local[:i]
		}
	}
	if a.Domain == "" {
		return local, delim, detail
	}
	if strings.IndexByte(local, '@') < 0 {
		return local + "@" + a.Domain, delim, detail
	}
	return Address{Local: local, Domain: a.Domain}.String(), delim, detail
}

// WithDetail returns a with delim and detail appended to its local part (nothing when
// delim is 0), as Dovecot re-adds the detail after destuser changed the user.
func (a Address) WithDetail(delim byte, detail string) Address {
	if delim != 0 {
		a.Local += string(delim) + detail
	}
	return a
}

// Equal compares as Dovecot's smtp_address_equals: the local part exactly, the domain
// without regard to case.
func (a Address) Equal(b Address) bool {
	return a.Local == b.Local && strings.EqualFold(a.Domain, b.Domain)
}

// ParseUsername reads a user name from the passdb (destuser, user) as an address:
// "local@domain" split at the last "@", or a bare local part (Dovecot's
// smtp_address_parse_username). ok is false for an empty name or a local part with
// control characters.
func ParseUsername(s string) (Address, bool) {
	local, domain := s, ""
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		local, domain = s[:i], s[i+1:]
		if domain == "" {
			return Address{}, false
		}
	}
	if local == "" {
		return Address{}, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return Address{}, false
		}
	}
	return Address{Local: local, Domain: domain}, true
}

// pathParser reads "<" [A-d-l ":"] Mailbox ">" from the start of s (lib-smtp
// smtp_address_parse_path_full). Errors are Dovecot's texts.
type pathParser struct {
	s   string
	i   int
	err string
}

func (p *pathParser) more() bool { return p.i < len(p.s) }
func (p *pathParser) peek() byte { return p.s[p.i] }

// parsePath parses a path at the start of s and returns it and the rest of s.
// allowNull admits "<>" (MAIL); the domain is optional either way (LMTP).
func parsePath(s string, allowNull bool) (Address, string, string) {
	p := &pathParser{s: s}
	if !p.more() || p.peek() != '<' {
		return Address{}, "", "Missing '<' at beginning of path"
	}
	p.i++
	route := p.sourceRoute()
	if p.err != "" {
		return Address{}, "", p.err
	}
	a, ok := p.mailbox()
	if p.err != "" {
		return Address{}, "", p.err
	}
	if !ok {
		switch {
		case p.more() && p.peek() == '>':
			if route {
				return Address{}, "", "Path only consists of source route"
			}
			if !allowNull {
				return Address{}, "", "Null path not allowed"
			}
		default:
			return Address{}, "", "Invalid character in localpart"
		}
	}
	if !p.more() || p.peek() != '>' {
		return Address{}, "", "Missing '>' at end of path"
	}
	p.i++
	return a, s[p.i:], ""
}

// sourceRoute skips "@dom,@dom:" and reports whether there was one.
func (p *pathParser) sourceRoute() bool {
	if !p.more() || p.peek() != '@' {
		return false
	}
	p.i++
	for {
		if _, ok := p.domain(); !ok {
			p.err = "Missing domain after '@' in source route"
			return true
		}
		if !p.more() || p.peek() != ',' {
			break
		}
		p.i++
		if !p.more() || p.peek() != '@' {
			p.err = "Missing '@' after ',' in source route"
			return true
		}
		p.i++
	}
	if !p.more() || p.peek() != ':' {
		p.err = "Missing ':' at end of source route"
		return true
	}
	p.i++
	return true
}

// mailbox reads Local-part ["@" (Domain / address-literal)]; ok is false when there is no
// local part at all.
func (p *pathParser) mailbox() (Address, bool) {
	var a Address
	if p.more() && p.peek() == '"' {
		local, ok := p.quoted()
		if !ok {
			p.err = "Invalid character in localpart"
			return a, false
		}
		a.Local = local
	} else {
		// Dovecot accepts dots anywhere in a dot-string (Japanese addresses).
		start := p.i
		for p.more() && (isAtext(p.peek()) || p.peek() == '.') {
			p.i++
		}
		if p.i == start {
			return a, false
		}
		a.Local = p.s[start:p.i]
	}
	if !p.more() || p.peek() != '@' {
		return a, true
	}
	p.i++
	if d, ok := p.domain(); ok {
		a.Domain = d
		return a, true
	}
	if d, ok := p.addressLiteral(); ok {
		a.Domain = d
		return a, true
	}
	if !p.more() || p.peek() == '>' {
		p.err = "Missing domain after '@'"
	} else {
		p.err = "Invalid domain"
	}
	return a, false
}

// quoted reads a quoted-string and returns its content unescaped.
func (p *pathParser) quoted() (string, bool) {
	p.i++ // the opening quote
	var b strings.Builder
	for p.more() {
		c := p.peek()
		switch {
		case c == '"':
			p.i++
			return b.String(), true
		case c == '\\':
			p.i++
			if !p.more() || p.peek() < 0x20 || p.peek() > 0x7e {
				return "", false
			}
			b.WriteByte(p.peek())
		case c >= 0x20 && c <= 0x7e:
			b.WriteByte(c)
		default:
			return "", false
		}
		p.i++
	}
	return "", false
}

// domain reads sub-domain *("." sub-domain), sub-domain = letters, digits and hyphens
// starting with a letter or digit.
func (p *pathParser) domain() (string, bool) {
	start := p.i
	for {
		if !p.more() || !isAlnum(p.peek()) {
			p.i = start
			return "", false
		}
		for p.more() && (isAlnum(p.peek()) || p.peek() == '-') {
			p.i++
		}
		if !p.more() || p.peek() != '.' {
			break
		}
		p.i++
	}
	return p.s[start:p.i], true
}

// addressLiteral reads "[" dcontent... "]" (printable ASCII but "[", "\" and "]").
func (p *pathParser) addressLiteral() (string, bool) {
	start := p.i
	if !p.more() || p.peek() != '[' {
		return "", false
	}
	p.i++
	for p.more() && p.peek() != ']' {
		c := p.peek()
		if c < 33 || c > 126 || c == '[' || c == '\\' {
			p.i = start
			return "", false
		}
		p.i++
	}
	if !p.more() || p.i == start+1 {
		p.i = start
		return "", false
	}
	p.i++
	return p.s[start:p.i], true
}
