// Package submission holds Doorman's Submission (SMTP AUTH) login phase as pure state
// machines: Session is the client side (greeting, EHLO and the other pre-login commands,
// AUTH up to the moment the credentials are complete) and BackendLogin the backend side
// (EHLO, STARTTLS, XCLIENT and AUTH at the backend on the user's behalf). They behave
// like Dovecot 2.3.21's submission-login proxy, which runs lib-smtp's server for the
// client; where Dovecot would trip an assertion the codec fails cleanly instead.
//
// The package does no I/O: it is fed bytes and returns actions. It must not import net,
// log, start goroutines or read the clock; time passes in as events (Session.Timeout).
// It never decides whether a password is right: that answer comes back through
// Session.Resume.
//
// Submission has no tags, so the codec uses login.Credentials.Tag (and, on the way back,
// login.BackendParams.ClientTag) for what the backend login needs of the client's
// session: the domain of the client's last valid EHLO or HELO, "" if there was none.
// BackendLogin sends it in its own EHLO and as XCLIENT HELO=.
package submission

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"unicode/utf8"

	"doorman/codec/internal/wire"
	"doorman/codec/sasl"
)

// Defaults, as Dovecot has them.
const (
	// DefaultMaxLine is LOGIN_MAX_INBUF_SIZE (submission-login's
	// max_parameters_size): the longest command parameters, after the command name
	// and its space, the login phase reads. A longer command is answered
	// "500 5.5.2 Line too long" and skipped.
	DefaultMaxLine = 1026
	// DefaultMaxBadCommands is submission-login's CLIENT_MAX_BAD_COMMANDS: the 11th
	// bad command in a row (a 500, 501 or 503 reply) ends the session.
	DefaultMaxBadCommands = 10
	// DefaultGreeting is Doorman's login_greeting.
	DefaultGreeting = "Doorman ready."
	// DefaultHostname stands in for the `hostname` setting when none is given;
	// Dovecot uses the host's own name there, which the codec can't look up.
	DefaultHostname = "localhost"
)

// srvMaxName is SMTP_COMMAND_PARSER_MAX_COMMAND_LENGTH: a longer command name is a
// syntax error.
const srvMaxName = 32

// srvAuthMaxLine is LOGIN_MAX_AUTH_BUF_SIZE (max_auth_size): the longest SASL response
// line, without its line end.
const srvAuthMaxLine = 8192

// ErrClosed is returned by Feed once the session has closed.
var ErrClosed = errors.New("submission: session closed")

// errShortInput means the engine broke Feed's contract: it passed fewer bytes than the
// codec had already seen and not consumed.
var errShortInput = errors.New("submission: Feed got fewer unconsumed bytes than before")

// Config is the client-side settings, as Dovecot names them. The zero value is usable.
type Config struct {
	// Hostname is submission's `hostname`: the name in the greeting, in the first
	// line of the EHLO reply and in 421 replies. Empty means DefaultHostname.
	Hostname string
	// Greeting is login_greeting. Empty means DefaultGreeting.
	Greeting string
	// MaxLine bounds a command's parameters (0: DefaultMaxLine).
	MaxLine int
	// MaxBadCommands: more bad commands than this in a row end the session with
	// "421 4.7.0 <hostname> Too many invalid commands." (0: DefaultMaxBadCommands).
	MaxBadCommands int
	// MaxMessageSize is submission_max_mail_size: if positive, EHLO says SIZE <n>,
	// else a bare SIZE.
	MaxMessageSize int64
	// MaxAuthAttempts, if positive, ends the session after that many failed logins
	// with "421 4.7.0 <hostname> Too many invalid authentication attempts.". Dovecot
	// has no such limit (failures are slowed down instead), so 0, the default, means
	// unlimited.
	MaxAuthAttempts int
	// Mechanisms is auth_mechanisms: the SASL mechanisms advertised (EHLO's AUTH) and
	// accepted by AUTH, in order; nil: PLAIN LOGIN. Known: PLAIN, LOGIN, XOAUTH2,
	// OAUTHBEARER, CRAM-MD5, SCRAM-SHA-256 (others are ignored; see sasl.ParseMechanisms).
	// The first four are plaintext mechanisms to Dovecot: hidden and refused when
	// plaintext authentication is not allowed. CRAM-MD5 and SCRAM-SHA-256 are not, so they
	// are offered on any connection, but only to a session that has a
	// SessionInfo.SASLNonce for their challenges.
	Mechanisms []string
}

