// Package managesieve holds Doorman's ManageSieve (RFC 5804) login phase as pure state
// machines: Session is the client side (capability greeting, pre-login commands,
// AUTHENTICATE up to the moment the credentials are complete) and BackendLogin the
// backend side (logging in on the user's behalf). They behave, byte for byte, like
// Pigeonhole 0.5.21's managesieve-login proxy on Dovecot 2.3.21; where they differ, the
// comment there says so. In short: Dovecot's 1 KiB input buffer isn't copied (one
// argument may use the whole line limit); a refused XCLIENT from a trusted client
// changes nothing (Dovecot keeps the good values it met before the bad one); pipelined
// commands after an AUTHENTICATE that fails at once are answered (Dovecot waits for
// more input); backend responses may hold literals, an OK a resp-code, and a bare
// "NO (TRYLATER)" is a temporary failure.
//
// The package does no I/O: it is fed bytes and returns actions. It must not import net,
// log, start goroutines or read the clock; time passes in as events (Session.Timeout).
// It never decides whether a password is right: that answer comes back through
// Session.Resume.
package managesieve

import (
	"bytes"
	"errors"
	"slices"

	"doorman/codec/internal/wire"
	"doorman/codec/login"
	"doorman/codec/sasl"
)

var (
	_ login.Frontend = (*Session)(nil)
	_ login.Backend  = (*BackendLogin)(nil)
)

// Defaults, as Dovecot has them.
const (
	// DefaultMaxLine is MAX_MANAGESIEVE_LINE: the longest command, literals included,
	// the login phase reads.
	DefaultMaxLine = 8192
	// DefaultMaxBadCommands is CLIENT_MAX_BAD_COMMANDS: the third invalid command ends
	// the session.
	DefaultMaxBadCommands = 3
	// DefaultGreeting is Doorman's login_greeting.
	DefaultGreeting = "Doorman ready."
	// DefaultImplementation is Doorman's managesieve_implementation_string.
	DefaultImplementation = "Doorman"
	// DefaultSieve is what Pigeonhole 0.5 offers with its default settings (sieve_extensions
	// unset), as Dovecot 2.3 backends announce it.
	DefaultSieve = "fileinto reject envelope encoded-character vacation subaddress " +
		"comparator-i;ascii-numeric relational regex imap4flags copy include variables " +
		"body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext"
	// DefaultNotify goes with DefaultSieve (its enotify extension offers mailto).
	DefaultNotify = "mailto"
)

// ErrClosed is returned by Feed once the session has closed.
var ErrClosed = errors.New("managesieve: session closed")

// errShortInput means the engine broke Feed's contract: it passed fewer bytes than the
// codec had already seen and not consumed.
var errShortInput = errors.New("managesieve: Feed got fewer unconsumed bytes than before")

// Config is the client-side settings, as Dovecot names them. The zero value is usable.
type Config struct {
	// Greeting is login_greeting. Empty means DefaultGreeting.
	Greeting string
	// Implementation is managesieve_implementation_string (empty: DefaultImplementation).
	Implementation string
	// Sieve is managesieve_sieve_capability: the SIEVE extensions announced before
	// login. Clients pick the scripts' features from it, and after login the backend's
	// own list counts, so it should be the backend's: Dovecot's documentation warns a
	// proxy to set it (as imap_capability for IMAP), since the login process can't ask
	// the backend. Empty means DefaultSieve.
	Sieve string
	// Notify is managesieve_notify_capability: the NOTIFY methods. Empty means
	// DefaultNotify when Sieve is empty too (the defaults go together); with Sieve set,
	// empty means no NOTIFY line, as for a backend without enotify.
	Notify string
	// MaxLine bounds a command, literals included (0: DefaultMaxLine). A longer one ends
	// the session with `BYE "Input buffer full, aborting"`.
	MaxLine int
	// MaxBadCommands is how many invalid commands end the session (0: 3).
	MaxBadCommands int
	// Mechanisms is auth_mechanisms: the SASL mechanisms advertised ("SASL") and accepted
	// by AUTHENTICATE, in order; nil: PLAIN LOGIN. Known: PLAIN, LOGIN, XOAUTH2,
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
	StateAuthContinue                  // AUTHENTICATE: a challenge is out, waiting for the response
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
	phaseName cmdPhase = iota // reading the command name
	phaseArgs                 // reading arguments (or a SASL response line)
	phaseSkip                 // dropping the rest of a line after an error
)

