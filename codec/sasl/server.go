package sasl

import "bytes"

// step is where an exchange stands.
type step uint8

const (
	stepNone      step = iota // not started, or over
	stepFirst                 // started: the initial response (or nil, for none) comes next
	stepPlain                 // PLAIN: the empty challenge is out, the message comes next
	stepUser                  // LOGIN: "Username:" is out
	stepPass                  // LOGIN: "Password:" is out
	stepOAuth                 // XOAUTH2, OAUTHBEARER: the empty challenge is out, the message comes next
	stepOAuthFail             // XOAUTH2, OAUTHBEARER: the error challenge is out; any answer fails
	stepDone                  // the credentials are complete
)

// The challenges, cut from one array with their capacity capped so that appending to one
// can't write over the next. Callers must not modify them.
var (
	prompts        = []byte(UsernamePrompt + PasswordPrompt + XOAuth2Failure + OAuthBearerFailure)
	challengeEmpty = prompts[:0:0] // non-nil: an empty challenge still goes out
	challengeUser  = cut(prompts, 0, len(UsernamePrompt))
	challengePass  = cut(prompts, len(UsernamePrompt), len(PasswordPrompt))
	challengeXO2   = cut(prompts, len(UsernamePrompt)+len(PasswordPrompt), len(XOAuth2Failure))
	challengeOB    = cut(prompts, len(UsernamePrompt)+len(PasswordPrompt)+len(XOAuth2Failure), len(OAuthBearerFailure))
)

func cut(b []byte, off, n int) []byte { return b[off : off+n : off+n] }

// Exchange is the server side of PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER. A session keeps one and starts it for
// each authentication: its zero value is ready, and once the buffer for LOGIN's user name
// has grown, no step allocates. It checks what Dovecot's auth process would check
// (mech-plain, mech-login, auth_request_set_username) and verifies nothing: the
// credentials go on to a lookup.
type Exchange struct {
	mech mechanism
	step step
	user []byte // LOGIN: the user name, copied out of its response
	last []byte // once done: the last response (PLAIN's message, LOGIN's password)
}

// mechanism is the mechanism of an Exchange.
type mechanism uint8

const (
	mechNone mechanism = iota
	mechPlain
	mechLogin
	mechXOAuth2
	mechOAuthBearer
)

var _ Server = (*Exchange)(nil)

// Start begins an exchange of mech, the name as the client sent it (in any case). It
// reports false for a mechanism other than PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER (CRAM-MD5
// and SCRAM-SHA-256 have their own types: CRAMMD5Response, SCRAMServer).
func (e *Exchange) Start(mech []byte) bool {
	e.Reset()
	switch {
	case equalFold(mech, Plain):
		e.mech = mechPlain
	case equalFold(mech, Login):
		e.mech = mechLogin
	case equalFold(mech, XOAuth2):
		e.mech = mechXOAuth2
	case equalFold(mech, OAuthBearer):
		e.mech = mechOAuthBearer
	default:
		e.mech = mechNone
		return false
	}
	e.step = stepFirst
	return true
}

// Mechanism is the mechanism of the last Start: Plain, Login, or "" if it was neither.
func (e *Exchange) Mechanism() string {
	switch e.mech {
	case mechPlain:
		return Plain
	case mechLogin:
		return Login
	case mechXOAuth2:
		return XOAuth2
	case mechOAuthBearer:
		return OAuthBearer
	}
	return ""
}

// Next takes the client's next response, decoded (see Server). PLAIN without an initial
// response asks for its message with an empty challenge; LOGIN asks for the user name,
// then the password, and takes an initial response, if it isn't empty, as the user name.
// XOAUTH2 and OAUTHBEARER ask for their message with an empty challenge too; a message
// Dovecot's mech-oauth2 refuses gets its JSON error challenge (XOAuth2Failure,
// OAuthBearerFailure) and whatever the client answers to that, ErrOAuth. Once done,
// Credentials has the result.
func (e *Exchange) Next(response []byte) (challenge []byte, done bool, err error) {
	switch e.step {
	case stepFirst:
		oauth := e.mech == mechXOAuth2 || e.mech == mechOAuthBearer
		switch {
		case oauth && response == nil:
			e.step = stepOAuth
			return challengeEmpty, false, nil
		case oauth:
			return e.oauth(response)
		case e.mech == mechPlain && response == nil:
			e.step = stepPlain
			return challengeEmpty, false, nil
		case e.mech == mechPlain:
			return e.plain(response)
		case len(response) == 0: // LOGIN: an empty initial response is none
			e.step = stepUser
			return challengeUser, false, nil
		}
		return e.loginUser(response)
	case stepPlain:
		return e.plain(response)
	case stepUser:
		return e.loginUser(response)
	case stepPass:
		return e.loginPass(response)
	case stepOAuth:
		return e.oauth(response)
	case stepOAuthFail:
		return nil, false, e.fail(ErrOAuth)
	}
	return nil, false, e.fail(ErrSequence)
}

// Credentials is the result of an exchange that is done; the zero value otherwise.
func (e *Exchange) Credentials() Credentials {
	switch {
	case e.step != stepDone:
		return Credentials{}
	case e.mech == mechLogin:
		return Credentials{Authcid: e.user, Password: e.last}
	case e.mech == mechXOAuth2:
		user, token, _ := ParseXOAuth2(e.last)
		return Credentials{Authcid: user, Token: token}
	case e.mech == mechOAuthBearer:
		user, token, _ := ParseOAuthBearer(e.last, e.user[:0])
		return Credentials{Authcid: user, Token: token}
	}
	authzid, authcid, pass, _ := splitPlain(e.last)
	return Credentials{Authzid: authzid, Authcid: authcid, Password: pass}
}

