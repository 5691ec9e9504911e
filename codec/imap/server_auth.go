package imap

import (
	"bytes"
	"encoding/base64"

	"doorman/codec/internal/wire"
	"doorman/codec/sasl"
)

// AUTHENTICATE: the SASL exchange for PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER (those
// Config.Mechanisms enables), up to complete credentials. Like
// Dovecot's login process, the codec checks the mechanism and the transport; what the
// auth process would check (base64, the PLAIN layout, an empty user) package sasl checks,
// and the codec answers it with the replies Dovecot gives.

// authenticate starts AUTHENTICATE <mech> [<ir>] (imap-login's cmd_authenticate, then
// sasl_server_auth_begin). An empty ir means there was none; "=" is an empty one.
func (s *Session) authenticate(tag, mech, ir []byte) {
	s.authTag = append(s.authTag[:0], tag...)
	s.tokenFail = false
	if s.mechs.Lookup(mech) == "" || !s.exchange.Start(mech) {
		s.reply(tag, txtNoUnsupportedMech)
		s.authFailed()
		return
	}
	if !s.plaintextOK() {
		s.reply(tag, txtNoPlaintextMech)
		s.authFailed()
		return
	}
	if len(ir) == 0 {
		s.saslResponse(nil)
		return
	}
	if len(ir) == 1 && ir[0] == '=' {
		ir = ir[:0]
	}
	data, ok := s.decodeSASL(ir)
	if !ok {
		s.reply(tag, txtBadBase64Initial)
		s.authFailed()
		return
	}
	s.saslResponse(data)
}

// challenges are the exchange's challenges on the wire.
var challenges = sasl.Challenges{
	Empty:              txtChallengeEmpty,
	Username:           txtChallengeUsername,
	Password:           txtChallengePassword,
	XOAuth2Failure:     "+ " + base64.StdEncoding.EncodeToString([]byte(sasl.XOAuth2Failure)) + "\r\n",
	OAuthBearerFailure: "+ " + base64.StdEncoding.EncodeToString([]byte(sasl.OAuthBearerFailure)) + "\r\n",
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
	if sasl.Cancelled(line) {
		s.reply(s.authTag, txtBadAuthAborted)
		s.authFailed()
	} else if data, ok := s.decodeSASL(line); !ok {
		s.reply(s.authTag, txtBadBase64Continued)
		s.authFailed()
	} else {
		s.saslResponse(data)
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