// State is where the session is.
type State uint8

const (
	StateCommand      State = iota + 1 // reading commands
	StateAuthContinue                  // AUTH: a 334 challenge is out, waiting for the response line
	StateAuthWait                      // ActAuth is out, waiting for Resume
	StateTLSWait                       // ActStartTLS is out, waiting for TLSStarted
	StateDone                          // logged in: the connection belongs to the relay
	StateClosed                        // ActClose is out
	StateSecretWait                    // ActSecret is out, waiting for Resume
)

var stateNames = [...]string{"", "command", "auth-continue", "auth-wait", "tls-wait", "done", "closed", "secret-wait"}

func (st State) String() string {
	if int(st) < len(stateNames) && st != 0 {
		return stateNames[st]
	}
	return "unknown"
}

// linePhase is where the reader is inside the current line, following the states of
// lib-smtp's smtp-command-parser.c. An AUTH response line starts at phaseParams.
type linePhase uint8

const (
	phaseName   linePhase = iota // the command name: letters only
	phaseSP                      // after the name: SP, CR or LF
	phaseParams                  // the parameters: HT, SP, printable ASCII, UTF-8
	phaseCR                      // after the parameters: CR or LF
	phaseLF                      // after CR: LF
	phaseSkip                    // dropping the rest of a line after an error
)

// Session is the client side of one connection's login phase.
type Session struct {
	maxLine, maxBad, maxAuth int
	maxSize                  int64
	hostname                 string
	info                     SessionInfo

	state     State
	bad       int // bad commands in a row
	authFails int // failed logins so far

	greeting []byte // "220 <hostname> <greeting>\r\n"
	helo     []byte // the domain of the last valid EHLO/HELO; empty: none

	// The line being read; positions are offsets from its first byte.
	phase      linePhase
	seen       int // bytes of the line already looked at: Feed must get them again
	nameEnd    int
	paramStart int
	paramEnd   int

	// AUTH in progress.
	exchange sasl.Exchange
	secx     sasl.SecretExchange // CRAM-MD5, SCRAM-SHA-256
	mechs    sasl.Mechanisms
	ehloAuth string // EHLO's AUTH line
	// ehloAuthSecret is EHLO's AUTH line where plaintext authentication is not allowed:
	// CRAM-MD5 and SCRAM-SHA-256 only; "" if neither is offered.
	ehloAuthSecret string
	// tokenFail: a refused OAuth token's error challenge is out; the client's answer
	// gets the failure, with this text (AuthResult.Text).
	tokenFail     bool
	tokenFailText string
	sasl          []byte // the last decoded SASL response

	creds   Credentials
	scratch []byte

	// Output of the current call.
	out wire.Output

	// First backing arrays, inside the Session so that an ordinary login needs no
	// allocation of its own for them.
	heloArr    [64]byte
	scratchArr [64]byte
}

