package managesieve

import (
	"bytes"
	"encoding/base64"

	"doorman/codec/login"
)

// AUTHENTICATE: the SASL exchange for PLAIN and LOGIN, up to complete credentials. Like
// Dovecot's login process, the codec checks the mechanism and the transport; what the
// auth process would check (base64, the PLAIN layout, an empty user) is checked here
// too, with the replies Dovecot gives for it. Challenges go out as quoted base64
// strings; responses come as strings (quoted or literal), "*" aborts.

// authenticate runs AUTHENTICATE with the mechanism mech and, if hasIR, the initial
// response ir (tokens in cmd). Pigeonhole reads the initial response before it looks at
// the mechanism, so a bad initial response was answered before this; an empty one (""
// or "=") is an empty response, not none.
func (s *Session) authenticate(cmd []byte, mech, ir token, hasIR bool) {
	m := cmd[mech.start:mech.end]
	switch {
	case mech.escaped:
		// A mechanism name holds no `"` or `\`: escapes make it unknown.
		s.out = append(s.out, txtNoUnsupportedMech...)
		return
	case equalFold(m, "PLAIN"):
		s.authMech = "PLAIN"
	case equalFold(m, "LOGIN"):
		s.authMech = "LOGIN"
	default:
		s.out = append(s.out, txtNoUnsupportedMech...)
		return
	}
	if !s.plaintextOK() {
		s.out = append(s.out, txtNoPlaintext...)
		return
	}
	first := saslPlain
	if s.authMech == "LOGIN" {
		first = saslLoginUser
	}
	if !hasIR {
		s.challenge(first)
		return
	}
	data, ok := s.decodeSASL(cmd, ir, true)
	if !ok {
		s.out = append(s.out, txtNoBase64Initial...)
		return
	}
	if first == saslLoginUser && len(data) == 0 {
		s.challenge(first) // LOGIN asks for the user when the initial response is empty
		return
	}
	s.saslResponse(first, data)
}

// challenge sends the prompt for step and waits for the response.
func (s *Session) challenge(step saslStep) {
	switch step {
	case saslPlain:
		s.out = append(s.out, txtChallengeEmpty...)
	case saslLoginUser:
		s.out = append(s.out, txtChallengeUsername...)
	case saslLoginPass:
		s.out = append(s.out, txtChallengePassword...)
	}
	s.step = step
	s.state = StateAuthContinue
}

// response takes a SASL response string (managesieve_client_auth_parse_response): "*"
// aborts, anything else is base64.
func (s *Session) response(cmd []byte, t token) {
	if v := s.saslValue(cmd, t); len(v) == 1 && v[0] == '*' {
		s.out = append(s.out, txtNoAborted...)
		return
	}
	data, ok := s.decodeSASL(cmd, t, false)
	if !ok {
		s.out = append(s.out, txtNoBase64Continued...)
		return
	}
	s.saslResponse(s.step, data)
}

// saslResponse takes the decoded response for step.
func (s *Session) saslResponse(step saslStep, data []byte) {
	defer clear(data)
	s.scratch = s.scratch[:0]
	switch step {
	case saslPlain:
		authzid, authcid, pass, ok := splitPlain(data)
		if !ok {
			s.localAuthFailure()
			return
		}
		s.scratch = append(s.scratch, authzid...)
		u := len(s.scratch)
		s.scratch = append(s.scratch, authcid...)
		p := len(s.scratch)
		s.scratch = append(s.scratch, pass...)
		s.startAuth(u, p)
	case saslLoginUser:
		if len(data) == 0 {
			s.localAuthFailure() // Dovecot: "Empty username"
			return
		}
		s.saslUser = append(s.saslUser[:0], data...)
		s.challenge(saslLoginPass)
	case saslLoginPass:
		s.scratch = append(s.scratch, s.saslUser...)
		clear(s.saslUser)
		p := len(s.scratch)
		s.scratch = append(s.scratch, data...)
		s.startAuth(0, p)
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
		Mech:    s.authMech,
		Authzid: names[:userStart],
		User:    names[userStart:],
		Pass:    pass,
	}
	s.emit(login.Action{Kind: login.ActAuth, Creds: &s.creds})
	s.state = StateAuthWait
}

// localAuthFailure answers a login the codec can tell will fail without asking anyone,
// with the reply Dovecot's auth process would have caused.
func (s *Session) localAuthFailure() {
	s.out = append(s.out, txtNoAuthFailed...)
	s.state = StateCommand
}

// decodeSASL decodes the base64 SASL response t (unescaped) into the session's buffer,
// which stays valid until the next call. Like Dovecot's decoder it skips white space and
// wants padding; in an initial response "=" stands for an empty one, as in the auth
// protocol.
func (s *Session) decodeSASL(cmd []byte, t token, initial bool) ([]byte, bool) {
	s.squeeze = s.saslValue(cmd, t)
	b := s.squeeze[:0]
	for _, c := range s.squeeze {
		if c != ' ' && c != '\t' {
			b = append(b, c)
		}
	}
	if initial && len(b) == 1 && b[0] == '=' {
		b = b[:0]
	}
	n := base64.StdEncoding.DecodedLen(len(b))
	if cap(s.saslBuf) < n {
		s.saslBuf = make([]byte, n)
	}
	m, err := base64.StdEncoding.Decode(s.saslBuf[:n], b)
	clear(s.squeeze)
	if err != nil {
		clear(s.saslBuf[:n])
		return nil, false
	}
	return s.saslBuf[:m], true
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

// splitPlain splits a PLAIN response, authzid NUL authcid NUL password, the way
// Dovecot's mech-plain does: exactly two NULs, a non-empty authcid, and an authzid equal
// to the authcid counts as none.
func splitPlain(b []byte) (authzid, authcid, pass []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, nil, false
	}
	j := bytes.IndexByte(b[i+1:], 0)
	if j < 0 {
		return nil, nil, nil, false
	}
	j += i + 1
	if bytes.IndexByte(b[j+1:], 0) >= 0 || j == i+1 {
		return nil, nil, nil, false
	}
	authzid, authcid, pass = b[:i], b[i+1:j], b[j+1:]
	if bytes.Equal(authzid, authcid) {
		authzid = nil
	}
	return authzid, authcid, pass, true
}
