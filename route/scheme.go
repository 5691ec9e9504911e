package route

import (
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Password schemes, as Dovecot names them (auth/password-scheme.c). A stored
// password is "{SCHEME}data"; the scheme name is case-insensitive and may
// carry an encoding suffix ".hex", ".b64" or ".base64".
//
// Supported:
//
//	PLAIN, CLEAR, CLEARTEXT             cleartext
//	CRYPT                               crypt(3) string, dispatched on its prefix:
//	                                    $1$ MD5-crypt, $5$ SHA256-crypt, $6$ SHA512-crypt,
//	                                    $2a$/$2b$/$2y$ bcrypt. Traditional DES and
//	                                    yescrypt ($y$) are not supported.
//	MD5-CRYPT, SHA256-CRYPT,            the same dispatch: like Dovecot, which hands
//	SHA512-CRYPT, BLF-CRYPT             all of them to crypt(), the prefix decides
//	MD5                                 $1$ MD5-crypt, else PLAIN-MD5
//	PLAIN-MD5, LDAP-MD5, SHA, SHA1,     unsalted digests; hex or base64 (guessed from
//	SHA256, SHA512                      the length, as Dovecot does)
//	SMD5, SSHA, SSHA256, SSHA512        salted digests: base64(digest || salt)
//	PBKDF2                              Dovecot's $1$salt$rounds$hex (PBKDF2-HMAC-SHA1)
//	ARGON2I, ARGON2ID                   PHC strings $argon2i$ / $argon2id$ (v=19)
//	CRAM-MD5, SCRAM-SHA-256             Dovecot's secrets of the challenge-response
//	                                    mechanisms (scheme_sasl.go)
//
// A password without a {SCHEME} is read with the passdb's default scheme;
// Hasher.Verify on such a string uses CRYPT.

var (
	// ErrUnknownScheme: the scheme, or the crypt variant inside CRYPT, is not
	// supported. Dovecot calls this "scheme not available" and fails the
	// login like a wrong password (the next passdb is still tried).
	ErrUnknownScheme = errors.New("route: unknown password scheme")
	// ErrInvalidHash: the stored data is not valid for its scheme. Dovecot
	// treats this as an internal (temporary) failure.
	ErrInvalidHash = errors.New("route: invalid stored password")
)

type encoding uint8

const (
	encNone encoding = iota
	encBase64
	encHex
)

type scheme struct {
	name string
	enc  encoding // default encoding of the stored data
	// rawLen, when non-zero, lets the encoding be guessed: data of exactly
	// 2*rawLen characters is hex, anything else base64.
	rawLen int
	// cheap schemes are verified inline; the others take a Hasher slot.
	cheap  bool
	verify func(raw []byte, password string) (bool, error)
}

var plainMD5 = scheme{name: "PLAIN-MD5", enc: encHex, rawLen: md5.Size, cheap: true, verify: digestVerifier(md5.New)}

var schemes = []scheme{
	{name: "PLAIN", cheap: true, verify: verifyPlain},
	{name: "CLEAR", cheap: true, verify: verifyPlain},
	{name: "CLEARTEXT", cheap: true, verify: verifyPlain},
	{name: "CRYPT", verify: verifyCrypt},
	{name: "MD5-CRYPT", verify: verifyCrypt},
	{name: "SHA256-CRYPT", verify: verifyCrypt},
	{name: "SHA512-CRYPT", verify: verifyCrypt},
	{name: "BLF-CRYPT", verify: verifyCrypt},
	{name: "MD5", verify: verifyMD5},
	plainMD5,
	{name: "LDAP-MD5", enc: encBase64, rawLen: md5.Size, cheap: true, verify: digestVerifier(md5.New)},
	{name: "SHA", enc: encBase64, rawLen: sha1.Size, cheap: true, verify: digestVerifier(sha1.New)},
	{name: "SHA1", enc: encBase64, rawLen: sha1.Size, cheap: true, verify: digestVerifier(sha1.New)},
	{name: "SHA256", enc: encBase64, rawLen: sha256.Size, cheap: true, verify: digestVerifier(sha256.New)},
	{name: "SHA512", enc: encBase64, rawLen: sha512.Size, cheap: true, verify: digestVerifier(sha512.New)},
	{name: "SMD5", enc: encBase64, cheap: true, verify: saltedVerifier(md5.New)},
	{name: "SSHA", enc: encBase64, cheap: true, verify: saltedVerifier(sha1.New)},
	{name: "SSHA256", enc: encBase64, cheap: true, verify: saltedVerifier(sha256.New)},
	{name: "SSHA512", enc: encBase64, cheap: true, verify: saltedVerifier(sha512.New)},
	{name: "PBKDF2", verify: verifyPBKDF2},
	{name: "ARGON2I", verify: verifyArgon2},
	{name: "ARGON2ID", verify: verifyArgon2},
	{name: "CRAM-MD5", enc: encHex, cheap: true, verify: verifyCRAMMD5},
	{name: "SCRAM-SHA-256", verify: verifySCRAM},
}

// lookupScheme finds a scheme by its (case-insensitive) name with an
// optional encoding suffix. explicit is true when the suffix chose the
// encoding.
func lookupScheme(name string) (s *scheme, enc encoding, explicit bool) {
	base, suffix, hasSuffix := strings.Cut(name, ".")
	for i := range schemes {
		if strings.EqualFold(schemes[i].name, base) {
			s = &schemes[i]
			break
		}
	}
	if s == nil {
		return nil, 0, false
	}
	if !hasSuffix {
		return s, s.enc, false
	}
	switch {
	case strings.EqualFold(suffix, "b64"), strings.EqualFold(suffix, "base64"):
		return s, encBase64, true
	case strings.EqualFold(suffix, "hex"):
		return s, encHex, true
	}
	return nil, 0, false // unknown encoding: Dovecot treats it as an unknown scheme
}

// SchemeSupported reports whether a scheme name (as in "{NAME}" or a
// default_pass_scheme setting) is supported.
func SchemeSupported(name string) bool {
	s, _, _ := lookupScheme(name)
	return s != nil
}

// schemeOf returns the scheme of a stored password, the data after
// "{SCHEME}", and whether verification is cheap.
func schemeOf(stored string) (s *scheme, enc encoding, explicit bool, data string, err error) {
	name, data, ok := splitScheme(stored)
	if !ok {
		name = "CRYPT"
		if strings.HasPrefix(stored, "$1$") {
			name = "MD5-CRYPT"
		}
	}
	s, enc, explicit = lookupScheme(name)
	if s == nil {
		return nil, 0, false, "", fmt.Errorf("%w %q", ErrUnknownScheme, name)
	}
	return s, enc, explicit, data, nil
}

// decode is password_decode(): undo the scheme's encoding.
func decode(s *scheme, enc encoding, explicit bool, data string) ([]byte, error) {
	if enc == encNone {
		return []byte(data), nil
	}
	guessed := false
	if !explicit && s.rawLen != 0 {
		enc, guessed = encBase64, true
		if len(data) == 2*s.rawLen {
			enc = encHex
		}
	}
	if enc == encHex {
		raw, err := hex.DecodeString(data)
		if err == nil {
			return raw, nil
		}
		if !guessed {
			return nil, fmt.Errorf("%w: %s data isn't valid hex", ErrInvalidHash, s.name)
		}
		// Some lengths are both valid hex and valid base64: try base64.
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s data isn't valid base64", ErrInvalidHash, s.name)
	}
	return raw, nil
}

func verifyPlain(raw []byte, password string) (bool, error) {
	return subtle.ConstantTimeCompare(raw, []byte(password)) == 1, nil
}

func digestVerifier(newHash func() hash.Hash) func([]byte, string) (bool, error) {
	return func(raw []byte, password string) (bool, error) {
		h := newHash()
		h.Write([]byte(password))
		return subtle.ConstantTimeCompare(h.Sum(nil), raw) == 1, nil
	}
}

// saltedVerifier: raw is digest(password || salt) || salt.
func saltedVerifier(newHash func() hash.Hash) func([]byte, string) (bool, error) {
	return func(raw []byte, password string) (bool, error) {
		h := newHash()
		n := h.Size()
		if len(raw) <= n {
			return false, fmt.Errorf("%w: salted digest too short", ErrInvalidHash)
		}
		h.Write([]byte(password))
		h.Write(raw[n:])
		return subtle.ConstantTimeCompare(h.Sum(nil), raw[:n]) == 1, nil
	}
}

// verifyCrypt is crypt_verify(): bcrypt for $2?$, otherwise the crypt(3)
// string chosen by the prefix. An empty hash never matches.
func verifyCrypt(raw []byte, password string) (bool, error) {
	stored := string(raw)
	var computed string
	var ok bool
	switch {
	case stored == "":
		return false, nil
	case len(stored) > 4 && stored[0] == '$' && stored[1] == '2' && stored[3] == '$':
		return verifyBcrypt(raw, password)
	case strings.HasPrefix(stored, "$1$"):
		computed, ok = md5Crypt(stored, []byte(password))
	case strings.HasPrefix(stored, "$5$"), strings.HasPrefix(stored, "$6$"):
		computed, ok = shaCrypt(stored, []byte(password))
	default:
		return false, fmt.Errorf("%w: crypt variant %q", ErrUnknownScheme, cryptPrefix(stored))
	}
	if !ok {
		return false, fmt.Errorf("%w: malformed crypt string", ErrInvalidHash)
	}
	return subtle.ConstantTimeCompare([]byte(computed), raw) == 1, nil
}

// cryptPrefix names a crypt variant for error messages without echoing the hash.
func cryptPrefix(s string) string {
	if len(s) > 1 && s[0] == '$' {
		if i := strings.IndexByte(s[1:], '$'); i >= 0 {
			return s[:i+2]
		}
	}
	return "traditional DES"
}

func verifyBcrypt(raw []byte, password string) (bool, error) {
	// Like crypt_blowfish, only the first 72 bytes of the password count.
	err := bcrypt.CompareHashAndPassword(raw, []byte(password))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	}
	return false, fmt.Errorf("%w: bcrypt: %v", ErrInvalidHash, err)
}

