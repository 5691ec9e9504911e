// Package imap holds Doorman's IMAP login phase as pure state machines: Session is the
// client side (greeting, pre-login commands, LOGIN and AUTHENTICATE up to the moment the
// credentials are complete) and BackendLogin the backend side (logging in on the user's
// behalf). They behave, byte for byte, like Dovecot 2.3.21's imap-login proxy.
//
// The package does no I/O: it is fed bytes and returns actions. It must not import net,
// log, start goroutines or read the clock; time passes in as events (Session.Timeout).
// It never decides whether a password is right: that answer comes back through
// Session.Resume.
package imap

import (
	"bytes"
	"errors"
	"slices"

	"doorman/codec/internal/wire"
	"doorman/codec/sasl"
)

// Defaults, as Dovecot has them.
const (
	// DefaultMaxLine is IMAP_LOGIN_MAX_LINE_LENGTH: the longest command, literals
	// included, the login phase reads.
	DefaultMaxLine = 8192
	// DefaultMaxBadCommands is CLIENT_MAX_BAD_COMMANDS: the third invalid command
	// ends the session.
	DefaultMaxBadCommands = 3
	// DefaultGreeting is Doorman's login_greeting.
	DefaultGreeting = "Doorman ready."
	// DefaultIDName is the "name" the ID command answers with (imap_id_send).
	DefaultIDName = "Doorman"
)

// srvAuthBufMax is LOGIN_MAX_AUTH_BUF_SIZE: the longest SASL response line (initial or
// continued), CR included, LF not. Longer ends the session without a word, as Dovecot
// does ("Authentication response too large").
const srvAuthBufMax = 8192

// srvIDKeyMax is IMAP_ID_KEY_MAX_LEN: a longer ID key makes the parameters invalid.
const srvIDKeyMax = 30

// ErrClosed is returned by Feed once the session has closed.
var ErrClosed = errors.New("imap: session closed")

// errShortInput means the engine broke Feed's contract: it passed fewer bytes than the
// codec had already seen and not consumed.
var errShortInput = errors.New("imap: Feed got fewer unconsumed bytes than before")

// Config is the client-side settings, as Dovecot names them. The zero value is usable.
type Config struct {
	// Greeting is login_greeting. Empty means DefaultGreeting.
	Greeting string
	// Capability is imap_capability: "" lists the default pre-login capabilities,
	// "+X Y" appends X Y to them, anything else replaces them (and then LITERAL+ is not
	// added either). STARTTLS, LOGINDISABLED and AUTH=... are added in every case.
	Capability string
	// MaxLine bounds a command, literals included (0: DefaultMaxLine). A longer one
	// ends the session with "* BYE Input buffer full, aborting".
	MaxLine int
	// MaxBadCommands is how many invalid commands end the session (0: 3).
	MaxBadCommands int
	// MaxAuthAttempts, if positive, ends the session after that many failed logins with
	// "* BYE Too many invalid authentication attempts.". Dovecot has no such limit
	// (failures are slowed down instead), so 0, the default, means unlimited.
	MaxAuthAttempts int
	// IDName is the value of "name" in the answer to ID (0: DefaultIDName).
	IDName string
	// Mechanisms is auth_mechanisms: the SASL mechanisms advertised (AUTH=...) and
	// accepted by AUTHENTICATE, in order; nil: PLAIN LOGIN. Known: PLAIN, LOGIN, XOAUTH2,
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
	StateLiteral                       // inside a command, waiting for a literal's bytes
	StateAuthContinue                  // AUTHENTICATE: a "+ " challenge is out, waiting for the response line
	StateAuthWait                      // ActAuth is out, waiting for Resume
	StateTLSWait                       // ActStartTLS is out, waiting for TLSStarted
	StateDone                          // logged in: the connection belongs to the relay
	StateClosed                        // ActClose is out
	StateSecretWait                    // ActSecret is out, waiting for Resume
)

var stateNames = [...]string{"", "command", "literal", "auth-continue", "auth-wait", "tls-wait", "done", "closed", "secret-wait"}

func (st State) String() string {
	if int(st) < len(stateNames) && st != 0 {
		return stateNames[st]
	}
	return "unknown"
}

// cmdPhase is where the reader is inside the current command.
type cmdPhase uint8

