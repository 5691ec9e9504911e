package route

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	stdencoding "encoding"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The schemes of the challenge-response mechanisms, as Dovecot stores them:
//
//	CRAM-MD5        hmac-md5 context of the password: the MD5 states after the outer and
//	                the inner pad block, as 64 hex digits (password-scheme-md5.c)
//	SCRAM-SHA-256   "<iterations>,<base64 salt>,<base64 StoredKey>,<base64 ServerKey>"
//	                (password-scheme-scram.c)
//
// A plaintext password (PLAIN and the mechanisms that send one) is verified against
// them by deriving the same from it. CRAM-MD5 and SCRAM-SHA-256 logins need the stored
// password itself: SASLSecret gives it in the form the codec takes. (codec/sasl has the
// same derivations; route may not import codecs.)

// ErrSchemeNotUsable: the stored password can't serve a challenge-response mechanism
// (Dovecot: "Requested CRAM-MD5 scheme, but we have only SHA512-CRYPT"). The login
// fails like a wrong password.
var ErrSchemeNotUsable = errors.New("route: password scheme not usable with this mechanism")

// SASLSecret returns stored, a passdb password with its {SCHEME}, as mech ("CRAM-MD5"
// or "SCRAM-SHA-256") needs it: "{PLAIN}<password>" for a cleartext password (any
// encoding suffix undone), "{CRAM-MD5}<64 hex digits>" for CRAM-MD5, "{SCRAM-SHA-256}..."
// for SCRAM-SHA-256. Anything else, an empty password (nopassword) included, is
// ErrSchemeNotUsable; data that is not valid for its scheme is ErrInvalidHash.
func SASLSecret(stored, mech string) (string, error) {
	if passwordIsEmpty(stored) {
		return "", fmt.Errorf("%w: no password stored", ErrSchemeNotUsable)
	}
	s, enc, explicit, data, err := schemeOf(stored)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrSchemeNotUsable, err)
	}
	switch {
	case s.name == "PLAIN" || s.name == "CLEAR" || s.name == "CLEARTEXT":
		raw, err := decode(s, enc, explicit, data)
		if err != nil {
			return "", err
		}
		return "{PLAIN}" + string(raw), nil
	case s.name == "CRAM-MD5" && strings.EqualFold(mech, "CRAM-MD5"):
		raw, err := decode(s, enc, explicit, data)
		if err != nil || len(raw) != 32 {
			return "", fmt.Errorf("%w: CRAM-MD5 data isn't 32 bytes", ErrInvalidHash)
		}
		return "{CRAM-MD5}" + hex.EncodeToString(raw), nil
	case s.name == "SCRAM-SHA-256" && strings.EqualFold(mech, "SCRAM-SHA-256"):
		if _, err := parseSCRAM(data); err != nil {
			return "", err
		}
		return "{SCRAM-SHA-256}" + data, nil
	}
	return "", fmt.Errorf("%w: %s can't serve %s", ErrSchemeNotUsable, s.name, mech)
}

// verifyCRAMMD5 checks a password against a {CRAM-MD5} context.
func verifyCRAMMD5(raw []byte, password string) (bool, error) {
	if len(raw) != 32 {
		return false, fmt.Errorf("%w: CRAM-MD5 data isn't 32 bytes", ErrInvalidHash)
	}
	return subtle.ConstantTimeCompare(cramContext(password), raw) == 1, nil
}

// cramContext is Dovecot's hmac-md5 context of password: the MD5 state after the
// outer (opad) block, then after the inner (ipad) block, each as four little-endian
// 32-bit words.
func cramContext(password string) []byte {
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
		st, _ := h.(stdencoding.BinaryMarshaler).MarshalBinary()
		// Go's md5 state: "md5\x01", four big-endian words, the block, the length.
		for w := range 4 {
			out = binary.LittleEndian.AppendUint32(out, binary.BigEndian.Uint32(st[4+4*w:]))
		}
	}
	clear(pad[:])
	return out
}

// scramSecret is a parsed {SCRAM-SHA-256} value.
type scramSecret struct {
	iterations           int
	salt                 []byte
	storedKey, serverKey []byte
}

func parseSCRAM(v string) (scramSecret, error) {
	var s scramSecret
	f := strings.Split(v, ",")
	if len(f) != 4 {
		return s, fmt.Errorf("%w: SCRAM-SHA-256 data hasn't 4 fields", ErrInvalidHash)
	}
	it, err := strconv.Atoi(f[0])
	if err != nil || it < 1 || it > 1<<24 {
		return s, fmt.Errorf("%w: SCRAM-SHA-256 iteration count %q", ErrInvalidHash, f[0])
	}
	b64 := base64.StdEncoding
	salt, err1 := b64.DecodeString(f[1])
	stored, err2 := b64.DecodeString(f[2])
	server, err3 := b64.DecodeString(f[3])
	if err1 != nil || err2 != nil || err3 != nil || len(salt) == 0 ||
		len(stored) != sha256.Size || len(server) != sha256.Size {
		return s, fmt.Errorf("%w: SCRAM-SHA-256 data isn't valid base64", ErrInvalidHash)
	}
	return scramSecret{iterations: it, salt: salt, storedKey: stored, serverKey: server}, nil
}

// verifySCRAM checks a password against a {SCRAM-SHA-256} value: the same keys derive
// from it with the stored salt and iterations.
func verifySCRAM(raw []byte, password string) (bool, error) {
	s, err := parseSCRAM(string(raw))
	if err != nil {
		return false, err
	}
	salted, err := pbkdf2.Key(sha256.New, password, s.salt, s.iterations, sha256.Size)
	if err != nil {
		return false, err
	}
	defer clear(salted)
	mac := func(msg string) []byte {
		m := hmac.New(sha256.New, salted)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	stored := sha256.Sum256(mac("Client Key"))
	ok := subtle.ConstantTimeCompare(stored[:], s.storedKey) == 1
	return ok && subtle.ConstantTimeCompare(mac("Server Key"), s.serverKey) == 1, nil
}
