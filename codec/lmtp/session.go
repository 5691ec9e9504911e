package lmtp

import (
	"bytes"
	"strings"
)

// Config is the server side's settings. Zero values take the defaults noted.
type Config struct {
	// Hostname is the server's name in the greeting, the LHLO reply and 421 lines.
	Hostname string
	// Greeting is the greeting's text after the host name; "" means "Doorman LMTP ready".
	Greeting string
	// MaxLine bounds the parameters of one command line, in bytes; 0 means 4096 (lib-smtp
	// SMTP_COMMAND_DEFAULT_MAX_PARAMETERS_SIZE).
	MaxLine int
	// MaxBadCommands: after this many bad commands in a row (replies 500, 501, 503) the
	// next one ends the connection; 0 means 10 (SMTP_SERVER_DEFAULT_MAX_BAD_COMMANDS).
	MaxBadCommands int
	// MaxRecipients bounds the RCPT commands of one transaction; 0 means no limit
	// (Dovecot's default).
	MaxRecipients int
}

func (c *Config) maxLine() int {
	if c.MaxLine > 0 {
		return c.MaxLine
	}
	return 4096
}

func (c *Config) maxBad() int {
	if c.MaxBadCommands > 0 {
		return c.MaxBadCommands
	}
	return 10
}

// State is where the session is.
type State uint8

const (
	StateCommand State = iota // reading commands
	StateRcpt                 // an ActRcpt awaits ResumeRcpt
	StateData                 // reading the message
	StateDataEnd              // an ActDataEnd awaits FinishData
	StateClosed
)

var stateNames = [...]string{"command", "rcpt", "data", "data-end", "closed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// ActionKind says what the engine must do.
type ActionKind uint8

const (
	// ActWrite: send Data to the client.
	ActWrite ActionKind = iota + 1
	// ActRcpt: look the recipient (Rcpt) up and relay it to its backend, then call
	// ResumeRcpt with the reply. Until then Feed consumes nothing.
	ActRcpt
	// ActData: DATA was accepted and "354" written (in the ActWrite before it); the
	// message follows in ActBody actions.
	ActData
	// ActBody: Data is the next piece of the message, dot-stuffing removed. It is valid
	// until the next call to Feed.
	ActBody
	// ActDataEnd: the message is complete. Call FinishData with one reply per accepted
	// recipient; until then Feed consumes nothing.
	ActDataEnd
	// ActReset: the transaction ended without a message (RSET, LHLO, or the end of the
	// connection): the engine drops what it holds for it (backend connections).
	ActReset
	// ActClose: send Data (may be empty), then close the connection. Reason says why.
	ActClose
	// ActXCLIENT: a trusted client sent XCLIENT (XClient holds the fields) and the
	// "220" greeting is in the ActWrite after it: the engine takes the fields as the
	// real client's from now on. The session starts over (the client sends LHLO again).
	ActXCLIENT
)

var actionNames = [...]string{"", "write", "rcpt", "data", "body", "data-end", "reset", "close", "xclient"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) && k != 0 {
		return actionNames[k]
	}
	return "unknown"
}

// Action is one thing the engine must do, in order.
type Action struct {
	Kind   ActionKind
	Data   []byte
	Rcpt   *Rcpt
	Reason string
	// XClient is the ActXCLIENT's fields.
	XClient *XClient
}

// Session is the server side of one LMTP connection (RFC 2033, with Dovecot's replies):
// commands, the transaction's state, and the message body. It does no I/O: Feed takes
// the client's bytes and returns what to do; recipients and the end of the message come
// back through ResumeRcpt and FinishData.
type Session struct {
	cfg *Config

	state    State
	helo     string
	mail     *Mail
	accepted []*Rcpt
	rcpts    int   // RCPT commands that reached the engine in this transaction
	pending  *Rcpt // the recipient of the ActRcpt being answered
	txSeq    int   // transactions started on this connection
	bad      int
	skipping bool // discarding the rest of a line that was too long
	trusted  bool // the client is in login_trusted_networks: XCLIENT is offered

	dec  DotDecoder
	body []byte // scratch for ActBody
	acts []Action
	out  []byte
}

