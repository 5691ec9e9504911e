package managesieve

import (
	"bytes"
	"encoding/base64"

	"doorman/codec/login"
	"doorman/codec/sasl"
)

// AUTHENTICATE: the SASL exchange for PLAIN, LOGIN, XOAUTH2, OAUTHBEARER (package sasl's
// Exchange), CRAM-MD5 and SCRAM-SHA-256 (its SecretExchange: an ActSecret asks the
// engine for the stored password mid-exchange, the codec checks the proof), those
// Config.Mechanisms enables, up to complete credentials. Like
// Dovecot's login process, the codec checks the mechanism and the transport; what the
// auth process would check (base64, the PLAIN layout, an empty user) package sasl checks,
// and the codec answers it with the replies Dovecot gives. Challenges go out as quoted
// base64 strings; responses come as strings (quoted or literal), "*" aborts.

// authenticate runs AUTHENTICATE with the mechanism mech and, if hasIR, the initial
// response ir (tokens in cmd). Pigeonhole reads the initial response before it looks at
// the mechanism, so a bad initial response was answered before this; an empty one (""
// or "=") is an empty response, not none.
func (s *Session) authenticate(cmd []byte, mech, ir token, hasIR bool) {
	// A mechanism name holds no `"` or `\`: escapes make it unknown.
	s.tokenFail = false
	s.secx.Reset()
	name := cmd[mech.start:mech.end]
	secret := sasl.SecretMechanism(name)
	if mech.escaped || s.mechs.Lookup(name) == "" ||
		(secret == "" && !s.exchange.Start(name)) ||
		(secret != "" && !s.secx.Start(secret, s.info.SASLNonce, s.info.SASLHost)) {
		s.out.B = append(s.out.B, txtNoUnsupportedMech...)
		return
	}
	if secret == "" && !s.plaintextOK() {
		s.out.B = append(s.out.B, txtNoPlaintext...)
		return
	}
	if !hasIR {
		s.anyResponse(nil)
		return
	}
	data, ok := s.decodeSASL(s.saslValue(cmd, ir), true)
	if !ok {
		s.secx.Reset()
		s.out.B = append(s.out.B, txtNoBase64Initial...)
		return
	}
	s.anyResponse(data)
}

// anyResponse takes the next response for whichever exchange runs.
func (s *Session) anyResponse(data []byte) {
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
	default:
		user, authzid := s.secx.User()
		s.creds = login.Credentials{Mech: s.secx.Mechanism(), Authzid: string(authzid), User: string(user)}
		kind := login.ActSecret
		s.state = StateSecretWait
		if st == sasl.SecretDone {
			kind, s.state = login.ActAuth, StateAuthWait
			s.creds.Verified = s.secx.Verified()
			s.secx.Reset()
		}
		s.out.Emit(login.Action{Kind: kind, Creds: &s.creds})
	}
}

// challenges are the exchange's challenges on the wire.
var challenges = sasl.Challenges{
	Empty:              txtChallengeEmpty,
	Username:           txtChallengeUsername,
	Password:           txtChallengePassword,
	XOAuth2Failure:     `"` + base64.StdEncoding.EncodeToString([]byte(sasl.XOAuth2Failure)) + `"` + "\r\n",
	OAuthBearerFailure: `"` + base64.StdEncoding.EncodeToString([]byte(sasl.OAuthBearerFailure)) + `"` + "\r\n",
	Head:               `"`,
	Tail:               `"` + "\r\n",
}

// challenge sends a challenge of the exchange and waits for the response.
func (s *Session) challenge(c []byte) {
	s.out.B = append(s.out.B, challenges.Text(c)...)
	s.state = StateAuthContinue
}

// response takes a SASL response string (managesieve_client_auth_parse_response): "*"
// aborts, anything else is base64.
func (s *Session) response(cmd []byte, t token) {
	v := s.saslValue(cmd, t)
	if s.secx.Final() {
		clear(s.squeeze)
		s.secretResponse(nil) // whatever the answer to server-final is, it ends the exchange
		return
	}
	if sasl.Cancelled(v) {
		s.secx.Reset()
		s.out.B = append(s.out.B, txtNoAborted...)
		return
	}
	data, ok := s.decodeSASL(v, false)
	if !ok {
		s.secx.Reset()
		s.out.B = append(s.out.B, txtNoBase64Continued...)
		return
	}
	s.anyResponse(data)
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
		s.failureReply(login.AuthResult{Status: login.AuthFailed, Text: s.tokenFailText})
		s.tokenFailText = ""
	case err != nil:
		s.localAuthFailure() // what the auth process refuses, for any reason, fails the login
	case !done:
		s.challenge(challenge)
	default:
		c := s.exchange.Credentials()
		s.scratch = append(s.scratch[:0], c.Authzid...)
		u := len(s.scratch)
		s.scratch = append(s.scratch, c.Authcid...)
		p := len(s.scratch)
		s.scratch = append(s.scratch, c.Password...)
		s.scratch = append(s.scratch, c.Token...) // one of the two is nil
		s.exchange.Reset()
		s.startAuth(u, p)
	}
}

// startAuth hands the credentials in s.scratch to the engine: the authzid runs from its
// start to userStart, the user to passStart, the password to the end. Credentials no
// passdb could match (an empty user, a NUL byte) fail here, as Dovecot's auth process
// would fail them.
func (s *Session) startAuth(userStart, passStart int) {
	b := s.scratch
	if userStart == passStart || bytes.IndexByte(b, 0) >= 0 {
		clear(b)
		s.localAuthFailure()
		return
	}
	// One copy for the names, another for the password: a User kept for the logs
	// must not keep the password's bytes alive with it.
	names, pass := string(b[:passStart]), string(b[passStart:])
	clear(b)
	s.creds = login.Credentials{
		Mech:    s.exchange.Mechanism(),
		Authzid: names[:userStart],
		User:    names[userStart:],
		Pass:    pass,
	}
	if sasl.OAuth(s.creds.Mech) {
		s.creds.Pass, s.creds.Token = "", pass
	}
	s.out.Emit(login.Action{Kind: login.ActAuth, Creds: &s.creds})
	s.state = StateAuthWait
}

// localAuthFailure answers a login the codec can tell will fail without asking anyone,
// with the reply Dovecot's auth process would have caused.
func (s *Session) localAuthFailure() {
	s.out.B = append(s.out.B, txtNoAuthFailed...)
	s.state = StateCommand
}

// decodeSASL decodes the SASL response v, unescaped in s.squeeze, into the session's
// buffer, which stays valid until the next call. In an initial response "=" (blanks
// around it aside) stands for an empty one, as in the auth protocol.
func (s *Session) decodeSASL(v []byte, initial bool) ([]byte, bool) {
	if initial {
		if t := bytes.Trim(v, " \t"); len(t) == 1 && t[0] == '=' {
			v = v[:0]
		}
	}
	data, err := sasl.AppendDecode(s.saslBuf[:0], v)
	clear(s.squeeze)
	s.saslBuf = data[:0]
	return data, err == nil
}

// saslValue returns the SASL response t unescaped, in s.squeeze. Pigeonhole hands it
// on as a C string, so a NUL ends it (Pigeonhole 2.4 refuses it instead).
func (s *Session) saslValue(cmd []byte, t token) []byte {
	s.squeeze = t.appendValue(s.squeeze[:0], cmd)
	if i := bytes.IndexByte(s.squeeze, 0); i >= 0 {
		clear(s.squeeze[i:])
		s.squeeze = s.squeeze[:i]
	}
	return s.squeeze
}
