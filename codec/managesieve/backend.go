// Backend side of the ManageSieve proxy login: after the client has been authenticated
// and the user looked up, BackendLogin logs in to the backend ManageSieve server on the
// user's behalf, the way Pigeonhole 0.5.21's managesieve-login proxy does
// (src/managesieve-login/managesieve-proxy.c): read the capabilities up to OK, then
// STARTTLS (and the capabilities again), XCLIENT, AUTHENTICATE "PLAIN", one at a time,
// and turn the backend's answer into the reply the client gets.
//
// It is a pure state machine: no I/O, no goroutines, no clock. Timeouts and retries
// belong to the engine, which asks State() for the Dovecot-style state string.

package managesieve

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"

	"doorman/codec/internal/wire"
	"doorman/codec/login"
	"doorman/codec/sasl"
)

// backendMaxLine is Dovecot's MAX_PROXY_INPUT_SIZE: a backend line, LF included, must
// fit in 4096 bytes. Here it bounds a whole response, literals included (Dovecot reads
// lines and can't take a literal at all).
const backendMaxLine = 4096

// Texts of the replies Dovecot makes up itself (login-common.h, login-proxy.h).
const (
	backendAuthFailed = `NO "Authentication failed."` + "\r\n"
	backendFailureMsg = `"Account is temporarily unavailable."` + "\r\n"
)

// BackendFailureReply appends the reply Dovecot gives the client when a backend login
// fails with an outcome that has no backend text of its own
// (managesieve_proxy_send_failure_reply): `NO (TRYLATER) "Account is temporarily
// unavailable."` for retryable and internal failures (use it also for connect failures
// and timeouts), the same without TRYLATER for RemoteConfig. For other outcomes it
// appends nothing.
func BackendFailureReply(dst []byte, o login.BackendOutcome) []byte {
	switch o {
	case login.BackendProtocolError, login.BackendInternal, login.BackendTempFail:
		dst = append(dst, txtNoTryLaterHead...)
	case login.BackendRemoteConfig:
		dst = append(dst, txtNoPrefix...)
	default:
		return dst
	}
	return append(dst, backendFailureMsg...)
}

// Steps of the login, named as Dovecot names them in its "Login timed out in state=..."
// logs (managesieve_proxy_state_names).
const (
	backendNone     uint8 = iota // reading the capabilities
	backendTLSStart              // STARTTLS sent
	backendTLSReady              // TLS is up: reading the capabilities again
	backendXclient               // XCLIENT sent
	backendAuth                  // AUTHENTICATE sent
)

var backendStateNames = [...]string{"none", "tls-start", "tls-ready", "xclient", "auth"}

// BackendLogin is one login attempt at one backend. Reset makes it ready for the next
// attempt (a retry, or another session) while keeping its buffers.
type BackendLogin struct {
	p   login.BackendParams
	res login.BackendResult

	state    uint8
	sasl     bool // the backend offers SASL mechanisms
	startTLS bool // ... STARTTLS
	xclient  bool // ... XCLIENT

	// Framing of the response at the start of the unconsumed input: where to look for
	// the next LF, where the current physical line starts, and how many unconsumed
	// bytes the last call had (a shorter input means the engine didn't re-feed them).
	scan, lineStart, held int

	saslSent bool   // AUTHENTICATE went out: its base64 must not reach the logs
	mech     string // AUTHENTICATE's mechanism: PLAIN (the default), XOAUTH2, OAUTHBEARER
	answered bool   // the answer to an OAuth error challenge went out

	out     []byte
	reply   []byte
	scratch []byte
}

// NewBackendLogin starts a login with p. An unusable p (unsupported Mech, a NUL in a
// SASL PLAIN field) shows as a BackendInternal result from the first Feed, so the engine
// may call Feed(nil) before connecting.
func NewBackendLogin(p *login.BackendParams) *BackendLogin {
	b := new(BackendLogin)
	b.Reset(p)
	return b
}

// Reset starts a new login with p, reusing b's buffers. Byte slices b returned before
// (out, ClientReply) become invalid.
func (b *BackendLogin) Reset(p *login.BackendParams) {
	clear(b.out)
	clear(b.scratch)
	*b = BackendLogin{
		p:       *p,
		out:     b.out[:0],
		reply:   b.reply[:0],
		scratch: b.scratch[:0],
	}
	// ManageSieve logs in with PLAIN whatever the passdb says, unless proxy_mech names
	// another mechanism (Dovecot's default is PLAIN: proxy_write_auth).
	mech, ok := sasl.ProxyMech(p.Mech)
	if !ok {
		b.fail(login.BackendInternal, "Unsupported SASL mechanism "+wire.Sanitize([]byte(p.Mech), 160))
		return
	}
	if mech == "" {
		mech = sasl.Plain
	}
	b.mech = mech
	// RFC 4616 has no room for NUL inside a field (Dovecot's C strings couldn't even
	// hold one); the OAuth mechanisms none for ^A in the user, and need a bearer token
	// (Token, else Pass, as Dovecot forwards it).
	if why := sasl.CheckProxy(mech, p.User, p.Master, p.Pass, b.token()); why != "" {
		b.fail(login.BackendInternal, why)
	}
}

