package pop3

import (
	"bytes"
	"encoding/base64"
)

// AUTH: the SASL exchange for PLAIN and LOGIN, up to complete credentials. Like
// Dovecot's login process, the codec checks the mechanism and the transport; what the
// auth process would check (base64, the PLAIN layout, an empty user) is checked here
// too, with the replies Dovecot gives for it.

// authenticate starts AUTH <mech> [<ir>] (pop3-login's cmd_auth, then
// sasl_server_auth_begin). An empty ir means there was none; "=" is an empty one.
func (s *Session) authenticate(mech, ir []byte) {
	switch {
	case srvEqualFold(mech, "PLAIN"):
		s.authMech = "PLAIN"
	case srvEqualFold(mech, "LOGIN"):
		s.authMech = "LOGIN"
	default:
		s.out = append(s.out, txtUnsupportedMech...)
		s.authFailed()
		return
	}
	if !s.plaintextOK() {
		s.out = append(s.out, txtPlaintextMech...)
		s.authFailed()
		return
	}
	first := saslPlain
	if s.authMech == "LOGIN" {
		first = saslLoginUser
	}
	if len(ir) == 0 {
		s.challenge(first)
		return
	}
	var data []byte
	if len(ir) != 1 || ir[0] != '=' {
		var ok bool
		if data, ok = s.decodeSASL(ir); !ok {
			s.out = append(s.out, txtBadBase64Initial...)
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

// challenge sends the prompt for step and waits for the response line.
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
	line := srvTrimCR(buf[:i])
	s.state = StateCommand
	s.resetCommand()
	if len(line) == 1 && line[0] == '*' {
		s.out = append(s.out, txtAuthAborted...)
		s.authFailed()
	} else if data, ok := s.decodeSASL(line); !ok {
		s.out = append(s.out, txtBadBase64Continued...)
		s.authFailed()
	} else {
		s.saslResponse(s.step, data)
	}
	return i + 1, s.reading()
}

// saslResponse takes the decoded response for step.
func (s *Session) saslResponse(step saslStep, data []byte) {
	defer clear(data)
	s.scratch = s.scratch[:0]
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
		s.startAuth("PLAIN", u, p)
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
		s.startAuth("LOGIN", 0, p)
	}
}

// decodeSASL decodes a base64 response into the session's buffer, which stays valid
// until the next call. Like Dovecot's decoder it skips white space and wants padding.
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
	clear(s.squeeze) // it held the password, encoded
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
