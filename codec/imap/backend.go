// Backend side of the IMAP proxy login: after the client has been authenticated and the
// user looked up, BackendLogin logs in to the backend IMAP server on the user's behalf,
// the way Dovecot 2.3.21's imap-login proxy does (src/imap-login/imap-proxy.c): wait for
// the banner, send ID / STARTTLS / CAPABILITY / LOGIN or AUTHENTICATE PLAIN (pipelined
// unless told not to), and turn the backend's answer into the reply the client gets.
//
// It is a pure state machine: no I/O, no goroutines, no clock. Timeouts and retries
// belong to the engine, which asks State() for the Dovecot-style state string.

package imap

import (
	"bytes"
	"encoding/base64"
	"strings"

	"doorman/codec/internal/wire"
	"doorman/codec/sasl"
)

// backendMaxLine is Dovecot's MAX_PROXY_INPUT_SIZE: a backend line, LF included, must fit
// in 4096 bytes.
const backendMaxLine = 4096

// backendMaxForward caps the untagged lines kept for the client during one login attempt.
// Dovecot writes them to the client at once; we hold them until the final reply, so a
// backend that talks without end must not grow our memory without end. Lines past the
// cap are dropped.
const backendMaxForward = 16 << 10

// Texts Dovecot puts in the replies it makes up itself (login-common.h, login-proxy.h).
const (
	backendAuthFailedMsg = "Authentication failed."
	backendFailureMsg    = "Account is temporarily unavailable."
)

// BackendFailureReply appends the tagged reply Dovecot gives the client when a backend
// login fails with an outcome that has no backend text of its own: UNAVAILABLE for
// retryable and internal failures (use it also for connect failures and timeouts),
// SERVERBUG for RemoteConfig. For other outcomes it appends nothing.
func BackendFailureReply(dst []byte, tag string, o BackendOutcome) []byte {
	var code string
	switch o {
	case BackendProtocolError, BackendInternal, BackendTempFail:
		code = "UNAVAILABLE"
	case BackendRemoteConfig:
		code = "SERVERBUG"
	default:
		return dst
	}
	dst = append(dst, tag...)
	dst = append(dst, " NO ["...)
	dst = append(dst, code...)
	dst = append(dst, "] "...)
	dst = append(dst, backendFailureMsg...)
	return append(dst, "\r\n"...)
}

// Sent and received states, named as Dovecot names them in its "Login timed out in
// state=..." logs: the commands still waiting for a reply, "/", the last thing received.
const (
	backendSentID uint8 = 1 << iota
	backendSentStartTLS
	backendSentCapability
	backendSentAuthenticate
	backendSentAuthContinue
	backendSentLogin
)

var backendSentNames = [...]string{"id", "starttls", "capability", "authenticate", "auth-continue", "login"}

const (
	backendRcvdNone uint8 = iota
	backendRcvdBanner
	backendRcvdID
	backendRcvdStartTLS
	backendRcvdCapability
	backendRcvdAuthContinue
	backendRcvdLogin
)

var backendRcvdNames = [...]string{"none", "banner", "id", "starttls", "capability", "auth-continue", "login"}

// Steps of the login, in order. Pipelined, as many as possible go in one write; without
// pipelining one at a time, each after the previous one's tagged reply.
const (
	backendStepID uint8 = iota
	backendStepStartTLS
	backendStepCapability
	backendStepLogin
	backendStepDone
)

// What must arrive from the backend before a part of the output may be sent.
const (
	backendGateNone    uint8 = iota
	backendGateLiteral       // a `+` answering a synchronizing literal
	backendGateSASL          // a `+ <base64>` challenge answering AUTHENTICATE without SASL-IR
)

// backendPart is a piece of the output that can be sent in one go: a command up to the
// end of its first synchronizing literal's `{n}\r\n`, or what follows such a literal.
type backendPart struct {
	start, end int   // in BackendLogin.pipe
	tag        byte  // the command's tag
	gate       uint8 // what must arrive before this part is sent
}