const (
	phaseTag      cmdPhase = iota // reading the tag
	phaseName                     // reading the command name
	phaseArgs                     // reading arguments
	phaseAuthMech                 // AUTHENTICATE: reading the mechanism name
	phaseAuthIR                   // AUTHENTICATE: reading the initial response line
	phaseSkip                     // dropping the rest of a line after an error
)

// cmdKind is the command being read.
type cmdKind uint8

const (
	cmdUnknown cmdKind = iota
	cmdCapability
	cmdNoop
	cmdLogout
	cmdEnable
	cmdStartTLS
	cmdID
	cmdLogin
	cmdAuthenticate
)

var cmdNames = [...]struct {
	name string
	kind cmdKind
}{
	{"LOGIN", cmdLogin},
	{"AUTHENTICATE", cmdAuthenticate},
	{"CAPABILITY", cmdCapability},
	{"ID", cmdID},
	{"NOOP", cmdNoop},
	{"LOGOUT", cmdLogout},
	{"ENABLE", cmdEnable},
	{"STARTTLS", cmdStartTLS},
}

// idState is where an ID command's arguments are.
type idState uint8

const (
	idList  idState = iota // expecting NIL or "("
	idKey                  // inside the list, expecting a key or ")"
	idValue                // expecting the value of the key just read
)

// Session is the client side of one connection's login phase.
type Session struct {
	maxLine, maxBad, maxAuth int
	greetingText, capConfig  string
	idName                   string
	info                     SessionInfo

	state     State
	bad       int  // invalid commands so far
	authFails int  // failed logins so far
	capSeen   bool // CAPABILITY before any STARTTLS
	startTLS  bool // STARTTLS was done

	greeting []byte // "* OK [CAPABILITY ...] <greeting>\r\n"
	capLine  []byte // "* CAPABILITY ...\r\n"

	// The command being read; positions are offsets from its first byte.
	phase     cmdPhase
	seen      int // bytes of the current unit already looked at: Feed must get them again
	tagEnd    int
	nameStart int
	kind      cmdKind
	args      cmdArgReader
	scan      int // phaseName/AuthMech/AuthIR: where to go on scanning
	mechStart int
	mechEnd   int
	irStart   int

	// LOGIN's arguments.
	loginArgs int
	loginBad  bool
	loginUser cmdToken
	loginPass cmdToken

	// ID's arguments, unescaped: idEnds holds, per pair, where its key and its value end
	// in idBuf; idKeyStart is where the key waiting for its value starts.
	id         idState
	idBuf      []byte
	idEnds     []int
	idKeyStart int
	idKeyEnd   int

	// AUTHENTICATE in progress.
	authTag  []byte
	exchange sasl.Exchange
	secx     sasl.SecretExchange // CRAM-MD5, SCRAM-SHA-256
	mechs    sasl.Mechanisms
	// tokenFail: a refused OAuth token's error challenge is out; the client's answer
	// gets the failure, with this text (AuthResult.Text).
	tokenFail     bool
	tokenFailText string
	sasl          []byte // the last decoded SASL response

	creds    Credentials
	idParams []IDParam
	scratch  []byte

	// Output of the current call.
	out wire.Output

	// First backing arrays, inside the Session so that an ordinary login needs no
	// allocation of its own for them.
	tagArr     [16]byte
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
		maxLine:      c.MaxLine,
		maxBad:       c.MaxBadCommands,
		maxAuth:      c.MaxAuthAttempts,
		greetingText: c.Greeting,
		capConfig:    c.Capability,
		idName:       c.IDName,
		info:         info,
		state:        StateCommand,
	}
	s.mechs, _ = sasl.ParseMechanisms(c.Mechanisms)
	if info.SASLNonce == "" {
		s.mechs = s.mechs.WithoutSecret()
	}
	if s.maxLine <= 0 {
		s.maxLine = DefaultMaxLine
	}
	if s.maxBad <= 0 {
		s.maxBad = DefaultMaxBadCommands
	}
	if s.greetingText == "" {
		s.greetingText = DefaultGreeting
	}
	if s.idName == "" {
		s.idName = DefaultIDName
	}
	if s.info.TLS {
		s.info.Secured = true
	}
	s.authTag, s.scratch = s.tagArr[:0], s.scratchArr[:0]
	s.buildCapability()
	return s
}

