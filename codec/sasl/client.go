package sasl

import "encoding/base64"

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
