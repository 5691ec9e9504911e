package lmtp

import (
	"strings"
	"unicode/utf8"
)

// Verb is a command name, as far as this proxy knows it.
type Verb uint8

const (
	VerbUnknown Verb = iota
	VerbLHLO
	VerbMAIL
	VerbRCPT
	VerbDATA
	VerbBDAT
	VerbRSET
	VerbNOOP
	VerbQUIT
	VerbVRFY
	VerbXCLIENT
	VerbSTARTTLS
	VerbAUTH
)

var verbs = map[string]Verb{
	"LHLO": VerbLHLO, "MAIL": VerbMAIL, "RCPT": VerbRCPT, "DATA": VerbDATA, "BDAT": VerbBDAT,
	"RSET": VerbRSET, "NOOP": VerbNOOP, "QUIT": VerbQUIT, "VRFY": VerbVRFY,
	"XCLIENT": VerbXCLIENT, "STARTTLS": VerbSTARTTLS, "AUTH": VerbAUTH,
}

// maxVerb is SMTP_COMMAND_PARSER_MAX_COMMAND_LENGTH.
const maxVerb = 32

// Command is one client command line, split (lib-smtp smtp-command-parser): the verb,
// letters only, and the parameters with trailing white space removed.
type Command struct {
	Verb   Verb
	Name   string // the verb as sent
	Params string
}

// lineError is what a command line that cannot be a command gets.
type lineError uint8

const (
	lineOK lineError = iota
	lineSyntax
	lineTooLong
)

// classify checks a command line (without its line ending; complete or, when it is
// already too long to be valid, the first part of it) and splits it. Only the first
// maxParams+maxVerb+1 bytes decide, so a line fed whole or in pieces gets the same answer.
func classify(line []byte, maxParams int) (Command, lineError) {
	i := 0
	for i < len(line) && isAlpha(line[i]) {
		i++
	}
	if i > maxVerb {
		return Command{}, lineSyntax
	}
	cmd := Command{Name: string(line[:i])}
	cmd.Verb = verbs[strings.ToUpper(cmd.Name)]
	if i == len(line) {
		return cmd, lineOK
	}
	if line[i] != ' ' {
		return cmd, lineSyntax
	}
	params := line[i+1:]
	n := 0
	for n < len(params) && n <= maxParams {
		c := params[n]
		if c < 0x20 && c != '\t' || c == 0x7f {
			return cmd, lineSyntax
		}
		n++
	}
	if n > maxParams {
		return cmd, lineTooLong
	}
	// Tolerate trailing white space (RFC 5321 §4.1.1), but not a second space after
	// the verb.
	end := len(params)
	for end > 0 && (params[end-1] == ' ' || params[end-1] == '\t') {
		end--
	}
	params = params[:end]
	if len(params) > 0 && params[0] == ' ' {
		return cmd, lineSyntax
	}
	if !utf8.Valid(params) {
		return cmd, lineSyntax
	}
	cmd.Params = string(params)
	return cmd, lineOK
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// Param is one ESMTP parameter, KEYWORD[=value].
type Param struct {
	Keyword string // upper case
	Value   string
}

// Mail is a MAIL command's reverse path and parameters.
type Mail struct {
	From Address
	// Body is the BODY= value ("7BIT" or "8BITMIME"), "" when not given.
	Body string
}

// AppendParams appends the parameters as they go to a backend, each with a leading space.
func (m *Mail) AppendParams(dst []byte) []byte {
	if m.Body != "" {
		dst = append(dst, " BODY="...)
		dst = append(dst, m.Body...)
	}
	return dst
}

// Rcpt is one recipient of the transaction.
type Rcpt struct {
	// Index counts the RCPT commands of the transaction that reached the engine, from 1
	// (Dovecot's per-recipient session id suffix ":R<n>").
	Index int
	To    Address
	// OrcptType and Orcpt are the ORCPT= parameter (RFC 3461): address type and the
	// decoded address; both "" when not given.
	OrcptType, Orcpt string
}

// AppendParams appends the recipient's own parameters as they go to a backend.
func (r *Rcpt) AppendParams(dst []byte) []byte {
	if r.OrcptType != "" {
		dst = appendOrcpt(dst, r.OrcptType, r.Orcpt)
	}
	return dst
}

func appendOrcpt(dst []byte, typ, addr string) []byte {
	dst = append(dst, " ORCPT="...)
	dst = append(dst, typ...)
	dst = append(dst, ';')
	return AppendXtext(dst, addr)
}

// paramError is a parameter that cannot be accepted: 501 for bad syntax, 555 for
// something not supported.
type paramError struct {
	code int
	text string
}

// splitParams splits "A=1 B" into parameters (lib-smtp smtp_param_parse), keywords upper
// case. what is "MAIL" or "RCPT" for the error text.
func splitParams(s, what string) ([]Param, *paramError) {
	if s == "" {
		return nil, nil
	}
	var out []Param
	for _, p := range strings.Split(s, " ") {
		bad := func(why string) *paramError {
			if what == "" {
				return &paramError{501, "Invalid parameter: " + why}
			}
			return &paramError{501, "Invalid " + what + " parameter: " + why}
		}
		if p == "" {
			return nil, bad("Parameter is empty")
		}
		kw, val, hasVal := strings.Cut(p, "=")
		if kw == "" || !isAlnum(kw[0]) {
			return nil, bad("Unexpected character in parameter keyword")
		}
		for i := 1; i < len(kw); i++ {
			if !isAlnum(kw[i]) && kw[i] != '-' {
				return nil, bad("Unexpected character in parameter keyword")
			}
		}
		if hasVal {
			if val == "" {
				return nil, bad("Unexpected character in parameter value")
			}
			for i := 0; i < len(val); i++ {
				if c := val[i]; c < 33 || c > 126 || c == '=' {
					return nil, bad("Unexpected character in parameter value")
				}
			}
		}
		out = append(out, Param{Keyword: strings.ToUpper(kw), Value: val})
	}
	return out, nil
}

// parseMail reads the parameters of "MAIL FROM:<path> [params]" (after "MAIL ").
func parseMail(params string) (*Mail, *Reply) {
	rest, ok := cutPrefixFold(params, "FROM:")
	if !ok {
		return nil, replyp(501, "5.5.4", "Invalid parameters")
	}
	if rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
		return nil, replyp(501, "5.5.4", "Invalid FROM: Unexpected whitespace before path")
	}
	from, rest, why := parsePath(rest, true)
	if why != "" {
		return nil, replyp(501, "5.5.4", "Invalid FROM: "+why)
	}
	if rest != "" {
		if rest[0] != ' ' {
			return nil, replyp(501, "5.5.4", "Invalid FROM: Invalid character in path")
		}
		rest = rest[1:]
	}
	ps, perr := splitParams(rest, "MAIL")
	if perr != nil {
		return nil, replyp(perr.code, "5.5.4", perr.text)
	}
	m := &Mail{From: from}
	for _, p := range ps {
		switch p.Keyword {
		case "BODY":
			if m.Body != "" {
				return nil, replyp(501, "5.5.4", "Duplicate BODY= parameter")
			}
			switch v := strings.ToUpper(p.Value); v {
			case "":
				return nil, replyp(501, "5.5.4", "Missing BODY= parameter value")
			case "7BIT", "8BITMIME":
				m.Body = v
			default:
				return nil, replyp(555, "5.5.4", "Unsupported mail BODY type")
			}
		default:
			// RFC 5321 §4.1.1.11: parameters not recognised get 555.
			return nil, replyp(555, "5.5.4", "Unsupported parameters")
		}
	}
	return m, nil
}