// plaintextOK reports whether PLAIN, LOGIN and the LOGIN command may be used.
func (s *Session) plaintextOK() bool { return s.info.Secured || s.info.PlaintextAllowed }

// buildCapability makes the greeting and the CAPABILITY line, the way Dovecot's
// get_capability does, in one allocation.
func (s *Session) buildCapability() {
	const greetHead, capHead = "* OK [CAPABILITY ", "* CAPABILITY "
	var caps [4]string
	n := 0
	switch {
	case s.capConfig == "":
		caps[0], caps[1] = txtCapabilityHead, txtLiteralPlus
		n = 2
	case s.capConfig[0] == '+':
		caps[0], caps[1], caps[2], caps[3] = txtCapabilityHead, " ", s.capConfig[1:], txtLiteralPlus
		n = 4
	default:
		caps[0] = s.capConfig
		n = 1
	}
	tail := ""
	if s.info.TLSAvailable && !s.info.TLS {
		tail = txtStartTLSCap
	}
	mechs := txtAuthMechs
	switch {
	case !s.plaintextOK():
		// Only CRAM-MD5 and SCRAM-SHA-256 are not plaintext mechanisms.
		mechs = txtLoginDisabled + string(s.mechs.AppendAdvertised(nil, " AUTH=", false))
	case !slices.Equal(s.mechs.List(), sasl.DefaultMechanisms.List()):
		mechs = string(s.mechs.AppendAdvertised(nil, " AUTH=", true))
	}
	size := len(greetHead) + len(capHead) + 2*(len(tail)+len(mechs)) + len(s.greetingText) + 8
	for _, c := range caps[:n] {
		size += 2 * len(c)
	}
	buf := make([]byte, 0, size)
	appendCaps := func() {
		for _, c := range caps[:n] {
			buf = wire.AppendText(buf, c)
		}
		buf = append(buf, tail...)
		buf = append(buf, mechs...)
	}
	buf = append(buf, greetHead...)
	appendCaps()
	buf = append(buf, "] "...)
	buf = wire.AppendText(buf, s.greetingText)
	buf = append(buf, "\r\n"...)
	g := len(buf)
	buf = append(buf, capHead...)
	appendCaps()
	buf = append(buf, "\r\n"...)
	s.greeting, s.capLine = buf[:g:g], buf[g:]
}

// Greeting is the first thing the client gets. The engine must not modify it.
func (s *Session) Greeting() []byte { return s.greeting }

// State says where the session is.
func (s *Session) State() State {
	if s.state == StateCommand && s.phase == phaseArgs && s.args.st == argLitData {
		return StateLiteral
	}
	return s.state
}

// Feed reads what the client sent. in must hold every byte not consumed by earlier calls,
// then the new ones. consumed is how many of them the engine may drop. A command is
// consumed only once it is complete, so in may have to hold up to MaxLine+2 bytes
// (AUTHENTICATE: its line up to the mechanism, then up to 8 KiB of initial response).
//
// While a login or STARTTLS is pending, and once the session is done, Feed consumes
// nothing: those bytes belong to what comes next. After Resume leaves the session in
// StateCommand, call Feed again with the bytes still held. The error is ErrClosed after
// the session closed, or a report that the engine broke this contract; protocol errors
// are actions, not errors.
func (s *Session) Feed(in []byte) (consumed int, actions []Action, err error) {
	s.begin()
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
		var n int
		var more bool
		if s.state == StateAuthContinue {
			n, more = s.readResponse(in[consumed:])
		} else {
			n, more = s.readCommand(in[consumed:])
		}
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
	s.begin()
	if s.state == StateSecretWait {
		s.resetCommand()
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
			s.reply(s.authTag, txtLoggedIn)
		}
		s.state = StateDone
		return s.out.End()
	}
	s.resetCommand()
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
		s.out.B = append(s.out.B, r.Reply...)
	} else {
		s.failureReply(r)
	}
	s.authFailed()
	return s.out.End()
}