// token is the OAuth mechanisms' token: Token, else the password.
func (b *BackendLogin) token() string {
	if b.p.Token != "" {
		return b.p.Token
	}
	return b.p.Pass
}

// Result returns the outcome so far.
func (b *BackendLogin) Result() login.BackendResult { return b.res }

// State is Dovecot's state string for timeout and failure logs: none, tls-start,
// tls-ready, xclient or auth.
func (b *BackendLogin) State() string { return backendStateNames[b.state] }

// Feed is given all unconsumed bytes from the backend so far (what a previous call did
// not consume, followed by what was read since). It returns how many of them it
// consumed, the bytes to write to the backend now (nil if none; valid until the next
// call), and the outcome so far. Only whole responses are consumed; consumption stops
// right after the response that ends the login (or asks for TLS), so what follows a
// successful OK is left for the relay. Once the result is final, Feed consumes nothing
// and returns it again.
func (b *BackendLogin) Feed(in []byte) (consumed int, out []byte, res login.BackendResult) {
	clear(b.out) // it may have held the password
	b.out = b.out[:0]
	if b.res.Outcome != login.BackendPending {
		return 0, nil, b.res
	}
	if len(in) < b.held {
		b.scan, b.lineStart = 0, 0 // the caller did not re-feed what we had seen; look again
	}
	for b.res.Outcome == login.BackendPending {
		rest := in[consumed:]
		n := b.frame(rest)
		if n == 0 {
			break
		}
		if n < 0 {
			b.fail(login.BackendProtocolError, "Too long input line")
			break
		}
		consumed += n
		b.input(rest[:n])
	}
	b.held = len(in) - consumed
	if len(b.out) > 0 && !b.res.Outcome.Final() {
		out = b.out
	}
	return consumed, out, b.res
}

// TLSStarted tells b that the TLS handshake after BackendStartTLS is done. The backend
// speaks first (its capabilities again), so there is nothing to write yet; Feed
// continues with the bytes read over TLS.
func (b *BackendLogin) TLSStarted() (out []byte, res login.BackendResult) {
	if b.res.Outcome != login.BackendStartTLS {
		return nil, b.res
	}
	b.res = login.BackendResult{}
	b.scan, b.lineStart, b.held = 0, 0, 0
	return nil, b.res
}

// frame returns the length of the complete response at the start of in, its last LF
// included; 0 if more bytes are needed, -1 if it is too long. A line that ends in a
// literal's announcement, {n} or {n+}, goes on after the literal's n bytes.
func (b *BackendLogin) frame(in []byte) int {
	for {
		if b.scan > backendMaxLine {
			return -1
		}
		if b.scan > len(in) {
			return 0 // inside a literal's data
		}
		win := in[:min(len(in), backendMaxLine)]
		i := bytes.IndexByte(win[b.scan:], '\n')
		if i < 0 {
			if len(in) >= backendMaxLine {
				return -1
			}
			b.scan = len(in)
			return 0
		}
		i += b.scan
		if n, ok := literalAtEnd(wire.TrimCR(in[b.lineStart:i])); ok {
			b.scan = min(i+1+n, backendMaxLine+1)
			b.lineStart = b.scan
			continue
		}
		b.scan, b.lineStart = 0, 0
		return i + 1
	}
}

// input handles one complete response (managesieve_proxy_parse_line).
func (b *BackendLogin) input(resp []byte) {
	switch b.state {
	case backendNone, backendTLSReady:
		b.capability(resp)
	case backendTLSStart:
		if !isOK(resp) {
			b.fail(login.BackendProtocolError, "Remote refused STARTTLS command")
			return
		}
		// What the backend said before TLS no longer counts (Dovecot forgets SASL and
		// XCLIENT; STARTTLS won't be asked for again).
		b.sasl, b.xclient = false, false
		b.state = backendTLSReady
		b.res = login.BackendResult{Outcome: login.BackendStartTLS}
	case backendXclient:
		if !isOK(resp) {
			b.fail(login.BackendProtocolError, "Remote XCLIENT failed: "+b.redact(trimEOL(resp)))
			return
		}
		b.authenticate()
	case backendAuth:
		b.authReply(resp)
	}
}

