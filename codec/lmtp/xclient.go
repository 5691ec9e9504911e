package lmtp

import (
	"strings"

	"doorman/codec/internal/xclient"
)

// xclientFields is what Dovecot's lib-smtp (smtp_server_reply_ehlo_add_xclient)
// advertises to a trusted client.
const xclientFields = "ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT"

// xclient answers XCLIENT as lib-smtp's smtp_server_cmd_xclient (Dovecot 2.3.21) does.
func (s *Session) xclient(params string) {
	if s.mail != nil {
		s.write(replyp(503, "5.5.0", "XCLIENT not permitted during a mail transaction"))
		return
	}
	if !s.trusted {
		s.write(replyp(550, "5.7.14", "You are not from trusted IP"))
		return
	}
	x, r := parseXClient(params)
	if r != nil {
		s.write(r)
		return
	}
	// Success: the connection's state starts over (smtp_server_connection_reset_state)
	// and the greeting is sent again.
	s.helo = ""
	s.bad = 0
	s.flushOut()
	s.acts = append(s.acts, Action{Kind: ActXCLIENT, XClient: x})
	s.write(&Reply{Code: 220, Lines: []string{s.cfg.Hostname + " " + s.greetingText()}})
}

// ParseXClient reads the parameters of an XCLIENT command (after "XCLIENT "), as
// Dovecot's lib-smtp does; on failure it returns the reply for the client.
func ParseXClient(params string) (*XClient, *Reply) { return parseXClient(params) }

func parseXClient(params string) (*XClient, *Reply) {
	x := &XClient{TTL: -1}
	if params == "" {
		return x, nil
	}
	ps, perr := splitParams(params, "")
	if perr != nil {
		return nil, replyp(perr.code, "5.5.4", perr.text)
	}
	for _, p := range ps {
		v, why := decodeXtext(p.Value)
		if why != "" {
			return nil, replyp(501, "5.5.4", "Invalid "+p.Keyword+" parameter: "+why)
		}
		invalid := replyp(501, "5.5.4", "Invalid "+p.Keyword+" parameter")
		unavailable := strings.EqualFold(v, "[UNAVAILABLE]")
		switch p.Keyword {
		case "ADDR":
			if unavailable {
				continue
			}
			a, ok := parseXClientAddr(v)
			if !ok {
				return nil, invalid
			}
			x.Addr = a
		case "HELO":
			if unavailable {
				continue
			}
			// 2.3.21 keeps a HELO that does not parse out silently.
			if isDomainLike(v) {
				x.Helo = v
			}
		case "LOGIN":
			if unavailable {
				continue
			}
			x.Login = v
		case "PORT":
			if unavailable {
				continue
			}
			n, ok := parseUint(v)
			if !ok || n == 0 || n > 65535 {
				return nil, invalid
			}
			x.Port = int(n)
		case "PROTO":
			switch u := strings.ToUpper(v); u {
			case "SMTP", "ESMTP", "LMTP":
				x.Proto = u
			default:
				return nil, invalid
			}
		case "SESSION":
			if unavailable {
				continue
			}
			x.Session = v
		case "TIMEOUT":
			n, ok := parseUint(v)
			if !ok {
				return nil, invalid
			}
			x.Timeout = int(n)
		case "TTL":
			n, ok := parseUint(v)
			if !ok {
				return nil, invalid
			}
			x.TTL = int(n)
		default:
			// Fields not known (and no xclient extensions configured) are ignored.
		}
	}
	return x, nil
}

// parseXClientAddr reads ADDR's value as lib-smtp does: an optional "IPV6:" that then
// requires an IPv6 address, and net_addr2ip (xclient.ParseAddr: IPv4 as inet_aton reads
// it, IPv6 perhaps in brackets), in xclient.ParseAddr's normal form.
func parseXClientAddr(v string) (string, bool) {
	if len(v) >= 5 && strings.EqualFold(v[:5], "IPV6:") {
		v = v[5:]
		if !strings.Contains(v, ":") {
			return "", false
		}
	}
	return xclient.ParseAddr([]byte(v))
}

// parseUint is Dovecot's str_to_uint: decimal digits only, within 32 bits.
func parseUint(v string) (uint64, bool) {
	return xclient.ParseUint([]byte(v), 1<<32-1)
}