// NewSession starts a session; send Greeting first.
func NewSession(cfg *Config) *Session {
	return &Session{cfg: cfg}
}

// SetTrusted says whether the client is trusted (Dovecot's login_trusted_networks):
// a trusted client sees XCLIENT in the LHLO reply and may send it. Call it right after
// NewSession.
func (s *Session) SetTrusted(trusted bool) { s.trusted = trusted }

// Trusted reports what SetTrusted set.
func (s *Session) Trusted() bool { return s.trusted }

// Greeting is the first line the client gets: "220 <hostname> <greeting>".
func (s *Session) Greeting() []byte {
	return []byte("220 " + s.cfg.Hostname + " " + s.greetingText() + "\r\n")
}

func (s *Session) greetingText() string {
	if s.cfg.Greeting == "" {
		return "Doorman LMTP ready"
	}
	return s.cfg.Greeting
}

// State returns where the session is.
func (s *Session) State() State { return s.state }

// Helo is the domain of the client's last LHLO, "" before any.
func (s *Session) Helo() string { return s.helo }

// Mail is the current transaction's MAIL, nil outside a transaction.
func (s *Session) Mail() *Mail { return s.mail }

// Accepted are the recipients of the current transaction that were accepted, in order.
func (s *Session) Accepted() []*Rcpt { return s.accepted }

// Transaction numbers the transactions of the connection from 1; it is the current one
// inside a transaction, else the last one (0 before the first MAIL).
func (s *Session) Transaction() int { return s.txSeq }

func (s *Session) write(r *Reply) {
	switch r.Code {
	case 500, 501, 503:
		s.bad++
	default:
		s.bad = 0
	}
	s.out = r.Append(s.out)
}

// flushOut turns written bytes into one ActWrite.
func (s *Session) flushOut() {
	if len(s.out) > 0 {
		s.acts = append(s.acts, Action{Kind: ActWrite, Data: s.out})
		s.out = nil
	}
}

func (s *Session) closeWith(r Reply, reason string) {
	s.flushOut()
	s.acts = append(s.acts, Action{Kind: ActClose, Data: r.Append(nil), Reason: reason})
	s.state = StateClosed
}

// terminate is lib-smtp's smtp_server_connection_terminate: "421 <enh> <hostname> text".
func (s *Session) terminate(enh, text, reason string) {
	s.closeWith(NewReply(421, enh, s.cfg.Hostname+" "+text), reason)
}

// Feed gives the session the client's bytes not yet consumed. It returns how many it
// consumed and what to do. In StateRcpt and StateDataEnd it consumes nothing; in
// StateData every byte up to the end of the message is consumed and comes back as
// ActBody. A line is never held: a command line is consumed once complete, and one
// longer than the limit is answered and skipped as it arrives.
func (s *Session) Feed(in []byte) (consumed int, actions []Action, err error) {
	s.acts = s.acts[:0]
	s.body = s.body[:0]
loop:
	for consumed < len(in) {
		switch s.state {
		case StateData:
			n := s.feedData(in[consumed:])
			if n == 0 && s.state == StateData {
				break loop // cannot happen: feedData always has room for all of it
			}
			consumed += n
			continue
		case StateCommand:
		default:
			s.flushOut()
			return consumed, s.acts, nil
		}
		rest := in[consumed:]
		nl := bytes.IndexByte(rest, '\n')
		if s.skipping {
			if nl < 0 {
				consumed = len(in)
				break
			}
			consumed += nl + 1
			s.skipping = false
			continue
		}
		limit := s.cfg.maxLine() + maxVerb + 2 // verb, space, parameters, CR
		if nl < 0 {
			if len(rest) <= limit {
				break // need more
			}
			// Too long to be valid whatever follows: answer now, skip the rest.
			cmd, lerr := classify(rest[:limit], s.cfg.maxLine())
			s.badLine(cmd, lerr)
			s.skipping = true
			consumed = len(in)
			continue
		}
		line := rest[:nl]
		consumed += nl + 1
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if len(line) > limit {
			line = line[:limit]
		}
		cmd, lerr := classify(line, s.cfg.maxLine())
		if lerr != lineOK {
			s.badLine(cmd, lerr)
			continue
		}
		s.command(cmd)
	}
	s.flushOut()
	return consumed, s.acts, nil
}

