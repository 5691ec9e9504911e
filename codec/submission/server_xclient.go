package submission

import (
	"bytes"
	"strconv"

	"doorman/codec/internal/xclient"
)

// XCLIENT from a trusted client (login_trusted_networks): a proxy in front of Doorman
// says who the real client is. This is lib-smtp's smtp_server_cmd_xclient with
// submission-login's client_connection_cmd_xclient (Dovecot 2.3.21): each
// name=xtext parameter is parsed and checked in turn, the first bad one answers 501 and
// nothing is taken; otherwise the session is reset and greeted again ("220 <hostname>
// <greeting>"), and the client must EHLO again.
//
// What Dovecot takes from it goes to the engine as one ActID, in IMAP ID's key names:
//
//	ADDR    x-originating-ip (an "IPV6:" prefix and [] brackets stripped; in
//	        xclient.ParseAddr's form: IPv4 as a dotted quad, IPv6 as netip writes it)
//	PORT    x-originating-port
//	SESSION x-session-id
//	TTL     x-proxy-ttl
//	FORWARD x-forward-<key> for each key=value of the base64, tab-escaped list
//
// HELO, when it is a valid domain or address literal, replaces the client's EHLO domain
// (Credentials.Tag), as Dovecot's smtp_server_connection_set_proxy_data does. LOGIN,
// PROTO and TIMEOUT are checked as Dovecot checks them and otherwise ignored: submission-
// login makes no use of them (2.3.21 never even applies TIMEOUT). Other names are
// ignored. "[UNAVAILABLE]" leaves ADDR, PORT, HELO, LOGIN and SESSION as they were.
// Without any of the reported fields no ActID is emitted.
//
// Where the codec differs: when FORWARD isn't valid base64, Dovecot answers 501 but has
// already applied the other fields (and then trips over its second reply); the codec
// answers 501 and applies nothing. A second FORWARD replaces the first one's fields
// (2.3.21 empties them instead). A forwarded pair without "=" or with an empty key is
// dropped (Dovecot's auth would not make it a forward_ field either).

// XCLIENT's EHLO keyword for trusted clients: smtp_server_reply_ehlo_add_xclient's base
// fields and submission-login's xclient_extensions (FORWARD). It comes last, after
// PIPELINING.
const ehloXCLIENT = "250 XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT FORWARD\r\n"

// src/lib-smtp/smtp-server-cmd-xclient.c and src/submission-login/client.c.
const (
	codeXCLIENTInvalid       = "501 5.5.4 "
	txtXCLIENTInvalidParam   = "Invalid parameter: "
	txtParamEmpty            = "Parameter is empty"                        // smtp-params.c
	txtParamKeyword          = "Unexpected character in parameter keyword" // smtp-params.c
	txtParamValue            = "Unexpected character in parameter value"   // smtp-params.c
	txtXtextHex              = "Invalid hexchar after '+' in xtext"        // smtp-parser.c
	txtXtextNUL              = "Encountered NUL character in xtext"        // smtp-syntax.c
	txtUnavailable           = "[UNAVAILABLE]"                             // XCLIENT's "no value"
	txtXCLIENTInvalidFORWARD = "Invalid FORWARD parameter"                 // submission-login client.c
)

// xclient runs XCLIENT for a trusted client.
func (s *Session) xclient(params []byte) {
	x := xclientData{}
	// t_strsplit(params, " "): no parameters at all is no error, two spaces in a row
	// make an empty one.
	for rest, more := params, len(params) > 0; more; {
		var param []byte
		param, rest, more = bytes.Cut(rest, []byte{' '})
		if !s.xclientParam(&x, param) {
			return
		}
	}
	// submission-login's callback decodes FORWARD once every parameter is through.
	if x.hasForward {
		fw, scratch, ok := xclient.DecodeForward(x.forward[:0], s.scratch[:0], x.forwardRaw)
		s.scratch = scratch
		if !ok {
			s.xclientError(txtXCLIENTInvalidFORWARD, "")
			return
		}
		x.forward = fw
	}
	if x.helo != nil {
		s.helo = append(s.helo[:0], x.helo...)
	}
	var ps []IDParam
	if x.ip != "" {
		ps = append(ps, IDParam{Key: "x-originating-ip", Value: x.ip})
	}
	if x.port != "" {
		ps = append(ps, IDParam{Key: "x-originating-port", Value: x.port})
	}
	if x.hasSession {
		ps = append(ps, IDParam{Key: "x-session-id", Value: x.session})
	}
	if x.ttl != "" {
		ps = append(ps, IDParam{Key: "x-proxy-ttl", Value: x.ttl})
	}
	ps = append(ps, x.forward...)
	if len(ps) > 0 {
		s.out.Emit(Action{Kind: ActID, IDParams: ps})
	}
	// smtp_server_connection_reset_state, then cmd_xclient_recheck's greeting.
	s.bad = 0
	s.out.B = append(s.out.B, s.greeting...)
}

// xclientData is what one XCLIENT command carries, until all of it has been checked.
type xclientData struct {
	ip, port, ttl string
	session       string
	hasSession    bool
	helo          []byte
	forwardRaw    []byte
	hasForward    bool
	forward       []IDParam
}