// capability handles a response while the capabilities are read (proxy_input_capability).
func (b *BackendLogin) capability(resp []byte) {
	r := parseResponse(resp, false)
	switch {
	case r.err != "":
		b.fail(login.BackendProtocolError, "Protocol parse error in capability/greeting line: "+
			r.err+" (line=`"+b.redact(trimEOL(resp))+"')")
	case r.status != "":
		switch {
		case r.status != "OK" && b.state == backendTLSReady:
			b.fail(login.BackendProtocolError, "Remote STARTTLS failed: "+b.redact(trimEOL(resp)))
		case r.status != "OK":
			b.fail(login.BackendProtocolError, "Remote sent unexpected NO/BYE instead of capability response")
		default:
			b.capabilitiesDone()
		}
	case !r.isString(0):
		what := "Remote returned with invalid capability/greeting line: "
		if r.n > 0 {
			what = "Remote sent invalid response: "
		}
		b.fail(login.BackendProtocolError, what+b.redact(trimEOL(resp)))
	default:
		name := r.value(resp, 0)
		switch {
		case wire.EqualUpper(name, "SASL"):
			if !r.isString(1) {
				b.fail(login.BackendProtocolError, "Server returned erroneous SASL capability")
				return
			}
			// Dovecot only asks for one mechanism, whichever: PLAIN is what it sends.
			b.sasl = len(r.value(resp, 1)) > 0
		case wire.EqualUpper(name, "STARTTLS"):
			b.startTLS = true
		case wire.EqualUpper(name, "XCLIENT"):
			b.xclient = true
		}
	}
}

// capabilitiesDone sends the next command once the capability list has ended.
func (b *BackendLogin) capabilitiesDone() {
	switch {
	case b.state == backendNone && b.p.StartTLS:
		if !b.startTLS {
			b.fail(login.BackendRemoteConfig, "Remote doesn't support STARTTLS")
			return
		}
		b.out = append(b.out, "STARTTLS\r\n"...)
		b.state = backendTLSStart
	case b.xclient:
		// Dovecot sends XCLIENT whenever the backend offers it, proxy_not_trusted or
		// not (unlike IMAP, POP3 and Submission); Doorman keeps that behaviour.
		b.writeXclient()
		b.state = backendXclient
	default:
		b.authenticate()
	}
}

// writeXclient writes `XCLIENT ADDR=<ip> PORT=<port> SESSION=<id> TTL=<ttl>[
// FORWARD=<base64>]` (proxy_write_xclient).
func (b *BackendLogin) writeXclient() {
	c := &b.p.Client
	b.out = append(b.out, "XCLIENT ADDR="...)
	b.out = appendAtom(b.out, c.RemoteIP)
	b.out = append(b.out, " PORT="...)
	b.out = strconv.AppendUint(b.out, uint64(max(c.RemotePort, 0)), 10)
	b.out = append(b.out, " SESSION="...)
	b.out = appendAtom(b.out, c.SessionID)
	b.out = append(b.out, " TTL="...)
	b.out = strconv.AppendUint(b.out, uint64(max(c.TTL, 0)), 10)
	if len(c.Forward) > 0 {
		// The forward_* fields, "name=value" tab-escaped and joined by tabs, in base64.
		b.scratch = b.scratch[:0]
		for i, f := range c.Forward {
			if i > 0 {
				b.scratch = append(b.scratch, '\t')
			}
			b.scratch = appendTabEscaped(b.scratch, f.Key)
			b.scratch = append(b.scratch, '=')
			b.scratch = appendTabEscaped(b.scratch, f.Value)
		}
		b.out = append(b.out, " FORWARD="...)
		b.out = base64.StdEncoding.AppendEncode(b.out, b.scratch)
	}
	b.out = append(b.out, "\r\n"...)
}

// authenticate writes `AUTHENTICATE "PLAIN" "<base64>"`, the initial response being
// authzid=User, authcid=Master if set (else User), and the password (proxy_write_auth).
// Without a SASL capability it fails instead, so that no password goes to a backend
// that has disabled authentication (typically: it wants TLS first).
func (b *BackendLogin) authenticate() {
	if !b.sasl {
		b.fail(login.BackendRemoteConfig, "Server has disabled authentication (TLS required?)")
		return
	}
	b.out = append(b.out, `AUTHENTICATE "`...)
	b.out = append(b.out, b.mech...)
	b.out = append(b.out, `" "`...)
	b.out = sasl.AppendProxyResponse(b.out, b.mech, b.p.User, b.p.Master, b.p.Pass, b.token())
	b.saslSent = true
	b.out = append(b.out, "\"\r\n"...)
	b.state = backendAuth
}

