package submission

import (
	"bytes"
	"encoding/base64"

	"doorman/codec/sasl"
)

// AUTH: the SASL exchange for PLAIN, LOGIN, XOAUTH2, OAUTHBEARER (package sasl's
// Exchange), CRAM-MD5 and SCRAM-SHA-256 (its SecretExchange: an ActSecret asks the
// engine for the stored password mid-exchange, the codec checks the proof), those
// Config.Mechanisms enables, up to complete credentials. Like
// Dovecot's login process, the codec checks the mechanism and the transport; what the
// auth process would check (base64, the PLAIN layout, an empty user) package sasl checks,
// and the codec answers it with the replies Dovecot gives.

// auth runs AUTH <mech> [<initial-response>] (lib-smtp's smtp_server_cmd_auth, then
// submission-login's cmd_auth and login-common's sasl_server_auth_begin).
func (s *Session) auth(params []byte) {
	if len(params) == 0 {
		s.answer(txtAuthMissingMech)
		return
	}
	// The arguments are split at every single space, as t_strsplit does: a second
	// space makes a third, empty, argument.
	mech, ir, two := bytes.Cut(params, []byte{' '})
	if two && bytes.IndexByte(ir, ' ') >= 0 {
		s.answer(txtInvalidParams)
		return
	}
	s.tokenFail = false
	s.secx.Reset()
	secret := sasl.SecretMechanism(mech)
	if s.mechs.Lookup(mech) == "" ||
		(secret == "" && !s.exchange.Start(mech)) ||
		(secret != "" && !s.secx.Start(secret, s.info.SASLNonce, s.info.SASLHost)) {
		s.answer(txtUnsupportedMech)
		s.authFailed()
		return
	}
	if secret == "" && !s.plaintextOK() {
		s.answer(txtPlaintextDisabled)
		s.authFailed()
		return
	}
	if !two {
		s.response(nil)
		return
	}
	if len(ir) == 1 && ir[0] == '=' {
		ir = ir[:0]
	}
	data, ok := s.decodeSASL(ir)
	if !ok {
		s.answer(txtBadBase64Initial)
		s.secx.Reset()
		s.authFailed()
		return
	}
	s.response(data)
}

// response takes the next response for whichever exchange runs.
func (s *Session) response(data []byte) {
	if s.secx.Active() {
		s.secretResponse(data)
	} else {
		s.saslResponse(data)
	}
}

// secretResponse takes the next response of CRAM-MD5 or SCRAM-SHA-256.
func (s *Session) secretResponse(data []byte) {
	defer clear(data)
	s.secretStep(s.secx.Next(data))
}

// secretStep acts on where the SecretExchange stands: a challenge to send, a lookup to
// ask for (ActSecret), or the end (ActAuth with Verified).
func (s *Session) secretStep(c []byte, st sasl.SecretStatus, err error) {
	switch {
	case err != nil:
		s.localAuthFailure()
	case st == sasl.SecretContinue:
		s.out.B = challenges.AppendData(s.out.B, c)
		s.state = StateAuthContinue
		s.resetLine()
	default:
		user, authzid := s.secx.User()
		s.creds = Credentials{Tag: string(s.helo), Mech: s.secx.Mechanism(), Authzid: string(authzid), User: string(user)}
		kind := ActSecret
		s.state = StateSecretWait
		if st == sasl.SecretDone {
			kind, s.state = ActAuth, StateAuthWait
			s.creds.Verified = s.secx.Verified()
			s.secx.Reset()
		}
		s.out.Emit(Action{Kind: kind, Creds: &s.creds})
	}
}

// challenges are the exchange's challenges on the wire.
var challenges = sasl.Challenges{
	Empty:              txtChallengeEmpty,
	Username:           txtChallengeUsername,
	Password:           txtChallengePassword,
	XOAuth2Failure:     "334 " + base64.StdEncoding.EncodeToString([]byte(sasl.XOAuth2Failure)) + "\r\n",
	OAuthBearerFailure: "334 " + base64.StdEncoding.EncodeToString([]byte(sasl.OAuthBearerFailure)) + "\r\n",
	Head:               "334 ",
	Tail:               "\r\n",
}

