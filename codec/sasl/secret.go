package sasl

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

// SecretExchange is the server side of CRAM-MD5 or SCRAM-SHA-256: the mechanisms whose
// proof is checked against the user's stored secret rather than sent as a password. A
// session keeps one and starts it for each authentication; its zero value is ready.
//
// The exchange stops once in the middle (SecretLookup): the codec asks the engine for
// the user's stored password (login.ActSecret), and Secret resumes it. The proof is then
// checked here, and the exchange ends with SecretDone and Verified. Nothing is random
// or timed here: the session's nonce (fresh random printable characters, no ",") comes
// in with Start, and each Start of the same SecretExchange makes it unique again with a
// counter.
type SecretExchange struct {
	mech     string
	step     secretStep
	nonce    string
	host     string
	n        uint32 // Starts so far: keeps challenges unique within a session
	chal     []byte // CRAM-MD5: the challenge sent
	user     []byte // the user, copied
	authzid  []byte // SCRAM: the authzid, copied (nil: none)
	digest   []byte // CRAM-MD5: the client's digest, copied
	scram    SCRAMServer
	verified bool
}

type secretStep uint8

const (
	secretNone      secretStep = iota
	secretFirst                // started: the initial response (or nil) comes next
	secretCRAM                 // CRAM-MD5: the challenge is out
	secretSCRAM                // SCRAM: the empty challenge is out, client-first comes next
	secretLookup               // waiting for Secret
	secretSCRAMLast            // SCRAM: server-first is out, client-final comes next
	secretSCRAMEnd             // SCRAM: server-final is out; any answer ends the exchange
	secretDone
)

// SecretStatus is where a SecretExchange stands after a step.
type SecretStatus uint8

const (
	// SecretContinue: send the challenge, feed the client's answer to Next.
	SecretContinue SecretStatus = iota + 1
	// SecretLookup: the user's stored password is needed (User); call Secret with it.
	SecretLookup
	// SecretDone: the exchange is over; Verified says whether the proof matched.
	SecretDone
)

// SecretMechanism reports whether mech (as the client sent it, in any case) runs in a
// SecretExchange: its constant (CRAMMD5, SCRAMSHA256), or "".
func SecretMechanism(mech []byte) string {
	switch {
	case equalFold(mech, CRAMMD5):
		return CRAMMD5
	case equalFold(mech, SCRAMSHA256):
		return SCRAMSHA256
	}
	return ""
}

// Start begins an exchange of mech (CRAMMD5 or SCRAMSHA256). nonce is the session's
// random part of the challenge (SessionInfo.SASLNonce), host the name in CRAM-MD5's
// challenge. It reports false, and starts nothing, for another mechanism, or without
// a usable nonce.
func (x *SecretExchange) Start(mech, nonce, host string) bool {
	x.Reset()
	if (mech != CRAMMD5 && mech != SCRAMSHA256) || nonce == "" || !printable([]byte(nonce)) {
		return false
	}
	x.mech, x.nonce, x.host, x.step = mech, nonce, host, secretFirst
	x.n++
	return true
}

// Active reports whether an exchange is in progress (started and not yet reset).
func (x *SecretExchange) Active() bool { return x.step != secretNone }

// Mechanism is the mechanism of the exchange in progress, or "".
func (x *SecretExchange) Mechanism() string {
	if x.step == secretNone {
		return ""
	}
	return x.mech
}

// uniqueNonce is the session's nonce made unique for this Start.
func (x *SecretExchange) appendNonce(dst []byte) []byte {
	dst = append(dst, x.nonce...)
	dst = append(dst, '.')
	return strconv.AppendUint(dst, uint64(x.n), 10)
}

// Next takes the client's next response, decoded; nil is no initial response. CRAM-MD5
// ignores an initial response (as Dovecot's mech-cram-md5 does) and sends its challenge
// "<nonce@host>"; its answer, "<user> SP <digest>", needs the lookup. SCRAM-SHA-256 asks
// for client-first with an empty challenge if there was no initial response; client-first
// needs the lookup; client-final is checked against the secret: a wrong proof is
// SecretDone with Verified false, a right one sends server-final as a challenge, and the
// client's answer to that (whatever it is, as in Dovecot) is SecretDone. Malformed
// messages are errors (ErrCRAM, ErrSCRAM); the exchange is then over.
func (x *SecretExchange) Next(resp []byte) (challenge []byte, st SecretStatus, err error) {
	switch x.step {
	case secretFirst:
		if x.mech == CRAMMD5 {
			c := append(x.chal[:0], '<')
			c = x.appendNonce(c)
			c = append(c, '@')
			c = append(c, x.host...)
			x.chal = append(c, '>')
			x.step = secretCRAM
			return x.chal, SecretContinue, nil
		}
		if resp == nil {
			x.step = secretSCRAM
			return challengeEmpty, SecretContinue, nil
		}
		return x.scramFirst(resp)
	case secretCRAM:
		user, digest, err := ParseCRAMMD5(resp)
		if err != nil {
			return nil, 0, x.fail(err)
		}
		x.user = append(x.user[:0], user...)
		x.digest = append(x.digest[:0], digest...)
		x.step = secretLookup
		return nil, SecretLookup, nil
	case secretSCRAM:
		return x.scramFirst(resp)
	case secretSCRAMLast:
		final, err := x.scram.ClientFinal(resp)
		switch {
		case err == ErrProof:
			x.verified, x.step = false, secretDone
			return nil, SecretDone, nil
		case err != nil:
			return nil, 0, x.fail(err)
		}
		x.chal = append(x.chal[:0], final...)
		x.step = secretSCRAMEnd
		return x.chal, SecretContinue, nil
	case secretSCRAMEnd:
		x.verified, x.step = true, secretDone
		return nil, SecretDone, nil
	}
	return nil, 0, x.fail(ErrSequence)
}

