package route

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"strconv"
	"strings"
)

// crypt(3)-style hashes, written from the published algorithms so that no
// cgo or libc crypt is needed:
//   - $5$ / $6$: Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512"
//     (https://www.akkadia.org/drepper/SHA-crypt.txt), including rounds=.
//   - $1$: Poul-Henning Kamp's MD5-crypt (FreeBSD, glibc).
// Each function returns the full string crypt() would produce for the given
// setting, so the caller compares it with the stored hash.

const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func b64From24(dst []byte, b2, b1, b0 byte, n int) []byte {
	w := uint32(b2)<<16 | uint32(b1)<<8 | uint32(b0)
	for ; n > 0; n-- {
		dst = append(dst, itoa64[w&0x3f])
		w >>= 6
	}
	return dst
}

const (
	shaCryptRoundsDefault = 5000
	shaCryptRoundsMin     = 1000
	shaCryptRoundsMax     = 999999999
	shaCryptSaltMax       = 16
)

// Byte order of the final encoding: each triple is (B2, B1, B0) of one
// 24-bit group, taken from the specification's sample code.
var (
	sha256CryptOrder = [...][3]byte{
		{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23}, {24, 4, 14},
		{15, 25, 5}, {6, 16, 26}, {27, 7, 17}, {18, 28, 8}, {9, 19, 29},
	}
	sha512CryptOrder = [...][3]byte{
		{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4},
		{47, 5, 26}, {6, 27, 48}, {28, 49, 7}, {50, 8, 29}, {9, 30, 51},
		{31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13}, {56, 14, 35},
		{15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19},
		{62, 20, 41},
	}
)

// shaCrypt computes SHA-crypt for setting ("$5$[rounds=N$]salt[$…]" or the
// $6$ form). ok is false when the setting is malformed.
func shaCrypt(setting string, password []byte) (out string, ok bool) {
	var newHash func() hash.Hash
	var magic string
	switch {
	case strings.HasPrefix(setting, "$5$"):
		newHash, magic = sha256.New, "$5$"
	case strings.HasPrefix(setting, "$6$"):
		newHash, magic = sha512.New, "$6$"
	default:
		return "", false
	}
	rest := setting[len(magic):]
	rounds, customRounds := shaCryptRoundsDefault, false
	if num, found := strings.CutPrefix(rest, "rounds="); found {
		i := strings.IndexByte(num, '$')
		if i <= 0 || !allDigits(num[:i]) {
			return "", false
		}
		n, err := strconv.ParseUint(num[:i], 10, 64)
		if err != nil { // only overflow is left: glibc's strtoul saturates
			n = shaCryptRoundsMax
		}
		rounds = int(min(max(n, shaCryptRoundsMin), shaCryptRoundsMax))
		customRounds = true
		rest = num[i+1:]
	}
	salt := rest
	if i := strings.IndexByte(salt, '$'); i >= 0 {
		salt = salt[:i]
	}
	if len(salt) > shaCryptSaltMax {
		salt = salt[:shaCryptSaltMax]
	}

	h := newHash()
	size := h.Size()
	var sum [sha512.Size]byte // room for the larger digest
	saltb := []byte(salt)

	// Digest B = H(P S P).
	h.Write(password)
	h.Write(saltb)
	h.Write(password)
	b := h.Sum(sum[:0])
	B := make([]byte, size)
	copy(B, b)

	// Digest A = H(P S B-repeated-to-len(P) then, per bit of len(P), B or P).
	h.Reset()
	h.Write(password)
	h.Write(saltb)
	n := len(password)
	for ; n > size; n -= size {
		h.Write(B)
	}
	h.Write(B[:n])
	for n = len(password); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write(B)
		} else {
			h.Write(password)
		}
	}
	A := h.Sum(nil)

	// Sequence P: digest DP = H(P repeated len(P) times), stretched to len(P).
	h.Reset()
	for range len(password) {
		h.Write(password)
	}
	dp := h.Sum(sum[:0])
	P := make([]byte, len(password))
	for i := 0; i < len(P); i += size {
		copy(P[i:], dp)
	}

	// Sequence S: digest DS = H(S repeated 16+A[0] times), cut to len(S).
	h.Reset()
	for range 16 + int(A[0]) {
		h.Write(saltb)
	}
	ds := h.Sum(sum[:0])
	S := make([]byte, len(salt))
	copy(S, ds) // salt is at most 16 bytes, shorter than any digest

	C := A
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(P)
		} else {
			h.Write(C)
		}
		if i%3 != 0 {
			h.Write(S)
		}
		if i%7 != 0 {
			h.Write(P)
		}
		if i&1 != 0 {
			h.Write(C)
		} else {
			h.Write(P)
		}
		C = h.Sum(C[:0])
	}

	dst := make([]byte, 0, len(magic)+len("rounds=999999999$")+len(salt)+1+86)
	dst = append(dst, magic...)
	if customRounds {
		dst = append(dst, "rounds="...)
		dst = strconv.AppendInt(dst, int64(rounds), 10)
		dst = append(dst, '$')
	}
	dst = append(dst, salt...)
	dst = append(dst, '$')
	if size == sha256.Size {
		for _, g := range sha256CryptOrder {
			dst = b64From24(dst, C[g[0]], C[g[1]], C[g[2]], 4)
		}
		dst = b64From24(dst, 0, C[31], C[30], 3)
	} else {
		for _, g := range sha512CryptOrder {
			dst = b64From24(dst, C[g[0]], C[g[1]], C[g[2]], 4)
		}
		dst = b64From24(dst, 0, 0, C[63], 2)
	}
	return string(dst), true
}

