// Backend side of the POP3 proxy login: after the client has been authenticated and the
// user looked up, BackendLogin logs in to the backend POP3 server on the user's behalf,
// the way Dovecot 2.3.21's pop3-login proxy does (src/pop3-login/pop3-proxy.c): wait for
// the +OK banner, send STLS / XCLIENT / USER and PASS or AUTH PLAIN, and turn the
// backend's answer into the reply the client gets.
//
// It is a pure state machine: no I/O, no goroutines, no clock. Timeouts and retries
// belong to the engine, which asks State() for the Dovecot-style state string.

package pop3

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"

	"doorman/codec/internal/wire"
	"doorman/codec/login"
	"doorman/codec/sasl"
)

var _ login.Backend = (*BackendLogin)(nil)

// backendMaxLine is Dovecot's MAX_PROXY_INPUT_SIZE: a backend line, LF included, must fit
// in 4096 bytes.
const backendMaxLine = 4096

// BackendFailureReply appends the reply Dovecot gives the client when a backend login
// fails with an outcome that has no backend text of its own
// (pop3_proxy_send_failure_reply): "-ERR [SYS/TEMP] Account is temporarily
// unavailable." for retryable and internal failures (use it also for connect failures
// and timeouts), the same without [SYS/TEMP] for RemoteConfig. For other outcomes it
// appends nothing.
func BackendFailureReply(dst []byte, o login.BackendOutcome) []byte {
	switch o {
	case login.BackendProtocolError, login.BackendInternal, login.BackendTempFail:
		dst = append(dst, "-ERR [SYS/TEMP] "...)
	case login.BackendRemoteConfig:
		dst = append(dst, "-ERR "...)
	default:
		return dst
	}
	dst = append(dst, msgAccountUnavail...)
	return append(dst, "\r\n"...)
}

// States of the login, named as Dovecot names them in its "Login timed out in
// state=..." logs (pop3_proxy_state_names): what the proxy waits for.
const (
	backendBanner   uint8 = iota // the +OK greeting
	backendStartTLS              // the answer to STLS
	backendXCLIENT               // the answer to XCLIENT (the login command may follow it)
	backendLogin1                // the answer to USER
	backendLogin2                // the answer to PASS or AUTH
)

var backendStateNames = [...]string{"banner", "starttls", "xclient", "login1", "login2"}

// BackendLogin is one login attempt at one backend. Reset makes it ready for the next
// attempt (a retry, or another session) while keeping its buffers.
type BackendLogin struct {
	p   login.BackendParams
	res login.BackendResult

	state   uint8
	sasl    bool            // log in with AUTH rather than USER and PASS
	mech    string          // AUTH's mechanism: PLAIN, XOAUTH2, OAUTHBEARER
	answerd bool            // the answer to an OAuth error challenge went out
	xclient bool            // the banner offered [XCLIENT]
	held    bool            // NoPipelining: the login command waits for XCLIENT's +OK
	lines   wire.LineReader // where the backend's lines are

	out     []byte
	reply   []byte
	scratch []byte
	secret  []byte // the base64 PLAIN response, to keep it out of the logs
}

// NewBackendLogin starts a login with p. An unusable p (unsupported Mech, a field that
// can't be sent) shows as a BackendInternal result from the first Feed, so the engine
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
	clear(b.secret)
	*b = BackendLogin{
		p:       *p,
		out:     b.out[:0],
		reply:   b.reply[:0],
		scratch: b.scratch[:0],
		secret:  b.secret[:0],
	}
	mech, ok := sasl.ProxyMech(p.Mech)
	switch {
	case !ok:
		b.fail(login.BackendInternal, "Unsupported SASL mechanism "+backendSanitize([]byte(p.Mech)))
		return
	case mech == "" && p.Master != "":
		// Master user logins need PLAIN (cca proxy_check_start()).
		mech = sasl.Plain
	}
	b.mech, b.sasl = mech, mech != ""
	if b.sasl {
		// RFC 4616 has no room for NUL inside a field (Dovecot's C strings couldn't even
		// hold one); the OAuth mechanisms none for ^A in the user, and need a bearer
		// token (Token, else Pass, as Dovecot forwards it).
		if why := sasl.CheckProxy(mech, p.User, p.Master, p.Pass, b.token()); why != "" {
			b.fail(login.BackendInternal, why)
		}
		return
	}
	if strings.ContainsAny(p.User, "\r\n\x00") || strings.ContainsAny(p.Pass, "\r\n\x00") {
		// USER and PASS take the rest of the line: a line break would let the
		// password's tail be read as a command. (Dovecot sends them as they are.)
		b.fail(login.BackendInternal, "USER or PASS argument contains CR, LF or NUL")
	}
}

