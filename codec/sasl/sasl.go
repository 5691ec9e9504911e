// Package sasl is the SASL of the login codecs: the server side of PLAIN (RFC 4616),
// LOGIN, XOAUTH2 and OAUTHBEARER (RFC 7628) as a pure step function, the parsers and
// pure helpers of CRAM-MD5 (RFC 2195) and SCRAM-SHA-256 (RFC 5802, RFC 7677), the base64
// responses travel in, and the initial responses a proxy sends its backend.
//
// It owns what Dovecot's auth process would decide about a response: whether it is
// base64, how PLAIN's message splits, an empty user, a NUL where none may be. It does not
// own the wire: reading a response line and its size limit (LOGIN_MAX_AUTH_BUF_SIZE,
// which applies while the line is read, before there is a response to step with), "*"
// and "=" as each protocol frames them, and the reply text for each failure stay with
// each protocol's codec. Standard library only, no I/O, no clock; nothing here allocates
// once its buffers have grown.
package sasl

// Mechanism names, as they are announced and as Credentials carry them.
const (
	Plain       = "PLAIN"
	Login       = "LOGIN"
	XOAuth2     = "XOAUTH2"
	OAuthBearer = "OAUTHBEARER"
	CRAMMD5     = "CRAM-MD5"
	SCRAMSHA256 = "SCRAM-SHA-256"
)

// LOGIN's prompts (Dovecot's mech-login), before base64: the challenges Next returns.
const (
	UsernamePrompt = "Username:"
	PasswordPrompt = "Password:"
)

// Error is why a response was refused. Each protocol maps it to its own reply: a bad
// base64 response has its own text, the others all read as a failed login.
type Error uint8

const (
	ErrBase64    Error = iota + 1 // not base64 (AppendDecode)
	ErrMalformed                  // a PLAIN message without exactly two NULs
	ErrEmptyUser                  // no user: PLAIN's authcid or LOGIN's user name is empty
	ErrNUL                        // a NUL in LOGIN's user name or password
	ErrSequence                   // Next without Start, or after the exchange ended
	ErrOAuth                      // an XOAUTH2/OAUTHBEARER message without a user or a valid bearer token
	ErrCRAM                       // a CRAM-MD5 response that is not "<user> SP <32 hex digits>"
	ErrSCRAM                      // a SCRAM message out of RFC 5802's grammar, or channel binding asked for
	ErrProof                      // SCRAM: the client's proof or nonce does not match
	ErrSecret                     // the stored password's scheme can't serve the mechanism
)

var errText = [...]string{
	ErrBase64:    "sasl: invalid base64 data",
	ErrMalformed: "sasl: invalid PLAIN message",
	ErrEmptyUser: "sasl: empty user name",
	ErrNUL:       "sasl: NUL in user name or password",
	ErrSequence:  "sasl: no exchange in progress",
	ErrOAuth:     "sasl: invalid OAuth message",
	ErrCRAM:      "sasl: invalid CRAM-MD5 response",
	ErrSCRAM:     "sasl: invalid SCRAM message",
	ErrProof:     "sasl: SCRAM proof mismatch",
	ErrSecret:    "sasl: password scheme not usable with this mechanism",
}

func (e Error) Error() string {
	if int(e) < len(errText) && errText[e] != "" {
		return errText[e]
	}
	return "sasl: unknown error"
}

// Server is the server side of an exchange, as go-sasl has it: a pure step function.
// The first call takes the client's initial response, nil if it sent none (an empty one
// is non-nil). While done is false, challenge goes to the client and its answer comes
// back through Next. An error ends the exchange as failed.
type Server interface {
	Next(response []byte) (challenge []byte, done bool, err error)
}

// Credentials are what a finished exchange yields. The slices point into the last
// response and into the Exchange: they hold until the response's buffer is reused or the
// Exchange is started again or reset.
type Credentials struct {
	Authzid  []byte // the user to log in as; nil if none, or if it is the Authcid
	Authcid  []byte // the user whose password it is; never empty
	Password []byte // PLAIN, LOGIN; nil for the OAuth mechanisms
	Token    []byte // XOAUTH2, OAUTHBEARER: the bearer token (never logged); nil otherwise
}