// NewSession starts the client side of a connection. cfg may be nil; it is read only
// here.
func NewSession(cfg *Config, info SessionInfo) *Session {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	s := &Session{
		maxLine:  c.MaxLine,
		maxBad:   c.MaxBadCommands,
		maxAuth:  c.MaxAuthAttempts,
		maxSize:  c.MaxMessageSize,
		hostname: c.Hostname,
		info:     info,
		state:    StateCommand,
		ehloAuth: ehloAuth,
	}
	s.mechs, _ = sasl.ParseMechanisms(c.Mechanisms)
	if info.SASLNonce == "" {
		s.mechs = s.mechs.WithoutSecret()
	}
	if !slices.Equal(s.mechs.List(), sasl.DefaultMechanisms.List()) {
		s.ehloAuth = string(append(s.mechs.AppendAdvertised([]byte("250-AUTH"), " ", true), "\r\n"...))
		if secret := s.mechs.AppendAdvertised(nil, " ", false); len(secret) > 0 {
			s.ehloAuthSecret = "250-AUTH" + string(secret) + "\r\n"
		}
	}
	if s.maxLine <= 0 {
		s.maxLine = DefaultMaxLine
	}
	if s.maxBad <= 0 {
		s.maxBad = DefaultMaxBadCommands
	}
	if s.hostname == "" {
		s.hostname = DefaultHostname
	}
	greeting := c.Greeting
	if greeting == "" {
		greeting = DefaultGreeting
	}
	if s.info.TLS {
		s.info.Secured = true
	}
	s.helo, s.scratch = s.heloArr[:0], s.scratchArr[:0]
	g := make([]byte, 0, len(s.hostname)+len(greeting)+7)
	g = append(g, "220 "...)
	g = wire.AppendText(g, s.hostname)
	g = append(g, ' ')
	g = wire.AppendText(g, greeting)
	s.greeting = append(g, "\r\n"...)
	return s
}

// plaintextOK reports whether PLAIN and LOGIN may be used.
func (s *Session) plaintextOK() bool { return s.info.Secured || s.info.PlaintextAllowed }

// Greeting is the first thing the client gets. The engine must not modify it.
func (s *Session) Greeting() []byte { return s.greeting }

// State says where the session is.
func (s *Session) State() State { return s.state }

// Feed reads what the client sent. in must hold every byte not consumed by earlier calls,
// then the new ones. consumed is how many of them the engine may drop. A command is
// consumed only once it is complete, so in may have to hold a whole command line: the
// name (up to 32 letters), a space, MaxLine bytes of parameters and the line end (an AUTH
// response line: up to 8 KiB and its line end). A line that would be longer is answered
// and skipped as it comes, without being held.
//
// While a login or STARTTLS is pending, and once the session is done, Feed consumes
// nothing: those bytes belong to what comes next. After Resume leaves the session in
// StateCommand, call Feed again with the bytes still held. The error is ErrClosed after
// the session closed, or a report that the engine broke this contract; protocol errors
// are actions, not errors.
func (s *Session) Feed(in []byte) (consumed int, actions []Action, err error) {
	s.out.Begin()
	switch s.state {
	case StateClosed:
		return 0, nil, ErrClosed
	case StateAuthWait, StateTLSWait, StateDone, StateSecretWait:
		return 0, nil, nil
	}
	if len(in) < s.seen {
		return 0, nil, errShortInput
	}
	for consumed < len(in) && s.reading() {
		n, more := s.readLine(in[consumed:])
		consumed += n
		if s.out.Full() && s.state != StateClosed {
			s.close("", "output buffer full")
		}
		if !more {
			break
		}
	}
	return consumed, s.out.End(), nil
}

// Resume answers the last ActAuth. With AuthOK the reply goes out and the session is
// done; with a failure the reply goes out and commands are read again (call Feed with
// the bytes held meanwhile).
func (s *Session) Resume(r AuthResult) []Action {
	s.out.Begin()
	if s.state == StateSecretWait {
		s.resetLine()
		if r.Status == AuthOK {
			s.state = StateCommand
			s.secretStep(s.secx.Secret(r.Secret))
			return s.out.End()
		}
		s.secx.Reset()
	} else if s.state != StateAuthWait {
		return nil
	}
	if r.Status == AuthOK {
		if r.Reply != nil {
			s.out.B = append(s.out.B, r.Reply...)
		} else {
			s.answer(txtLoggedIn)
		}
		s.bad = 0
		s.state = StateDone
		return s.out.End()
	}
	s.resetLine()
	if r.Status == AuthFailed && r.Reply == nil {
		// A refused token gets the mechanism's error challenge first, as Dovecot's
		// mech-oauth2 sends it; the failure answers the client's response to it.
		if ch := s.exchange.FailToken(s.creds.Mech); ch != nil {
			s.tokenFail, s.tokenFailText = true, r.Text
			s.challenge(ch)
			return s.out.End()
		}
	}
	s.state = StateCommand
	if r.Reply != nil {
		s.answerRaw(r.Reply)
	} else {
		s.failureReply(r)
	}
	if s.state != StateClosed {
		s.authFailed()
	}
	return s.out.End()
}