// challenge sends a challenge of the exchange as a 334 and waits for the response line.
func (s *Session) challenge(c []byte) {
	s.out.B = append(s.out.B, challenges.Text(c)...)
	// A 334 goes out outside lib-smtp's command replies: it doesn't touch the count of
	// bad commands.
	s.state = StateAuthContinue
	s.resetLine()
}

// authResponse takes a complete AUTH response line (its blanks at the end trimmed):
// "*" cancels, anything else is base64 (submission-login's cmd_auth_continue).
func (s *Session) authResponse(line []byte) {
	if s.secx.Final() {
		s.secretResponse(nil) // whatever the answer to server-final is, it ends the exchange
		return
	}
	if sasl.Cancelled(line) {
		s.secx.Reset()
		s.answer(txtAuthAborted)
		if s.state != StateClosed {
			s.authFailed()
		}
		return
	}
	data, ok := s.decodeSASL(line)
	if !ok {
		s.secx.Reset()
		s.answer(txtBadBase64Continued)
		if s.state != StateClosed {
			s.authFailed()
		}
		return
	}
	s.response(data)
}

// saslResponse takes the next response, decoded; nil is no initial response.
func (s *Session) saslResponse(data []byte) {
	defer clear(data)
	challenge, done, err := s.exchange.Next(data)
	switch {
	case err != nil && s.tokenFail:
		// The answer to a refused token's error challenge.
		s.tokenFail = false
		s.state = StateCommand
		s.failureReply(AuthResult{Status: AuthFailed, Text: s.tokenFailText})
		s.tokenFailText = ""
		if s.state != StateClosed {
			s.authFailed()
		}
	case err != nil:
		s.localAuthFailure() // what the auth process refuses, for any reason, fails the login
	case !done:
		s.challenge(challenge)
	default:
		c := s.exchange.Credentials()
		s.scratch = append(s.scratch[:0], s.helo...)
		tagEnd := len(s.scratch)
		s.scratch = append(s.scratch, c.Authzid...)
		u := len(s.scratch)
		s.scratch = append(s.scratch, c.Authcid...)
		p := len(s.scratch)
		s.scratch = append(s.scratch, c.Password...)
		s.scratch = append(s.scratch, c.Token...) // one of the two is nil
		s.exchange.Reset()
		s.startAuth(s.exchange.Mechanism(), tagEnd, u, p)
	}
}

// startAuth hands the credentials in s.scratch to the engine: the EHLO domain ends at
// tagEnd, the authzid runs from there to userStart, the user to passStart, the password
// to the end. Credentials no passdb could match (an empty user, a NUL byte) fail here,
// as Dovecot's auth process would fail them.
func (s *Session) startAuth(mech string, tagEnd, userStart, passStart int) {
	b := s.scratch
	if userStart == passStart || bytes.IndexByte(b[tagEnd:], 0) >= 0 {
		clear(b)
		s.localAuthFailure()
		return
	}
	// One copy for the names, another for the password: a User kept for the logs
	// must not keep the password's bytes alive with it.
	names, pass := string(b[:passStart]), string(b[passStart:])
	clear(b)
	s.creds = Credentials{
		Tag:     names[:tagEnd],
		Mech:    mech,
		Authzid: names[tagEnd:userStart],
		User:    names[userStart:],
		Pass:    pass,
	}
	if sasl.OAuth(mech) {
		s.creds.Pass, s.creds.Token = "", pass
	}
	s.out.Emit(Action{Kind: ActAuth, Creds: &s.creds})
	s.state = StateAuthWait
}

// localAuthFailure answers a login the codec can tell will fail without asking anyone,
// with the reply Dovecot's auth process would have caused.
func (s *Session) localAuthFailure() {
	s.state = StateCommand
	s.answer(txtAuthFailed)
	s.authFailed()
}

// decodeSASL decodes a base64 response into the session's buffer, which stays valid
// until the next call.
func (s *Session) decodeSASL(b []byte) ([]byte, bool) {
	data, err := sasl.AppendDecode(s.sasl[:0], b)
	s.sasl = data[:0]
	return data, err == nil
}
