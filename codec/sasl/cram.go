package sasl

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/subtle"
	"encoding"
	"encoding/binary"
	"encoding/hex"
)

// CRAM-MD5 (RFC 2195). The codec has no randomness and no clock: the engine supplies the
// challenge's unique part, AppendCRAMMD5Challenge frames it, the client answers
// "<user> SP <hex digest>", ParseCRAMMD5 splits that, and VerifyCRAMMD5 (in the engine,
// with the passdb's secret) checks it.

// AppendCRAMMD5Challenge appends Dovecot's challenge, "<" unique "@" host ">", to dst
// (before base64). unique must not repeat: Dovecot uses random bits, its pid and the time
// ("%x.%x.%u"); an engine can use, say, 18 random bytes in hex and an attempt counter.
func AppendCRAMMD5Challenge(dst []byte, unique, host string) []byte {
	dst = append(dst, '<')
	dst = append(dst, unique...)
	dst = append(dst, '@')
	dst = append(dst, host...)
	return append(dst, '>')
}

// ParseCRAMMD5 splits the client's response as Dovecot's mech-cram-md5 does: the user is
// everything before the last SP, the digest after it, exactly 32 characters. The user
// must not be empty or hold a NUL. Both are sub-slices of resp.
func ParseCRAMMD5(resp []byte) (user, digestHex []byte, err error) {
	i := bytes.LastIndexByte(resp, ' ')
	if i <= 0 || len(resp)-i-1 != 2*md5.Size || bytes.IndexByte(resp[:i], 0) >= 0 {
		return nil, nil, ErrCRAM
	}
	return resp[:i], resp[i+1:], nil
}

// VerifyCRAMMD5 checks the client's digest (lower-case hex, as Dovecot compares it)
// against HMAC-MD5(password, challenge), in constant time. password is the passdb's
// plaintext password.
func VerifyCRAMMD5(challenge, digestHex string, password []byte) bool {
	m := hmac.New(md5.New, password)
	m.Write([]byte(challenge))
	return digestEqual(m.Sum(nil), digestHex)
}

// VerifyCRAMMD5Secret is VerifyCRAMMD5 for a passdb that stores Dovecot's {CRAM-MD5}
// scheme value (64 hex digits, see CRAMMD5Secret) rather than the password.
func VerifyCRAMMD5Secret(challenge, digestHex string, secret []byte) bool {
	want, ok := cramFromContext(challenge, secret)
	return ok && digestEqual(want, digestHex)
}

func digestEqual(want []byte, digestHex string) bool {
	var h [2 * md5.Size]byte
	hex.Encode(h[:], want)
	return len(digestHex) == len(h) && subtle.ConstantTimeCompare(h[:], []byte(digestHex)) == 1
}

// CRAMMD5Secret is Dovecot's {CRAM-MD5} scheme value of password (hmac-cram-md5.c): the
// MD5 state after the outer (opad) block, then after the inner (ipad) block, each as four
// little-endian 32-bit words, in hex.
func CRAMMD5Secret(password string) string {
	key := []byte(password)
	if len(key) > 64 {
		s := md5.Sum(key)
		key = s[:]
	}
	var pad [64]byte
	out := make([]byte, 0, 32)
	for _, x := range [...]byte{0x5c, 0x36} {
		for i := range pad {
			pad[i] = x
			if i < len(key) {
				pad[i] ^= key[i]
			}
		}
		h := md5.New()
		h.Write(pad[:])
		st, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
		// Go's md5 state: "md5\x01", four big-endian words, the block, the length.
		for w := range 4 {
			out = binary.LittleEndian.AppendUint32(out, binary.BigEndian.Uint32(st[4+4*w:]))
		}
	}
	clear(pad[:])
	return hex.EncodeToString(out)
}

// cramFromContext computes HMAC-MD5 of challenge from a {CRAM-MD5} secret, resuming MD5
// from the stored states.
func cramFromContext(challenge string, secret []byte) ([]byte, bool) {
	var ctx [32]byte
	if len(secret) != 64 {
		return nil, false
	}
	if _, err := hex.Decode(ctx[:], secret); err != nil {
		return nil, false
	}
	resume := func(words []byte) []byte {
		st := make([]byte, 0, 4+16+64+8)
		st = append(st, "md5\x01"...)
		for w := range 4 {
			st = binary.BigEndian.AppendUint32(st, binary.LittleEndian.Uint32(words[4*w:]))
		}
		st = append(st, make([]byte, 64)...)
		return binary.BigEndian.AppendUint64(st, 64)
	}
	outer, inner := md5.New(), md5.New()
	if outer.(encoding.BinaryUnmarshaler).UnmarshalBinary(resume(ctx[:16])) != nil ||
		inner.(encoding.BinaryUnmarshaler).UnmarshalBinary(resume(ctx[16:])) != nil {
		return nil, false
	}
	inner.Write([]byte(challenge))
	outer.Write(inner.Sum(nil))
	return outer.Sum(nil), true
}

func hmacMD5(key []byte, msg string) []byte {
	m := hmac.New(md5.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