// failureReply writes Dovecot's answer to a failed login: the status and enhanced
// code of submission_client_auth_result, with Text or the default text.
func (s *Session) failureReply(r AuthResult) {
	code, text := codeFailed, defAuthFailed
	switch r.Status {
	case AuthTempFail:
		code, text = codeTempFail, defTempFailed
	case AuthUnavailable, AuthServerBug:
		code, text = codeTempFail, defAccountUnavail
	case AuthDisabled:
		code, text = codeDisabled, defLoginDisabled
	case AuthAuthzFailed:
		text = defAuthzFailed
	}
	if r.Text != "" {
		text = r.Text
	}
	s.answerText(code, text)
}

// authFailed counts a failed login and ends the session if there were too many.
func (s *Session) authFailed() {
	s.authFails++
	if s.maxAuth > 0 && s.authFails >= s.maxAuth {
		s.terminate(codeTooManyAuth, txtTooManyAuth, "too many failed logins")
	}
}

// Timeout is called when the client has been idle too long before logging in. It says
// goodbye and closes; once logged in or closed it does nothing.
func (s *Session) Timeout() []Action {
	s.out.Begin()
	switch s.state {
	case StateDone, StateClosed:
		return nil
	case StateAuthContinue, StateAuthWait, StateSecretWait:
		s.terminate(codeInactivity, txtInactivityAuth, "timeout")
	default:
		s.terminate(codeInactivity, txtInactivity, "timeout")
	}
	return s.out.End()
}

// TLSStarted tells the session the handshake that ActStartTLS asked for is done. The
// connection is secured from now on, and, as RFC 3207 wants, what the client said
// before (its EHLO) is forgotten.
func (s *Session) TLSStarted() {
	if s.state != StateTLSWait {
		return
	}
	s.info.TLS, s.info.Secured = true, true
	s.helo = s.helo[:0]
	s.state = StateCommand
	s.resetLine()
}

// reading reports whether Feed goes on reading the client's bytes.
func (s *Session) reading() bool { return s.state == StateCommand || s.state == StateAuthContinue }

// readLine reads on in the line that starts at buf[0]: a command, or in
// StateAuthContinue an AUTH response. It returns how much of buf is consumed and whether
// the caller should go on with what follows. Errors are found as early as Dovecot's
// parser finds them, so a bad line is answered before its end arrives and isn't held.
func (s *Session) readLine(buf []byte) (int, bool) {
	for {
		if s.phase == phaseSkip {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				return len(buf), false
			}
			s.resetLine()
			return i + 1, s.reading()
		}
		if s.seen >= len(buf) {
			return 0, false
		}
		switch s.phase {
		case phaseName:
			i := s.seen
			for i < len(buf) && srvIsAlpha(buf[i]) {
				i++
			}
			if i > srvMaxName {
				return s.syntaxError(txtInvalidSyntax, i)
			}
			s.seen = i
			if i == len(buf) {
				return 0, false
			}
			s.nameEnd, s.paramStart, s.paramEnd = i, i, i
			s.phase = phaseSP
		case phaseSP:
			switch buf[s.seen] {
			case '\r':
				s.phase = phaseCR
			case '\n':
				s.phase = phaseLF
			case ' ':
				s.seen++
				s.paramStart, s.paramEnd = s.seen, s.seen
				s.phase = phaseParams
			default:
				return s.syntaxError(txtInvalidSyntax, s.seen)
			}
		case phaseParams:
			if n, more, done := s.readParams(buf); done {
				return n, more
			}
		case phaseCR:
			switch buf[s.seen] {
			case '\r':
				s.seen++
				s.phase = phaseLF
			case '\n':
				s.phase = phaseLF
			default:
				return s.syntaxError(s.syntaxText(), s.seen)
			}
		case phaseLF:
			if buf[s.seen] != '\n' {
				return s.syntaxError(s.syntaxText(), s.seen)
			}
			n := s.seen + 1
			if s.state == StateAuthContinue {
				resp := buf[s.paramStart:s.paramEnd]
				s.state = StateCommand
				s.resetLine()
				s.authResponse(resp)
			} else {
				s.execute(buf[:s.nameEnd], buf[s.paramStart:s.paramEnd])
				if s.state == StateCommand {
					s.resetLine()
				}
			}
			return n, s.reading()
		default:
			panic("submission: bad line phase")
		}
	}
}

