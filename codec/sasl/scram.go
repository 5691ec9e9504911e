package sasl

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strconv"
	"strings"
)

// SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, without channel binding. The
// exchange needs the user's stored secret between the client's first message and the
// server's: SCRAMServer.ClientFirst yields the user to look up, the engine fetches the
// secret from the passdb and a fresh nonce from its randomness, and ServerFirst resumes
// the exchange with them. The codec verifies the proof itself: it is pure arithmetic on
// the secret.

// SCRAMSecret is what a passdb keeps of a SCRAM-SHA-256 password: Dovecot's
// {SCRAM-SHA-256} scheme, "<iterations>,<base64 salt>,<base64 StoredKey>,<base64
// ServerKey>" (password-scheme-scram.c).
type SCRAMSecret struct {
	Iterations int
	Salt       []byte
	StoredKey  [sha256.Size]byte
	ServerKey  [sha256.Size]byte
}

// SCRAMIterations is Dovecot's default iteration count (SCRAM_DEFAULT_ITERATE_COUNT).
const SCRAMIterations = 4096

// NewSCRAMSecret derives the secret of password with salt and iterations (RFC 5802
// section 3): SaltedPassword = PBKDF2-HMAC-SHA-256, ClientKey = HMAC(SaltedPassword,
// "Client Key"), StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword, "Server
// Key"). Dovecot uses 16 random bytes of salt.
func NewSCRAMSecret(password string, salt []byte, iterations int) (SCRAMSecret, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return SCRAMSecret{}, err
	}
	s := SCRAMSecret{Iterations: iterations, Salt: append([]byte(nil), salt...)}
	s.StoredKey = sha256.Sum256(hmacSHA256(salted, "Client Key"))
	copy(s.ServerKey[:], hmacSHA256(salted, "Server Key"))
	clear(salted)
	return s, nil
}

// String is the secret in Dovecot's {SCRAM-SHA-256} scheme, without the prefix.
func (s SCRAMSecret) String() string {
	b64 := base64.StdEncoding
	return strconv.Itoa(s.Iterations) + "," + b64.EncodeToString(s.Salt) + "," +
		b64.EncodeToString(s.StoredKey[:]) + "," + b64.EncodeToString(s.ServerKey[:])
}