// BackendLogin is one login attempt at one backend. Reset makes it ready for the next
// attempt (a retry, or another session) while keeping its buffers.
type BackendLogin struct {
	p   BackendParams
	res BackendResult

	plain      bool   // log in with AUTHENTICATE rather than LOGIN
	mech       string // the mechanism of AUTHENTICATE: PLAIN, XOAUTH2, OAUTHBEARER
	token      string // the OAuth mechanisms' token
	errAnswer  bool   // the answer to an OAuth error challenge went out
	seenBanner bool
	capsKnown  bool
	capSent    bool
	caps       []byte      // the backend's capabilities, as last advertised
	flags      backendCaps // what build() knew when it wrote the commands
	step       uint8
	wait       byte // tag whose reply the next step waits for (NoPipelining, STARTTLS); 0: none
	sent       uint8
	rcvd       uint8
	saslSent   bool            // the PLAIN response went out (as IR or after `+`)
	lines      wire.LineReader // where the backend's lines are

	pipe     []byte        // every byte written or to be written this attempt
	parts    []backendPart // pipe cut where a `+` is needed
	next     int           // first part not yet sent
	curStart int           // part being appended to pipe
	curTag   byte
	curGate  uint8
	saslFrom int // the base64 PLAIN response is pipe[saslFrom:saslTo], for redaction
	saslTo   int

	out   []byte
	reply []byte
}

// NewBackendLogin starts a login with p. An unusable p (unsupported Mech) shows as a
// BackendInternal result from the first Feed, so the engine may call Feed(nil) before
// connecting.
func NewBackendLogin(p *BackendParams) *BackendLogin {
	b := new(BackendLogin)
	b.Reset(p)
	return b
}

// Reset starts a new login with p, reusing b's buffers. Byte slices b returned before
// (out, ClientReply) become invalid.
func (b *BackendLogin) Reset(p *BackendParams) {
	clear(b.pipe)
	clear(b.out)
	*b = BackendLogin{
		p:     *p,
		caps:  b.caps[:0],
		pipe:  b.pipe[:0],
		parts: b.parts[:0],
		out:   b.out[:0],
		reply: b.reply[:0],
	}
	mech, ok := sasl.ProxyMech(p.Mech)
	switch {
	case !ok:
		b.fail(BackendInternal, "Unsupported SASL mechanism "+backendSanitize([]byte(p.Mech)))
		return
	case mech == "" && p.Master != "":
		// Master user logins need PLAIN (cca proxy_check_start()).
		mech = sasl.Plain
	}
	b.mech, b.plain, b.token = mech, mech != "", p.Token
	if b.token == "" {
		b.token = p.Pass
	}
	// RFC 4616 has no room for NUL inside a field (Dovecot's C strings couldn't even
	// hold one); the OAuth mechanisms none for ^A in the user, and need a bearer token.
	if why := sasl.CheckProxy(mech, p.User, p.Master, p.Pass, b.token); why != "" {
		b.fail(BackendInternal, why)
	}
}

// Result returns the outcome so far.
func (b *BackendLogin) Result() BackendResult { return b.res }

// Feed is given all unconsumed bytes from the backend so far (what a previous call did
// not consume, followed by what was read since). It returns how many of them it
// consumed, the bytes to write to the backend now (nil if none; valid until the next
// call), and the outcome so far. Only whole lines are consumed; consumption stops right
// after the line that ends the login (or asks for TLS), so what follows a successful
// `L OK` is left for the relay. Once the result is final, Feed consumes nothing and
// returns it again.
func (b *BackendLogin) Feed(in []byte) (consumed int, out []byte, res BackendResult) {
	clear(b.out) // it may have held the password
	b.out = b.out[:0]
	if b.res.Outcome != BackendPending {
		return 0, nil, b.res
	}
	for b.res.Outcome == BackendPending {
		line, n := b.lines.Next(in[consumed:], backendMaxLine)
		if n == 0 {
			break
		}
		if n < 0 {
			b.fail(BackendProtocolError, "Too long input line")
			break
		}
		consumed += n
		b.input(line)
	}
	if len(b.out) > 0 && !b.res.Outcome.Final() {
		out = b.out
	}
	return consumed, out, b.res
}

// TLSStarted tells b that the TLS handshake after BackendStartTLS is done. It returns the
// commands to write over TLS; Feed continues with the bytes read over TLS.
func (b *BackendLogin) TLSStarted() (out []byte, res BackendResult) {
	clear(b.out)
	b.out = b.out[:0]
	if b.res.Outcome != BackendStartTLS {
		return nil, b.res
	}
	b.res = BackendResult{}
	b.lines.Reset()
	b.build()
	if len(b.out) > 0 && !b.res.Outcome.Final() {
		out = b.out
	}
	return out, b.res
}