// failureReply writes Dovecot's tagged answer to a failed login.
func (s *Session) failureReply(r AuthResult) {
	code, text := codeAuthFailed, txtAuthFailed
	textCode := codeAlert // a passdb reason comes as an ALERT (CLIENT_AUTH_RESULT_AUTHFAILED_REASON)
	switch r.Status {
	case AuthTempFail:
		code, text = codeUnavailable, txtTempFailed
		textCode = code
	case AuthUnavailable:
		code, text = codeUnavailable, txtAccountUnavail
		textCode = code
	case AuthServerBug:
		code, text = codeServerBug, txtAccountUnavail
		textCode = code
	case AuthDisabled:
		code, text = codeContactAdmin, txtLoginDisabledMs
		textCode = code
	case AuthAuthzFailed:
		code, text = codeAuthzFailed, txtAuthzFailed
		textCode = code
	}
	s.out.B = append(s.out.B, s.authTag...)
	s.out.B = append(s.out.B, " NO "...)
	switch {
	case r.Text == "":
		s.out.B = append(s.out.B, '[')
		s.out.B = append(s.out.B, code...)
		s.out.B = append(s.out.B, "] "...)
		s.out.B = append(s.out.B, text...)
	case r.Text[0] == '[':
		s.out.B = wire.AppendText(s.out.B, r.Text)
	default:
		s.out.B = append(s.out.B, '[')
		s.out.B = append(s.out.B, textCode...)
		s.out.B = append(s.out.B, "] "...)
		s.out.B = wire.AppendText(s.out.B, r.Text)
	}
	s.out.B = append(s.out.B, "\r\n"...)
}

// authFailed counts a failed login and ends the session if there were too many.
func (s *Session) authFailed() {
	s.authFails++
	if s.maxAuth > 0 && s.authFails >= s.maxAuth {
		s.close(txtByeTooManyAuth, "too many failed logins")
	}
}

// Timeout is called when the client has been idle too long before logging in. It says
// goodbye and closes; once logged in or closed it does nothing.
func (s *Session) Timeout() []Action {
	s.begin()
	switch s.state {
	case StateDone, StateClosed:
		return nil
	case StateAuthContinue, StateAuthWait, StateSecretWait:
		s.close(txtByeInactivityAuth, "timeout")
	default:
		s.close(txtByeInactivity, "timeout")
	}
	return s.out.End()
}

// TLSStarted tells the session the handshake that ActStartTLS asked for is done. The
// connection is secured from now on and the capabilities change accordingly.
func (s *Session) TLSStarted() {
	if s.state != StateTLSWait {
		return
	}
	s.info.TLS, s.info.Secured, s.startTLS = true, true, true
	s.buildCapability()
	s.state = StateCommand
	s.resetCommand()
}

// readCommand reads on in the command that starts at buf[0]. It returns how much of buf
// is consumed and whether the caller should go on with what follows.
func (s *Session) readCommand(buf []byte) (int, bool) {
	if s.phase == phaseSkip {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return len(buf), false
		}
		s.resetCommand()
		return i + 1, true
	}
	// A command that doesn't end within the limit is refused: nothing past the
	// window is looked at. AUTHENTICATE's initial response has its own limit.
	win := buf
	if limit := s.maxLine + 2; len(win) > limit && s.phase != phaseAuthIR {
		win = win[:limit]
	}
	for {
		switch s.phase {
		case phaseTag:
			res, end, next := srvReadWord(win, 0, s.seen, true)
			switch res {
			case wordMore:
				s.seen = end
				return s.needMore(buf, win)
			case wordBad:
				return s.invalidCommand(nil, end)
			}
			s.tagEnd, s.nameStart, s.seen = end, next, next
			s.phase = phaseName
		case phaseName:
			res, end, next := srvReadWord(win, s.nameStart, s.seen, false)
			switch res {
			case wordMore:
				s.seen = end
				return s.needMore(buf, win)
			case wordBad:
				return s.invalidCommand(win[:s.tagEnd], end)
			}
			s.startArgs(win[s.nameStart:end], next)
		case phaseArgs:
			if n, more, done := s.readArgs(buf, win); done {
				return n, more
			}
		case phaseAuthMech:
			i := s.seen
			for i < len(win) && win[i] != ' ' && win[i] != '\r' && win[i] != '\n' {
				i++
			}
			if i == len(win) {
				s.seen = i
				return s.needMore(buf, win)
			}
			if i == s.mechStart {
				return s.invalidCommand(win[:s.tagEnd], i)
			}
			s.mechEnd, s.irStart = i, i
			if win[i] == ' ' {
				s.irStart++
			}
			s.phase, s.seen = phaseAuthIR, s.irStart
		case phaseAuthIR:
			i := bytes.IndexByte(buf[s.seen:], '\n')
			if i < 0 {
				s.seen = len(buf)
				if s.seen-s.irStart > srvAuthBufMax {
					s.close("", "authentication response too large")
					return len(buf), false
				}
				return 0, false
			}
			i += s.seen
			if i-s.irStart > srvAuthBufMax {
				s.close("", "authentication response too large")
				return i + 1, false
			}
			s.authenticate(buf[:s.tagEnd], buf[s.mechStart:s.mechEnd], wire.TrimCR(buf[s.irStart:i]))
			return s.commandDone(i + 1)
		default:
			panic("imap: bad command phase")
		}
	}
}

