// Backend side of the Submission proxy login: after the client has been authenticated
// and the user looked up, BackendLogin logs in to the backend SMTP server on the user's
// behalf, the way Dovecot 2.3.21's submission-login proxy does
// (src/submission-login/submission-proxy.c): wait for the 220 banner, EHLO, STARTTLS
// and EHLO again if asked to, XCLIENT with the client's particulars and EHLO again if
// the backend offers it, then AUTH PLAIN (or, with proxy_noauth, nothing), and turn the
// backend's answer into the reply the client gets.
//
// It is a pure state machine: no I/O, no goroutines, no clock. Timeouts and retries
// belong to the engine, which asks State() for the Dovecot-style state string.

package submission

import (
	"encoding/base64"
	"strconv"
	"strings"

	"doorman/codec/internal/wire"
	"doorman/codec/sasl"
)

// backendMaxLine is Dovecot's MAX_PROXY_INPUT_SIZE: a backend line, LF included, must fit
// in 4096 bytes.
const backendMaxLine = 4096

// backendMaxReply caps the lines of one reply kept for the client. A backend that goes on
// with "235-..." lines without end must not grow our memory without end; the lines past
// the cap are dropped, the last one always kept.
const backendMaxReply = 16 << 10

// backendLineLimit is SMTP_BASE_LINE_LENGTH_LIMIT (512 minus CRLF): an AUTH command with
// its initial response must fit, else the response waits for a "334 " (RFC 4954 4).
// backendXCLIENTMax is the length past which Dovecot starts another XCLIENT command.
const (
	backendLineLimit  = 512 - 2
	backendXCLIENTMax = 512
)

// BackendDefaultEHLO is the name BackendLogin says EHLO with when the client gave none.
const BackendDefaultEHLO = "doorman"

// backendFailureMsg is LOGIN_PROXY_FAILURE_MSG, the reply to every failure whose reply
// Dovecot makes up itself.
const backendFailureMsg = "454 4.7.0 Account is temporarily unavailable.\r\n"

// BackendFailureReply appends the reply Dovecot gives the client when a backend login
// fails with an outcome that has no backend text of its own (use it also for connect
// failures and timeouts): "454 4.7.0 Account is temporarily unavailable." for every
// failure but AuthFailed. For other outcomes it appends nothing.
func BackendFailureReply(dst []byte, o BackendOutcome) []byte {
	switch o {
	case BackendProtocolError, BackendInternal, BackendTempFail, BackendRemoteConfig:
		return append(dst, backendFailureMsg...)
	}
	return dst
}

// States, named as Dovecot names them in "Login timed out in state=..." logs.
const (
	backendBanner uint8 = iota
	backendEHLO
	backendStartTLS
	backendTLSEHLO
	backendXCLIENT
	backendXCLIENTEHLO
	backendAuthenticate
)

var backendStateNames = [...]string{"banner", "ehlo", "starttls", "tls-ehlo", "xclient", "xclient-ehlo", "authenticate"}

// What the backend's EHLO reply advertised.
const (
	backendCapXCLIENT uint8 = 1 << iota
	backendCapStartTLS
	backendCapAuth
	backendCapEnhanced
)