// State is Dovecot's state string for timeout and failure logs: the commands waiting for
// a reply joined by "+", "/", what was received last. E.g. "id+capability+login/banner".
func (b *BackendLogin) State() string {
	var buf [64]byte
	s := buf[:0]
	for i, name := range backendSentNames {
		if b.sent&(1<<i) != 0 {
			if len(s) > 0 {
				s = append(s, '+')
			}
			s = append(s, name...)
		}
	}
	s = append(s, '/')
	s = append(s, backendRcvdNames[b.rcvd]...)
	return string(s)
}

// input handles one backend line (CRLF stripped), in Dovecot's order of tests
// (imap_proxy_parse_line()).
func (b *BackendLogin) input(line []byte) {
	if !b.seenBanner {
		b.seenBanner = true
		b.rcvd = backendRcvdBanner
		b.banner(line)
		return
	}
	switch {
	case len(line) > 0 && line[0] == '+':
		b.continuation(line)
	case backendHasTag(line, 'S'):
		b.startTLSReply(line[2:])
	case backendHasTag(line, 'L'):
		b.loginReply(line[2:])
	case backendUntagged(line, "CAPABILITY"):
		b.setCaps(backendAfterWord(line[2:]))
	case backendHasTag(line, 'C'):
		if b.sent&backendSentCapability == 0 {
			return // not ours
		}
		b.sent &^= backendSentCapability
		b.rcvd = backendRcvdCapability
		b.abandon('C')
		if b.wait == 'C' {
			// Dovecot sends the login only after `C OK` and otherwise waits for the
			// timeout; a refused CAPABILITY doesn't stop the pipelined login either,
			// so we go on whatever the reply.
			b.wait = 0
			b.build()
		}
	case backendHasTag(line, 'I'):
		if b.sent&backendSentID == 0 {
			return
		}
		b.sent &^= backendSentID
		b.rcvd = backendRcvdID
		b.abandon('I')
		if b.wait == 'I' {
			b.wait = 0
			b.build()
		}
	case backendUntagged(line, "ID"), backendUntagged(line, "BYE"):
		// The ID reply is ours. A BYE means the login is failing for some internal
		// reason; the client isn't disconnected, so it doesn't get the BYE.
	case len(line) >= 2 && line[0] == '*' && line[1] == ' ':
		if len(b.reply)+len(line)+2 <= backendMaxForward {
			b.reply = append(b.reply, line...)
			b.reply = append(b.reply, "\r\n"...)
		}
	default:
		// A tagged reply to nothing we sent: Dovecot logs and ignores it.
	}
}

func (b *BackendLogin) banner(line []byte) {
	rest, ok := backendStatus(line[min(len(line), 2):], "OK")
	if len(line) < 2 || line[0] != '*' || line[1] != ' ' || !ok {
		b.fail(BackendProtocolError, "Invalid banner: "+b.redact(line))
		return
	}
	if code, ok := backendCutPrefix(rest, "[CAPABILITY "); ok {
		if i := bytes.IndexByte(code, ']'); i >= 0 {
			code = code[:i]
		}
		b.setCaps(code)
	}
	b.build()
}

func (b *BackendLogin) setCaps(caps []byte) {
	b.caps = append(b.caps[:0], caps...)
	b.capsKnown = true
}

// build writes the next steps of the login into pipe and sends what may be sent.
func (b *BackendLogin) build() {
	if b.capsKnown {
		b.flags = backendParseCaps(b.caps)
	}
	for b.wait == 0 && b.step != backendStepDone && b.res.Outcome == BackendPending {
		step := b.step
		b.step++
		switch step {
		case backendStepID:
			// Only a banner that shows ID gets one (Dovecot never asks CAPABILITY first).
			if b.flags.id && !b.p.NotTrusted && len(b.p.ID) > 0 {
				b.writeID()
				if b.p.NoPipelining {
					b.wait = 'I'
				}
			}
		case backendStepStartTLS:
			if b.p.StartTLS {
				if b.capsKnown && !b.flags.startTLS {
					b.fail(BackendRemoteConfig, "STARTTLS not supported")
					return
				}
				b.begin('S')
				b.pipe = append(b.pipe, "S STARTTLS\r\n"...)
				b.cut(backendGateNone)
				b.sent |= backendSentStartTLS
				b.wait = 'S'
			}
		case backendStepCapability:
			// Ask if the caps are unknown, or if the client asked for them itself: a
			// client that sends CAPABILITY may ignore the resp-code, so it gets the
			// backend's list as an untagged reply (Dovecot's workaround).
			if !b.capSent && (!b.capsKnown || b.p.ClientSentCapability) {
				b.capSent = true
				b.begin('C')
				b.pipe = append(b.pipe, "C CAPABILITY\r\n"...)
				b.cut(backendGateNone)
				b.sent |= backendSentCapability
				if b.p.NoPipelining {
					b.wait = 'C'
				}
			}
		case backendStepLogin:
			b.writeLogin()
		}
	}
	b.flush(false)
}

