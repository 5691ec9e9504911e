package testenv

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"
)

// protocolConfig writes the settings and services of the protocols other
// than IMAP.
func (d *Dovecot) protocolConfig(p func(string, ...any), opts DovecotOptions, ports map[string]int) {
	listener := func(name string, port int) {
		p("  inet_listener %s {", name)
		p("    address = %s", d.listenIP)
		p("    port = %d", port)
		p("  }")
	}
	sslListener := func(name string, port int) {
		p("  inet_listener %s {", name)
		p("    address = %s", d.listenIP)
		p("    port = %d", port)
		p("    ssl = yes")
		p("  }")
	}
	// login services as imap-login: one process serves many clients
	login := func() {
		p("  service_count = 0")
		p("  process_min_avail = 1")
		p("  client_limit = 9000")
	}
	if d.has("pop3") {
		p("")
		p("service pop3-login {")
		listener("pop3", ports["pop3"])
		if ports["pop3s"] != 0 {
			sslListener("pop3s", ports["pop3s"])
		} else {
			p("  inet_listener pop3s {")
			p("    port = 0")
			p("  }")
		}
		login()
		p("}")
		p("service pop3 {")
		p("  process_limit = 12000")
		p("}")
	}
	if d.has("submission") {
		p("")
		p("submission_relay_host = 127.0.0.1")
		_, sinkPort, _ := net.SplitHostPort(d.Sink.Addr)
		p("submission_relay_port = %s", sinkPort)
		p("submission_relay_trusted = yes")
		p("submission_relay_ssl = no")
		p("service submission-login {")
		listener("submission", ports["submission"])
		if ports["submissions"] != 0 {
			sslListener("submissions", ports["submissions"])
		}
		login()
		p("}")
		p("service submission {")
		p("  process_limit = 12000")
		p("}")
	}
	if d.has("lmtp") {
		format := opts.LMTPUsernameFormat
		if format == "" {
			format = "%Ln"
		}
		p("")
		p("postmaster_address = postmaster@example.org")
		p("service lmtp {")
		listener("lmtp", ports["lmtp"])
		p("}")
		p("protocol lmtp {")
		p("  auth_username_format = %s", format)
		p("  lmtp_save_to_detail_mailbox = no")
		if sievePlugin() {
			p("  mail_plugins = $mail_plugins sieve")
		}
		p("}")
	}
	if d.has("sieve") {
		p("")
		p("service managesieve-login {")
		listener("sieve", ports["sieve"])
		login()
		p("}")
		p("service managesieve {")
		p("  process_limit = 12000")
		p("}")
	}
	if d.has("sieve") || (d.has("lmtp") && sievePlugin()) {
		// per-user scripts in the home (DIR/mail/DOMAIN/USER); the active
		// one is a symlink ~/.dovecot.sieve
		p("plugin {")
		p("  sieve = file:~/sieve;active=~/.dovecot.sieve")
		p("}")
	}
}

// greetProtocol connects to addr and expects protocol p's greeting; p may
// also name an implicit-TLS listener ("imaps", see tlsListener).
func greetProtocol(p, addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	for plain, l := range tlsListener {
		if p == l {
			// Only whether it is up and its certificate loads: the
			// tests check the chain against their CA themselves.
			c = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			p = plain
			break
		}
	}
	if p == "imap" {
		return greetIMAP(c)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	var want, bye string
	switch p {
	case "pop3":
		want, bye = "+OK", "QUIT\r\n"
	case "submission", "lmtp":
		want, bye = "220 ", "QUIT\r\n"
	case "sieve":
		// capability lines, then OK
		for n := 0; n < 50 && strings.HasPrefix(line, `"`); n++ {
			if line, err = r.ReadString('\n'); err != nil {
				return err
			}
		}
		want, bye = "OK", "LOGOUT\r\n"
	default:
		return fmt.Errorf("unknown protocol %q", p)
	}
	if !strings.HasPrefix(line, want) {
		return fmt.Errorf("unexpected %s greeting %q", p, line)
	}
	c.Write([]byte(bye))
	return nil
}