func (s *Session) badLine(_ Command, lerr lineError) {
	if lerr == lineTooLong {
		s.write(replyp(500, "5.5.2", "Line too long"))
	} else {
		s.write(replyp(500, "5.5.2", "Invalid command syntax"))
	}
	s.checkBad()
}

// checkBad ends the connection after too many bad commands in a row.
func (s *Session) checkBad() {
	if s.bad > s.cfg.maxBad() && s.state != StateClosed {
		s.resetTx()
		s.terminate("4.7.0", "Too many invalid commands.", "too many invalid commands")
	}
}

// resetTx ends the transaction; the engine hears of it when it held something.
func (s *Session) resetTx() {
	if s.mail != nil {
		s.flushOut()
		s.acts = append(s.acts, Action{Kind: ActReset})
	}
	s.mail = nil
	s.accepted = nil
	s.rcpts = 0
}

func (s *Session) command(cmd Command) {
	switch cmd.Verb {
	case VerbLHLO:
		if cmd.Params == "" {
			s.write(replyp(501, "", "Missing hostname"))
			break
		}
		s.resetTx()
		s.helo = cmd.Params
		lines := []string{s.cfg.Hostname, "8BITMIME", "ENHANCEDSTATUSCODES", "PIPELINING"}
		if s.trusted {
			// lib-smtp lists capabilities alphabetically: XCLIENT comes last.
			lines = append(lines, "XCLIENT "+xclientFields)
		}
		s.write(&Reply{Code: 250, Lines: lines})
	case VerbMAIL:
		if s.mail != nil {
			s.write(replyp(503, "5.5.0", "MAIL already given"))
			break
		}
		m, r := parseMail(cmd.Params)
		if r != nil {
			s.write(r)
			break
		}
		s.mail = m
		s.txSeq++
		s.write(replyp(250, "2.1.0", "OK"))
	case VerbRCPT:
		if s.mail == nil {
			s.write(replyp(503, "5.5.0", "MAIL needed first"))
			break
		}
		if s.cfg.MaxRecipients > 0 && s.rcpts >= s.cfg.MaxRecipients {
			s.write(replyp(451, "4.5.3", "Too many recipients"))
			break
		}
		rc, r := parseRcpt(cmd.Params)
		if r != nil {
			s.write(r)
			break
		}
		s.rcpts++
		rc.Index = s.rcpts
		s.pending = rc
		s.flushOut()
		s.acts = append(s.acts, Action{Kind: ActRcpt, Rcpt: rc})
		s.state = StateRcpt
	case VerbDATA:
		switch {
		case cmd.Params != "":
			s.write(replyp(501, "5.5.4", "Invalid parameters"))
		case s.mail == nil:
			s.write(replyp(503, "5.5.0", "MAIL needed first"))
		case len(s.accepted) == 0:
			// RFC 2033 §4.2: with no accepted recipient DATA fails with 503.
			s.write(replyp(503, "5.5.0", "No valid recipients"))
		default:
			s.out = append(s.out, "354 OK\r\n"...)
			s.bad = 0
			s.flushOut()
			s.acts = append(s.acts, Action{Kind: ActData})
			s.state = StateData
			s.dec.Reset()
		}
	case VerbRSET:
		if cmd.Params != "" {
			s.write(replyp(501, "5.5.4", "Invalid parameters"))
			break
		}
		s.resetTx()
		s.write(replyp(250, "2.0.0", "OK"))
	case VerbNOOP:
		s.write(replyp(250, "2.0.0", "OK"))
	case VerbQUIT:
		if cmd.Params != "" {
			s.write(replyp(501, "5.5.4", "Invalid parameters"))
			break
		}
		s.resetTx()
		s.closeWith(NewReply(221, "2.0.0", "Bye"), "quit")
		return
	case VerbVRFY:
		if cmd.Params == "" {
			s.write(replyp(501, "5.5.4", "Invalid parameters"))
			break
		}
		s.write(replyp(252, "2.3.3", "Try RCPT instead"))
	case VerbSTARTTLS:
		s.write(replyp(502, "5.5.1", "TLS support is not enabled."))
	case VerbXCLIENT:
		s.xclient(cmd.Params)
	case VerbBDAT, VerbAUTH:
		// Not advertised: CHUNKING and AUTH are not offered by Doorman.
		s.write(replyp(502, "5.5.1", "Unsupported command"))
	default:
		s.write(replyp(500, "5.5.1", "Unknown command"))
	}
	s.checkBad()
}