// BackendLogin is one login attempt at one backend. Reset makes it ready for the next
// attempt (a retry, or another session) while keeping its buffers.
type BackendLogin struct {
	p   BackendParams
	res BackendResult

	state       uint8
	caps        uint8
	xclient     []byte          // the fields of the backend's XCLIENT keyword, as it listed them
	replyStatus int             // status of the multi-line reply in progress; 0: none
	xclientLeft int             // XCLIENT replies still to come
	irPending   bool            // the AUTH initial response waits for a "334 "
	mech        string          // AUTH's mechanism: PLAIN (the default), XOAUTH2, OAUTHBEARER
	answered    bool            // the answer to an OAuth error challenge went out
	lines       wire.LineReader // where the backend's lines are

	ehloName string
	sasl     []byte // base64 of the PLAIN response: sent, and cut out of log texts
	out      []byte
	reply    []byte
	scratch  []byte
	val      []byte // an XCLIENT value being written
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
	clear(b.sasl)
	clear(b.out)
	clear(b.scratch)
	*b = BackendLogin{
		p:       *p,
		xclient: b.xclient[:0],
		sasl:    b.sasl[:0],
		out:     b.out[:0],
		reply:   b.reply[:0],
		scratch: b.scratch[:0],
		val:     b.val[:0],
	}
	b.ehloName = BackendDefaultEHLO
	if backendIsEHLOName(p.ClientTag) {
		b.ehloName = p.ClientTag
	}
	mech, ok := sasl.ProxyMech(p.Mech)
	if !ok {
		b.fail(BackendInternal, "Unsupported SASL mechanism "+backendSanitize([]byte(p.Mech), 160))
		return
	}
	if mech == "" {
		mech = sasl.Plain // Submission's proxy logs in with PLAIN unless told otherwise
	}
	b.mech = mech
	if !p.NoAuth {
		// RFC 4616 has no room for NUL inside a field (Dovecot's C strings couldn't even
		// hold one); the OAuth mechanisms none for ^A in the user, and need a bearer
		// token (Token, else Pass, as Dovecot forwards it).
		if why := sasl.CheckProxy(mech, p.User, p.Master, p.Pass, b.token()); why != "" {
			b.fail(BackendInternal, why)
			return
		}
	}
}

// token is the OAuth mechanisms' token: Token, else the password.
func (b *BackendLogin) token() string {
	if b.p.Token != "" {
		return b.p.Token
	}
	return b.p.Pass
}

// backendIsEHLOName reports whether s can go in an EHLO line as it is: the frontend only
// hands on domains and address literals, but the engine might pass anything.
func backendIsEHLOName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// Result returns the outcome so far.
func (b *BackendLogin) Result() BackendResult { return b.res }

// Feed is given all unconsumed bytes from the backend so far (what a previous call did
// not consume, followed by what was read since). It returns how many of them it
// consumed, the bytes to write to the backend now (nil if none; valid until the next
// call), and the outcome so far. Only whole lines are consumed; consumption stops right
// after the line that ends the login (or asks for TLS), so what follows the final reply
// is left for the relay. Once the result is final, Feed consumes nothing and returns it
// again.
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
// EHLO to write over TLS; Feed continues with the bytes read over TLS.
func (b *BackendLogin) TLSStarted() (out []byte, res BackendResult) {
	clear(b.out)
	b.out = b.out[:0]
	if b.res.Outcome != BackendStartTLS {
		return nil, b.res
	}
	b.res = BackendResult{}
	b.lines.Reset()
	b.caps, b.xclient = 0, b.xclient[:0]
	b.state = backendTLSEHLO
	b.writeEHLO()
	return b.out, b.res
}

// State is Dovecot's state string for timeout and failure logs: banner, ehlo, starttls,
// tls-ehlo, xclient, xclient-ehlo or authenticate.
func (b *BackendLogin) State() string { return backendStateNames[b.state] }