// verifyMD5 is md5_verify(): MD5-crypt when the data starts with $1$,
// otherwise PLAIN-MD5.
func verifyMD5(raw []byte, password string) (bool, error) {
	if strings.HasPrefix(string(raw), "$1$") {
		return verifyCrypt(raw, password)
	}
	s := &plainMD5
	digest, err := decode(s, s.enc, false, string(raw))
	if err != nil {
		return false, fmt.Errorf("%w: not a valid MD5-CRYPT or PLAIN-MD5 password", ErrInvalidHash)
	}
	return s.verify(digest, password)
}

// verifyPBKDF2: "$1$<salt>$<rounds>$<40 hex digits>", PBKDF2-HMAC-SHA1 with
// the salt used as ASCII.
func verifyPBKDF2(raw []byte, password string) (bool, error) {
	rest, ok := strings.CutPrefix(string(raw), "$1$")
	if !ok {
		return false, fmt.Errorf("%w: invalid PBKDF2 prefix", ErrInvalidHash)
	}
	f := strings.Split(rest, "$")
	if len(f) != 3 {
		return false, fmt.Errorf("%w: invalid PBKDF2 format", ErrInvalidHash)
	}
	rounds, err := parseUint32(f[1])
	if err != nil || rounds == 0 {
		return false, fmt.Errorf("%w: invalid PBKDF2 rounds", ErrInvalidHash)
	}
	want, err := hex.DecodeString(f[2])
	if err != nil || len(want) != sha1.Size {
		return false, fmt.Errorf("%w: PBKDF2 hash not 160bit hex-encoded", ErrInvalidHash)
	}
	got, err := pbkdf2.Key(sha1.New, password, []byte(f[0]), int(rounds), sha1.Size)
	if err != nil {
		return false, fmt.Errorf("%w: pbkdf2: %v", ErrInvalidHash, err)
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// argon2MaxMemoryKiB bounds the memory one stored hash may ask for (1 GiB),
// so a bad entry cannot exhaust the process. libsodium's own limits are
// higher; nobody stores hashes that need more for a login.
const argon2MaxMemoryKiB = 1 << 20

// verifyArgon2 checks a PHC string "$argon2id$v=19$m=…,t=…,p=…$salt$hash"
// (or $argon2i$), as libsodium's crypto_pwhash_str_verify does.
func verifyArgon2(raw []byte, password string) (bool, error) {
	f := strings.Split(string(raw), "$")
	// "", variant, "v=19", "m=…,t=…,p=…", salt, hash
	if len(f) != 6 || f[0] != "" {
		return false, fmt.Errorf("%w: invalid argon2 string", ErrInvalidHash)
	}
	variant := f[1]
	if variant != "argon2i" && variant != "argon2id" {
		return false, fmt.Errorf("%w: argon2 variant %q", ErrUnknownScheme, variant)
	}
	if f[2] != "v=19" {
		return false, fmt.Errorf("%w: argon2 version %q", ErrUnknownScheme, f[2])
	}
	var m, t, p uint64
	for _, kv := range strings.Split(f[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return false, fmt.Errorf("%w: argon2 parameter %q", ErrInvalidHash, kv)
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			p = n
		default:
			return false, fmt.Errorf("%w: argon2 parameter %q", ErrInvalidHash, kv)
		}
	}
	if m == 0 || t == 0 || p == 0 || p > 255 || m > argon2MaxMemoryKiB || m < 8*p {
		return false, fmt.Errorf("%w: argon2 parameters out of range", ErrInvalidHash)
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(f[4])
	want, err2 := base64.RawStdEncoding.DecodeString(f[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(want) < 4 {
		return false, fmt.Errorf("%w: argon2 salt or hash", ErrInvalidHash)
	}
	var got []byte
	if variant == "argon2id" {
		got = argon2.IDKey([]byte(password), salt, uint32(t), uint32(m), uint8(p), uint32(len(want)))
	} else {
		got = argon2.Key([]byte(password), salt, uint32(t), uint32(m), uint8(p), uint32(len(want)))
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