// cmdKind is the command being read.
type cmdKind uint8

const (
	cmdUnknown cmdKind = iota
	cmdAuthenticate
	cmdCapability
	cmdStartTLS
	cmdNoop
	cmdLogout
	cmdXclient
	cmdResponse // not a command: a SASL response line during AUTHENTICATE
)

var cmdNames = [...]struct {
	name string
	kind cmdKind
}{
	{"AUTHENTICATE", cmdAuthenticate},
	{"CAPABILITY", cmdCapability},
	{"STARTTLS", cmdStartTLS},
	{"NOOP", cmdNoop},
	{"LOGOUT", cmdLogout},
	{"XCLIENT", cmdXclient},
}

// Session is the client side of one connection's login phase.
type Session struct {
	maxLine, maxBad int
	greetingText    string
	impl            string
	sieve, notify   string
	info            login.SessionInfo

	state State
	bad   int // invalid commands so far

	greeting []byte // the capability lines, then `OK "<greeting>"`
	caps     []byte // the capability lines alone (a prefix of greeting)

	// The command being read; positions are offsets from its first byte.
	phase    cmdPhase
	seen     int // bytes of the current unit already looked at: Feed must get them again
	kind     cmdKind
	args     argReader
	nargs    int
	arg0     token // the first argument (NOOP's tag, AUTHENTICATE's mechanism, the response)
	sasl     token // AUTHENTICATE's initial response
	hasSASL  bool  // a SASL string (initial or continued response) was read
	badSASL  bool  // the response (or initial response) isn't a string
	saslSpan int   // the SASL string's bytes on the wire: not counted against the line limit

	// AUTHENTICATE in progress.
	exchange sasl.Exchange
	secx     sasl.SecretExchange // CRAM-MD5, SCRAM-SHA-256
	mechs    sasl.Mechanisms
	// tokenFail: a refused OAuth token's error challenge is out; the client's answer
	// gets the failure, with this text (AuthResult.Text).
	tokenFail     bool
	tokenFailText string
	saslBuf       []byte // the last decoded SASL response
	squeeze       []byte // a SASL response unescaped

	creds   login.Credentials
	scratch []byte

	// XCLIENT from a trusted client: its arguments so far, and the ActID it makes.
	xc       xclientArgs
	idParams []login.IDParam

	// Output of the current call.
	out wire.Output

	// First backing arrays, inside the Session so that an ordinary login needs no
	// allocation of its own for them.
	scratchArr [64]byte
	saslArr    [64]byte
	squeezeArr [96]byte
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
		greetingText: c.Greeting,
		impl:         c.Implementation,
		sieve:        c.Sieve,
		notify:       c.Notify,
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
	if s.impl == "" {
		s.impl = DefaultImplementation
	}
	if s.sieve == "" {
		s.sieve = DefaultSieve
		if s.notify == "" {
			s.notify = DefaultNotify
		}
	}
	if s.info.TLS {
		s.info.Secured = true
	}
	s.scratch = s.scratchArr[:0]
	s.saslBuf, s.squeeze = s.saslArr[:0], s.squeezeArr[:0]
	s.buildCapability()
	return s
}

// plaintextOK reports whether PLAIN and LOGIN may be used.
func (s *Session) plaintextOK() bool { return s.info.Secured || s.info.PlaintextAllowed }