// needMore ends a read that ran out of bytes: wait for more, unless the command has
// already run past the line limit.
func (s *Session) needMore(buf, win []byte) (int, bool) {
	if len(buf) > len(win) {
		s.close(txtByeInputFull, "line too long")
		return len(win), false
	}
	return 0, false
}

// startArgs moves on to the arguments of the command called name; they begin at pos.
func (s *Session) startArgs(name []byte, pos int) {
	s.kind = cmdUnknown
	for _, c := range cmdNames {
		if wire.EqualUpper(name, c.name) {
			s.kind = c.kind
			break
		}
	}
	if s.kind == cmdAuthenticate {
		// SASL-IR may be long: the rest of the line is read raw, as Dovecot does.
		s.phase, s.mechStart, s.seen = phaseAuthMech, pos, pos
		return
	}
	s.phase = phaseArgs
	s.args.start(pos)
	s.seen = pos
	s.loginArgs, s.loginBad = 0, false
	s.id = idList
	s.idBuf, s.idEnds = s.idBuf[:0], s.idEnds[:0]
}

// readArgs drives the argument reader. done says the command is over for this call,
// with n consumed and more telling whether to go on.
func (s *Session) readArgs(buf, win []byte) (n int, more, done bool) {
	for {
		ev := s.args.next(win, s.maxLine)
		s.seen = s.args.pos
		switch ev {
		case evMore:
			n, more = s.needMore(buf, win)
			return n, more, true
		case evContinue:
			s.out.B = append(s.out.B, txtLiteralContinue...)
		case evToken:
			switch s.kind {
			case cmdLogin:
				s.loginToken(&s.args.tok)
			case cmdID:
				if n, more, done = s.idToken(win, &s.args.tok); done {
					return n, more, true
				}
			}
		case evEOL:
			s.execute(win[:s.args.pos])
			n, more = s.commandDone(s.args.pos)
			return n, more, true
		case evError:
			if s.args.err.fatal {
				s.close(s.args.err.text, "literal too large")
				return s.args.pos, false, true
			}
			s.replyBad(win[:s.tagEnd], s.args.err.text)
			n, more = s.skipFrom(s.args.pos)
			return n, more, true
		}
	}
}

// commandDone ends a command of n bytes.
func (s *Session) commandDone(n int) (int, bool) {
	if s.state == StateCommand {
		s.resetCommand()
	}
	return n, s.reading()
}

// reading reports whether Feed goes on reading the client's bytes.
func (s *Session) reading() bool { return s.state == StateCommand || s.state == StateAuthContinue }

// skipFrom drops the current line from offset pos to its LF.
func (s *Session) skipFrom(pos int) (int, bool) {
	s.resetCommand()
	s.phase = phaseSkip
	return pos, s.reading()
}

// resetCommand gets ready for the next command.
func (s *Session) resetCommand() {
	s.phase, s.seen, s.kind = phaseTag, 0, cmdUnknown
}

// invalidCommand answers a command Dovecot calls invalid and skips its line from pos.
func (s *Session) invalidCommand(tag []byte, pos int) (int, bool) {
	s.badCommand(tag)
	if s.state == StateClosed {
		return pos, false
	}
	return s.skipFrom(pos)
}

// badCommand counts an invalid command and answers it, or ends the session if it was
// one too many (Dovecot's client_invalid_command). A nil tag is answered as "*".
func (s *Session) badCommand(tag []byte) {
	s.bad++
	if s.bad >= s.maxBad {
		s.close(txtByeTooManyBad, "too many bad commands")
		return
	}
	if len(tag) == 0 {
		tag = srvStar
	}
	s.reply(tag, txtBadCommand)
}

