package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// SinkMessage is one message an SMTPSink accepted.
type SinkMessage struct {
	From string   // MAIL FROM address, without <> and parameters ("" for the null sender)
	To   []string // RCPT TO addresses, without <> and parameters
	Data []byte   // the message as sent after DATA, dot-unstuffed, without the final ".\r\n"
	Helo string   // the EHLO/HELO argument of the session
}

// SMTPSink is a minimal SMTP server on 127.0.0.1 that accepts every message
// and keeps it in memory: the relay of Dovecot's submission service. It
// speaks EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT (no TLS, AUTH,
// BDAT or XCLIENT).
type SMTPSink struct {
	Addr string // "127.0.0.1:NNNN"

	l      net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	msgs   []SinkMessage
	added  chan struct{} // closed and replaced when a message arrives
	conns  map[net.Conn]struct{}
	closed bool
}

// sinkMaxLine bounds a command line and a message line.
const sinkMaxLine = 1 << 20

// StartSMTPSink starts a sink on a free loopback port.
func StartSMTPSink() (*SMTPSink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &SMTPSink{Addr: l.Addr().String(), l: l, added: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *SMTPSink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.session(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// Messages returns copies of the messages received so far, oldest first.
func (s *SMTPSink) Messages() []SinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SinkMessage, len(s.msgs))
	for i, m := range s.msgs {
		out[i] = SinkMessage{From: m.From, To: append([]string(nil), m.To...), Data: bytes.Clone(m.Data), Helo: m.Helo}
	}
	return out
}

// WaitMessages waits until at least n messages were received (or timeout
// expires) and returns them all.
func (s *SMTPSink) WaitMessages(n int, timeout time.Duration) ([]SinkMessage, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		got, added := len(s.msgs), s.added
		s.mu.Unlock()
		if got >= n {
			return s.Messages(), nil
		}
		select {
		case <-added:
		case <-timer.C:
			return s.Messages(), fmt.Errorf("testenv: SMTP sink %s has %d messages after %v, want %d", s.Addr, got, timeout, n)
		}
	}
}

// Reset forgets the messages received so far.
func (s *SMTPSink) Reset() {
	s.mu.Lock()
	s.msgs = nil
	s.mu.Unlock()
}

// Close stops accepting, closes the open sessions and waits for their
// goroutines. It is safe to call twice.
func (s *SMTPSink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.l.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *SMTPSink) add(m SinkMessage) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	close(s.added)
	s.added = make(chan struct{})
	s.mu.Unlock()
}

// session runs one SMTP session.
func (s *SMTPSink) session(c net.Conn) {
	r := bufio.NewReaderSize(c, 4096)
	w := bufio.NewWriter(c)
	reply := func(lines ...string) bool {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		// flush only when the client waits for us (PIPELINING)
		if r.Buffered() > 0 {
			return true
		}
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		return w.Flush() == nil
	}
	readLine := func() ([]byte, error) {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		var line []byte
		for {
			chunk, err := r.ReadSlice('\n')
			line = append(line, chunk...)
			if len(line) > sinkMaxLine {
				return nil, errors.New("line too long")
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			return line, err
		}
	}
	var helo string
	var tx *SinkMessage
	if !reply("220 doorman-testenv-sink ESMTP ready") {
		return
	}
	for {
		raw, err := readLine()
		if err != nil {
			return
		}
		line := strings.TrimRight(string(raw), "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		arg = strings.TrimSpace(arg)
		ok := true
		switch strings.ToUpper(verb) {
		case "EHLO":
			helo, tx = arg, nil
			ok = reply("250-doorman-testenv-sink", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250 SMTPUTF8")
		case "HELO":
			helo, tx = arg, nil
			ok = reply("250 doorman-testenv-sink")
		case "MAIL":
			addr, good := smtpPath(arg, "FROM:")
			switch {
			case tx != nil:
				ok = reply("503 5.5.1 Nested MAIL command")
			case !good:
				ok = reply("501 5.5.4 Syntax: MAIL FROM:<address>")
			default:
				tx = &SinkMessage{From: addr, Helo: helo}
				ok = reply("250 2.1.0 Ok")
			}
		case "RCPT":
			addr, good := smtpPath(arg, "TO:")
			switch {
			case tx == nil:
				ok = reply("503 5.5.1 MAIL first")
			case !good || addr == "":
				ok = reply("501 5.5.4 Syntax: RCPT TO:<address>")
			default:
				tx.To = append(tx.To, addr)
				ok = reply("250 2.1.5 Ok")
			}
		case "DATA":
			if tx == nil || len(tx.To) == 0 {
				ok = reply("503 5.5.1 RCPT first")
				break
			}
			if !reply("354 End data with <CR><LF>.<CR><LF>") {
				return
			}
			var data []byte
			for {
				l, err := readLine()
				if err != nil {
					return
				}
				if string(l) == ".\r\n" || string(l) == ".\n" {
					break
				}
				if l[0] == '.' {
					l = l[1:]
				}
				data = append(data, l...)
			}
			tx.Data = data
			s.add(*tx)
			tx = nil
			ok = reply("250 2.0.0 Ok: queued")
		case "RSET":
			tx = nil
			ok = reply("250 2.0.0 Ok")
		case "NOOP":
			ok = reply("250 2.0.0 Ok")
		case "VRFY":
			ok = reply("252 2.5.0 Cannot VRFY user")
		case "QUIT":
			reply("221 2.0.0 Bye")
			w.Flush()
			return
		default:
			ok = reply("502 5.5.2 Command not recognized")
		}
		if !ok {
			return
		}
	}
}

// smtpPath parses `FROM:<addr> PARAMS` (prefix "FROM:" or "TO:",
// case-insensitive, spaces after the colon tolerated).
func smtpPath(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if strings.HasPrefix(rest, "<") {
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return "", false
		}
		return rest[1:end], true
	}
	addr, _, _ := strings.Cut(rest, " ")
	return addr, addr != ""
}
