package sasl

import (
	"bytes"
	"encoding/base64"
)

// The error challenges of Dovecot 2.3's mech-oauth2 (xoauth2_verify_callback,
// oauthbearer_verify_callback), sent for a message it refuses and for a token the passdb
// refuses; the client answers (RFC 7628 section 3.2.3: with a lone %x01, XOAUTH2 clients
// with an empty response) and then gets the failure. Doorman knows no
// openid-configuration URL, so the field Dovecot may append is left out.
const (
	XOAuth2Failure     = `{"status":"401","schemes":"bearer","scope":"mail"}`
	OAuthBearerFailure = `{"status":"invalid_token"}`
)

// OAuth reports whether mech is XOAUTH2 or OAUTHBEARER: mechanisms that carry a token
// where the others carry a password (Dovecot flags them MECH_SEC_PLAINTEXT, so they are
// offered and accepted only where plaintext authentication is).
func OAuth(mech string) bool { return mech == XOAuth2 || mech == OAuthBearer }

var (
	kvSep      = []byte{1}
	userPrefix = []byte("user=")
	authPrefix = []byte("auth=")
)

// ParseXOAuth2 parses XOAUTH2's message, "user=" user ^A "auth=Bearer " token ^A ^A, as
// Dovecot's mech_xoauth2_auth_continue does: fields split at ^A, unknown ones ignored,
// the last user= wins, an auth= that is not a valid bearer token fails at once. The user
// is taken as it is (XOAUTH2 escapes nothing); it must not be empty or hold a NUL. The
// results are sub-slices of msg.
func ParseXOAuth2(msg []byte) (user, token []byte, err error) {
	userGiven := false
	for rest := msg; ; {
		field, tail, more := bytes.Cut(rest, kvSep)
		switch {
		case bytes.HasPrefix(field, userPrefix):
			user, userGiven = field[len(userPrefix):], true
		case bytes.HasPrefix(field, authPrefix):
			t, ok := bearer(field[len(authPrefix):])
			if !ok {
				return nil, nil, ErrOAuth
			}
			token = t
		}
		if !more {
			break
		}
		rest = tail
	}
	if !userGiven || len(user) == 0 || bytes.IndexByte(user, 0) >= 0 || token == nil {
		return nil, nil, ErrOAuth
	}
	return user, token, nil
}

// ParseOAuthBearer parses OAUTHBEARER's message (RFC 7628 section 3.1): a GS2 header
// ("n,a=" authzid ",", "y" for "n"), then ^A-separated key=value pairs (host=, port=,
// auth=Bearer <token>, any other), then ^A ^A. As Dovecot's
// mech_oauthbearer_auth_continue, it wants the user in the a= authzid, decoded (=2C is
// ",", =3D is "="; any other "=" fails), refuses channel binding ("p=") and the
// non-standard flag "F", and ignores unknown pairs. The user is appended to dst (decoded,
// so not a slice of msg); the token is a sub-slice of msg.
func ParseOAuthBearer(msg, dst []byte) (user, token []byte, err error) {
	header, rest, _ := bytes.Cut(msg, kvSep)
	if len(header) == 0 {
		return dst, nil, ErrOAuth
	}
	userGiven := false
	// Dovecot splits the header at "," skipping empty pieces (t_strsplit_spaces).
	for h := header; len(h) > 0; {
		var part []byte
		part, h, _ = bytes.Cut(h, []byte{','})
		switch {
		case len(part) == 0:
		case len(part) == 1 && (part[0] == 'n' || part[0] == 'y'):
		case len(part) >= 2 && part[0] == 'a' && part[1] == '=':
			u, ok := unescapeSASLName(dst[:0], part[2:])
			if !ok {
				return dst, nil, ErrOAuth
			}
			dst, userGiven = u, true
		default: // p=... (channel binding), F (non-standard), anything else
			return dst, nil, ErrOAuth
		}
	}
	for len(rest) > 0 {
		var field []byte
		field, rest, _ = bytes.Cut(rest, kvSep)
		if bytes.HasPrefix(field, authPrefix) {
			t, ok := bearer(field[len(authPrefix):])
			if !ok {
				return dst, nil, ErrOAuth
			}
			token = t
		}
	}
	if !userGiven || len(dst) == 0 || bytes.IndexByte(dst, 0) >= 0 || token == nil {
		return dst, nil, ErrOAuth
	}
	return dst, token, nil
}

// bearer takes "Bearer <token>" (the scheme in any case) and checks the token as RFC 6750's
// b64token: 1*(ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/") *"=".
func bearer(v []byte) ([]byte, bool) {
	const scheme = "BEARER "
	if len(v) <= len(scheme) || !equalFold(v[:len(scheme)-1], scheme[:len(scheme)-1]) || v[len(scheme)-1] != ' ' {
		return nil, false
	}
	t := v[len(scheme):]
	i := 0
	for i < len(t) && b64tokenChar(t[i]) {
		i++
	}
	if i == 0 {
		return nil, false
	}
	for j := i; j < len(t); j++ {
		if t[j] != '=' {
			return nil, false
		}
	}
	return t, true
}

func b64tokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}

// unescapeSASLName appends the saslname s decoded (RFC 5801/5802: "=2C" is ",", "=3D"
// is "="; a bare "," or any other "=" is invalid) to dst.
func unescapeSASLName(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ',':
			return dst, false
		case c != '=':
			dst = append(dst, c)
		case i+2 < len(s) && s[i+1] == '2' && s[i+2] == 'C':
			dst, i = append(dst, ','), i+2
		case i+2 < len(s) && s[i+1] == '3' && s[i+2] == 'D':
			dst, i = append(dst, '='), i+2
		default:
			return dst, false
		}
	}
	return dst, true
}

// appendSASLName appends s escaped as a saslname.
func appendSASLName(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',':
			dst = append(dst, "=2C"...)
		case '=':
			dst = append(dst, "=3D"...)
		default:
			dst = append(dst, s[i])
		}
	}
	return dst
}

// AppendXOAuth2 appends XOAUTH2's message for user and token, in base64, to dst: the
// initial response with which a proxy forwards a client's token (proxy_mech=%m).
func AppendXOAuth2(dst []byte, user, token string) []byte {
	msg := make([]byte, 0, len(user)+len(token)+20)
	msg = append(msg, "user="...)
	msg = append(msg, user...)
	msg = append(msg, "\x01auth=Bearer "...)
	msg = append(msg, token...)
	msg = append(msg, "\x01\x01"...)
	dst = base64.StdEncoding.AppendEncode(dst, msg)
	clear(msg)
	return dst
}

// AppendOAuthBearer appends OAUTHBEARER's message for user and token, in base64, to dst:
// "n,a=" user "," ^A "auth=Bearer " token ^A ^A. Like Dovecot's dsasl client it sends
// neither host nor port, which RFC 7628 makes optional.
func AppendOAuthBearer(dst []byte, user, token string) []byte {
	msg := make([]byte, 0, len(user)+len(token)+24)
	msg = append(msg, "n,a="...)
	msg = appendSASLName(msg, user)
	msg = append(msg, ",\x01auth=Bearer "...)
	msg = append(msg, token...)
	msg = append(msg, "\x01\x01"...)
	dst = base64.StdEncoding.AppendEncode(dst, msg)
	clear(msg)
	return dst
}