// ParseSCRAMSecret parses Dovecot's {SCRAM-SHA-256} scheme value (without the prefix).
func ParseSCRAMSecret(v string) (SCRAMSecret, error) {
	var s SCRAMSecret
	f := strings.Split(v, ",")
	if len(f) != 4 {
		return s, ErrSCRAM
	}
	it, err := strconv.Atoi(f[0])
	if err != nil || it < 1 {
		return s, ErrSCRAM
	}
	b64 := base64.StdEncoding
	salt, err1 := b64.DecodeString(f[1])
	stored, err2 := b64.DecodeString(f[2])
	server, err3 := b64.DecodeString(f[3])
	if err1 != nil || err2 != nil || err3 != nil || len(salt) == 0 ||
		len(stored) != sha256.Size || len(server) != sha256.Size {
		return s, ErrSCRAM
	}
	s.Iterations, s.Salt = it, salt
	copy(s.StoredKey[:], stored)
	copy(s.ServerKey[:], server)
	return s, nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// SCRAMClientFirst is the client's first message, parsed: sub-slices of it but User,
// which is decoded.
type SCRAMClientFirst struct {
	GS2Header []byte // "n,," / "y,," / "n,a=<authzid>," as sent: client-final's c= must repeat it
	Authzid   []byte // decoded; nil if none
	User      []byte // decoded n=
	Nonce     []byte // the client's r=
	Bare      []byte // client-first-message-bare, for the AuthMessage
}

// ParseSCRAMClientFirst parses client-first-message (RFC 5802 section 7):
// gs2-cbind-flag "," [authzid] "," "n=" saslname ",r=" nonce ["," extensions]. Channel
// binding ("p=") is refused, as is the mandatory extension "m=". User and Authzid are
// appended, decoded, to dst.
func ParseSCRAMClientFirst(msg, dst []byte) (SCRAMClientFirst, []byte, error) {
	var cf SCRAMClientFirst
	flag, rest, ok := bytes.Cut(msg, []byte{','})
	if !ok || len(flag) != 1 || (flag[0] != 'n' && flag[0] != 'y') {
		return cf, dst, ErrSCRAM
	}
	az, bare, ok := bytes.Cut(rest, []byte{','})
	if !ok {
		return cf, dst, ErrSCRAM
	}
	cf.GS2Header, cf.Bare = msg[:len(msg)-len(bare)], bare
	if len(az) > 0 {
		if len(az) < 3 || az[0] != 'a' || az[1] != '=' {
			return cf, dst, ErrSCRAM
		}
		n := len(dst)
		d, ok := unescapeSASLName(dst, az[2:])
		if !ok {
			return cf, d, ErrSCRAM
		}
		dst = d
		cf.Authzid = dst[n:len(dst):len(dst)]
	}
	user, rest, ok := bytes.Cut(bare, []byte{','})
	if !ok || len(user) < 3 || user[0] != 'n' || user[1] != '=' {
		return cf, dst, ErrSCRAM
	}
	n := len(dst)
	d, ok := unescapeSASLName(dst, user[2:])
	dst = d
	if !ok || len(dst) == n || bytes.IndexByte(dst[n:], 0) >= 0 {
		return cf, dst, ErrSCRAM
	}
	cf.User = dst[n:len(dst):len(dst)]
	nonce, _, _ := bytes.Cut(rest, []byte{','})
	if len(nonce) < 3 || nonce[0] != 'r' || nonce[1] != '=' || !printable(nonce[2:]) {
		return cf, dst, ErrSCRAM
	}
	cf.Nonce = nonce[2:]
	return cf, dst, nil
}

// printable is RFC 5802's "printable": %x21-2B / %x2D-7E (no ",").
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// SCRAMClientFinal is the client's final message, parsed: sub-slices of it.
type SCRAMClientFinal struct {
	Binding      []byte // c=, base64 of the GS2 header
	Nonce        []byte // r=, the client's and the server's nonce
	Proof        []byte // p=, base64
	WithoutProof []byte // client-final-message-without-proof, for the AuthMessage
}

// ParseSCRAMClientFinal parses client-final-message: "c=" base64 ",r=" nonce [","
// extensions] ",p=" base64.
func ParseSCRAMClientFinal(msg []byte) (SCRAMClientFinal, error) {
	var cf SCRAMClientFinal
	i := bytes.LastIndex(msg, []byte(",p="))
	if i < 0 {
		return cf, ErrSCRAM
	}
	cf.WithoutProof, cf.Proof = msg[:i], msg[i+3:]
	c, rest, ok := bytes.Cut(cf.WithoutProof, []byte{','})
	if !ok || len(c) < 2 || c[0] != 'c' || c[1] != '=' {
		return cf, ErrSCRAM
	}
	cf.Binding = c[2:]
	r, _, _ := bytes.Cut(rest, []byte{','})
	if len(r) < 3 || r[0] != 'r' || r[1] != '=' || !printable(r[2:]) || len(cf.Proof) == 0 {
		return cf, ErrSCRAM
	}
	cf.Nonce = r[2:]
	return cf, nil
}

// SCRAMServer is one SCRAM-SHA-256 exchange, server side: ClientFirst, then (with the
// passdb's secret) ServerFirst, then ClientFinal. Its zero value is ready; Reset wipes it.
type SCRAMServer struct {
	first  SCRAMClientFirst
	buf    []byte // the client's first message
	names  []byte // the decoded user and authzid
	auth   []byte // AuthMessage so far: bare "," server-first
	nonce  []byte // the combined nonce
	secret SCRAMSecret
	step   uint8
}

// ClientFirst takes the client's first message (decoded from base64). It returns the
// user (decoded n=) and authzid (decoded a=, nil if none) whose secret the engine must
// fetch; they are valid until Reset.
func (s *SCRAMServer) ClientFirst(msg []byte) (user, authzid []byte, err error) {
	s.Reset()
	s.buf = append(s.buf[:0], msg...)
	cf, names, err := ParseSCRAMClientFirst(s.buf, s.names[:0])
	s.names = names
	if err != nil {
		s.Reset()
		return nil, nil, err
	}
	s.first, s.step = cf, 1
	return cf.User, cf.Authzid, nil
}

// ServerFirst resumes the exchange with the user's secret and serverNonce, fresh random
// printable characters from the engine (no ","; 24 base64 characters of 18 random bytes
// will do). It returns server-first-message: "r=" client nonce + server nonce ",s="
// salt ",i=" iterations, the challenge to send.
func (s *SCRAMServer) ServerFirst(secret SCRAMSecret, serverNonce string) ([]byte, error) {
	if s.step != 1 {
		return nil, ErrSequence
	}
	if serverNonce == "" || !printable([]byte(serverNonce)) || secret.Iterations < 1 {
		s.Reset()
		return nil, ErrSCRAM
	}
	s.secret = secret
	a := append(s.auth[:0], s.first.Bare...)
	a = append(a, ',')
	m := len(a)
	a = append(a, "r="...)
	a = append(a, s.first.Nonce...)
	a = append(a, serverNonce...)
	s.nonce = a[m+2 : len(a) : len(a)]
	a = append(a, ",s="...)
	a = base64.StdEncoding.AppendEncode(a, secret.Salt)
	a = append(a, ",i="...)
	a = strconv.AppendInt(a, int64(secret.Iterations), 10)
	s.auth, s.step = a, 2
	return a[m:len(a):len(a)], nil
}

// ClientFinal takes the client's final message and checks its channel binding, nonce
// and proof. On success it returns server-final-message, "v=" base64(ServerSignature),
// which goes to the client as a last challenge (or with the success, where the protocol
// allows); the client's (empty) answer to it ends the exchange. ErrProof: a wrong
// password (or nonce).
func (s *SCRAMServer) ClientFinal(msg []byte) ([]byte, error) {
	if s.step != 2 {
		return nil, ErrSequence
	}
	defer s.Reset()
	cf, err := ParseSCRAMClientFinal(msg)
	if err != nil {
		return nil, err
	}
	var hdr [128]byte
	want := base64.StdEncoding.AppendEncode(hdr[:0], s.first.GS2Header)
	if !bytes.Equal(cf.Binding, want) || !bytes.Equal(cf.Nonce, s.nonce) {
		return nil, ErrProof
	}
	proof, err := base64.StdEncoding.AppendDecode(nil, cf.Proof)
	if err != nil || len(proof) != sha256.Size {
		return nil, ErrSCRAM
	}
	auth := append(s.auth, ',')
	auth = append(auth, cf.WithoutProof...)
	s.auth = auth
	m := hmac.New(sha256.New, s.secret.StoredKey[:])
	m.Write(auth)
	sig := m.Sum(nil)
	for i := range proof {
		proof[i] ^= sig[i] // proof is now ClientKey
	}
	stored := sha256.Sum256(proof)
	clear(proof)
	if subtle.ConstantTimeCompare(stored[:], s.secret.StoredKey[:]) != 1 {
		return nil, ErrProof
	}
	m = hmac.New(sha256.New, s.secret.ServerKey[:])
	m.Write(auth)
	out := append([]byte("v="), base64.StdEncoding.EncodeToString(m.Sum(nil))...)
	return out, nil
}

// Reset ends the exchange and wipes what it kept.
func (s *SCRAMServer) Reset() {
	clear(s.buf[:cap(s.buf)])
	clear(s.names[:cap(s.names)])
	clear(s.auth[:cap(s.auth)])
	s.buf, s.names, s.auth, s.nonce = s.buf[:0], s.names[:0], s.auth[:0], nil
	s.first, s.secret, s.step = SCRAMClientFirst{}, SCRAMSecret{}, 0
}