func (b *BackendLogin) writeID() {
	b.begin('I')
	b.pipe = append(b.pipe, "I ID ("...)
	for i, f := range b.p.ID {
		if i > 0 {
			b.pipe = append(b.pipe, ' ')
		}
		b.appendArg(f.Key)
		b.pipe = append(b.pipe, ' ')
		b.appendArg(f.Value)
	}
	b.pipe = append(b.pipe, ")\r\n"...)
	b.cut(backendGateNone)
	b.sent |= backendSentID
}

func (b *BackendLogin) writeLogin() {
	if !b.plain {
		if b.flags.loginDisabled && !b.p.TLS && !b.p.StartTLS {
			b.fail(BackendRemoteConfig, "LOGINDISABLED advertised, but SSL/TLS not enabled")
			return
		}
		b.begin('L')
		b.pipe = append(b.pipe, "L LOGIN "...)
		b.appendArg(b.p.User)
		b.pipe = append(b.pipe, ' ')
		b.appendArg(b.p.Pass)
		b.pipe = append(b.pipe, "\r\n"...)
		b.cut(backendGateNone)
		b.sent |= backendSentLogin
		return
	}
	b.begin('L')
	b.pipe = append(b.pipe, "L AUTHENTICATE "...)
	b.pipe = append(b.pipe, b.mech...)
	if b.flags.saslIR {
		b.pipe = append(b.pipe, ' ')
		b.saslSent = true
	} else {
		b.pipe = append(b.pipe, "\r\n"...)
		b.cut(backendGateSASL)
	}
	// PLAIN: authzid is always the login user; authcid the master user if any.
	b.saslFrom = len(b.pipe)
	b.pipe = sasl.AppendProxyResponse(b.pipe, b.mech, b.p.User, b.p.Master, b.p.Pass, b.token)
	b.saslTo = len(b.pipe)
	b.pipe = append(b.pipe, "\r\n"...)
	b.cut(backendGateNone)
	b.sent |= backendSentAuthenticate | backendSentLogin
}

// appendArg appends s as an IMAP string. A literal is non-synchronizing if the backend
// allows it (LITERAL+, or LITERAL- up to 4096 bytes, RFC 7888); otherwise the output is
// cut after `{n}\r\n` and the rest waits for the backend's `+`. (Dovecot sends
// synchronizing literals without waiting, which only servers that read ahead accept.)
func (b *BackendLogin) appendArg(s string) {
	if backendQuotable(s) {
		b.pipe = backendAppendQuoted(b.pipe, s)
		return
	}
	if b.flags.literalPlus || (b.flags.literalMinus && len(s) <= 4096) {
		b.pipe = backendAppendLiteralHeader(b.pipe, len(s), true)
	} else {
		b.pipe = backendAppendLiteralHeader(b.pipe, len(s), false)
		b.cut(backendGateLiteral)
	}
	b.pipe = append(b.pipe, s...)
}

// begin starts a command in pipe.
func (b *BackendLogin) begin(tag byte) {
	b.curStart, b.curTag, b.curGate = len(b.pipe), tag, backendGateNone
}

// cut ends the current part; the next part of the same command waits for gate.
func (b *BackendLogin) cut(gate uint8) {
	b.parts = append(b.parts, backendPart{start: b.curStart, end: len(b.pipe), tag: b.curTag, gate: b.curGate})
	b.curStart, b.curGate = len(b.pipe), gate
}

// flush appends to out the parts that may go now; plus says a `+` just released the
// gated part at the head.
func (b *BackendLogin) flush(plus bool) {
	for b.next < len(b.parts) {
		pt := b.parts[b.next]
		if pt.gate != backendGateNone {
			if !plus {
				return
			}
			plus = false
		}
		b.out = append(b.out, b.pipe[pt.start:pt.end]...)
		b.next++
	}
}