// input handles one backend line (CRLF stripped), as submission_proxy_parse_line does.
func (b *BackendLogin) input(line []byte) {
	status, valid := backendReplyStatus(line)
	var text []byte
	if valid {
		text = line[4:]
		if b.caps&backendCapEnhanced != 0 {
			text = backendStripEnhanced(text)
		}
	}
	if b.replyStatus != 0 && b.replyStatus != status {
		b.fail(BackendProtocolError, "Inconsistent SMTP reply: "+b.redact(line)+
			" (status != "+strconv.Itoa(b.replyStatus)+")")
		return
	}
	last := len(line) > 3 && line[3] == ' '
	if last {
		b.replyStatus = 0
	} else {
		b.replyStatus = status
	}

	switch b.state {
	case backendBanner:
		if !valid || status != 220 {
			b.fail(BackendProtocolError, "Invalid banner: "+b.redact(line))
			return
		}
		if last {
			b.state = backendEHLO
			b.writeEHLO()
		}
	case backendEHLO, backendTLSEHLO, backendXCLIENTEHLO:
		if !valid || status/100 != 2 {
			b.fail(BackendProtocolError, "Invalid EHLO line: "+b.redact(line))
			return
		}
		b.ehloKeyword(text)
		if last {
			b.ehloDone()
		}
	case backendStartTLS:
		if !valid || status != 220 {
			b.fail(BackendProtocolError, "STARTTLS failed: "+b.redact(line))
			return
		}
		if last {
			b.res = BackendResult{Outcome: BackendStartTLS}
		}
	case backendXCLIENT:
		if !valid || status/100 != 2 {
			b.fail(BackendProtocolError, "XCLIENT failed: "+b.redact(line))
			return
		}
		if last {
			if b.xclientLeft--; b.xclientLeft == 0 {
				b.state = backendXCLIENTEHLO
			}
		}
	case backendAuthenticate:
		b.authReply(line, status, valid, last, text)
	}
}

// ehloKeyword notes what the proxy cares about in one line of an EHLO reply.
func (b *BackendLogin) ehloKeyword(text []byte) {
	switch {
	case len(text) >= 8 && backendEqualFold(text[:8], "XCLIENT "):
		b.caps |= backendCapXCLIENT
		b.xclient = append(b.xclient[:0], text[8:]...)
	case backendEqualFold(text, "STARTTLS"):
		b.caps |= backendCapStartTLS
	case len(text) > 5 && backendEqualFold(text[:5], "AUTH "):
		b.caps |= backendCapAuth
	case backendEqualFold(text, "ENHANCEDSTATUSCODES"):
		b.caps |= backendCapEnhanced
	}
}

// ehloDone takes the next step once an EHLO reply is complete (proxy_handle_ehlo_reply).
func (b *BackendLogin) ehloDone() {
	switch b.state {
	case backendEHLO:
		if b.p.StartTLS {
			if b.caps&backendCapStartTLS == 0 {
				b.fail(BackendRemoteConfig, "STARTTLS not supported")
				return
			}
			b.out = append(b.out, "STARTTLS\r\n"...)
			b.state = backendStartTLS
			return
		}
		fallthrough
	case backendTLSEHLO:
		if b.caps&backendCapXCLIENT != 0 && !b.p.NotTrusted && b.writeXCLIENT() {
			// The XCLIENT resets the session: the EHLO goes with it, and what the
			// backend offers is learnt again.
			b.caps, b.xclient = 0, b.xclient[:0]
			b.state = backendXCLIENT
			b.writeEHLO()
			return
		}
	}
	if b.p.NoAuth {
		// proxy_noauth: the backend trusts XCLIENT LOGIN (or the proxy's address); the
		// client gets the reply Dovecot makes up.
		b.reply = append(b.reply[:0], txtLoggedIn+"\r\n"...)
		b.finish(BackendOK, "")
		return
	}
	b.writeAuth()
}

func (b *BackendLogin) writeEHLO() {
	b.out = append(b.out, "EHLO "...)
	b.out = append(b.out, b.ehloName...)
	b.out = append(b.out, "\r\n"...)
}

