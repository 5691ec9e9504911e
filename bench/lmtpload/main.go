// Command lmtpload delivers messages over LMTP, as an MTA does, and measures deliveries per
// second and their latency: -c connections at the same time, -n messages in all. Each
// connection reads the greeting, sends LHLO, then runs transactions until the messages run
// out: `MAIL FROM`, `RCPT TO` for -rcpts users (round robin over -users, at -domain),
// `DATA`, the message, and one reply per accepted recipient; QUIT at the end.
//
//	lmtpload -addr 127.0.0.1:24 -users users.txt -n 2000 -c 8 -size 4096
//
// A delivery is one transaction; its latency runs from sending MAIL FROM to the last
// recipient's reply after the message. A recipient refused (at RCPT or after the message)
// counts as an error by its reply, and the transaction is not a delivery unless every
// recipient was delivered. -per-conn starts a new connection after that many transactions
// (0: one connection for the whole run).
//
// The message is -size bytes of headers and 76-character lines; no line starts with a dot,
// so the bytes sent are the message plus the final ".".
//
// Output: on stdout one line
//
//	RESULT deliveries=N errors=E secs=S rate=R p50_ms=… p90_ms=… p99_ms=… p999_ms=… max_ms=… cpu_s=…
//
// (rate = deliveries / seconds from the first connect to the last reply), then the errors by
// reason, if any.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"doorman/bench/internal/loadutil"
)

func main() { os.Exit(run()) }

func run() int {
	addr := flag.String("addr", "127.0.0.1:24", "LMTP address of the proxy or server")
	usersFile := flag.String("users", "", "file of `user:password` lines (or `user password`); the user names are the recipients")
	domain := flag.String("domain", "bench.invalid", "recipient domain (RCPT TO:<user@domain>)")
	from := flag.String("from", "lmtpload@bench.invalid", "MAIL FROM address")
	n := flag.Int("n", 1000, "messages to deliver")
	conns := flag.Int("c", 4, "concurrent connections")
	rcpts := flag.Int("rcpts", 1, "recipients per message (distinct users)")
	size := flag.Int("size", 4096, "message size in bytes")
	perConn := flag.Int("per-conn", 0, "transactions per connection before a new one (0: no limit)")
	sourceIPs := flag.String("source-ips", "", "client source addresses, round robin: a range 127.0.3.1-127.0.3.50 and/or a comma list")
	timeout := flag.Duration("timeout", 30*time.Second, "limit for each reply")
	duration := flag.Duration("duration", 10*time.Minute, "stop starting messages after this long")
	flag.Parse()

	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "lmtpload: "+format+"\n", a...)
		return 2
	}
	if *usersFile == "" {
		return fail("-users is required")
	}
	accts, err := loadutil.ReadUsers(*usersFile)
	if err != nil {
		return fail("%v", err)
	}
	users := make([]string, len(accts))
	for i, a := range accts {
		users[i] = a.User
	}
	if *n < 1 || *conns < 1 || *rcpts < 1 || *size < 200 {
		return fail("-n, -c and -rcpts must be at least 1, -size at least 200")
	}
	if *rcpts > len(users) {
		return fail("-rcpts %d is more than the %d users", *rcpts, len(users))
	}
	srcs, err := loadutil.ParseSourceIPs(*sourceIPs)
	if err != nil {
		return fail("-source-ips: %v", err)
	}
	msg := message(*size)

	var (
		next    atomic.Int64 // next message index
		nextRc  atomic.Int64 // next recipient index
		nextSrc atomic.Int64
		ok      atomic.Int64
		mu      sync.Mutex
		errs    = map[string]int{}
		lats    = make([][]time.Duration, *conns)
		wg      sync.WaitGroup
		started = time.Now()
	)
	deadline := started.Add(*duration)
	count := func(err error) {
		mu.Lock()
		errs[err.Error()]++
		mu.Unlock()
	}
	// take claims the next message, or reports that none is left.
	take := func() bool {
		if time.Now().After(deadline) {
			return false
		}
		return next.Add(1) <= int64(*n)
	}
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *conn
			done := 0
			for take() {
				if c == nil {
					d := net.Dialer{Timeout: *timeout}
					if len(srcs) > 0 {
						d.LocalAddr = &net.TCPAddr{IP: srcs[nextSrc.Add(1)%int64(len(srcs))].AsSlice()}
						d.Control = loadutil.NoPort
					}
					var err error
					if c, err = open(&d, *addr, *timeout); err != nil {
						count(err)
						continue // this message failed; the next one tries a new connection
					}
				}
				to := make([]string, *rcpts)
				for i := range to {
					to[i] = users[nextRc.Add(1)%int64(len(users))] + "@" + *domain
				}
				lat, err := c.deliver(*from, to, msg, count)
				if err != nil {
					count(err)
					c.close(false)
					c = nil
					continue
				}
				if lat > 0 {
					ok.Add(1)
					lats[w] = append(lats[w], lat)
				}
				if done++; *perConn > 0 && done%*perConn == 0 {
					c.close(true)
					c = nil
				}
			}
			if c != nil {
				c.close(true)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(started).Seconds()
	if next.Load() < int64(*n) {
		fmt.Fprintf(os.Stderr, "lmtpload: -duration ended the run after %d of %d messages\n", next.Load(), *n)
	}

	all := slices.Concat(lats...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))]) / float64(time.Millisecond)
	}
	nerr := 0
	for _, c := range errs {
		nerr += c
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("RESULT deliveries=%d errors=%d secs=%.3f rate=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f cpu_s=%.2f\n",
		ok.Load(), nerr, secs, float64(ok.Load())/secs, pct(0.50), pct(0.90), pct(0.99), pct(0.999), pct(1), cpu.Seconds())
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("error %d × %s\n", errs[k], k)
	}
	return 0
}