// abandon drops the unsent parts of a command the backend has already answered (it
// refused a literal instead of sending `+`), so the commands after it can go.
func (b *BackendLogin) abandon(tag byte) {
	for b.next < len(b.parts) && b.parts[b.next].tag == tag && b.parts[b.next].gate != backendGateNone {
		b.next++
	}
	b.flush(false)
}

// continuation handles a `+` line.
func (b *BackendLogin) continuation(line []byte) {
	if b.next < len(b.parts) {
		switch b.parts[b.next].gate {
		case backendGateLiteral:
			b.flush(true)
			return
		case backendGateSASL:
			b.sent &^= backendSentAuthenticate
			b.rcvd = backendRcvdAuthContinue
			if !b.saslChallenge(line, false) {
				return
			}
			b.saslSent = true
			b.sent |= backendSentAuthContinue
			b.flush(true)
			return
		}
	}
	if b.saslSent {
		// PLAIN has nothing more to say once its response is out. The OAuth mechanisms
		// answer one error challenge (a refused token), and the NO follows.
		b.sent &^= backendSentAuthenticate
		b.rcvd = backendRcvdAuthContinue
		if answer, ok := sasl.ProxyErrorAnswer(b.mech); ok && !b.errAnswer && len(line) > 2 && line[1] == ' ' && validBase64(line[2:]) {
			b.errAnswer = true
			b.out = append(b.out, answer...)
			b.out = append(b.out, "\r\n"...)
			b.sent |= backendSentAuthContinue
			return
		}
		b.saslChallenge(line, true)
		return
	}
	// A `+` for a literal we sent non-synchronizing: nothing to do (Dovecot ignores it).
}

// saslChallenge checks a `+ <base64>` line as Dovecot's PLAIN client would and fails the
// login if it is bad. done: the PLAIN response was already sent, so any challenge is bad.
func (b *BackendLogin) saslChallenge(line []byte, done bool) bool {
	// "+" alone is taken as an empty challenge; Dovecot insists on "+ ".
	var data []byte
	if len(line) > 1 {
		if line[1] != ' ' {
			b.fail(BackendProtocolError, "Invalid base64 data in AUTHENTICATE response")
			return false
		}
		data = line[2:]
	}
	if len(data) > 0 {
		if _, err := base64.StdEncoding.DecodeString(string(data)); err != nil {
			b.fail(BackendProtocolError, "Invalid base64 data in AUTHENTICATE response")
			return false
		}
	}
	switch {
	case done:
		b.fail(BackendProtocolError, "Invalid authentication data: Server didn't finish authentication")
		return false
	case len(data) > 0:
		// Only "=" could be empty data, and it isn't valid base64; any data is non-empty.
		b.fail(BackendProtocolError, "Invalid authentication data: Server sent non-empty initial response")
		return false
	}
	return true
}

func (b *BackendLogin) startTLSReply(rest []byte) {
	if b.sent&backendSentStartTLS == 0 {
		return
	}
	b.sent &^= backendSentStartTLS
	b.rcvd = backendRcvdStartTLS
	if _, ok := backendStatus(rest, "OK"); !ok {
		b.fail(BackendProtocolError, "STARTTLS failed: "+b.redact(backendAfterWord(rest)))
		return
	}
	b.wait = 0
	b.res = BackendResult{Outcome: BackendStartTLS}
}

// loginReply handles the tagged reply to LOGIN/AUTHENTICATE, rest being what follows "L ".
func (b *BackendLogin) loginReply(rest []byte) {
	if b.sent&backendSentLogin == 0 {
		return // we haven't sent it yet: not an answer to us
	}
	b.sent &^= backendSentLogin
	b.rcvd = backendRcvdLogin
	if text, ok := backendStatus(rest, "OK"); ok {
		b.loginOK(text)
		return
	}
	// Status words and resp-codes are matched ignoring case (RFC 3501); Dovecot's
	// matching is case-sensitive here, which only matters for odd backends.
	reason := rest
	if text, ok := backendCutPrefix(rest, "NO "); ok {
		reason = text
	}
	outcome := BackendAuthFailed
	if _, ok := backendCutPrefix(rest, "NO [AUTHENTICATIONFAILED]"); ok {
		// Hide the backend's text: it could tell an attacker which users exist.
		b.appendReply("NO [AUTHENTICATIONFAILED] " + backendAuthFailedMsg)
	} else if code, ok := backendCutPrefix(rest, "NO ["); ok {
		if i := bytes.IndexByte(code, ']'); i >= 0 {
			code = code[:i]
		}
		b.reply = append(b.reply, b.p.ClientTag...)
		if bytes.EqualFold(code, []byte("UNAVAILABLE")) {
			// Retryable; the client gets the backend's text after the last attempt.
			outcome = BackendTempFail
			b.reply = append(b.reply, " NO "...)
			b.reply = append(b.reply, reason...)
		} else {
			// Some other resp-code ([SERVERBUG], [EXPIRED], ...): forwarded as it is.
			b.reply = append(b.reply, ' ')
			b.reply = append(b.reply, rest...)
		}
		b.reply = append(b.reply, "\r\n"...)
	} else {
		// No resp-code, or BAD: the backend isn't a Dovecot 1.2+. Hide what it said,
		// as for AUTHENTICATIONFAILED; it is still in the logs.
		b.appendReply("NO [AUTHENTICATIONFAILED] " + backendAuthFailedMsg)
	}
	b.finish(outcome, b.redact(reason))
}

