package imap

import (
	"bytes"
	"encoding/base64"

	"doorman/codec/internal/wire"
	"doorman/codec/sasl"
)

// AUTHENTICATE: the SASL exchange for PLAIN, LOGIN, XOAUTH2, OAUTHBEARER (package sasl's
// Exchange), CRAM-MD5 and SCRAM-SHA-256 (its SecretExchange: an ActSecret asks the
// engine for the stored password mid-exchange, the codec checks the proof), those
// Config.Mechanisms enables, up to complete credentials. Like
// Dovecot's login process, the codec checks the mechanism and the transport; what the
// auth process would check (base64, the PLAIN layout, an empty user) package sasl checks,
// and the codec answers it with the replies Dovecot gives.

// authenticate starts AUTHENTICATE <mech> [<ir>] (imap-login's cmd_authenticate, then
// sasl_server_auth_begin). An empty ir means there was none; "=" is an empty one.
func (s *Session) authenticate(tag, mech, ir []byte) {
	s.authTag = append(s.authTag[:0], tag...)
	s.tokenFail = false
	s.secx.Reset()
	secret := sasl.SecretMechanism(mech)
	if s.mechs.Lookup(mech) == "" ||
		(secret == "" && !s.exchange.Start(mech)) ||
		(secret != "" && !s.secx.Start(secret, s.info.SASLNonce, s.info.SASLHost)) {
		s.reply(tag, txtNoUnsupportedMech)
		s.authFailed()
		return
	}
	if secret == "" && !s.plaintextOK() {
		s.reply(tag, txtNoPlaintextMech)
		s.authFailed()
		return
	}
	if len(ir) == 0 {
		s.response(nil)
		return
	}
	if len(ir) == 1 && ir[0] == '=' {
		ir = ir[:0]
	}
	data, ok := s.decodeSASL(ir)
	if !ok {
		s.reply(tag, txtBadBase64Initial)
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
		s.seen = 0
	default:
		user, authzid := s.secx.User()
		s.creds = Credentials{
			Tag:            string(s.authTag),
			Mech:           s.secx.Mechanism(),
			Authzid:        string(authzid),
			User:           string(user),
			CapabilitySeen: s.capSeen,
		}
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
	XOAuth2Failure:     "+ " + base64.StdEncoding.EncodeToString([]byte(sasl.XOAuth2Failure)) + "\r\n",
	OAuthBearerFailure: "+ " + base64.StdEncoding.EncodeToString([]byte(sasl.OAuthBearerFailure)) + "\r\n",
	Head:               "+ ",
	Tail:               "\r\n",
}

// challenge sends a challenge of the exchange and waits for the response line.
func (s *Session) challenge(c []byte) {
	s.out.B = append(s.out.B, challenges.Text(c)...)
	s.state = StateAuthContinue
	s.seen = 0
}

// readResponse reads a SASL response line (client_auth_read_line): "*" aborts, anything
// else is base64. It returns what is consumed and whether to go on reading commands.
func (s *Session) readResponse(buf []byte) (int, bool) {
	i := bytes.IndexByte(buf[s.seen:], '\n')
	if i < 0 {
		s.seen = len(buf)
		if len(buf) > srvAuthBufMax {
			s.close("", "authentication response too large")
			return len(buf), false
		}
		return 0, false
	}
	i += s.seen
	s.seen = 0
	if i > srvAuthBufMax {
		s.close("", "authentication response too large")
		return i + 1, false
	}
	line := wire.TrimCR(buf[:i])
	s.state = StateCommand
	s.resetCommand()
	if s.secx.Final() {
		s.secretResponse(nil) // whatever the answer to server-final is, it ends the exchange
	} else if sasl.Cancelled(line) {
		s.secx.Reset()
		s.reply(s.authTag, txtBadAuthAborted)
		s.authFailed()
	} else if data, ok := s.decodeSASL(line); !ok {
		s.secx.Reset()
		s.reply(s.authTag, txtBadBase64Continued)
		s.authFailed()
	} else {
		s.response(data)
	}
	return i + 1, s.reading()
}

// saslResponse takes the next response, decoded; nil is no initial response.
func (s *Session) saslResponse(data []byte) {
	defer clear(data)
	challenge, done, err := s.exchange.Next(data)
	switch {
	case err != nil && s.tokenFail:
		// The answer to a refused token's error challenge.
		s.tokenFail = false
		s.failureReply(AuthResult{Status: AuthFailed, Text: s.tokenFailText})
		s.tokenFailText = ""
		s.state = StateCommand
		s.authFailed()
	case err != nil:
		s.localAuthFailure() // what the auth process refuses, for any reason, fails the login
	case !done:
		s.challenge(challenge)
	default:
		c := s.exchange.Credentials()
		s.scratch = append(s.scratch[:0], s.authTag...)
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

// decodeSASL decodes a base64 response into the session's buffer, which stays valid
// until the next call.
func (s *Session) decodeSASL(b []byte) ([]byte, bool) {
	data, err := sasl.AppendDecode(s.sasl[:0], b)
	s.sasl = data[:0]
	return data, err == nil
}