// Result returns the outcome so far.
func (b *BackendLogin) Result() login.BackendResult { return b.res }

// Feed is given all unconsumed bytes from the backend so far (what a previous call did
// not consume, followed by what was read since). It returns how many of them it
// consumed, the bytes to write to the backend now (nil if none; valid until the next
// call), and the outcome so far. Only whole lines are consumed; consumption stops right
// after the line that ends the login (or accepts STLS), so what follows a successful
// `+OK` is left for the relay. Once the result is final, Feed consumes nothing and
// returns it again.
func (b *BackendLogin) Feed(in []byte) (consumed int, out []byte, res login.BackendResult) {
	clear(b.out) // it may have held the password
	b.out = b.out[:0]
	if b.res.Outcome != login.BackendPending {
		return 0, nil, b.res
	}
	for b.res.Outcome == login.BackendPending {
		line, n := b.lines.Next(in[consumed:], backendMaxLine)
		if n == 0 {
			break
		}
		if n < 0 {
			b.fail(login.BackendProtocolError, "Too long input line")
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
// commands to write over TLS; Feed continues with the bytes read over TLS. (POP3 has no
// second banner: the login goes out at once.)
func (b *BackendLogin) TLSStarted() (out []byte, res login.BackendResult) {
	clear(b.out)
	b.out = b.out[:0]
	if b.res.Outcome != login.BackendStartTLS {
		return nil, b.res
	}
	b.res = login.BackendResult{}
	b.lines.Reset()
	b.sendLogin()
	if len(b.out) > 0 {
		out = b.out
	}
	return out, b.res
}

// State is Dovecot's state name for timeout and failure logs: banner, starttls,
// xclient, login1 or login2.
func (b *BackendLogin) State() string { return backendStateNames[b.state] }

// input handles one backend line (CRLF stripped), as pop3_proxy_parse_line() does.
func (b *BackendLogin) input(line []byte) {
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i] // Dovecot's line is a C string
	}
	ok := bytes.HasPrefix(line, []byte("+OK")) // case and all, as Dovecot tests it
	switch b.state {
	case backendBanner:
		if !ok {
			b.fail(login.BackendProtocolError, "Invalid banner: "+b.redact(line))
			return
		}
		b.xclient = bytes.HasPrefix(line[3:], []byte(" [XCLIENT]"))
		if b.p.StartTLS {
			b.out = append(b.out, "STLS\r\n"...)
			b.state = backendStartTLS
			return
		}
		b.sendLogin()
	case backendStartTLS:
		if !ok {
			b.fail(login.BackendProtocolError, "STLS failed: "+b.redact(line))
			return
		}
		b.res = login.BackendResult{Outcome: login.BackendStartTLS}
	case backendXCLIENT:
		if !ok {
			b.fail(login.BackendProtocolError, "XCLIENT failed: "+b.redact(line))
			return
		}
		b.state = backendLogin1
		if b.sasl {
			b.state = backendLogin2
		}
		if b.held {
			b.held = false
			b.writeLogin()
		}
	case backendLogin1:
		if !ok {
			b.loginFailed(line)
			return
		}
		b.out = append(b.out, "PASS "...)
		b.out = append(b.out, b.p.Pass...)
		b.out = append(b.out, "\r\n"...)
		b.state = backendLogin2
	case backendLogin2:
		if b.sasl && bytes.HasPrefix(line, []byte("+ ")) {
			// PLAIN's response went out with AUTH: nothing is left to say. The OAuth
			// mechanisms answer one error challenge (a refused token); the -ERR follows.
			_, err := base64.StdEncoding.DecodeString(string(line[2:]))
			if answer, oauth := sasl.ProxyErrorAnswer(b.mech); oauth && err == nil && len(line) > 2 && !b.answerd {
				b.answerd = true
				b.out = append(b.out, answer...)
				b.out = append(b.out, "\r\n"...)
				return
			}
			if err != nil {
				b.fail(login.BackendProtocolError, "Invalid base64 data in AUTH response")
			} else {
				b.fail(login.BackendProtocolError, "Invalid authentication data: Server didn't finish authentication")
			}
			return
		}
		if !ok {
			b.loginFailed(line)
			return
		}
		// Logged in: the client gets the backend's line as it is.
		b.reply = append(b.reply, line...)
		b.reply = append(b.reply, "\r\n"...)
		b.finish(login.BackendOK, "")
	}
}

// sendLogin writes XCLIENT, if the backend offered it and may be told, and the login
// command (proxy_send_login). They go in one write unless NoPipelining.
func (b *BackendLogin) sendLogin() {
	if b.xclient && !b.p.NotTrusted {
		b.writeXCLIENT()
		b.state = backendXCLIENT
		if b.p.NoPipelining {
			b.held = true
			return
		}
		b.writeLogin()
		return
	}
	b.state = backendLogin1
	if b.sasl {
		b.state = backendLogin2
	}
	b.writeLogin()
}

// writeXCLIENT writes `XCLIENT ADDR= PORT= SESSION= TTL= [FORWARD=]`, FORWARD being the
// base64 of the forward fields as `key=value`, tab-escaped, joined by tabs.
func (b *BackendLogin) writeXCLIENT() {
	c := &b.p.Client
	b.out = append(b.out, "XCLIENT ADDR="...)
	b.out = append(b.out, c.RemoteIP...)
	b.out = append(b.out, " PORT="...)
	b.out = strconv.AppendInt(b.out, int64(c.RemotePort), 10)
	b.out = append(b.out, " SESSION="...)
	b.out = append(b.out, c.SessionID...)
	b.out = append(b.out, " TTL="...)
	b.out = strconv.AppendInt(b.out, int64(c.TTL), 10)
	if len(c.Forward) > 0 {
		b.scratch = b.scratch[:0]
		for i, kv := range c.Forward {
			if i > 0 {
				b.scratch = append(b.scratch, '\t')
			}
			b.scratch = backendAppendTabEscaped(b.scratch, kv.Key)
			b.scratch = append(b.scratch, '=')
			b.scratch = backendAppendTabEscaped(b.scratch, kv.Value)
		}
		b.out = append(b.out, " FORWARD="...)
		b.out = base64.StdEncoding.AppendEncode(b.out, b.scratch)
	}
	b.out = append(b.out, "\r\n"...)
}

// token is the OAuth mechanisms' token: Token, else the password.
func (b *BackendLogin) token() string {
	if b.p.Token != "" {
		return b.p.Token
	}
	return b.p.Pass
}

// writeLogin writes `USER <user>` (PASS follows its +OK) or `AUTH PLAIN <base64>`.
func (b *BackendLogin) writeLogin() {
	if !b.sasl {
		b.out = append(b.out, "USER "...)
		b.out = append(b.out, b.p.User...)
		b.out = append(b.out, "\r\n"...)
		return
	}
	// PLAIN: authzid is always the login user; authcid the master user if any. POP3
	// has no SASL-IR capability to check: the response always goes with AUTH.
	b.secret = sasl.AppendProxyResponse(b.secret[:0], b.mech, b.p.User, b.p.Master, b.p.Pass, b.token())
	b.out = append(b.out, "AUTH "...)
	b.out = append(b.out, b.mech...)
	b.out = append(b.out, ' ')
	b.out = append(b.out, b.secret...)
	b.out = append(b.out, "\r\n"...)
}

// loginFailed handles a refused login. Dovecot forwards the backend's -ERR line as it is
// (hiding it would need a setting, says pop3-proxy.c), retries [SYS/TEMP] and forwards
// that after the last attempt, and says "Authentication failed." for anything that
// isn't an -ERR line at all.
func (b *BackendLogin) loginFailed(line []byte) {
	reason, isErr := bytes.CutPrefix(line, []byte("-ERR "))
	switch {
	case !isErr:
		b.reply = append(b.reply, "-ERR "+msgAuthFailed+"\r\n"...)
		b.finish(login.BackendAuthFailed, b.redact(line))
	case bytes.HasPrefix(reason, []byte(codeTemp)):
		b.reply = append(b.reply, line...)
		b.reply = append(b.reply, "\r\n"...)
		b.finish(login.BackendTempFail, b.redact(reason))
	default:
		b.reply = append(b.reply, line...)
		b.reply = append(b.reply, "\r\n"...)
		b.finish(login.BackendAuthFailed, b.redact(reason))
	}
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
	clear(b.secret)
	b.secret = b.secret[:0]
	b.held = false
}

// redact makes a backend line fit for the logs: the password and the SASL payload cut
// out (should a backend echo them), control bytes and bad UTF-8 replaced, at most 160
// bytes (Dovecot's str_sanitize(line, 160)).
func (b *BackendLogin) redact(line []byte) string {
	s := string(line)
	if b.p.Pass != "" {
		s = strings.ReplaceAll(s, b.p.Pass, "<hidden>")
	}
	if len(b.secret) > 0 {
		s = strings.ReplaceAll(s, string(b.secret), "<hidden>")
	}
	return backendSanitize([]byte(s))
}

// backendSanitize is Dovecot's str_sanitize(s, 160) for log texts.
func backendSanitize(b []byte) string { return wire.Sanitize(b, 160) }

// backendAppendTabEscaped is Dovecot's str_append_tabescaped.
func backendAppendTabEscaped(dst []byte, s string) []byte { return wire.AppendTabEscaped(dst, s) }