// parseRcpt reads the parameters of "RCPT TO:<path> [params]" (after "RCPT ").
func parseRcpt(params string) (*Rcpt, *Reply) {
	rest, ok := cutPrefixFold(params, "TO:")
	if !ok {
		return nil, replyp(501, "5.5.4", "Invalid parameters")
	}
	if rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
		return nil, replyp(501, "5.5.4", "Invalid TO: Unexpected whitespace before path")
	}
	to, rest, why := parsePath(rest, false)
	if why != "" {
		return nil, replyp(501, "5.5.4", "Invalid TO: "+why)
	}
	if to.IsNull() { // <"">: Dovecot's lmtp refuses it after parsing
		return nil, replyp(550, "5.1.1", "<> Unacceptable TO: Empty path not allowed")
	}
	if rest != "" {
		if rest[0] != ' ' {
			return nil, replyp(501, "5.5.4", "Invalid TO: Invalid character in path")
		}
		rest = rest[1:]
	}
	ps, perr := splitParams(rest, "RCPT")
	if perr != nil {
		return nil, replyp(perr.code, "5.5.4", perr.text)
	}
	r := &Rcpt{To: to}
	for _, p := range ps {
		switch p.Keyword {
		case "ORCPT":
			if r.OrcptType != "" {
				return nil, replyp(501, "5.5.4", "Duplicate ORCPT= parameter")
			}
			if p.Value == "" {
				return nil, replyp(501, "5.5.4", "Missing ORCPT= parameter value")
			}
			typ, addr, why := parseOrcpt(p.Value)
			if why != "" {
				return nil, replyp(501, "5.5.4", why)
			}
			r.OrcptType, r.Orcpt = typ, addr
		default:
			return nil, replyp(555, "5.5.4", "Unsupported parameters")
		}
	}
	return r, nil
}

// parseOrcpt reads addr-type ";" xtext (RFC 3461 §4.2) with Dovecot's error texts.
func parseOrcpt(v string) (typ, addr, why string) {
	i := 0
	for i < len(v) && isAtext(v[i]) {
		i++
	}
	if i == 0 || i >= len(v) || v[i] != ';' {
		return "", "", "Invalid addr-type for ORCPT= parameter"
	}
	typ = v[:i]
	raw := v[i+1:]
	if raw == "" {
		return "", "", "Invalid ORCPT= parameter: Empty address value"
	}
	addr, reason := decodeXtext(raw)
	if reason != "" {
		return "", "", "Invalid ORCPT= parameter: " + reason
	}
	for j := 0; j < len(addr); j++ {
		if c := addr[j]; (c < 0x20 && c != '\t') || c > 0x7e {
			return "", "", "Invalid ORCPT= address value: Contains non-printable characters"
		}
	}
	return typ, addr, ""
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func replyp(code int, enh, text string) *Reply {
	r := NewReply(code, enh, text)
	return &r
}
