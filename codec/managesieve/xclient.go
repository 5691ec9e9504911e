package managesieve

import (
	"strconv"

	"doorman/codec/internal/wire"
	"doorman/codec/internal/xclient"
	"doorman/codec/login"
)

// XCLIENT from a trusted client (login_trusted_networks), as Pigeonhole 0.5.21's
// cmd_xclient (src/managesieve-login/client.c) takes it: atoms ADDR=, PORT=, SESSION=,
// TTL= and FORWARD= (base64 of tab-separated, tab-escaped name=value pairs), in any
// number and order, the last good one of each counting; other atoms are ignored. A
// value Dovecot refuses (ADDR not an address, PORT not 1-65535, TTL not an unsigned
// int, FORWARD not base64), or an argument that isn't an atom, makes it an invalid
// command ("Error in MANAGESIEVE command received by server.", counted). A SESSION
// longer than 64 bytes is ignored. Otherwise the answer is `OK "Updated"`, after an
// ActID that reports the values in IMAP ID's key names.
//
// Where Doorman differs: Dovecot keeps the values it took before it met a bad one even
// though it answers with the error; here a refused XCLIENT changes nothing (no ActID).

// maxSessionID is LOGIN_MAX_SESSION_ID_LEN.
const maxSessionID = 64

// span is a value's place in the command.
type span struct {
	start, end int
	set        bool
}

// xclientArgs is what a trusted client's XCLIENT has said so far.
type xclientArgs struct {
	stop                              bool // an argument that isn't an atom: refused
	bad                               bool // a value Dovecot refuses
	addr, port, session, ttl, forward span
}

// xclientArg takes one argument of a trusted client's XCLIENT.
func (s *Session) xclientArg(t token, cmd []byte) {
	x := &s.xc
	if x.stop {
		return
	}
	if t.kind != tokAtom {
		x.stop = true
		return
	}
	a := cmd[t.start:t.end]
	key := func(name string) (span, bool) {
		if len(a) < len(name) || !wire.EqualUpper(a[:len(name)], name) {
			return span{}, false
		}
		return span{start: t.start + len(name), end: t.end, set: true}, true
	}
	if v, ok := key("ADDR="); ok {
		if _, good := xclient.ParseAddr(cmd[v.start:v.end]); good {
			x.addr = v
		} else {
			x.bad = true
		}
	} else if v, ok := key("FORWARD="); ok {
		var good bool
		if s.scratch, good = xclient.ValidForward(s.scratch, cmd[v.start:v.end]); good {
			x.forward = v
		} else {
			x.bad = true
		}
	} else if v, ok := key("PORT="); ok {
		if n, good := xclient.ParseUint(cmd[v.start:v.end], 65535); good && n > 0 {
			x.port = v
		} else {
			x.bad = true
		}
	} else if v, ok := key("SESSION="); ok {
		if v.end-v.start <= maxSessionID {
			x.session = v
		}
	} else if v, ok := key("TTL="); ok {
		if _, good := xclient.ParseUint(cmd[v.start:v.end], 1<<32-1); good {
			x.ttl = v
		} else {
			x.bad = true
		}
	}
}

// xclient answers a complete XCLIENT (cmd, its LF included) from a trusted client.
func (s *Session) xclient(cmd []byte) {
	x := &s.xc
	if x.stop || x.bad {
		s.badCommand()
		return
	}
	// Several XCLIENTs can come in one Feed: each ActID gets its own part of idParams,
	// which Feed empties at its start.
	first := len(s.idParams)
	pair := func(k, v string) {
		s.idParams = append(s.idParams, login.IDParam{Key: k, Value: v})
	}
	if x.addr.set {
		ip, _ := xclient.ParseAddr(cmd[x.addr.start:x.addr.end])
		pair("x-originating-ip", ip)
	}
	if x.port.set {
		n, _ := xclient.ParseUint(cmd[x.port.start:x.port.end], 65535)
		pair("x-originating-port", strconv.FormatUint(n, 10))
	}
	if x.session.set {
		pair("x-session-id", string(cmd[x.session.start:x.session.end]))
	}
	if x.ttl.set {
		n, _ := xclient.ParseUint(cmd[x.ttl.start:x.ttl.end], 1<<32-1)
		pair("x-proxy-ttl", strconv.FormatUint(n, 10))
	}
	if x.forward.set {
		s.idParams, s.scratch, _ = xclient.DecodeForward(s.idParams, s.scratch, cmd[x.forward.start:x.forward.end])
	}
	if n := len(s.idParams); n > first {
		s.out.Emit(login.Action{Kind: login.ActID, IDParams: s.idParams[first:n:n]})
	}
	s.out.B = append(s.out.B, txtXclientOK...)
}