// ResumeRcpt answers the ActRcpt: r is the reply for the client, as the engine composed
// it; a 2xx reply accepts the recipient. The actions returned are new (those of the Feed
// call that asked may still be in use).
func (s *Session) ResumeRcpt(r Reply) []Action {
	if s.state != StateRcpt {
		return nil
	}
	s.acts = nil
	s.state = StateCommand
	if r.Success() {
		s.accepted = append(s.accepted, s.pending)
	}
	s.pending = nil
	s.write(&r)
	s.checkBad()
	s.flushOut()
	return s.acts
}

// feedData decodes message bytes; it returns how many it consumed. Decoded bytes are
// appended to s.body, which Feed empties on entry, so every ActBody of one Feed call
// stays valid until the next.
func (s *Session) feedData(in []byte) int {
	// The decoder holds at most a line ending and a CR: with 3 bytes more room than
	// input it reads all of it (or up to the end of the message).
	if need := len(in) + 3; cap(s.body)-len(s.body) < need {
		nb := make([]byte, 0, max(need, 2*cap(s.body)))
		s.body = nb // bodies handed out before still point to the old array
	}
	start := len(s.body)
	nDst, nSrc, done := s.dec.Decode(s.body[start:cap(s.body)], in)
	s.body = s.body[:start+nDst]
	if nDst > 0 {
		s.acts = append(s.acts, Action{Kind: ActBody, Data: s.body[start : start+nDst : start+nDst]})
	}
	if done {
		s.acts = append(s.acts, Action{Kind: ActDataEnd})
		s.state = StateDataEnd
	}
	return nSrc
}

// FinishData answers the ActDataEnd with one reply per accepted recipient, in RCPT
// order, and ends the transaction.
func (s *Session) FinishData(replies []Reply) []Action {
	if s.state != StateDataEnd {
		return nil
	}
	s.acts = nil
	s.state = StateCommand
	for i := range replies {
		s.out = replies[i].Append(s.out)
	}
	s.bad = 0
	s.mail = nil
	s.accepted = nil
	s.rcpts = 0
	s.flushOut()
	return s.acts
}

// Timeout is the end of an idle connection (lib-smtp's idle timeout reply).
func (s *Session) Timeout() []Action {
	if s.state == StateClosed {
		return nil
	}
	s.acts = nil
	s.resetTx()
	s.terminate("4.4.2", "Disconnected for inactivity", "idle timeout")
	return s.acts
}

// Shutdown is the end of the connection because the server stops.
func (s *Session) Shutdown() []Action {
	if s.state == StateClosed {
		return nil
	}
	s.acts = nil
	s.resetTx()
	s.terminate("4.3.2", "Shutting down", "shutting down")
	return s.acts
}

// isDomainLike reports whether an LHLO argument can stand in a Received header as the
// client's name: a domain or an address literal.
func isDomainLike(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t") {
		return false
	}
	p := &pathParser{s: s}
	if _, ok := p.domain(); ok && p.i == len(s) {
		return true
	}
	p.i = 0
	_, ok := p.addressLiteral()
	return ok && p.i == len(s)
}