var srvStar = []byte{'*'}

// loginToken collects LOGIN's arguments: two astrings.
func (s *Session) loginToken(t *cmdToken) {
	if t.depth > 0 || t.kind == tokClose {
		return // inside a list, which already made the arguments wrong
	}
	s.loginArgs++
	switch {
	case !t.isAstring():
		s.loginBad = true
	case s.loginArgs == 1:
		s.loginUser = *t
	case s.loginArgs == 2:
		s.loginPass = *t
	}
}

// idToken follows ID's arguments as they come, the way Dovecot's cmd_id reads them one
// at a time: the answer goes out as soon as the list (or NIL) is complete, and the rest
// of the line is skipped.
func (s *Session) idToken(cmd []byte, t *cmdToken) (n int, more, done bool) {
	invalid := false
	switch s.id {
	case idList:
		switch {
		case t.isNIL(cmd):
			n, more = s.idDone(cmd, s.args.pos)
			return n, more, true
		case t.kind == tokOpen:
			s.id = idKey
		default:
			invalid = true
		}
	case idKey:
		switch {
		case t.kind == tokClose && t.depth == 0:
			n, more = s.idDone(cmd, s.args.pos)
			return n, more, true
		case t.isString() && t.valueLen(cmd) <= srvIDKeyMax:
			s.idKeyStart = len(s.idBuf)
			s.idBuf = t.appendValue(s.idBuf, cmd)
			s.idKeyEnd = len(s.idBuf)
			s.id = idValue
		default:
			invalid = true
		}
	case idValue:
		switch {
		case t.kind == tokClose && t.depth == 0:
			// A key without a value: Dovecot ends the list there and drops the key.
			s.idBuf = s.idBuf[:s.idKeyStart]
			n, more = s.idDone(cmd, s.args.pos)
			return n, more, true
		case t.isNIL(cmd) || t.isString():
			if t.isString() {
				s.idBuf = t.appendValue(s.idBuf, cmd)
			}
			s.idEnds = append(s.idEnds, s.idKeyEnd, len(s.idBuf))
			s.id = idKey
		default:
			invalid = true
		}
	}
	if invalid {
		s.reply(cmd[:s.tagEnd], txtBadIDParams)
		n, more = s.skipFrom(s.args.pos)
		return n, more, true
	}
	return 0, false, false
}

// idDone answers ID and skips what is left of its line from pos.
func (s *Session) idDone(cmd []byte, pos int) (int, bool) {
	s.answerID(cmd[:s.tagEnd])
	return s.skipFrom(pos)
}

// answerID reports the client's ID to the engine and answers it.
func (s *Session) answerID(tag []byte) {
	// Several IDs can arrive in one Feed: each ActID gets its own part of idParams, which
	// begin() empties at the start of the next call.
	first := len(s.idParams)
	if len(s.idEnds) > 0 {
		all := string(s.idBuf) // one copy for every key and value
		start := 0
		for i := 0; i+1 < len(s.idEnds); i += 2 {
			k, v := s.idEnds[i], s.idEnds[i+1]
			s.idParams = append(s.idParams, IDParam{Key: all[start:k], Value: all[k:v]})
			start = v
		}
	}
	s.out.Emit(Action{Kind: ActID, IDParams: s.idParams[first:len(s.idParams):len(s.idParams)]})
	s.out.B = append(s.out.B, `* ID ("name" "`...)
	for i := 0; i < len(s.idName); i++ {
		c := s.idName[i]
		switch {
		case c == '"' || c == '\\':
			s.out.B = append(s.out.B, '\\', c)
		case c < ' ' || c == 0x7f:
			s.out.B = append(s.out.B, ' ')
		default:
			s.out.B = append(s.out.B, c)
		}
	}
	s.out.B = append(s.out.B, "\")\r\n"...)
	s.reply(tag, txtIDOK)
}