// xclientParam takes one parameter; on error it answers and returns false.
func (s *Session) xclientParam(x *xclientData, param []byte) bool {
	// smtp_param_parse
	if len(param) == 0 {
		s.xclientError(txtXCLIENTInvalidParam, txtParamEmpty)
		return false
	}
	if !srvIsAlnum(param[0]) {
		s.xclientError(txtXCLIENTInvalidParam, txtParamKeyword)
		return false
	}
	k := 1
	for k < len(param) && (srvIsAlnum(param[k]) || param[k] == '-') {
		k++
	}
	keyword, raw := param[:k], []byte(nil)
	if k < len(param) {
		if param[k] != '=' {
			s.xclientError(txtXCLIENTInvalidParam, txtParamKeyword)
			return false
		}
		raw = param[k+1:]
		for _, c := range raw {
			if c < 33 || c > 126 || c == '=' {
				s.xclientError(txtXCLIENTInvalidParam, txtParamValue)
				return false
			}
		}
	}
	// smtp_xtext_parse
	value, errText := xtextDecode(s.scratch[:0], raw)
	s.scratch = value[:0]
	if errText != "" {
		s.xclientKeywordError(keyword, errText)
		return false
	}
	unavailable := bytes.EqualFold(value, []byte(txtUnavailable))
	switch {
	case kwIs(keyword, "ADDR"):
		if unavailable {
			return true
		}
		ip, ok := xclientAddr(value)
		if !ok {
			s.xclientKeywordError(keyword, "")
			return false
		}
		x.ip = ip
	case kwIs(keyword, "HELO"):
		if unavailable {
			return true
		}
		if d, ok := srvHeloDomain(value, true); ok {
			x.helo = append(x.helo[:0], d...)
		}
	case kwIs(keyword, "LOGIN"):
		// Kept by lib-smtp as the connection's user name, which submission-login
		// doesn't use.
	case kwIs(keyword, "PORT"):
		if unavailable {
			return true
		}
		n, ok := xclient.ParseUint(value, 65535)
		if !ok || n == 0 {
			s.xclientKeywordError(keyword, "")
			return false
		}
		x.port = strconv.FormatUint(n, 10)
	case kwIs(keyword, "PROTO"):
		if !kwIs(value, "SMTP") && !kwIs(value, "ESMTP") && !kwIs(value, "LMTP") {
			s.xclientKeywordError(keyword, "")
			return false
		}
	case kwIs(keyword, "SESSION"):
		if unavailable {
			return true
		}
		x.session, x.hasSession = string(value), true
	case kwIs(keyword, "TIMEOUT"):
		if _, ok := xclient.ParseUint(value, 1<<32-1); !ok {
			s.xclientKeywordError(keyword, "")
			return false
		}
	case kwIs(keyword, "TTL"):
		n, ok := xclient.ParseUint(value, 1<<32-1)
		if !ok {
			s.xclientKeywordError(keyword, "")
			return false
		}
		// Dovecot keeps TTL+1 in an unsigned int, 0 meaning none: the largest TTL
		// wraps round to none.
		if n == 1<<32-1 {
			x.ttl = ""
		} else {
			x.ttl = strconv.FormatUint(n, 10)
		}
	case kwIs(keyword, "FORWARD"):
		x.forwardRaw, x.hasForward = append(x.forwardRaw[:0], value...), true
	}
	return true
}

// kwIs reports whether b is w, ignoring the case of ASCII letters (w is upper case).
func kwIs(b []byte, w string) bool {
	if len(b) != len(w) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != w[i] {
			return false
		}
	}
	return true
}

// xclientError answers "501 5.5.4 <text><detail>".
func (s *Session) xclientError(text, detail string) {
	if s.countBad(codeXCLIENTInvalid) {
		return
	}
	s.out.B = append(s.out.B, codeXCLIENTInvalid...)
	s.out.B = append(s.out.B, text...)
	s.out.B = append(s.out.B, detail...)
	s.out.B = append(s.out.B, "\r\n"...)
}

// xclientKeywordError answers "501 5.5.4 Invalid <KEYWORD> parameter[: <detail>]".
func (s *Session) xclientKeywordError(keyword []byte, detail string) {
	if s.countBad(codeXCLIENTInvalid) {
		return
	}
	s.out.B = append(s.out.B, codeXCLIENTInvalid+"Invalid "...)
	for _, c := range keyword {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		s.out.B = append(s.out.B, c)
	}
	s.out.B = append(s.out.B, " parameter"...)
	if detail != "" {
		s.out.B = append(s.out.B, ": "...)
		s.out.B = append(s.out.B, detail...)
	}
	s.out.B = append(s.out.B, "\r\n"...)
}

// xtextDecode appends xtext src decoded (RFC 3461: "+" and two upper-case hex digits for
// a byte) to dst, as smtp_xtext_decode does, or returns its complaint. src holds only
// the bytes an esmtp-value may.
func xtextDecode(dst, src []byte) ([]byte, string) {
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c != '+' {
			dst = append(dst, c)
			continue
		}
		if i+2 >= len(src) {
			return dst, txtXtextHex
		}
		h, l := xtextHex(src[i+1]), xtextHex(src[i+2])
		if h < 0 || l < 0 {
			return dst, txtXtextHex
		}
		b := byte(h<<4 | l)
		if b == 0 {
			return dst, txtXtextNUL
		}
		dst = append(dst, b)
		i += 2
	}
	return dst, ""
}

func xtextHex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// xclientAddr reads ADDR's value as lib-smtp does: an optional "IPV6:" that then
// requires an IPv6 address, and net_addr2ip (xclient.ParseAddr). It returns the address
// for x-originating-ip.
func xclientAddr(v []byte) (string, bool) {
	if len(v) >= 5 && kwIs(v[:5], "IPV6:") {
		v = v[5:]
		if bytes.IndexByte(v, ':') < 0 {
			return "", false
		}
	}
	return xclient.ParseAddr(v)
}