// authReply handles the backend's answer to AUTHENTICATE.
func (b *BackendLogin) authReply(resp []byte) {
	r := parseResponse(resp, true)
	line := trimEOL(resp)
	switch {
	case len(line) > 0 && (line[0] == '"' || line[0] == '{'):
		// A challenge. PLAIN has said all it has to say in its initial response, so
		// any challenge is a protocol error (dsasl's PLAIN client). Dovecot takes only
		// a quoted string as a challenge; a literal would end the login as failed.
		if r.err != "" || !r.isString(0) {
			b.fail(login.BackendProtocolError, "Server sent invalid SASL challenge line: "+b.redact(line))
			return
		}
		data := r.value(resp, 0)
		if _, err := base64.StdEncoding.DecodeString(string(data)); err != nil {
			b.fail(login.BackendProtocolError, "Server sent invalid base64 data in AUTHENTICATE response")
			return
		}
		if answer, oauth := sasl.ProxyErrorAnswer(b.mech); oauth && len(data) > 0 && !b.answered {
			// A refused token's error challenge: answered, and the NO follows.
			b.answered = true
			b.out = append(b.out, '"')
			b.out = append(b.out, answer...)
			b.out = append(b.out, "\"\r\n"...)
			return
		}
		b.fail(login.BackendProtocolError, "Server sent invalid authentication data: Server didn't finish authentication")
	case isOK(resp):
		// The backend's OK goes to the client as it is.
		b.reply = append(b.reply, trimEOL(resp)...)
		b.reply = append(b.reply, "\r\n"...)
		b.finish(login.BackendOK, "")
	default:
		reason, tryLater := b.authFailure(resp, r)
		if tryLater {
			// Retryable: the client gets the backend's text after the last attempt.
			b.reply = append(b.reply, txtNoTryLaterHead...)
			b.reply = appendQuoted(b.reply, reason, true)
			b.reply = append(b.reply, "\r\n"...)
			b.finish(login.BackendTempFail, b.redact([]byte(reason)))
			return
		}
		// Dovecot's own text, so the client can't tell from the backend's whether the
		// user exists. The backend's is in the logs.
		b.reply = append(b.reply, backendAuthFailed...)
		b.finish(login.BackendAuthFailed, b.redact([]byte(reason)))
	}
}

// authFailure finds the reason in a refused login and whether it said TRYLATER
// (managesieve_proxy_parse_auth_reply): the text string after `NO [(<code>)]` if that is
// all there is, else what follows "NO ", or the whole line if it isn't a NO at all.
// Dovecot wants "(TRYLATER) " with its space; RFC 5804 allows a NO without text, so
// "(TRYLATER)" at the end of the line counts too.
func (b *BackendLogin) authFailure(resp []byte, r response) (reason string, tryLater bool) {
	line := trimEOL(resp)
	if len(line) < 3 || !wire.EqualUpper(line[:3], "NO ") {
		return string(line), false
	}
	rest := line[3:]
	const tl = "(TRYLATER)"
	tryLater = len(rest) >= len(tl) && wire.EqualUpper(rest[:len(tl)], tl) && (len(rest) == len(tl) || rest[len(tl)] == ' ')
	if r.err == "" && r.status == "NO" && r.n == 1 && r.isString(0) {
		return string(r.value(resp, 0)), tryLater
	}
	return string(rest), tryLater
}

// fail ends the login with a failure whose client reply Dovecot makes up itself.
func (b *BackendLogin) fail(o login.BackendOutcome, text string) {
	b.reply = BackendFailureReply(b.reply, o)
	b.finish(o, text)
}

// finish records the final result and wipes what held the password.
func (b *BackendLogin) finish(o login.BackendOutcome, text string) {
	b.res = login.BackendResult{Outcome: o, ClientReply: b.reply, Text: text}
	clear(b.out)
	b.out = b.out[:0]
}

// redact makes a backend text fit for the logs: the password and the SASL payload cut
// out (should a backend echo them), control bytes and bad UTF-8 replaced, at most 160
// bytes (Dovecot's str_sanitize(line, 160)).
func (b *BackendLogin) redact(line []byte) string {
	s := string(line)
	if b.p.Pass != "" {
		s = strings.ReplaceAll(s, b.p.Pass, "<hidden>")
	}
	if b.saslSent {
		// Made again rather than kept: only a failure needs it.
		payload := string(sasl.AppendProxyResponse(nil, b.mech, b.p.User, b.p.Master, b.p.Pass, b.token()))
		s = strings.ReplaceAll(s, payload, "<hidden>")
		if b.p.Token != "" {
			s = strings.ReplaceAll(s, b.p.Token, "<hidden>")
		}
	}
	return wire.Sanitize([]byte(s), 160)
}