// execute runs the complete command cmd (its LF included).
func (s *Session) execute(cmd []byte) {
	tag := cmd[:s.tagEnd]
	switch s.kind {
	case cmdCapability:
		if !s.startTLS {
			// Clients must ask again after STARTTLS, so only an earlier CAPABILITY
			// says the client doesn't read the greeting's resp-code.
			s.capSeen = true
		}
		s.out.B = append(s.out.B, s.capLine...)
		s.reply(tag, txtCapabilityOK)
	case cmdNoop:
		s.reply(tag, txtNoopOK)
	case cmdLogout:
		s.out.B = append(s.out.B, "* BYE "...)
		s.out.B = append(s.out.B, txtByeLogout...)
		s.out.B = append(s.out.B, "\r\n"...)
		s.reply(tag, txtLogoutOK)
		s.close("", "logout")
	case cmdEnable:
		s.out.B = append(s.out.B, txtEnabled...)
		s.reply(tag, txtEnableOK)
	case cmdStartTLS:
		switch {
		case s.info.TLS:
			s.reply(tag, txtBadTLSActive)
		case !s.info.TLSAvailable:
			s.reply(tag, txtBadTLSDisabled)
		default:
			s.reply(tag, txtStartTLSOK)
			s.out.Emit(Action{Kind: ActStartTLS})
			s.state = StateTLSWait
		}
	case cmdID:
		s.answerID(tag) // ID without arguments
	case cmdLogin:
		s.login(cmd, tag)
	default:
		if wire.EqualUpper(tag, "LOGIN") {
			s.reply(tag, txtBadLoginAsTag) // not counted
			return
		}
		s.badCommand(tag)
	}
}

// login runs the LOGIN command.
func (s *Session) login(cmd, tag []byte) {
	if s.loginBad || s.loginArgs != 2 {
		s.badCommand(tag)
		return
	}
	s.authTag = append(s.authTag[:0], tag...)
	if !s.plaintextOK() {
		s.out.B = append(s.out.B, txtAlertPlaintext...)
		s.reply(tag, txtNoPlaintext)
		s.authFailed()
		return
	}
	s.scratch = append(s.scratch[:0], tag...)
	u := len(s.scratch)
	s.scratch = s.loginUser.appendValue(s.scratch, cmd)
	p := len(s.scratch)
	s.scratch = s.loginPass.appendValue(s.scratch, cmd)
	s.startAuth("LOGIN", len(tag), u, p)
}

// startAuth hands the credentials in s.scratch to the engine: the tag ends at tagEnd,
// the authzid runs from there to userStart, the user to passStart, the password to the
// end. Credentials no passdb could match (an empty user, a NUL byte) fail here, as
// Dovecot's auth process would fail them.
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
		Tag:            names[:tagEnd],
		Mech:           mech,
		Authzid:        names[tagEnd:userStart],
		User:           names[userStart:],
		Pass:           pass,
		CapabilitySeen: s.capSeen,
	}
	if sasl.OAuth(mech) {
		s.creds.Pass, s.creds.Token = "", pass
	}
	s.out.Emit(Action{Kind: ActAuth, Creds: &s.creds})
	s.state = StateAuthWait
}

// localAuthFailure answers a login the codec can tell will fail without asking anyone,
// with the reply Dovecot's auth process would have caused.
func (s *Session) localAuthFailure() {
	s.reply(s.authTag, txtNoAuthFailed)
	s.state = StateCommand
	s.authFailed()
}

// close ends the session: "* BYE <bye>" if bye is set, after what was written so far.
func (s *Session) close(bye, reason string) {
	if s.state == StateClosed {
		return
	}
	if bye != "" {
		s.out.B = append(s.out.B, "* BYE "...)
		s.out.B = append(s.out.B, bye...)
		s.out.B = append(s.out.B, "\r\n"...)
	}
	s.out.Close(reason)
	s.state = StateClosed
}

// reply writes "<tag> <text>\r\n".
func (s *Session) reply(tag []byte, text string) {
	s.out.B = append(s.out.B, tag...)
	s.out.B = append(s.out.B, ' ')
	s.out.B = append(s.out.B, text...)
	s.out.B = append(s.out.B, "\r\n"...)
}

// replyBad writes "<tag> BAD <text>\r\n".
func (s *Session) replyBad(tag []byte, text string) {
	s.out.B = append(s.out.B, tag...)
	s.out.B = append(s.out.B, " BAD "...)
	s.out.B = append(s.out.B, text...)
	s.out.B = append(s.out.B, "\r\n"...)
}

// begin starts a call: the previous call's Data and IDParams are no longer valid.
func (s *Session) begin() {
	s.out.Begin()
	s.idParams = s.idParams[:0]
}
