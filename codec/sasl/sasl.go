// Package sasl is the SASL of the login codecs: the server side of PLAIN (RFC 4616) and
// LOGIN as a pure step function, the base64 responses travel in, and the PLAIN initial
// response a proxy sends its backend.
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
	Plain = "PLAIN"
	Login = "LOGIN"
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
)

var errText = [...]string{
	ErrBase64:    "sasl: invalid base64 data",
	ErrMalformed: "sasl: invalid PLAIN message",
	ErrEmptyUser: "sasl: empty user name",
	ErrNUL:       "sasl: NUL in user name or password",
	ErrSequence:  "sasl: no exchange in progress",
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
	Password []byte
}
