package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"doorman/bench/internal/loadutil"
)

// POP3 and Submission modes (-proto pop3, -proto submission): the same interleaved rounds
// as IMAP's, one large message each way.
//
//   - pop3: the message is put in the user's INBOX through the backend's IMAP (-imap ADDR;
//     the INBOX is emptied first), then every round logs in on each path (USER, PASS; STAT
//     must show the one message) and times `RETR 1` to the final ".", checking the bytes.
//   - submission: every round logs in on each path (EHLO, AUTH PLAIN) and times MAIL FROM,
//     RCPT TO (the user's own address), DATA and the message, to the 250 after it.
//
// Every round uses new sessions on both paths; the proxy's CPU is read around the timed
// part only, as in IMAP mode.

// otherOp is one timed transfer on a logged-in session.
type otherOp func(s *textSession) (time.Duration, error)

func otherMode(proto, direct, proxy, imapAddr, user, pass string, size, rounds, warmup int, pid []int, timeout time.Duration) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "fetchbench: "+format+"\n", a...)
		return 1
	}
	var op otherOp
	opName := "RETR"
	msg := message(size)
	switch proto {
	case "pop3":
		if imapAddr == "" {
			fmt.Fprintln(os.Stderr, "fetchbench: -proto pop3 needs -imap (the backend's IMAP address, to put the message in the INBOX)")
			return 2
		}
		c, err := dial(imapAddr, user, pass, timeout, nil)
		if err != nil {
			return fail("IMAP login: %v", err)
		}
		err = c.prepare("INBOX", size)
		c.logout()
		if err != nil {
			return fail("preparing the INBOX: %v", err)
		}
		fmt.Printf("appended one message of %d bytes to the INBOX of %s (emptied first)\n", size, user)
		op = func(s *textSession) (time.Duration, error) { return s.retr(size) }
	case "submission":
		opName = "DATA"
		addr := user
		if !strings.Contains(addr, "@") {
			addr += "@bench.invalid"
		}
		op = func(s *textSession) (time.Duration, error) { return s.submit(addr, msg) }
	}
	once := func(addr string) (time.Duration, error) {
		s, err := dialText(proto, addr, user, pass, timeout)
		if err != nil {
			return 0, err
		}
		defer s.quit()
		return op(s)
	}
	for range warmup {
		for _, a := range []string{direct, proxy} {
			if _, err := once(a); err != nil {
				return fail("warm-up %s on %s: %v", opName, a, err)
			}
		}
	}
	cpuOK := len(pid) > 0
	var ds, ps, ratios []float64
	var totTicks, totNs int64
	fmt.Printf("%-6s %-7s %12s %12s %8s %14s %14s\n", "round", "first", "direct MB/s", "proxy MB/s", "ratio", "proxy cpu ms", "(schedstat ms)")
	for r := range rounds {
		order := []string{"direct", "proxy"}
		if r%2 == 1 {
			order = []string{"proxy", "direct"}
		}
		var d, p float64
		var ticks, runNs int64
		for _, path := range order {
			if path == "direct" {
				el, err := once(direct)
				if err != nil {
					return fail("round %d direct %s: %v", r+1, opName, err)
				}
				d = mbps(size, el)
				continue
			}
			s, err := dialText(proto, proxy, user, pass, timeout)
			if err != nil {
				return fail("round %d proxy: %v", r+1, err)
			}
			var t0, n0 int64
			if cpuOK {
				if t0, n0, err = loadutil.CPUOf(pid); err != nil {
					fmt.Fprintf(os.Stderr, "fetchbench: proxy CPU not measured: %v\n", err)
					cpuOK = false
				}
			}
			el, err := op(s)
			if err != nil {
				s.conn.Close()
				return fail("round %d proxied %s: %v", r+1, opName, err)
			}
			if cpuOK {
				t1, n1, err := loadutil.CPUOf(pid)
				if err != nil {
					fmt.Fprintf(os.Stderr, "fetchbench: proxy CPU not measured: %v\n", err)
					cpuOK = false
				} else {
					ticks, runNs = t1-t0, n1-n0
					totTicks += ticks
					totNs += runNs
				}
			}
			s.quit()
			p = mbps(size, el)
		}
		ds = append(ds, d)
		ps = append(ps, p)
		ratios = append(ratios, p/d)
		fmt.Printf("%-6d %-7s %12.1f %12.1f %8.3f %14d %14.1f\n", r+1, order[0], d, p, p/d, ticks*10, float64(runNs)/1e6)
	}
	gb := float64(size) * float64(rounds) / 1e9
	fmt.Printf("RESULT size=%d rounds=%d direct_median_MBps=%.1f proxy_median_MBps=%.1f ratio_median=%.3f ratio_min=%.3f ratio_max=%.3f proto=%s op=%s\n",
		size, rounds, median(ds), median(ps), median(ratios), minOf(ratios), maxOf(ratios), proto, opName)
	if cpuOK {
		fmt.Printf("RESULT proxy_cpu_s=%.2f relayed_GB=%.3f cpu_s_per_GB=%.3f (utime+stime, 10 ms ticks) schedstat_cpu_s=%.3f schedstat_cpu_s_per_GB=%.3f\n",
			float64(totTicks)/100, gb, float64(totTicks)/100/gb, float64(totNs)/1e9, float64(totNs)/1e9/gb)
	} else {
		fmt.Println("RESULT proxy CPU not measured (no -proxy-pid)")
	}
	return 0
}