// md5Crypt computes MD5-crypt for setting "$1$salt[$…]" (the salt is at most
// 8 characters and ends at the next '$').
func md5Crypt(setting string, password []byte) (out string, ok bool) {
	const magic = "$1$"
	salt, found := strings.CutPrefix(setting, magic)
	if !found {
		return "", false
	}
	if i := strings.IndexByte(salt, '$'); i >= 0 {
		salt = salt[:i]
	}
	if len(salt) > 8 {
		salt = salt[:8]
	}

	saltb := []byte(salt)
	alt := md5.New()
	alt.Write(password)
	alt.Write(saltb)
	alt.Write(password)
	final := alt.Sum(nil)

	h := md5.New()
	h.Write(password)
	h.Write([]byte(magic))
	h.Write(saltb)
	for n := len(password); n > 0; n -= md5.Size {
		h.Write(final[:min(n, md5.Size)])
	}
	// The classic implementation clears final here and then, for each bit
	// of len(P), adds final[0] (now zero) or P[0].
	for n := len(password); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write([]byte{0})
		} else {
			h.Write(password[:1])
		}
	}
	final = h.Sum(final[:0])

	for i := range 1000 {
		h.Reset()
		if i&1 != 0 {
			h.Write(password)
		} else {
			h.Write(final)
		}
		if i%3 != 0 {
			h.Write(saltb)
		}
		if i%7 != 0 {
			h.Write(password)
		}
		if i&1 != 0 {
			h.Write(final)
		} else {
			h.Write(password)
		}
		final = h.Sum(final[:0])
	}

	dst := make([]byte, 0, len(magic)+len(salt)+1+22)
	dst = append(dst, magic...)
	dst = append(dst, salt...)
	dst = append(dst, '$')
	dst = b64From24(dst, final[0], final[6], final[12], 4)
	dst = b64From24(dst, final[1], final[7], final[13], 4)
	dst = b64From24(dst, final[2], final[8], final[14], 4)
	dst = b64From24(dst, final[3], final[9], final[15], 4)
	dst = b64From24(dst, final[4], final[10], final[5], 4)
	dst = b64From24(dst, 0, 0, final[11], 2)
	return string(dst), true
}
