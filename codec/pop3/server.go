// Package pop3 holds Doorman's POP3 login phase as pure state machines: Session is the
// client side (greeting, pre-login commands, USER/PASS and AUTH up to the moment the
// credentials are complete) and BackendLogin the backend side (logging in on the user's
// behalf). They behave, byte for byte, like Dovecot 2.3.21's pop3-login proxy.
//
// The package does no I/O: it is fed bytes and returns actions. It must not import net,
// log, start goroutines or read the clock; time passes in as events (Session.Timeout).
// It never decides whether a password is right: that answer comes back through
// Session.Resume.
package pop3

import (
	"bytes"
	"errors"
	"slices"
	"strings"

	"doorman/codec/internal/wire"
	"doorman/codec/login"
	"doorman/codec/sasl"
)

// Defaults, as Dovecot has them.
const (
	// DefaultMaxLine is LOGIN_MAX_INBUF_SIZE (1026) less the CRLF: the longest command
	// line the login phase reads. (AUTH's initial response has its own, larger limit.)
	DefaultMaxLine = 1024
	// DefaultMaxBadCommands is CLIENT_MAX_BAD_COMMANDS: the third invalid command in a
	// row ends the session.
	DefaultMaxBadCommands = 3
	// DefaultGreeting is Doorman's login_greeting.
	DefaultGreeting = "Doorman ready."
)

// srvAuthBufMax is LOGIN_MAX_AUTH_BUF_SIZE: the longest SASL response line (initial or
// continued), CR included, LF not. Longer ends the session without a word, as Dovecot
// does ("Authentication response too large").
const srvAuthBufMax = 8192

// srvMaxCmdName is CLIENT_MAX_CMD_LEN: a command name is cut after this many bytes, and
// what follows is taken as its arguments (so "CAPABILITY" is the unknown "CAPABILI").
const srvMaxCmdName = 8

// ErrClosed is returned by Feed once the session has closed.
var ErrClosed = errors.New("pop3: session closed")

// errShortInput means the engine broke Feed's contract: it passed fewer bytes than the
// codec had already seen and not consumed.
var errShortInput = errors.New("pop3: Feed got fewer unconsumed bytes than before")

var _ login.Frontend = (*Session)(nil)

// Config is the client-side settings, as Dovecot names them. The zero value is usable.
type Config struct {
	// Greeting is login_greeting. Empty means DefaultGreeting.
	Greeting string
	// MaxLine bounds a command line, CRLF not counted (0: DefaultMaxLine). A longer one
	// ends the session with "-ERR Input buffer full, aborting".
	MaxLine int
	// MaxBadCommands is how many invalid commands in a row end the session (0: 3).
	MaxBadCommands int
	// MaxAuthAttempts, if positive, ends the session after that many failed logins with
	// "-ERR Too many invalid authentication attempts.". Dovecot has no such limit
	// (failures are slowed down instead), so 0, the default, means unlimited.
	MaxAuthAttempts int
	// Mechanisms is auth_mechanisms: the SASL mechanisms listed (CAPA's SASL line, AUTH
	// without arguments) and accepted by AUTH, in order; nil: PLAIN LOGIN. Known: PLAIN,
	// LOGIN, XOAUTH2, OAUTHBEARER, CRAM-MD5, SCRAM-SHA-256 (others are ignored; see
	// sasl.ParseMechanisms). The first four are plaintext mechanisms to Dovecot: hidden
	// and refused when plaintext authentication is not allowed. CRAM-MD5 and SCRAM-SHA-256
	// are not, so they are offered on any connection, but only to a session that has a
	// SessionInfo.SASLNonce for their challenges.
	Mechanisms []string
}

// State is where the session is.
type State uint8

