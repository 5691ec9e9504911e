package sasl

import (
	"encoding/base64"
	"strings"
)

// AppendPlain appends PLAIN's message, authzid NUL authcid NUL password, in base64 to
// dst: a client's initial response. The message itself is only ever in a small buffer on
// the stack, wiped before AppendPlain returns.
func AppendPlain(dst []byte, authzid, authcid, password string) []byte {
	// The message is encoded in pieces of a multiple of 3 bytes, whose base64 joins up
	// without padding.
	var buf [48]byte
	n := 0
	for i, field := range [...]string{authzid, authcid, password} {
		if i > 0 {
			buf[n] = 0 // n < len(buf): a full buffer is flushed before this
			n++
		}
		for {
			if n == len(buf) {
				dst = base64.StdEncoding.AppendEncode(dst, buf[:])
				n = 0
			}
			if field == "" {
				break
			}
			c := copy(buf[n:], field)
			n += c
			field = field[c:]
		}
	}
	dst = base64.StdEncoding.AppendEncode(dst, buf[:n])
	clear(buf[:])
	return dst
}

// AppendProxyPlain appends the PLAIN initial response with which a proxy logs user in at
// its backend (Dovecot's proxy_write_auth and friends): the authzid is the user, the
// authcid the master user if there is one, else the user again.
func AppendProxyPlain(dst []byte, user, master, password string) []byte {
	authcid := user
	if master != "" {
		authcid = master
	}
	return AppendPlain(dst, user, authcid, password)
}

// ProxyMech is a backend login's SASL mechanism (passdb proxy_mech, or the client's own
// with proxy_mech=%m): "" for none, else PLAIN, XOAUTH2 or OAUTHBEARER, in upper case.
// ok is false for any other mechanism (Dovecot: "Unsupported SASL mechanism").
func ProxyMech(mech string) (name string, ok bool) {
	for _, m := range [...]string{"", Plain, XOAuth2, OAuthBearer} {
		if len(mech) == len(m) && equalFold([]byte(mech), m) {
			return m, true
		}
	}
	return "", false
}

// CheckProxy says why the fields of a backend login with mech (as ProxyMech returns it)
// can't be sent, "" if they can: PLAIN has no room for a NUL in a field; the OAuth
// mechanisms none for ^A or NUL in the user, and the token must be a bearer token.
func CheckProxy(mech, user, master, pass, token string) string {
	switch mech {
	case Plain:
		for _, s := range [...]string{user, master, pass} {
			if strings.IndexByte(s, 0) >= 0 {
				return "SASL PLAIN field contains NUL"
			}
		}
	case XOAuth2, OAuthBearer:
		if user == "" || strings.ContainsAny(user, "\x00\x01") {
			return "Invalid user name for " + mech
		}
		if _, ok := bearer([]byte("Bearer " + token)); !ok {
			return "Invalid OAuth token for " + mech
		}
	}
	return ""
}

// AppendProxyResponse appends, in base64, the initial response of a backend login with
// mech (PLAIN, XOAUTH2 or OAUTHBEARER, as ProxyMech returns it): PLAIN's as
// AppendProxyPlain, the OAuth mechanisms' for user and token.
func AppendProxyResponse(dst []byte, mech, user, master, pass, token string) []byte {
	switch mech {
	case XOAuth2:
		return AppendXOAuth2(dst, user, token)
	case OAuthBearer:
		return AppendOAuthBearer(dst, user, token)
	}
	return AppendProxyPlain(dst, user, master, pass)
}

// ProxyErrorAnswer is what a proxy answers, in base64, to a backend's error challenge
// after its OAuth initial response (the backend refused the token and wants the
// exchange ended before it says NO): an empty response for XOAUTH2, RFC 7628's %x01 for
// OAUTHBEARER. ok is false for other mechanisms, which expect no challenge at that
// point. (Dovecot's own proxy gives up there with a protocol error; answering lets the
// backend's refusal reach the client as one.)
func ProxyErrorAnswer(mech string) (answer string, ok bool) {
	switch mech {
	case XOAuth2:
		return "", true
	case OAuthBearer:
		return "AQ==", true
	}
	return "", false
}