// buildCapability makes the greeting and the capability lines, as Pigeonhole's
// client_send_capabilities does, in one allocation. XCLIENT is announced, last, to
// trusted clients only.
func (s *Session) buildCapability() {
	size := 160 + 2*(len(s.impl)+len(s.sieve)+len(s.notify)+len(s.greetingText))
	buf := make([]byte, 0, size)
	line := func(head, value string) {
		buf = append(buf, head...)
		buf = appendCapValue(buf, value)
		buf = append(buf, "\r\n"...)
	}
	line(capImplementation, s.impl)
	line(capSieve, s.sieve)
	if s.notify != "" {
		line(capNotify, s.notify)
	}
	switch {
	case s.plaintextOK() && slices.Equal(s.mechs.List(), sasl.DefaultMechanisms.List()):
		buf = append(buf, capSASLMechs...)
	case s.plaintextOK():
		buf = append(buf, capSASL...)
		list := s.mechs.AppendAdvertised(nil, " ", true)
		buf = appendCapValue(buf, string(list[min(1, len(list)):]))
		buf = append(buf, "\r\n"...)
	default:
		// Dovecot advertises no mechanism it would refuse (sasl_server_get_advertised_mechs):
		// only CRAM-MD5 and SCRAM-SHA-256 are not plaintext mechanisms.
		if list := s.mechs.AppendAdvertised(nil, " ", false); len(list) > 0 {
			buf = append(buf, capSASL...)
			buf = appendCapValue(buf, string(list[1:]))
			buf = append(buf, "\r\n"...)
		} else {
			buf = append(buf, capSASLNone...)
		}
	}
	if s.info.TLSAvailable && !s.info.TLS {
		buf = append(buf, capStartTLS...)
	}
	buf = append(buf, capVersion...)
	if s.info.Trusted {
		buf = append(buf, capXclient...)
	}
	n := len(buf)
	buf = append(buf, "OK "...)
	buf = appendQuoted(buf, s.greetingText, true)
	buf = append(buf, "\r\n"...)
	s.greeting, s.caps = buf, buf[:n:n]
}