// readParams scans parameters from s.seen. done says the line is over for this call,
// with n consumed and more telling whether to go on; otherwise the parameters ended
// and the reader moved on to phaseCR.
//
// Command parameters take printable ASCII, HT, SP and valid UTF-8; an AUTH response
// only the ASCII ones. Dovecot checks the length only after scanning all it has, so
// with a long line in one read an early bad byte could win over the length; the codec
// checks the length as it goes, so that how the line is split never matters.
func (s *Session) readParams(buf []byte) (n int, more, done bool) {
	limit := s.maxLine
	if s.state == StateAuthContinue {
		limit = srvAuthMaxLine
	}
	i := s.seen
	for {
		if i-s.paramStart > limit {
			n, more = s.syntaxError(txtLineTooLong, s.paramStart)
			return n, more, true
		}
		if i == len(buf) {
			s.seen = i
			return 0, false, true
		}
		c := buf[i]
		if c < utf8.RuneSelf || s.state == StateAuthContinue {
			if !srvIsTextstr(c) {
				break
			}
			i++
			continue
		}
		if !utf8.FullRune(buf[i:]) {
			s.seen = i
			return 0, false, true
		}
		r, size := utf8.DecodeRune(buf[i:])
		if r == utf8.RuneError && size == 1 {
			n, more = s.syntaxError(txtInvalidSyntax, s.paramStart)
			return n, more, true
		}
		i += size
	}
	// Trailing blanks are tolerated (RFC 5321 4.1.1); a blank right after the command
	// name's space is not.
	end := i
	for end > s.paramStart && (buf[end-1] == ' ' || buf[end-1] == '\t') {
		end--
	}
	if s.state != StateAuthContinue && end > s.paramStart && buf[s.paramStart] == ' ' {
		n, more = s.syntaxError(txtInvalidSyntax, s.paramStart)
		return n, more, true
	}
	s.paramEnd, s.seen, s.phase = end, i, phaseCR
	return 0, false, false
}

// syntaxText is the reply to a line the parser refuses.
func (s *Session) syntaxText() string {
	if s.state == StateAuthContinue {
		return txtAuthInvalidResponse
	}
	return txtInvalidSyntax
}

// syntaxError answers a line the parser refuses and skips it from pos on. In an AUTH
// exchange the reply fails the AUTH command (Dovecot would leave its SASL request
// hanging there, and trip an assertion at the next AUTH).
func (s *Session) syntaxError(text string, pos int) (int, bool) {
	if s.state == StateAuthContinue {
		s.state = StateCommand
		if text == txtInvalidSyntax {
			text = txtAuthInvalidResponse
		}
		s.answer(text)
		if s.state != StateClosed {
			s.authFailed()
		}
	} else {
		s.answer(text)
	}
	if s.state == StateClosed {
		return pos, false
	}
	s.resetLine()
	s.phase = phaseSkip
	return pos, s.reading()
}

