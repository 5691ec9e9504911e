package sasl

import (
	"errors"
	"strings"
)

// Mechanisms are the mechanisms a login codec offers and accepts (Dovecot's
// auth_mechanisms), in the order they are advertised, each as its constant (Plain,
// Login, XOAuth2, OAuthBearer, CRAMMD5, SCRAMSHA256). The zero value is DefaultMechanisms.
type Mechanisms struct {
	list [6]string
	n    uint8
	set  bool
}

// DefaultMechanisms is what the codecs offered before mechanisms were configurable:
// PLAIN and LOGIN (Dovecot's auth_mechanisms = plain login).
var DefaultMechanisms = Mechanisms{list: [6]string{Plain, Login}, n: 2, set: true}

// ParseMechanisms makes the set from auth_mechanisms' names (any case; nil or empty:
// DefaultMechanisms). PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER run in an Exchange, CRAM-MD5
// and SCRAM-SHA-256 in a SecretExchange. Other names are left out and reported in the
// error, which a configuration check should show; a codec given them simply ignores them.
func ParseMechanisms(names []string) (Mechanisms, error) {
	if len(names) == 0 {
		return DefaultMechanisms, nil
	}
	m := Mechanisms{set: true}
	var bad []string
outer:
	for _, name := range names {
		for _, c := range [...]string{Plain, Login, XOAuth2, OAuthBearer, CRAMMD5, SCRAMSHA256} {
			if !strings.EqualFold(name, c) {
				continue
			}
			for _, have := range m.list[:m.n] {
				if have == c {
					continue outer
				}
			}
			m.list[m.n] = c
			m.n++
			continue outer
		}
		bad = append(bad, name)
	}
	if bad != nil {
		return m, errors.New("sasl: unsupported mechanisms: " + strings.Join(bad, " "))
	}
	return m, nil
}

func (m *Mechanisms) orDefault() *Mechanisms {
	if !m.set {
		return &DefaultMechanisms
	}
	return m
}

// Lookup finds mech (as the client sent it, in any case) in m: its constant, or "".
func (m *Mechanisms) Lookup(mech []byte) string {
	for _, c := range m.orDefault().List() {
		if equalFold(mech, c) {
			return c
		}
	}
	return ""
}

// List is m's mechanisms, in order.
func (m *Mechanisms) List() []string {
	d := m.orDefault()
	return d.list[:d.n]
}

// Plaintext reports whether mech counts as plaintext authentication (Dovecot's
// MECH_SEC_PLAINTEXT): offered and accepted only on a secured connection or where
// plaintext authentication is allowed. PLAIN and LOGIN are; so are XOAUTH2 and
// OAUTHBEARER, whose token Dovecot treats as a password.
func Plaintext(mech string) bool {
	switch mech {
	case Plain, Login, XOAuth2, OAuthBearer:
		return true
	}
	return false
}

// AppendAdvertised appends each of m's mechanisms that may be offered (all, if
// plaintextOK; else those that are not Plaintext), each preceded by sep: " AUTH=" for
// IMAP's capability, " " for the others' lists. Mechanisms names are ASCII upper case.
func (m *Mechanisms) AppendAdvertised(dst []byte, sep string, plaintextOK bool) []byte {
	for _, c := range m.List() {
		if plaintextOK || !Plaintext(c) {
			dst = append(dst, sep...)
			dst = append(dst, c...)
		}
	}
	return dst
}

// WithoutSecret is m without CRAM-MD5 and SCRAM-SHA-256: what a session that has no
// nonce for their challenges offers.
func (m Mechanisms) WithoutSecret() Mechanisms {
	d := *m.orDefault()
	out := Mechanisms{set: true}
	for _, c := range d.list[:d.n] {
		if c != CRAMMD5 && c != SCRAMSHA256 {
			out.list[out.n] = c
			out.n++
		}
	}
	return out
}