// loginOK builds the client's OK as Dovecot's client_send_login_reply() does.
func (b *BackendLogin) loginOK(text []byte) {
	caps, haveCaps := b.caps, b.capsKnown
	tagged := false
	if c, ok := backendCutPrefix(text, "[CAPABILITY "); ok {
		tagged, haveCaps = true, true
		if i := bytes.IndexByte(c, ']'); i >= 0 {
			c = c[:i]
		}
		caps = c
	}
	cs := b.p.ClientSentCapability
	if cs && haveCaps {
		b.reply = append(b.reply, "* CAPABILITY "...)
		b.reply = append(b.reply, caps...)
		b.reply = append(b.reply, "\r\n"...)
	}
	b.reply = append(b.reply, b.p.ClientTag...)
	b.reply = append(b.reply, " OK "...)
	if !cs && !tagged && haveCaps {
		b.reply = append(b.reply, "[CAPABILITY "...)
		b.reply = append(b.reply, caps...)
		b.reply = append(b.reply, "] "...)
		if len(text) > 0 && text[0] == '[' {
			// Only one resp-code fits: ours replaces the backend's. (Dovecot stops on
			// its `]` and sends that along: `OK [CAPABILITY ...] ] text`.)
			if i := bytes.IndexByte(text, ']'); i >= 0 {
				text = bytes.TrimPrefix(text[i+1:], []byte(" "))
			} else {
				text = nil
			}
		}
	}
	if len(text) == 0 {
		// `L OK` with no text (Dovecot would even call that a failure): say what
		// Dovecot's own backend says.
		text = []byte("Logged in")
	}
	b.reply = append(b.reply, text...)
	b.reply = append(b.reply, "\r\n"...)
	b.finish(BackendOK, "")
}

func (b *BackendLogin) appendReply(s string) {
	b.reply = append(b.reply, b.p.ClientTag...)
	b.reply = append(b.reply, ' ')
	b.reply = append(b.reply, s...)
	b.reply = append(b.reply, "\r\n"...)
}

// fail ends the login with a failure whose client reply Dovecot makes up itself.
func (b *BackendLogin) fail(o BackendOutcome, text string) {
	b.reply = BackendFailureReply(b.reply, b.p.ClientTag, o)
	b.finish(o, text)
}

// finish records the final result and wipes what held the password.
func (b *BackendLogin) finish(o BackendOutcome, text string) {
	b.res = BackendResult{Outcome: o, ClientReply: b.reply, Text: text}
	clear(b.pipe)
	clear(b.out)
	b.out = b.out[:0]
	b.parts = b.parts[:0]
	b.next = 0
	b.saslFrom, b.saslTo = 0, 0
}

// redact makes a backend line fit for the logs: the password and the SASL payload cut
// out (should a backend echo them), control bytes and bad UTF-8 replaced, at most 160
// bytes (Dovecot's str_sanitize(line, 160)).
func (b *BackendLogin) redact(line []byte) string {
	s := string(line)
	if b.p.Pass != "" {
		s = strings.ReplaceAll(s, b.p.Pass, "<hidden>")
	}
	if b.saslTo > b.saslFrom {
		s = strings.ReplaceAll(s, string(b.pipe[b.saslFrom:b.saslTo]), "<hidden>")
	}
	return backendSanitize([]byte(s))
}

// validBase64 reports whether data is base64.
func validBase64(data []byte) bool {
	_, err := base64.StdEncoding.DecodeString(string(data))
	return err == nil
}