// resetLine gets ready for the next line.
func (s *Session) resetLine() {
	s.phase, s.seen = phaseName, 0
	if s.state == StateAuthContinue {
		s.phase = phaseParams
	}
	s.nameEnd, s.paramStart, s.paramEnd = 0, 0, 0
}

// Commands, by name. Those not here are unknown (500); those Dovecot registers without
// the pre-login flag get 530.
const (
	cmdUnknown = iota
	cmdEHLO
	cmdHELO
	cmdAUTH
	cmdSTARTTLS
	cmdNOOP
	cmdRSET
	cmdQUIT
	cmdXCLIENT
	cmdNeedsAuth
)

var cmdNames = [...]struct {
	name string
	kind int
}{
	{"EHLO", cmdEHLO}, {"AUTH", cmdAUTH}, {"MAIL", cmdNeedsAuth}, {"RCPT", cmdNeedsAuth},
	{"DATA", cmdNeedsAuth}, {"NOOP", cmdNOOP}, {"RSET", cmdRSET}, {"QUIT", cmdQUIT},
	{"HELO", cmdHELO}, {"STARTTLS", cmdSTARTTLS}, {"BDAT", cmdNeedsAuth},
	{"VRFY", cmdNeedsAuth}, {"XCLIENT", cmdXCLIENT},
}

// execute runs a complete command.
func (s *Session) execute(name, params []byte) {
	kind := cmdUnknown
	for _, c := range cmdNames {
		if wire.EqualUpper(name, c.name) {
			kind = c.kind
			break
		}
	}
	switch kind {
	case cmdEHLO, cmdHELO:
		s.ehlo(params, kind == cmdHELO)
	case cmdAUTH:
		s.auth(params)
	case cmdSTARTTLS:
		switch {
		case s.info.TLS:
			s.answer(txtTLSActive)
		case !s.info.TLSAvailable:
			s.answer(txtTLSDisabled)
		case len(params) > 0:
			s.answer(txtInvalidParams)
		default:
			s.answer(txtStartTLSOK)
			s.out.Emit(Action{Kind: ActStartTLS})
			s.state = StateTLSWait
		}
	case cmdNOOP:
		if msg := srvStringError(params); msg != "" {
			s.answerText(txtInvalidString, msg)
		} else {
			s.answer(txtOK)
		}
	case cmdRSET:
		if len(params) > 0 {
			s.answer(txtInvalidParams)
		} else {
			s.answer(txtOK)
		}
	case cmdQUIT:
		if len(params) > 0 {
			s.answer(txtInvalidParams)
			return
		}
		s.answer(txtBye)
		s.close("", "quit")
	case cmdXCLIENT:
		if s.info.Trusted {
			s.xclient(params)
		} else {
			s.answer(txtXCLIENTUntrusted)
		}
	case cmdNeedsAuth:
		// MAIL too: submission-login answers it so unless implicit EXTERNAL
		// authentication is configured, which Doorman doesn't do.
		s.answer(txtAuthRequired)
	default:
		s.answer(txtUnknownCommand)
	}
}

