package pop3

import (
	"bytes"
	"strconv"

	"doorman/codec/internal/wire"
	"doorman/codec/internal/xclient"
	"doorman/codec/login"
	"doorman/codec/sasl"
)

// The ID key names an XCLIENT field is reported under (login.SessionInfo.Trusted).
const (
	idKeyAddr    = "x-originating-ip"
	idKeyPort    = "x-originating-port"
	idKeySession = "x-session-id"
	idKeyTTL     = "x-proxy-ttl"
)

// xclientMaxSessionID is LOGIN_MAX_SESSION_ID_LEN: a longer SESSION is ignored, as
// Dovecot ignores it (no error).
const xclientMaxSessionID = 64

// cmdXCLIENT is Dovecot 2.3.21's cmd_xclient (src/pop3-login/client.c). xoip: the
// command was XOIP, which Dovecot runs as XCLIENT with "ADDR=" put before its
// arguments. A trusted client's fields are checked; if all are good the client gets
// "+OK Updated" and the engine one ActID with the fields under ID's key names, else
// "-ERR Invalid parameters" and nothing is reported. Unknown fields are ignored, a later
// field overrides an earlier one of the same name.
func (s *Session) cmdXCLIENT(args []byte, xoip bool) {
	if !s.info.Trusted {
		s.out.B = append(s.out.B, txtXCLIENTIgnored...)
		return
	}
	var (
		addr, port, session, ttl string
		hasAddr, hasPort         bool
		hasSession, hasTTL       bool
		forward                  []byte
		hasForward               bool
		ok                       = true
	)
	first := true
	for len(args) > 0 || first {
		var tok []byte
		if i := bytes.IndexByte(args, ' '); i >= 0 {
			tok, args = args[:i], args[i+1:]
		} else {
			tok, args = args, nil
		}
		isAddr := first && xoip
		first = false
		key, value, found := bytes.Cut(tok, []byte{'='})
		if !isAddr {
			if !found {
				continue
			}
			isAddr = wire.EqualUpper(key, "ADDR")
		} else {
			value = tok
		}
		switch {
		case isAddr:
			if a, good := xclient.ParseAddr(value); good {
				addr, hasAddr = a, true
			} else {
				ok = false
			}
		case wire.EqualUpper(key, "PORT"):
			if n, good := xclient.ParseUint(value, 65535); good && n != 0 {
				port, hasPort = strconv.FormatUint(n, 10), true
			} else {
				ok = false
			}
		case wire.EqualUpper(key, "SESSION"):
			if len(value) <= xclientMaxSessionID {
				session, hasSession = string(value), true
			}
		case wire.EqualUpper(key, "TTL"):
			if n, good := xclient.ParseUint(value, 1<<32-1); good {
				ttl, hasTTL = strconv.FormatUint(n, 10), true
			} else {
				ok = false
			}
		case wire.EqualUpper(key, "FORWARD"):
			if dec, err := sasl.AppendDecode(forward[:0], value); err != nil {
				ok = false
			} else {
				forward, hasForward = dec, true
			}
		}
	}
	if !ok {
		clear(forward)
		s.out.B = append(s.out.B, txtXCLIENTInvalid...)
		return
	}
	s.out.B = append(s.out.B, txtXCLIENTUpdated...)
	// A new slice each time: two XCLIENTs in one Feed give two ActIDs.
	var params []login.IDParam
	if hasAddr {
		params = append(params, login.IDParam{Key: idKeyAddr, Value: addr})
	}
	if hasPort {
		params = append(params, login.IDParam{Key: idKeyPort, Value: port})
	}
	if hasSession {
		params = append(params, login.IDParam{Key: idKeySession, Value: session})
	}
	if hasTTL {
		params = append(params, login.IDParam{Key: idKeyTTL, Value: ttl})
	}
	if hasForward {
		params = xclient.AppendForward(params, forward)
		clear(forward)
	}
	if len(params) > 0 {
		s.out.Emit(login.Action{Kind: login.ActID, IDParams: params})
	}
}