// appendCapValue appends a configured capability value as a quoted string. Dovecot
// writes the setting as it is; a `"` or a line break in it would break the line, so
// those are escaped or made spaces here.
func appendCapValue(dst []byte, v string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < ' ' || c == 0x7f:
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// Greeting is the first thing the client gets: the capabilities, then OK. The engine
// must not modify it.
func (s *Session) Greeting() []byte { return s.greeting }

// State says where the session is.
func (s *Session) State() State {
	if (s.state == StateCommand || s.state == StateAuthContinue) && s.phase == phaseArgs && s.args.st == argLitData {
		return StateLiteral
	}
	return s.state
}

// Feed reads what the client sent. in must hold every byte not consumed by earlier calls,
// then the new ones. consumed is how many of them the engine may drop. A command is
// consumed only once it is complete, so in may have to hold up to MaxLine+2 bytes, plus,
// for AUTHENTICATE, a SASL response (up to 8 KiB, twice that if quoted with escapes).
// An unknown command's line is the exception: it is answered at once and dropped as it
// comes, whatever its length, as Dovecot does.
//
// While a login or STARTTLS is pending, and once the session is done, Feed consumes
// nothing: those bytes belong to what comes next. After Resume leaves the session in
// StateCommand, call Feed again with the bytes still held. The error is ErrClosed after
// the session closed, or a report that the engine broke this contract; protocol errors
// are actions, not errors.
func (s *Session) Feed(in []byte) (consumed int, actions []login.Action, err error) {
	s.out.Begin()
	s.idParams = s.idParams[:0]
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
		n, more := s.readCommand(in[consumed:])
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

// Resume answers the last ActAuth. With AuthOK the reply goes out (r.Reply, the
// backend's OK line, or `OK "Logged in."`) and the session is done; with a failure the
// reply goes out and commands are read again (call Feed with the bytes held meanwhile).
func (s *Session) Resume(r login.AuthResult) []login.Action {
	s.out.Begin()
	if s.state == StateSecretWait {
		s.resetCommand()
		if r.Status == login.AuthOK {
			s.state = StateCommand
			s.secretStep(s.secx.Secret(r.Secret))
			s.resetCommand() // ready for the response, or the next command
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
			s.resetCommand() // now ready for the response
			return s.out.End()
		}
	}
	s.state = StateCommand
	if r.Reply != nil {
		s.out.B = append(s.out.B, r.Reply...)
	} else {
		s.failureReply(r)
	}
	return s.out.End()
}

// failureReply writes Dovecot's answer to a failed login (managesieve_client_auth_result
// for the auth process's verdicts, managesieve_proxy_send_failure_reply for the proxy's).
// r.Text, if set, replaces the default text; it is always quoted, as Dovecot quotes a
// passdb reason.
func (s *Session) failureReply(r login.AuthResult) {
	head, text := txtNoPrefix, txtAuthFailed
	switch r.Status {
	case login.AuthTempFail:
		head, text = txtNoTryLaterHead, txtTempFailed
	case login.AuthUnavailable:
		head, text = txtNoTryLaterHead, txtAccountUnavail
	case login.AuthServerBug:
		text = txtAccountUnavail
	case login.AuthDisabled:
		text = txtLoginDisabledMs
	case login.AuthAuthzFailed:
		text = txtAuthzFailed
	}
	if r.Text != "" {
		text = r.Text
	}
	s.out.B = append(s.out.B, head...)
	s.out.B = appendQuoted(s.out.B, text, true)
	s.out.B = append(s.out.B, "\r\n"...)
}

// Timeout is called when the client has been idle too long before logging in. It says
// goodbye and closes; once logged in or closed it does nothing.
func (s *Session) Timeout() []login.Action {
	s.out.Begin()
	switch s.state {
	case StateDone, StateClosed:
		return nil
	case StateAuthContinue, StateAuthWait, StateSecretWait:
		s.close(txtByeInactAuth, "timeout")
	default:
		s.close(txtByeInactivity, "timeout")
	}
	return s.out.End()
}

// TLSStarted tells the session the handshake that ActStartTLS asked for is done. The
// connection is secured from now on; as RFC 5804 wants, the client gets the
// capabilities again (now with the SASL mechanisms, without STARTTLS), then
// `OK "TLS negotiation successful."`. Unlike IMAP's, it has something to say: its
// actions are those writes.
func (s *Session) TLSStarted() []login.Action {
	s.out.Begin()
	if s.state != StateTLSWait {
		return nil
	}
	s.info.TLS, s.info.Secured = true, true
	s.buildCapability()
	s.state = StateCommand
	s.resetCommand()
	s.out.B = append(s.out.B, s.caps...)
	s.out.B = append(s.out.B, txtTLSOK...)
	return s.out.End()
}

// window is how much of buf the current unit may use: MaxLine and its CRLF, plus the
// SASL response string read so far, or all of it while inside that string (which has
// its own limit).
func (s *Session) window(buf []byte) []byte {
	if s.phase == phaseArgs && s.args.inSASLString() {
		return buf
	}
	if limit := s.maxLine + 2 + s.saslSpan; len(buf) > limit {
		return buf[:limit]
	}
	return buf
}

// readCommand reads on in the unit (a command, or a SASL response line) that starts at
// buf[0]. It returns how much of buf is consumed and whether the caller should go on
// with what follows.
func (s *Session) readCommand(buf []byte) (int, bool) {
	if s.phase == phaseSkip {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return len(buf), false
		}
		s.resetCommand()
		return i + 1, s.reading()
	}
	for {
		switch s.phase {
		case phaseName:
			win := s.window(buf)
			i := s.seen
			for i < len(win) && win[i] != ' ' && win[i] != '\r' && win[i] != '\n' {
				i++
			}
			if i == len(win) {
				s.seen = i
				return s.needMore(buf, win)
			}
			next := i
			if win[i] == ' ' {
				next++ // managesieve_parser_read_word takes one space with the name
			}
			if !s.startArgs(win[:i], next) {
				// Unknown: answered at once, and its line dropped as it comes.
				s.badCommand()
				if s.state == StateClosed {
					return i, false
				}
				return s.skipFrom(i)
			}
		case phaseArgs:
			if n, more, done := s.readArgs(buf); done {
				return n, more
			}
		default:
			panic("managesieve: bad command phase")
		}
	}
}

// needMore ends a read that ran out of bytes: wait for more, unless the unit has already
// run past its limit.
func (s *Session) needMore(buf, win []byte) (int, bool) {
	if len(buf) > len(win) {
		s.close(txtByeInputFull, "line too long")
		return len(win), false
	}
	return 0, false
}

// startArgs moves on to the arguments of the command called name; they begin at pos. It
// reports whether the command is known.
func (s *Session) startArgs(name []byte, pos int) bool {
	s.kind = cmdUnknown
	for _, c := range cmdNames {
		if wire.EqualUpper(name, c.name) {
			s.kind = c.kind
			break
		}
	}
	if s.kind == cmdUnknown {
		return false
	}
	s.phase = phaseArgs
	s.args.start(pos)
	s.seen = pos
	return true
}

// startResponse gets ready to read a SASL response line.
func (s *Session) startResponse() {
	s.phase, s.kind = phaseArgs, cmdResponse
	s.args.start(0)
	s.args.stream = true
	s.seen = 0
}

// readArgs drives the argument reader. done says the unit is over for this call, with n
// consumed and more telling whether to go on.
func (s *Session) readArgs(buf []byte) (n int, more, done bool) {
	for {
		win := s.window(buf)
		ev := s.args.next(win, s.maxLine)
		s.seen = s.args.pos
		switch ev {
		case evMore:
			if len(s.window(buf)) > len(win) {
				continue // the reader has entered a SASL string: it may read on
			}
			n, more = s.needMore(buf, win)
			return n, more, true
		case evToken:
			if n, more, done = s.token(win); done {
				return n, more, true
			}
		case evEOL:
			s.execute(win[:s.args.pos])
			n, more = s.commandDone(s.args.pos)
			return n, more, true
		case evError:
			e := s.args.err
			switch {
			case e.silent:
				s.close("", e.text)
				return s.args.pos, false, true
			case e.fatal:
				s.out.B = append(s.out.B, txtByePrefix...)
				s.out.B = appendQuoted(s.out.B, e.text, true)
				s.out.B = append(s.out.B, "\r\n"...)
				s.close("", "literal too large")
				return s.args.pos, false, true
			}
			if s.kind == cmdResponse {
				s.state = StateCommand // the exchange fails (client_auth_fail)
			}
			s.replyNo(e.text)
			n, more = s.skipFrom(s.args.pos)
			return n, more, true
		}
	}
}

// token takes a complete argument. done says the command is over for this call (it was
// refused before its end), with n consumed and more telling whether to go on.
func (s *Session) token(cmd []byte) (n int, more, done bool) {
	t := s.args.tok
	s.nargs++
	switch s.kind {
	case cmdAuthenticate:
		switch {
		case s.nargs == 1:
			// One mandatory argument: the mechanism, a non-empty string. Pigeonhole reads
			// it alone and refuses the command right there.
			if !t.isString() || t.end == t.start {
				s.badCommand()
				if s.state == StateClosed {
					return s.args.pos, false, true
				}
				n, more = s.skipFrom(s.args.pos)
				return n, more, true
			}
			s.arg0 = t
			s.args.stream = true
		case s.nargs == 2 && s.args.stream:
			s.saslToken(t, &s.sasl)
		}
	case cmdResponse:
		if s.nargs == 1 {
			s.saslToken(t, &s.arg0)
		}
	case cmdXclient:
		if s.info.Trusted {
			s.xclientArg(t, cmd)
		}
	default:
		if s.nargs == 1 {
			s.arg0 = t
		}
	}
	return 0, false, false
}

// saslToken takes the first argument after AUTHENTICATE's mechanism, or of a response
// line: a string is the SASL response, and the rest of the line is ignored (Pigeonhole
// reads it as a stream and drops the line after it); anything else makes it invalid,
// and the rest of the line is still read for syntax errors.
func (s *Session) saslToken(t token, dst *token) {
	if !t.isString() {
		s.badSASL = true
		s.args.stream = false
		return
	}
	*dst = t
	s.hasSASL = true
	s.saslSpan = s.args.pos - t.first
	s.args.toEOL()
}

// commandDone ends a unit of n bytes.
func (s *Session) commandDone(n int) (int, bool) {
	if s.state == StateCommand || s.state == StateAuthContinue {
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

// resetCommand gets ready for the next command, or the next SASL response.
func (s *Session) resetCommand() {
	s.nargs, s.hasSASL, s.saslSpan, s.badSASL = 0, false, 0, false
	s.xc = xclientArgs{}
	if s.state == StateAuthContinue {
		s.startResponse()
		return
	}
	s.phase, s.seen, s.kind = phaseName, 0, cmdUnknown
}

// badCommand counts an invalid command and answers it, or ends the session if it was
// one too many (managesieve_client_input_next_cmd).
func (s *Session) badCommand() {
	s.bad++
	if s.bad >= s.maxBad {
		s.close(txtByeTooMany, "too many bad commands")
		return
	}
	s.out.B = append(s.out.B, txtBadCommand...)
}

// execute runs the complete command cmd (its LF included).
func (s *Session) execute(cmd []byte) {
	switch s.kind {
	case cmdCapability:
		if s.nargs > 0 {
			s.badCommand()
			return
		}
		s.out.B = append(s.out.B, s.caps...)
		s.out.B = append(s.out.B, txtCapabilityOK...)
	case cmdNoop:
		switch {
		case s.nargs == 0:
			s.out.B = append(s.out.B, txtNoopOK...)
		case s.nargs > 1:
			s.badCommand()
		case !s.arg0.isString():
			s.out.B = append(s.out.B, txtNoopBadTag...)
		default:
			// The echo tag goes back quoted as it came, line breaks and all.
			s.scratch = s.arg0.appendValue(s.scratch[:0], cmd)
			s.out.B = append(s.out.B, txtNoopTagHead...)
			s.out.B = appendQuoted(s.out.B, s.scratch, false)
			s.out.B = append(s.out.B, txtNoopTagTail...)
		}
	case cmdLogout:
		if s.nargs > 0 {
			s.badCommand()
			return
		}
		s.out.B = append(s.out.B, txtLogoutOK...)
		s.close("", "logout")
	case cmdStartTLS:
		switch {
		case s.nargs > 0:
			s.badCommand()
		case s.info.TLS:
			s.out.B = append(s.out.B, txtTLSActive...)
		case !s.info.TLSAvailable:
			s.out.B = append(s.out.B, txtTLSNotEnabled...)
		default:
			s.out.B = append(s.out.B, txtStartTLSOK...)
			s.out.Emit(login.Action{Kind: login.ActStartTLS})
			s.state = StateTLSWait
		}
	case cmdXclient:
		// Only login_trusted_networks may send it: others get Dovecot's refusal (not
		// counted as invalid). See xclient.go.
		if !s.info.Trusted {
			s.out.B = append(s.out.B, txtXclientNo...)
			return
		}
		s.xclient(cmd)
	case cmdAuthenticate:
		switch {
		case s.nargs == 0:
			s.badCommand()
		case s.badSASL:
			s.replyNo(txtInvalidInitial)
		default:
			s.authenticate(cmd, s.arg0, s.sasl, s.hasSASL)
		}
	case cmdResponse:
		s.state = StateCommand
		switch {
		case s.badSASL:
			s.replyNo(txtInvalidResponse)
		case !s.hasSASL:
			s.replyNo(txtEmptyResponse)
		default:
			s.response(cmd, s.arg0)
		}
	}
}

// replyNo writes `NO "<text>"`.
func (s *Session) replyNo(text string) {
	s.out.B = append(s.out.B, txtNoPrefix...)
	s.out.B = appendQuoted(s.out.B, text, true)
	s.out.B = append(s.out.B, "\r\n"...)
}

// close ends the session: bye (a whole line) if set, after what was written so far.
func (s *Session) close(bye, reason string) {
	if s.state == StateClosed {
		return
	}
	s.out.B = append(s.out.B, bye...)
	s.out.Close(reason)
	s.state = StateClosed
}
