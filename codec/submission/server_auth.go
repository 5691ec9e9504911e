package submission

import (
	"bytes"
	"encoding/base64"
)

// AUTH: the SASL exchange for PLAIN and LOGIN, up to complete credentials. Like
// Dovecot's login process, the codec checks the mechanism and the transport; what the
// auth process would check (base64, the PLAIN layout, an empty user) is checked here
// too, with the replies Dovecot gives for it.

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
	switch {
	case srvEqualFold(mech, "PLAIN"):
		s.authMech = "PLAIN"
	case srvEqualFold(mech, "LOGIN"):
		s.authMech = "LOGIN"
	default:
		s.answer(txtUnsupportedMech)
		s.authFailed()
		return
	}
	if !s.plaintextOK() {
		s.answer(txtPlaintextDisabled)
		s.authFailed()
		return
	}
	first := saslPlain
	if s.authMech == "LOGIN" {
		first = saslLoginUser
	}
	if !two {
		s.challenge(first)
		return
	}
	var data []byte
	if len(ir) != 1 || ir[0] != '=' {
		var ok bool
		if data, ok = s.decodeSASL(ir); !ok {
			s.answer(txtBadBase64Initial)
			s.authFailed()
			return
		}
	}
	if first == saslLoginUser && len(data) == 0 {
		s.challenge(first) // LOGIN asks for the user when the initial response is empty
		return
	}
	s.saslResponse(first, data)
}

// challenge sends the 334 prompt for step and waits for the response line.
func (s *Session) challenge(step saslStep) {
	switch step {
	case saslPlain:
		s.out = append(s.out, txtChallengeEmpty...)
	case saslLoginUser:
		s.out = append(s.out, txtChallengeUsername...)
	case saslLoginPass:
		s.out = append(s.out, txtChallengePassword...)
	}
	// A 334 goes out outside lib-smtp's command replies: it doesn't touch the count of
	// bad commands.
	s.step = step
	s.state = StateAuthContinue
	s.resetLine()
}

// authResponse takes a complete AUTH response line (its blanks at the end trimmed):
// "*" cancels, anything else is base64 (submission-login's cmd_auth_continue).
func (s *Session) authResponse(line []byte) {
	if len(line) == 1 && line[0] == '*' {
		s.answer(txtAuthAborted)
		if s.state != StateClosed {
			s.authFailed()
		}
		return
	}
	data, ok := s.decodeSASL(line)
	if !ok {
		s.answer(txtBadBase64Continued)
		if s.state != StateClosed {
			s.authFailed()
		}
		return
	}
	s.saslResponse(s.step, data)
}

// saslResponse takes the decoded response for step.
func (s *Session) saslResponse(step saslStep, data []byte) {
	defer clear(data)
	s.scratch = append(s.scratch[:0], s.helo...)
	tagEnd := len(s.scratch)
	switch step {
	case saslPlain:
		authzid, authcid, pass, ok := srvSplitPlain(data)
		if !ok {
			s.localAuthFailure()
			return
		}
		s.scratch = append(s.scratch, authzid...)
		u := len(s.scratch)
		s.scratch = append(s.scratch, authcid...)
		p := len(s.scratch)
		s.scratch = append(s.scratch, pass...)
		s.startAuth("PLAIN", tagEnd, u, p)
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
		s.startAuth("LOGIN", tagEnd, tagEnd, p)
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
	s.emit(Action{Kind: ActAuth, Creds: &s.creds})
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
// until the next call. Like Dovecot's decoder it skips blanks and wants padding.
func (s *Session) decodeSASL(b []byte) ([]byte, bool) {
	if bytes.ContainsAny(b, " \t") {
		s.squeeze = s.squeeze[:0]
		for _, c := range b {
			if c != ' ' && c != '\t' {
				s.squeeze = append(s.squeeze, c)
			}
		}
		b = s.squeeze
	}
	n := base64.StdEncoding.DecodedLen(len(b))
	if cap(s.sasl) < n {
		s.sasl = make([]byte, n)
	}
	m, err := base64.StdEncoding.Decode(s.sasl[:n], b)
	if err != nil {
		clear(s.sasl[:n])
		return nil, false
	}
	return s.sasl[:m], true
}

// srvSplitPlain splits a PLAIN response, authzid NUL authcid NUL password, the way
// Dovecot's mech-plain does: exactly two NULs, a non-empty authcid, and an authzid equal
// to the authcid counts as none.
func srvSplitPlain(b []byte) (authzid, authcid, pass []byte, ok bool) {
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