// writeXCLIENT writes the XCLIENT command(s) with the fields the backend listed, in
// Dovecot's order, and reports whether it wrote any. A command that would grow past 512
// bytes is cut before the field that made it too long, and that field starts the next
// XCLIENT (one field longer than that alone still goes whole, as Dovecot sends it).
// Unlike Dovecot, the codec never sends an XCLIENT without fields, which a backend can
// only refuse.
func (b *BackendLogin) writeXCLIENT() bool {
	c := &b.p.Client
	x := xclientWriter{b: b, cmd: len(b.out)}
	b.out = append(b.out, "XCLIENT"...)
	x.str("HELO", b.p.ClientTag)
	// The client's EHLO or HELO isn't known here (login.Credentials has no room for
	// it), so PROTO says what nearly every submission client is: ESMTP.
	x.str("PROTO", "ESMTP")
	if b.p.NoAuth {
		// Dovecot sends the name the client logged in as; BackendParams has only the
		// user at the backend (destuser, if the passdb set one).
		x.str("LOGIN", b.p.User)
	}
	x.field("TTL", strconv.AppendInt(b.val[:0], int64(c.TTL), 10))
	if c.RemotePort > 0 {
		x.field("PORT", strconv.AppendInt(b.val[:0], int64(c.RemotePort), 10))
	} else {
		x.str("PORT", "")
	}
	x.str("ADDR", c.RemoteIP) // as 2.3 sends it: no "IPV6:" before an IPv6 address (2.4 adds it)
	x.str("SESSION", c.SessionID)
	if len(c.Forward) > 0 && backendListHas(b.xclient, "FORWARD") {
		x.field("FORWARD", b.forward(c.Forward))
	}
	if len(b.out)-x.cmd > len("XCLIENT") {
		b.out = append(b.out, "\r\n"...)
		x.sent++
	} else {
		b.out = b.out[:x.cmd]
	}
	b.xclientLeft = x.sent
	return x.sent > 0
}

// xclientWriter builds XCLIENT commands at the end of b.out.
type xclientWriter struct {
	b    *BackendLogin
	cmd  int // where the command being built starts in b.out
	sent int // commands finished
}

// str adds a field with a text value; an empty one is XCLIENT's [UNAVAILABLE].
func (x *xclientWriter) str(name, value string) {
	if value == "" {
		value = "[UNAVAILABLE]"
	}
	x.field(name, append(x.b.val[:0], value...))
}

// field adds name=xtext(value) if the backend listed name, as
// proxy_send_xclient_more_data does.
func (x *xclientWriter) field(name string, value []byte) {
	b := x.b
	b.val = value[:0] // keep the buffer, grown or not
	if !backendListHas(b.xclient, name) {
		return
	}
	prev := len(b.out)
	b.out = append(b.out, ' ')
	b.out = append(b.out, name...)
	b.out = append(b.out, '=')
	b.out = backendAppendXtext(b.out, value)
	if len(b.out)-x.cmd <= backendXCLIENTMax {
		return
	}
	if prev-x.cmd <= len("XCLIENT") {
		prev = len(b.out) // the first field: it goes alone, however long
	}
	b.scratch = append(b.scratch[:0], b.out[prev:]...)
	b.out = append(b.out[:prev], "\r\n"...)
	x.sent++
	x.cmd = len(b.out)
	b.out = append(b.out, "XCLIENT"...)
	b.out = append(b.out, b.scratch...)
}

// forward builds FORWARD's value as proxy_compose_xclient_forward does: the forward_*
// passdb fields as "key=value", tab-escaped, joined by tabs, base64-encoded.
func (b *BackendLogin) forward(kvs []KV) []byte {
	raw := b.scratch[:0]
	for i, kv := range kvs {
		if i > 0 {
			raw = append(raw, '\t')
		}
		raw = wire.AppendTabEscaped(raw, kv.Key)
		raw = append(raw, '=')
		raw = wire.AppendTabEscaped(raw, kv.Value)
	}
	b.scratch = raw
	return base64.StdEncoding.AppendEncode(b.val[:0], raw)
}

// writeAuth sends AUTH PLAIN (proxy_send_login): authzid the login user, authcid the
// master user if there is one, else the user again.
func (b *BackendLogin) writeAuth() {
	if b.caps&backendCapAuth == 0 {
		// Don't send credentials to a server that doesn't want them (no TLS?).
		b.fail(BackendRemoteConfig, "Authentication support not advertised (TLS required?)")
		return
	}
	b.sasl = sasl.AppendProxyResponse(b.sasl[:0], b.mech, b.p.User, b.p.Master, b.p.Pass, b.token())
	b.out = append(b.out, "AUTH "...)
	b.out = append(b.out, b.mech...)
	if len("AUTH  ")+len(b.mech)+len(b.sasl) > backendLineLimit {
		b.irPending = true
	} else {
		b.out = append(b.out, ' ')
		b.out = append(b.out, b.sasl...)
	}
	b.out = append(b.out, "\r\n"...)
	b.state = backendAuthenticate
}