// ehlo runs EHLO or HELO (lib-smtp's smtp_server_cmd_helo_run and submission-login's
// cmd_helo_reply). A domain that doesn't parse is accepted but not remembered, as
// Dovecot marks it invalid and never passes it on.
func (s *Session) ehlo(params []byte, old bool) {
	if len(params) == 0 {
		s.answer(txtMissingHostname)
		return
	}
	domain, ok := srvHeloDomain(params, !old)
	if ok {
		s.helo = append(s.helo[:0], domain...)
	} else {
		s.helo = s.helo[:0]
	}
	s.bad = 0
	if old {
		s.out.B = append(s.out.B, "250 "...)
		s.out.B = wire.AppendText(s.out.B, s.hostname)
		s.out.B = append(s.out.B, "\r\n"...)
		return
	}
	s.out.B = append(s.out.B, "250-"...)
	s.out.B = wire.AppendText(s.out.B, s.hostname)
	s.out.B = append(s.out.B, "\r\n"...)
	s.out.B = append(s.out.B, ehlo8BitMIME...)
	if s.plaintextOK() {
		// Dovecot sends "250-AUTH " with an empty list when no mechanism is left;
		// the codec leaves the keyword out instead.
		s.out.B = append(s.out.B, s.ehloAuth...)
	} else {
		s.out.B = append(s.out.B, s.ehloAuthSecret...)
	}
	s.out.B = append(s.out.B, ehloMiddle...)
	s.out.B = append(s.out.B, ehloSize...)
	if s.maxSize > 0 {
		s.out.B = append(s.out.B, ' ')
		s.out.B = strconv.AppendInt(s.out.B, s.maxSize, 10)
	}
	s.out.B = append(s.out.B, "\r\n"...)
	if s.info.TLSAvailable && !s.info.TLS {
		s.out.B = append(s.out.B, ehloStartTLS...)
	}
	if s.info.Trusted {
		s.out.B = append(s.out.B, ehloPipelinedMore...)
		s.out.B = append(s.out.B, ehloXCLIENT...)
	} else {
		s.out.B = append(s.out.B, ehloPipelined...)
	}
}

// answer writes a reply line, keeping count of bad commands as lib-smtp does
// (smtp_server_command_submit_reply): a 500, 501 or 503 reply is one more in a row, any
// other reply starts the count again. The one that is too many isn't sent: the session
// ends with 421 instead.
func (s *Session) answer(line string) {
	if s.countBad(line) {
		return
	}
	s.out.B = append(s.out.B, line...)
	s.out.B = append(s.out.B, "\r\n"...)
}

// answerText writes a reply line made of code and a text, with control bytes that
// would break the line turned into spaces.
func (s *Session) answerText(code, text string) {
	if s.countBad(code) {
		return
	}
	s.out.B = append(s.out.B, code...)
	s.out.B = wire.AppendText(s.out.B, text)
	s.out.B = append(s.out.B, "\r\n"...)
}

// answerRaw writes a reply made elsewhere (the backend's), counted like any other.
func (s *Session) answerRaw(reply []byte) {
	if s.countBad(string(reply[:min(len(reply), 3)])) {
		return
	}
	s.out.B = append(s.out.B, reply...)
}

// countBad counts the reply that starts with line's status and reports whether it ended
// the session.
func (s *Session) countBad(line string) bool {
	if len(line) >= 3 && line[0] == '5' && line[1] == '0' && (line[2] == '0' || line[2] == '1' || line[2] == '3') {
		s.bad++
		if s.bad > s.maxBad {
			s.terminate(codeTooManyBad, txtTooManyBad, "too many bad commands")
			return true
		}
		return false
	}
	s.bad = 0
	return false
}

// terminate ends the session with "421 <code> <hostname> <text>", as lib-smtp's
// smtp_server_connection_terminate does.
func (s *Session) terminate(code, text, reason string) {
	if s.state == StateClosed {
		return
	}
	s.out.B = append(s.out.B, "421 "...)
	s.out.B = append(s.out.B, code...)
	s.out.B = append(s.out.B, ' ')
	s.out.B = wire.AppendText(s.out.B, s.hostname)
	s.out.B = append(s.out.B, ' ')
	s.out.B = append(s.out.B, text...)
	s.out.B = append(s.out.B, "\r\n"...)
	s.close("", reason)
}

// close ends the session, after what was written so far (and line, if set).
func (s *Session) close(line, reason string) {
	if s.state == StateClosed {
		return
	}
	if line != "" {
		s.out.B = append(s.out.B, line...)
		s.out.B = append(s.out.B, "\r\n"...)
	}
	s.out.Close(reason)
	s.state = StateClosed
}