// textSession is a logged-in POP3 or Submission session.
type textSession struct {
	conn    net.Conn
	r       *bufio.Reader
	proto   string
	timeout time.Duration
}

// dialText connects and logs in: POP3 USER/PASS, Submission EHLO + AUTH PLAIN.
func dialText(proto, addr, user, pass string, timeout time.Duration) (*textSession, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	s := &textSession{conn: conn, r: bufio.NewReaderSize(conn, 1<<20), proto: proto, timeout: timeout}
	conn.SetDeadline(time.Now().Add(timeout))
	steps := [][2]string{{"", "+OK"}, {"USER " + user, "+OK"}, {"PASS " + pass, "+OK"}}
	if proto == "submission" {
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
		steps = [][2]string{{"", "220"}, {"EHLO bench.invalid", "250"}, {"AUTH PLAIN " + ir, "235"}}
	}
	for _, st := range steps {
		if _, err := s.cmd(st[0], st[1]); err != nil {
			conn.Close()
			what := strings.Fields(st[0] + " greeting")[0]
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	return s, nil
}

// cmd sends line (none if empty) and reads the reply, which must start with want; SMTP's
// continuation lines ("250-") are skipped.
func (s *textSession) cmd(line, want string) (string, error) {
	s.conn.SetDeadline(time.Now().Add(s.timeout))
	if line != "" {
		if _, err := io.WriteString(s.conn, line+"\r\n"); err != nil {
			return "", err
		}
	}
	for {
		reply, err := s.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if s.proto == "submission" && len(reply) > 3 && reply[3] == '-' {
			continue
		}
		reply = strings.TrimRight(reply, "\r\n")
		if !strings.HasPrefix(reply, want) {
			return reply, fmt.Errorf("%q", reply)
		}
		return reply, nil
	}
}

func (s *textSession) quit() {
	s.cmd("QUIT", "")
	s.conn.Close()
}

// retr checks that the maildrop holds one message, then times RETR 1 from the command to
// the final "." and checks that size bytes arrived (dot-stuffing undone).
func (s *textSession) retr(size int) (time.Duration, error) {
	stat, err := s.cmd("STAT", "+OK")
	if err != nil {
		return 0, fmt.Errorf("STAT: %w", err)
	}
	if f := strings.Fields(stat); len(f) < 2 || f[1] != "1" {
		return 0, fmt.Errorf("STAT %q: want one message (another fetchbench running?)", stat)
	}
	start := time.Now()
	if _, err := s.cmd("RETR 1", "+OK"); err != nil {
		return 0, fmt.Errorf("RETR: %w", err)
	}
	got := 0
	for {
		line, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			got += len(line) // a line longer than the buffer: count it, read on
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("RETR: after %d bytes: %w", got, err)
		}
		if line[0] == '.' {
			if bytes.Equal(line, []byte(".\r\n")) {
				break
			}
			line = line[1:]
		}
		got += len(line)
	}
	el := time.Since(start)
	if got != size {
		return 0, fmt.Errorf("RETR returned %d bytes, want %d", got, size)
	}
	return el, nil
}

// submit times MAIL FROM, RCPT TO, DATA and the message to the reply after it. The message
// has no line starting with a dot (see message), so it goes as it is.
func (s *textSession) submit(addr string, msg []byte) (time.Duration, error) {
	start := time.Now()
	for _, st := range [][2]string{{"MAIL FROM:<" + addr + ">", "250"}, {"RCPT TO:<" + addr + ">", "250"}, {"DATA", "354"}} {
		if _, err := s.cmd(st[0], st[1]); err != nil {
			return 0, fmt.Errorf("%s: %w", strings.Fields(st[0])[0], err)
		}
	}
	s.conn.SetDeadline(time.Now().Add(s.timeout))
	if _, err := s.conn.Write(msg); err != nil {
		return 0, fmt.Errorf("message: %w", err)
	}
	if _, err := s.cmd(".", "250"); err != nil {
		return 0, fmt.Errorf("after the message: %w", err)
	}
	return time.Since(start), nil
}