// Reset ends the exchange and wipes what it kept of the client's responses.
func (e *Exchange) Reset() {
	clear(e.user[:cap(e.user)])
	e.user, e.last, e.step = e.user[:0], nil, stepNone
}

// plain takes PLAIN's message.
func (e *Exchange) plain(msg []byte) ([]byte, bool, error) {
	if _, _, _, err := splitPlain(msg); err != 0 {
		return nil, false, e.fail(err)
	}
	return e.finish(msg)
}

// oauth takes XOAUTH2's or OAUTHBEARER's message. What mech-oauth2 refuses (no user, no
// valid "auth=Bearer <token>", a bad GS2 header) gets the mechanism's error challenge, as
// a token the passdb refused would; the exchange fails on the client's answer.
func (e *Exchange) oauth(msg []byte) ([]byte, bool, error) {
	var err error
	if e.mech == mechXOAuth2 {
		_, _, err = ParseXOAuth2(msg)
	} else {
		// The authzid is unescaped into e.user, which Credentials reads again.
		var user []byte
		user, _, err = ParseOAuthBearer(msg, e.user[:0])
		e.user = user[:0]
	}
	if err != nil {
		e.step = stepOAuthFail
		return e.oauthFailure(), false, nil
	}
	return e.finish(msg)
}

// oauthFailure is the mechanism's error challenge.
func (e *Exchange) oauthFailure() []byte {
	if e.mech == mechXOAuth2 {
		return challengeXO2
	}
	return challengeOB
}

// FailToken turns an exchange whose credentials the engine refused (a token the passdb
// did not accept) into Dovecot's answer for it: the mechanism's JSON error challenge goes
// out, and the client's answer to it (normally empty) gets the failure, as ErrOAuth from
// Next. It returns nil, and changes nothing, unless the mechanism is XOAUTH2 or
// OAUTHBEARER. A session calls it after Reset, from the mechanism it kept.
func (e *Exchange) FailToken(mech string) []byte {
	switch mech {
	case XOAuth2:
		e.mech = mechXOAuth2
	case OAuthBearer:
		e.mech = mechOAuthBearer
	default:
		return nil
	}
	e.step = stepOAuthFail
	return e.oauthFailure()
}

// splitPlain splits PLAIN's message, authzid NUL authcid NUL password, as Dovecot's
// mech-plain does: exactly two NULs and a non-empty authcid; an authzid empty or equal to
// the authcid counts as none.
func splitPlain(msg []byte) (authzid, authcid, pass []byte, err Error) {
	authzid, rest, ok1 := bytes.Cut(msg, nul)
	authcid, pass, ok2 := bytes.Cut(rest, nul)
	switch {
	case !ok1 || !ok2 || bytes.IndexByte(pass, 0) >= 0:
		return nil, nil, nil, ErrMalformed
	case len(authcid) == 0:
		return nil, nil, nil, ErrEmptyUser
	}
	if len(authzid) == 0 || bytes.Equal(authzid, authcid) {
		authzid = nil
	}
	return authzid, authcid, pass, 0
}

// loginUser takes LOGIN's user name and asks for the password.
func (e *Exchange) loginUser(user []byte) ([]byte, bool, error) {
	if len(user) == 0 {
		return nil, false, e.fail(ErrEmptyUser) // Dovecot: "Empty username"
	}
	e.user = append(e.user[:0], user...)
	e.step = stepPass
	return challengePass, false, nil
}

// loginPass takes LOGIN's password. A NUL in it or in the user name could match no
// passdb entry; it fails only now, as it would in Dovecot once the lookup is asked for.
func (e *Exchange) loginPass(pass []byte) ([]byte, bool, error) {
	if bytes.IndexByte(e.user, 0) >= 0 || bytes.IndexByte(pass, 0) >= 0 {
		return nil, false, e.fail(ErrNUL)
	}
	return e.finish(pass)
}

func (e *Exchange) finish(last []byte) ([]byte, bool, error) {
	e.last, e.step = last, stepDone
	return nil, true, nil
}

func (e *Exchange) fail(err Error) error {
	e.Reset()
	return err
}

var nul = []byte{0}

// equalFold is bytes.EqualFold for ASCII against a string, without converting.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// Challenges are the challenges of an Exchange as one protocol puts them on its wire:
// base64 in the protocol's framing, made once rather than encoded for every login.
type Challenges struct {
	Empty    string // PLAIN's, empty
	Username string // LOGIN's UsernamePrompt
	Password string // LOGIN's PasswordPrompt
	// The OAuth mechanisms' error challenges, XOAuth2Failure and OAuthBearerFailure.
	// Each protocol frames AppendEncode's base64 of them as it frames the others.
	XOAuth2Failure, OAuthBearerFailure string
	// Head and Tail frame the base64 of any other challenge (AppendData): "+ " and
	// CRLF in IMAP and POP3, "334 " and CRLF in Submission, a quote and a quote CRLF
	// in ManageSieve.
	Head, Tail string
}

// Text is the wire text of c, a challenge Next returned.
func (t *Challenges) Text(c []byte) string {
	switch string(c) {
	case UsernamePrompt:
		return t.Username
	case PasswordPrompt:
		return t.Password
	case XOAuth2Failure:
		return t.XOAuth2Failure
	case OAuthBearerFailure:
		return t.OAuthBearerFailure
	}
	return t.Empty
}