func (x *SecretExchange) scramFirst(msg []byte) ([]byte, SecretStatus, error) {
	user, authzid, err := x.scram.ClientFirst(msg)
	if err != nil {
		return nil, 0, x.fail(err)
	}
	x.user = append(x.user[:0], user...)
	x.authzid = nil
	if authzid != nil && string(authzid) != string(user) {
		x.authzid = append(x.user[len(x.user):], authzid...)
	}
	x.step = secretLookup
	return nil, SecretLookup, nil
}

// User is the user (CRAM-MD5's, SCRAM's n=) and authzid (SCRAM's a=, nil if none or the
// same as the user) the exchange is about, once it asked for the lookup (also once
// done); valid until Reset.
func (x *SecretExchange) User() (user, authzid []byte) { return x.user, x.authzid }

// Final reports whether server-final is out: the client's answer, whatever it is
// (even "*", or not base64), ends the exchange (Dovecot's final_response).
func (x *SecretExchange) Final() bool { return x.step == secretSCRAMEnd }

// Secret resumes the exchange after SecretLookup with the user's stored password, with
// its scheme: "{PLAIN}..." (or CLEAR, CLEARTEXT) serves both mechanisms, "{CRAM-MD5}..."
// CRAM-MD5 and "{SCRAM-SHA-256}..." SCRAM-SHA-256 (Dovecot's schemes; the engine has
// undone any encoding suffix). CRAM-MD5 is then SecretDone; SCRAM-SHA-256 sends
// server-first (a plaintext password is derived with SCRAMIterations and a salt from
// the nonce). ErrSecret: the scheme can't serve the mechanism.
func (x *SecretExchange) Secret(stored string) (challenge []byte, st SecretStatus, err error) {
	if x.step != secretLookup {
		return nil, 0, x.fail(ErrSequence)
	}
	scheme, data := "", stored
	if strings.HasPrefix(stored, "{") {
		if i := strings.IndexByte(stored, '}'); i > 0 {
			scheme, data = strings.ToUpper(stored[1:i]), stored[i+1:]
		}
	}
	plain := scheme == "PLAIN" || scheme == "CLEAR" || scheme == "CLEARTEXT"
	if x.mech == CRAMMD5 {
		switch {
		case plain:
			x.verified = VerifyCRAMMD5(string(x.chal), string(x.digest), []byte(data))
		case scheme == CRAMMD5:
			x.verified = VerifyCRAMMD5Secret(string(x.chal), string(x.digest), []byte(data))
		default:
			return nil, 0, x.fail(ErrSecret)
		}
		x.step = secretDone
		return nil, SecretDone, nil
	}
	var sec SCRAMSecret
	switch {
	case plain:
		salt := sha256.Sum256(x.appendNonce(x.chal[:0]))
		if sec, err = NewSCRAMSecret(data, salt[:16], SCRAMIterations); err != nil {
			return nil, 0, x.fail(ErrSecret)
		}
	case scheme == SCRAMSHA256:
		if sec, err = ParseSCRAMSecret(data); err != nil {
			return nil, 0, x.fail(ErrSecret)
		}
	default:
		return nil, 0, x.fail(ErrSecret)
	}
	nonce := x.appendNonce(x.chal[:0])
	x.chal = nonce[:0]
	first, err := x.scram.ServerFirst(sec, string(nonce))
	if err != nil {
		return nil, 0, x.fail(err)
	}
	x.step = secretSCRAMLast
	return first, SecretContinue, nil
}

// Verified reports, once the exchange is SecretDone, whether the client's proof matched.
func (x *SecretExchange) Verified() bool { return x.step == secretDone && x.verified }

// Reset ends the exchange and wipes what it kept of the client's messages. The counter
// that keeps challenges unique stays.
func (x *SecretExchange) Reset() {
	clear(x.user[:cap(x.user)])
	clear(x.digest[:cap(x.digest)])
	clear(x.chal[:cap(x.chal)])
	x.user, x.digest, x.chal, x.authzid = x.user[:0], x.digest[:0], x.chal[:0], nil
	x.scram.Reset()
	x.step, x.verified, x.mech = secretNone, false, ""
}

func (x *SecretExchange) fail(err error) error {
	x.Reset()
	return err
}

// AppendData appends a challenge that is not one of Next's fixed ones (a
// SecretExchange's) as this protocol puts it on the wire: Head, the base64 of c, Tail;
// an empty c is Empty.
func (t *Challenges) AppendData(dst, c []byte) []byte {
	if len(c) == 0 {
		return append(dst, t.Empty...)
	}
	dst = append(dst, t.Head...)
	dst = base64.StdEncoding.AppendEncode(dst, c)
	return append(dst, t.Tail...)
}