// conn is one LMTP connection past LHLO.
type conn struct {
	c       net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
}

func open(d *net.Dialer, addr string, timeout time.Duration) (*conn, error) {
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %s", loadutil.ErrText(err))
	}
	c := &conn{c: nc, r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 64<<10), timeout: timeout}
	nc.SetDeadline(time.Now().Add(timeout))
	if _, err := c.reply("220"); err != nil {
		nc.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := c.cmd("LHLO bench.invalid", "250"); err != nil {
		nc.Close()
		return nil, fmt.Errorf("LHLO: %w", err)
	}
	return c, nil
}

// close ends the connection, politely (QUIT) if asked.
func (c *conn) close(quit bool) {
	if quit {
		c.c.SetDeadline(time.Now().Add(c.timeout))
		c.cmd("QUIT", "221")
	}
	c.c.Close()
}

// deliver runs one transaction and returns its latency, or 0 if a recipient was refused
// (each refusal is passed to refused). An error means the connection is no longer usable.
func (c *conn) deliver(from string, to []string, msg []byte, refused func(error)) (time.Duration, error) {
	t0 := time.Now()
	c.c.SetDeadline(t0.Add(c.timeout))
	if err := c.cmd("MAIL FROM:<"+from+">", "250"); err != nil {
		return 0, fmt.Errorf("MAIL: %w", err)
	}
	accepted := 0
	for _, rcpt := range to {
		fmt.Fprintf(c.w, "RCPT TO:<%s>\r\n", rcpt)
		if err := c.w.Flush(); err != nil {
			return 0, fmt.Errorf("RCPT write: %s", loadutil.ErrText(err))
		}
		line, err := c.reply("250")
		if err != nil {
			if line == "" {
				return 0, fmt.Errorf("RCPT: %w", err)
			}
			refused(fmt.Errorf("RCPT: %s", code(line)))
			continue
		}
		accepted++
	}
	if accepted == 0 {
		return 0, c.cmd("RSET", "250")
	}
	if err := c.cmd("DATA", "354"); err != nil {
		return 0, fmt.Errorf("DATA: %w", err)
	}
	c.c.SetDeadline(time.Now().Add(c.timeout))
	c.w.Write(msg)
	c.w.WriteString(".\r\n")
	if err := c.w.Flush(); err != nil {
		return 0, fmt.Errorf("message write: %s", loadutil.ErrText(err))
	}
	delivered := 0
	for range accepted {
		line, err := c.reply("250")
		if err != nil {
			if line == "" {
				return 0, fmt.Errorf("after DATA: %w", err)
			}
			refused(fmt.Errorf("after DATA: %s", code(line)))
			continue
		}
		delivered++
	}
	if delivered < len(to) {
		return 0, nil
	}
	return time.Since(t0), nil
}

// cmd sends a command and reads its reply, which must start with want.
func (c *conn) cmd(line, want string) error {
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("write: %s", loadutil.ErrText(err))
	}
	_, err := c.reply(want)
	return err
}

// reply reads one reply (its "250-" continuation lines too). A reply other than want is
// returned with an error; a read failure returns "".
func (c *conn) reply(want string) (string, error) {
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", errors.New(loadutil.ErrText(err))
		}
		if len(line) > 3 && line[3] == '-' {
			continue
		}
		line = strings.TrimRight(line, "\r\n")
		if !strings.HasPrefix(line, want) {
			return line, fmt.Errorf("%q", clip(line))
		}
		return line, nil
	}
}

// code keeps a reply's codes (e.g. "550 5.1.1") so refusals group by kind, not recipient.
func code(line string) string {
	f := strings.Fields(line)
	if len(f) >= 2 && strings.Count(f[1], ".") == 2 {
		return f[0] + " " + f[1]
	}
	if len(f) >= 1 {
		return f[0]
	}
	return line
}

// message builds a message of exactly size bytes: headers, then lines of 76 pseudo-random
// base64 characters (never a leading dot, so no dot-stuffing is needed).
func message(size int) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	h := "From: lmtpload <lmtpload@bench.invalid>\r\nTo: undisclosed-recipients:;\r\n" +
		"Subject: lmtpload " + strconv.Itoa(size) + " bytes\r\nMessage-ID: <lmtpload-" +
		strconv.FormatInt(time.Now().UnixNano(), 10) + "@bench.invalid>\r\n\r\n"
	b := make([]byte, 0, size)
	b = append(b, h...)
	rng := rand.New(rand.NewSource(1))
	for remaining := size - len(b); remaining > 0; remaining = size - len(b) {
		n := 76
		switch {
		case remaining <= 78:
			n = remaining - 2
		case remaining < 78+3:
			n = remaining - 2 - 3
		}
		for range n {
			b = append(b, alphabet[rng.Intn(64)])
		}
		b = append(b, '\r', '\n')
	}
	return b
}

func clip(s string) string {
	s = strings.TrimRight(s, "\r\n")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