const (
	StateCommand      State = iota + 1 // reading commands
	StateAuthContinue                  // AUTH: a "+ " challenge is out, waiting for the response line
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

// cmdPhase is where the reader is inside the current command line.
type cmdPhase uint8

const (
	phaseName     cmdPhase = iota // reading the command name
	phaseLine                     // any command but AUTH: waiting for the end of the line
	phaseAuthMech                 // AUTH: reading the mechanism name
	phaseAuthList                 // AUTH without a mechanism: waiting for the end of the line
	phaseAuthIR                   // AUTH: reading the initial response
)

// Session is the client side of one connection's login phase.
type Session struct {
	maxLine, maxBad, maxAuth int
	greetingText             string
	info                     login.SessionInfo

	state     State
	bad       int // invalid commands in a row
	authFails int // failed logins so far

	greeting []byte // "+OK <greeting>\r\n"
	capa     []byte // the answer to CAPA
	mechList []byte // the answer to AUTH without a mechanism

	// The command being read; positions are offsets from its first byte.
	phase     cmdPhase
	seen      int // bytes of the current unit already looked at: Feed must get them again
	name      [srvMaxCmdName]byte
	nameLen   int
	argsStart int
	mechEnd   int
	irStart   int

	// USER's argument, waiting for PASS.
	user    []byte
	userSet bool

	// AUTH in progress.
	exchange sasl.Exchange
	secx     sasl.SecretExchange // CRAM-MD5, SCRAM-SHA-256
	mechs    sasl.Mechanisms
	// tokenFail: a refused OAuth token's error challenge is out; the client's answer
	// gets the failure, with this text (AuthResult.Text).
	tokenFail     bool
	tokenFailText string
	sasl          []byte // the last decoded SASL response

	creds   login.Credentials
	scratch []byte

	// Output of the current call.
	out wire.Output

	// First backing arrays, inside the Session so that an ordinary login needs no
	// allocation of its own for them.
	userArr    [32]byte
	scratchArr [64]byte
}

// NewSession starts the client side of a connection. cfg may be nil; it is read only
// here.
func NewSession(cfg *Config, info login.SessionInfo) *Session {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	s := &Session{
		maxLine:      c.MaxLine,
		maxBad:       c.MaxBadCommands,
		maxAuth:      c.MaxAuthAttempts,
		greetingText: c.Greeting,
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
	if s.info.TLS {
		s.info.Secured = true
	}
	s.user, s.scratch = s.userArr[:0], s.scratchArr[:0]
	s.buildTexts()
	return s
}

// plaintextOK reports whether USER/PASS, PLAIN and LOGIN may be used.
func (s *Session) plaintextOK() bool { return s.info.Secured || s.info.PlaintextAllowed }

// buildTexts makes the greeting ("+OK [XCLIENT] <greeting>" for a trusted client) and the answers to CAPA and AUTH, which depend on the
// connection's state, in one allocation (Dovecot's cmd_capa and cmd_auth).
func (s *Session) buildTexts() {
	stls := s.info.TLSAvailable && !s.info.TLS
	plain := s.plaintextOK()
	mechs, mechList := txtMechs, txtMechList
	if !plain || !slices.Equal(s.mechs.List(), sasl.DefaultMechanisms.List()) {
		// Without plaintext authentication only CRAM-MD5 and SCRAM-SHA-256 are offered.
		mechs = string(s.mechs.AppendAdvertised(nil, " ", plain))
		mechList = strings.ReplaceAll(mechs[min(1, len(mechs)):], " ", "\r\n")
		if mechList != "" {
			mechList += "\r\n"
		}
	}
	buf := make([]byte, 0, 4+len(txtGreetingXCLIENT)+len(s.greetingText)+2+len(txtCapaHead)+64+len(mechs)+len(txtMechListHead)+len(mechList)+3)
	buf = append(buf, "+OK "...)
	if s.info.Trusted {
		// Dovecot's extension to spare a trusted proxy asking CAPA.
		buf = append(buf, txtGreetingXCLIENT...)
	}
	buf = wire.AppendText(buf, s.greetingText)
	buf = append(buf, txtNewline...)
	g := len(buf)
	buf = append(buf, txtCapaHead...)
	if stls {
		buf = append(buf, txtCapaSTLS...)
	}
	if plain {
		buf = append(buf, txtCapaUSER...)
	}
	buf = append(buf, txtCapaSASL...)
	buf = append(buf, mechs...)
	buf = append(buf, txtNewline...)
	buf = append(buf, txtCapaTail...)
	c := len(buf)
	buf = append(buf, txtMechListHead...)
	buf = append(buf, mechList...)
	buf = append(buf, txtCapaTail...)
	s.greeting, s.capa, s.mechList = buf[:g:g], buf[g:c:c], buf[c:]
}

// Greeting is the first thing the client gets. The engine must not modify it.
func (s *Session) Greeting() []byte { return s.greeting }

// State says where the session is.
func (s *Session) State() State { return s.state }

// Feed reads what the client sent. in must hold every byte not consumed by earlier calls,
// then the new ones. consumed is how many of them the engine may drop. A command is
// consumed only once its line is complete, so in may have to hold up to MaxLine+2 bytes
// (AUTH: its line up to the mechanism, then up to 8 KiB of initial response).
//
// While a login or STLS is pending, and once the session is done, Feed consumes nothing:
// those bytes belong to what comes next. After Resume leaves the session in
// StateCommand, call Feed again with the bytes still held. The error is ErrClosed after
// the session closed, or a report that the engine broke this contract; protocol errors
// are actions, not errors.
func (s *Session) Feed(in []byte) (consumed int, actions []login.Action, err error) {
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
func (s *Session) Resume(r login.AuthResult) []login.Action {
	s.out.Begin()
	if s.state == StateSecretWait {
		s.resetCommand()
		if r.Status == login.AuthOK {
			s.state = StateCommand
			s.secretStep(s.secx.Secret(r.Secret))
			return s.out.End()
		}
		s.secx.Reset()
	} else if s.state != StateAuthWait {
		return nil
	}
	if r.Status == login.AuthOK {
		if r.Reply != nil {
			s.out.B = append(s.out.B, r.Reply...)
		} else {
			s.out.B = append(s.out.B, txtLoggedIn...)
		}
		s.state = StateDone
		return s.out.End()
	}
	s.resetCommand()
	if r.Status == login.AuthFailed && r.Reply == nil {
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

// failureReply writes Dovecot's answer to a failed login: client_send_reply with the
// kind pop3_client_auth_result (or, for a backend that failed, pop3_proxy_send_failure_reply)
// picks for the result. An AUTH error takes "[AUTH]" unless its text brings its own
// code; a temporary failure always takes "[SYS/TEMP]"; a server bug takes no code.
func (s *Session) failureReply(r login.AuthResult) {
	code, text := codeAuth, msgAuthFailed
	switch r.Status {
	case login.AuthTempFail:
		code, text = codeTemp, msgTempFailed
	case login.AuthUnavailable:
		code, text = codeTemp, msgAccountUnavail
	case login.AuthServerBug:
		code, text = "", msgAccountUnavail
	case login.AuthDisabled:
		text = msgLoginDisabled
	case login.AuthAuthzFailed:
		text = msgAuthzFailed
	}
	if r.Text != "" {
		text = r.Text
		if code == codeAuth && text[0] == '[' {
			code = ""
		}
	}
	s.out.B = append(s.out.B, txtErr...)
	if code != "" {
		s.out.B = append(s.out.B, ' ')
		s.out.B = append(s.out.B, code...)
	}
	s.out.B = append(s.out.B, ' ')
	s.out.B = wire.AppendText(s.out.B, text)
	s.out.B = append(s.out.B, txtNewline...)
}

// authFailed counts a failed login and ends the session if there were too many.
func (s *Session) authFailed() {
	s.authFails++
	if s.maxAuth > 0 && s.authFails >= s.maxAuth {
		s.close(txtTooManyAuth, "too many failed logins")
	}
}

// Timeout is called when the client has been idle too long before logging in. It says
// goodbye and closes; once logged in or closed it does nothing.
func (s *Session) Timeout() []login.Action {
	s.out.Begin()
	switch s.state {
	case StateDone, StateClosed:
		return nil
	case StateAuthContinue, StateAuthWait, StateSecretWait:
		s.close(txtInactivityAuth, "timeout")
	default:
		s.close(txtInactivity, "timeout")
	}
	return s.out.End()
}

// TLSStarted tells the session the handshake that ActStartTLS asked for is done. The
// connection is secured from now on and CAPA changes accordingly.
func (s *Session) TLSStarted() {
	if s.state != StateTLSWait {
		return
	}
	s.info.TLS, s.info.Secured = true, true
	s.buildTexts()
	s.state = StateCommand
	s.resetCommand()
}

// readCommand reads on in the command line that starts at buf[0]. It returns how much
// of buf is consumed and whether the caller should go on with what follows.
func (s *Session) readCommand(buf []byte) (int, bool) {
	// A line that doesn't end within the limit is refused: nothing past the window is
	// looked at. AUTH's initial response has its own limit.
	win := buf
	if limit := s.maxLine + 2; len(win) > limit && s.phase != phaseAuthIR {
		win = win[:limit]
	}
	for {
		switch s.phase {
		case phaseName:
			// client_read_cmd_name: CRs are skipped, a space, LF or NUL ends the name,
			// and so does its 9th position, whatever is there.
			i := s.seen
			for ; i < len(win); i++ {
				c := win[i]
				if c == '\r' {
					continue
				}
				if c == ' ' || c == '\n' || c == 0 || i >= srvMaxCmdName {
					break
				}
				if 'a' <= c && c <= 'z' {
					c -= 'a' - 'A'
				}
				s.name[s.nameLen] = c
				s.nameLen++
			}
			if i == len(win) {
				s.seen = i
				return s.needMore(buf, win)
			}
			s.argsStart = i
			if win[i] == ' ' {
				s.argsStart++ // only one space is skipped
			}
			s.seen = s.argsStart
			s.phase = phaseLine
			if s.nameIs("AUTH") {
				// SASL-IR may be long: the rest of the line is read raw, as Dovecot does.
				s.phase = phaseAuthMech
			}
		case phaseLine:
			i := bytes.IndexByte(win[s.seen:], '\n')
			if i < 0 {
				s.seen = len(win)
				return s.needMore(buf, win)
			}
			i += s.seen
			s.execute(srvCString(wire.TrimCR(win[s.argsStart:i])))
			return s.commandDone(i + 1)
		case phaseAuthMech:
			i := s.seen
			for i < len(win) && win[i] != ' ' && win[i] != '\r' && win[i] != '\n' {
				i++
			}
			if i == len(win) {
				s.seen = i
				return s.needMore(buf, win)
			}
			if i == s.argsStart {
				s.phase, s.seen = phaseAuthList, i
				continue
			}
			s.mechEnd, s.irStart = i, i
			if win[i] == ' ' {
				s.irStart++
			}
			s.phase, s.seen = phaseAuthIR, s.irStart
		case phaseAuthList:
			// AUTH alone is the old SASL discovery (MS Outlook): the mechanisms, one a
			// line. The rest of the line is ignored.
			i := bytes.IndexByte(win[s.seen:], '\n')
			if i < 0 {
				s.seen = len(win)
				return s.needMore(buf, win)
			}
			s.out.B = append(s.out.B, s.mechList...)
			return s.commandDone(s.seen + i + 1)
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
			s.authenticate(buf[s.argsStart:s.mechEnd], wire.TrimCR(buf[s.irStart:i]))
			return s.commandDone(i + 1)
		default:
			panic("pop3: bad command phase")
		}
	}
}

// nameIs reports whether the command name read is w.
func (s *Session) nameIs(w string) bool { return string(s.name[:s.nameLen]) == w }

// needMore ends a read that ran out of bytes: wait for more, unless the line has
// already run past the limit.
func (s *Session) needMore(buf, win []byte) (int, bool) {
	if len(buf) > len(win) {
		s.close(txtInputFull, "line too long")
		return len(win), false
	}
	return 0, false
}

// commandDone ends a command line of n bytes.
func (s *Session) commandDone(n int) (int, bool) {
	if s.state == StateCommand {
		s.resetCommand()
	}
	return n, s.reading()
}

// reading reports whether Feed goes on reading the client's bytes.
func (s *Session) reading() bool { return s.state == StateCommand || s.state == StateAuthContinue }

// resetCommand gets ready for the next command.
func (s *Session) resetCommand() {
	s.phase, s.seen, s.nameLen = phaseName, 0, 0
}

// execute runs a complete command other than AUTH (client_command_execute). args is
// what follows the name and one space, without the line end, cut at a NUL as Dovecot's
// C strings are.
func (s *Session) execute(args []byte) {
	switch string(s.name[:s.nameLen]) {
	case "CAPA":
		s.out.B = append(s.out.B, s.capa...)
	case "USER":
		s.cmdUser(args)
	case "PASS":
		s.cmdPass(args)
	case "APOP":
		s.out.B = append(s.out.B, txtAPOPDisabled...) // no APOP mechanism, so no challenge
	case "STLS":
		switch {
		case s.info.TLS:
			s.out.B = append(s.out.B, txtTLSActive...)
		case !s.info.TLSAvailable:
			s.out.B = append(s.out.B, txtTLSNotEnable...)
		default:
			s.out.B = append(s.out.B, txtSTLSOK...)
			s.out.Emit(login.Action{Kind: login.ActStartTLS})
			s.state = StateTLSWait
		}
	case "QUIT":
		s.out.B = append(s.out.B, txtQuit...)
		s.close("", "logout")
	case "XCLIENT":
		s.cmdXCLIENT(args, false)
	case "XOIP":
		// XOIP <ip> is Zimbra's nginx saying XCLIENT ADDR=<ip>.
		s.cmdXCLIENT(args, true)
	default:
		s.out.B = append(s.out.B, txtUnknownCommand...)
		s.bad++
		if s.bad >= s.maxBad {
			s.close(txtTooManyBad, "too many bad commands")
		}
		return
	}
	s.bad = 0 // Dovecot counts bad commands in a row
}

// cmdUser remembers the user name for PASS.
func (s *Session) cmdUser(args []byte) {
	if !s.plaintextOK() {
		s.out.B = append(s.out.B, txtPlaintextDisabled...)
		s.authFailed()
		return
	}
	clear(s.user)
	s.user = append(s.user[:0], args...)
	s.userSet = true
	s.out.B = append(s.out.B, txtUserOK...)
}

// cmdPass completes USER/PASS: Dovecot turns it into SASL PLAIN with no authzid.
func (s *Session) cmdPass(args []byte) {
	if !s.userSet {
		// The client may ignore USER's reply and only show PASS's error.
		if !s.plaintextOK() {
			s.out.B = append(s.out.B, txtPlaintextDisabled...)
			s.authFailed()
			return
		}
		s.out.B = append(s.out.B, txtNoUsername...)
		return
	}
	s.scratch = append(s.scratch[:0], s.user...)
	p := len(s.scratch)
	s.scratch = append(s.scratch, args...)
	clear(s.user)
	s.user, s.userSet = s.user[:0], false
	s.startAuth("USER", 0, p)
}

// startAuth hands the credentials in s.scratch to the engine: the authzid runs from the
// start to userStart, the user to passStart, the password to the end. Credentials no
// passdb could match (an empty user, a NUL byte) fail here, as Dovecot's auth process
// would fail them.
func (s *Session) startAuth(mech string, userStart, passStart int) {
	b := s.scratch
	if userStart == passStart || bytes.IndexByte(b, 0) >= 0 {
		clear(b)
		s.localAuthFailure()
		return
	}
	// One copy for the names, another for the password: a User kept for the logs
	// must not keep the password's bytes alive with it.
	names, pass := string(b[:passStart]), string(b[passStart:])
	clear(b)
	s.creds = login.Credentials{
		Mech:    mech,
		Authzid: names[:userStart],
		User:    names[userStart:],
		Pass:    pass,
	}
	if sasl.OAuth(mech) {
		s.creds.Pass, s.creds.Token = "", pass
	}
	s.out.Emit(login.Action{Kind: login.ActAuth, Creds: &s.creds})
	s.state = StateAuthWait
}

// localAuthFailure answers a login the codec can tell will fail without asking anyone,
// with the reply Dovecot's auth process would have caused.
func (s *Session) localAuthFailure() {
	s.out.B = append(s.out.B, txtAuthFailed...)
	s.state = StateCommand
	s.authFailed()
}

// close ends the session, after what was written so far and the line text (which may
// be empty).
func (s *Session) close(text, reason string) {
	if s.state == StateClosed {
		return
	}
	s.out.B = append(s.out.B, text...)
	s.out.Close(reason)
	s.state = StateClosed
}

// srvCString cuts b at its first NUL, as a C string ends there.
func srvCString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}