// authReply handles a line of the reply to AUTH.
func (b *BackendLogin) authReply(line []byte, status int, valid, last bool, text []byte) {
	if !valid {
		// Dovecot would trip an assertion here; the codec calls it a protocol error.
		b.fail(BackendProtocolError, "Invalid AUTH reply: "+b.redact(line))
		return
	}
	if status == 334 {
		b.saslChallenge(text, last)
		return
	}
	if len(b.reply)+len(line)+2 <= backendMaxReply || last {
		b.reply = append(b.reply, line...)
		b.reply = append(b.reply, "\r\n"...)
	}
	if !last {
		return
	}
	switch status / 100 {
	case 2:
		b.finish(BackendOK, "")
	case 4:
		// Retryable; the client gets the backend's reply after the last attempt.
		b.finish(BackendTempFail, b.redact(text))
	default:
		// Forwarded as it is (Dovecot's comment: ideally the backend's text would be
		// hidden, as it may tell which users exist).
		b.finish(BackendAuthFailed, b.redact(text))
	}
}

// saslChallenge answers a 334 as Dovecot's PLAIN client does: with the deferred initial
// response, or not at all, PLAIN having nothing more to say.
func (b *BackendLogin) saslChallenge(text []byte, last bool) {
	switch {
	case !last:
		b.fail(BackendProtocolError, "Server returned multi-line challenge: 334 "+b.redact1024(text))
	case b.irPending && len(text) == 0:
		b.irPending = false
		b.out = append(b.out, b.sasl...)
		b.out = append(b.out, "\r\n"...)
	case b.irPending:
		b.fail(BackendProtocolError, "Server sent unexpected server-first challenge: 334 "+b.redact1024(text))
	case !backendBase64(text):
		b.fail(BackendProtocolError, "Invalid base64 data in AUTH response")
	case len(text) > 0 && sasl.OAuth(b.mech) && !b.answered:
		// A refused token's error challenge: answered, and the failure follows.
		answer, _ := sasl.ProxyErrorAnswer(b.mech)
		b.answered = true
		b.out = append(b.out, answer...)
		b.out = append(b.out, "\r\n"...)
	default:
		b.fail(BackendProtocolError, "Invalid authentication data: Server didn't finish authentication")
	}
}

// fail ends the login with a failure whose client reply Dovecot makes up itself.
func (b *BackendLogin) fail(o BackendOutcome, text string) {
	b.reply = BackendFailureReply(b.reply[:0], o)
	b.finish(o, text)
}

// finish records the final result and wipes what held the password.
func (b *BackendLogin) finish(o BackendOutcome, text string) {
	b.res = BackendResult{Outcome: o, ClientReply: b.reply, Text: text}
	clear(b.sasl)
	b.sasl = b.sasl[:0]
	clear(b.out)
	b.out = b.out[:0]
	b.irPending = false
}

// redact makes a backend line fit for the logs: the password and the SASL payload cut
// out (should a backend echo them), control bytes and bad UTF-8 replaced, at most 160
// bytes (Dovecot's str_sanitize(line, 160)).
func (b *BackendLogin) redact(line []byte) string { return b.redactN(line, 160) }

// redact1024 is redact for the texts Dovecot sanitizes to 1024 bytes.
func (b *BackendLogin) redact1024(line []byte) string { return b.redactN(line, 1024) }

func (b *BackendLogin) redactN(line []byte, max int) string {
	s := string(line)
	if b.p.Pass != "" {
		s = strings.ReplaceAll(s, b.p.Pass, "<hidden>")
	}
	if len(b.sasl) > 0 {
		s = strings.ReplaceAll(s, string(b.sasl), "<hidden>")
	}
	return backendSanitize([]byte(s), max)
}
