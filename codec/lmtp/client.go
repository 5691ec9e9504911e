package lmtp

import "strconv"

// The client side: what Doorman sends a backend (Dovecot's lib-smtp client, as driven
// by src/lmtp/lmtp-proxy.c).

// XClient is who the real client is, for the XCLIENT commands sent to a backend that
// advertises XCLIENT (Postfix's XCLIENT_README, Dovecot's smtp_client_connection_
// send_xclient). Empty strings and zero numbers are left out; TTL < 0 is left out.
type XClient struct {
	Helo    string // the client's LHLO domain
	Proto   string // "LMTP", "SMTP" or "ESMTP"
	Login   string
	Session string
	TTL     int
	Timeout int // seconds
	Port    int
	Addr    string // no "IPV6:" prefix: Dovecot leaves it out towards LMTP backends
}

// xclientLineLimit is SMTP_BASE_LINE_LENGTH_LIMIT (512 - 2): longer XCLIENT commands are
// split, as Postfix asks.
const xclientLineLimit = 510

// Commands returns the XCLIENT command lines (CRLF included) for a backend that accepts
// the attributes in advertised: Dovecot's order HELO, PROTO, LOGIN, SESSION, TTL,
// TIMEOUT, PORT, ADDR, each value xtext-encoded, only the attributes advertised, and a
// new command whenever the line would pass 510 bytes. nil when there is nothing to send.
func (x *XClient) Commands(c *Capabilities) [][]byte {
	type field struct{ name, value string }
	var fields []field
	add := func(name, value string) {
		if value != "" && c.xclientHas(name) {
			fields = append(fields, field{name, value})
		}
	}
	add("HELO", x.Helo)
	add("PROTO", x.Proto)
	add("LOGIN", x.Login)
	add("SESSION", x.Session)
	if x.TTL >= 0 {
		add("TTL", strconv.Itoa(x.TTL))
	}
	if x.Timeout > 0 {
		add("TIMEOUT", strconv.Itoa(x.Timeout))
	}
	if x.Port > 0 {
		add("PORT", strconv.Itoa(x.Port))
	}
	add("ADDR", x.Addr)

	var out [][]byte
	line := []byte("XCLIENT")
	for _, f := range fields {
		prev := len(line)
		line = append(line, ' ')
		line = append(line, f.name...)
		line = append(line, '=')
		line = AppendXtext(line, f.value)
		if prev == len("XCLIENT") || len(line) <= xclientLineLimit {
			continue
		}
		// Send what came before, start the next command with this field.
		next := append([]byte("XCLIENT"), line[prev:]...)
		out = append(out, append(line[:prev:prev], '\r', '\n'))
		line = next
	}
	if len(line) > len("XCLIENT") {
		out = append(out, append(line, '\r', '\n'))
	}
	return out
}

// AppendMailFrom appends "MAIL FROM:<from>[ params]\r\n".
func AppendMailFrom(dst []byte, m *Mail) []byte {
	dst = append(dst, "MAIL FROM:<"...)
	dst = m.From.Append(dst)
	dst = append(dst, '>')
	dst = m.AppendParams(dst)
	return append(dst, '\r', '\n')
}

// RcptOut is a RCPT TO as it goes to a backend.
type RcptOut struct {
	To Address // the address at the backend: the client's, or rewritten by destuser
	// Rcpt is the client's recipient, for its own parameters (ORCPT).
	Rcpt *Rcpt
	// AddOrcpt adds ORCPT=rfc822;<client's address> when the address was rewritten and
	// the client gave no ORCPT.
	AddOrcpt bool
	// Forward is the XRCPTFORWARD= value before xtext encoding (tab-separated,
	// tab-escaped key=value pairs); "" for none.
	Forward string
}

// AppendRcptTo appends "RCPT TO:<addr>[ ORCPT=...][ XRCPTFORWARD=...]\r\n".
func AppendRcptTo(dst []byte, r *RcptOut) []byte {
	dst = append(dst, "RCPT TO:<"...)
	dst = r.To.Append(dst)
	dst = append(dst, '>')
	if r.Rcpt.OrcptType != "" {
		dst = r.Rcpt.AppendParams(dst)
	} else if r.AddOrcpt {
		dst = appendOrcpt(dst, "rfc822", r.Rcpt.To.String())
	}
	if r.Forward != "" {
		dst = append(dst, " XRCPTFORWARD="...)
		dst = AppendXtext(dst, r.Forward)
	}
	return append(dst, '\r', '\n')
}

// Trace is what a Received: header says (lib-smtp smtp_server_transaction_write_trace_record).
type Trace struct {
	Helo     string // the client's LHLO argument; "unknown" is written unless it is a domain
	RemoteIP string
	Hostname string
	Proto    string // "LMTP"
	ID       string // the transaction id
	MailFrom Address
	// For is the recipient when the transaction has exactly one, else "".
	For  string
	Date string // RFC 5322 date, e.g. "Mon, 02 Jan 2006 15:04:05 -0700"
}

// AppendReceived appends the Received: header Dovecot's LMTP adds, CRLF included:
//
//	Received: from <helo> ([<ip>])
//		by <hostname> with LMTP
//		id <id>
//		(envelope-from <from>)
//		for <rcpt>; <date>
func AppendReceived(dst []byte, t *Trace) []byte {
	dst = append(dst, "Received: from "...)
	if isDomainLike(t.Helo) {
		dst = append(dst, t.Helo...)
	} else {
		dst = append(dst, "unknown"...)
	}
	if t.RemoteIP != "" {
		dst = append(dst, " (["...)
		dst = append(dst, t.RemoteIP...)
		dst = append(dst, "])"...)
	}
	dst = append(dst, "\r\n\tby "...)
	dst = append(dst, t.Hostname...)
	dst = append(dst, " with "...)
	dst = append(dst, t.Proto...)
	dst = append(dst, "\r\n\tid "...)
	dst = append(dst, t.ID...)
	dst = append(dst, "\r\n\t(envelope-from <"...)
	dst = t.MailFrom.Append(dst)
	dst = append(dst, ">)"...)
	if t.For != "" {
		dst = append(dst, "\r\n\tfor <"...)
		dst = append(dst, t.For...)
		dst = append(dst, '>')
	}
	dst = append(dst, "; "...)
	dst = append(dst, t.Date...)
	return append(dst, '\r', '\n')
}
