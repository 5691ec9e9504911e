// Command cmdmix drives a mix of IMAP commands over logged-in sessions and reports the
// latency of each command, so that a run through a proxy and a run straight at the backend
// give the latency the proxy adds per command.
//
//	cmdmix -addr 127.0.0.1:1143 -users users.txt -sessions 50 -rate 2000 -duration 20s \
//	       -source-ips 127.0.3.1-127.0.3.50
//
// Each of -sessions sessions reads the greeting, logs in (`LOGIN`, users from -users round
// robin), SELECTs -mailbox (with -seed N, first APPENDs small messages until it holds N),
// then loops over the commands of -mix in turn, one at a time, waiting for each tagged reply (literals in replies are read whole). With -rate the
// commands of all sessions together are paced to that many per second (each session takes
// a token before each command); without it every session goes as fast as replies come. A
// command is timed from its write to the end of its tagged reply.
//
// Output: one line per command of the mix, then a total, on stdout:
//
//	CMD name="FETCH 1 (FLAGS)" n=N errors=E p50_ms=… p90_ms=… p99_ms=… p999_ms=…
//	RESULT commands=N errors=E secs=S rate=R sessions=K p50_ms=… p99_ms=…
//
// A tagged NO or BAD counts as an error of that command (its text on stderr, once).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"doorman/bench/internal/loadutil"
)

// defaultMix is what a mail client does most once a mailbox is open: keep-alives, flag
// and header fetches for the message list, a search, a status poll.
const defaultMix = "NOOP;FETCH 1:* (FLAGS UID);FETCH 1 (BODY.PEEK[HEADER]);UID SEARCH ALL;STATUS INBOX (MESSAGES UNSEEN);CHECK"

func main() { os.Exit(run()) }

func run() int {
	addr := flag.String("addr", "127.0.0.1:1143", "IMAP address")
	usersFile := flag.String("users", "", "file of `user:password` lines (or `user password`)")
	sessions := flag.Int("sessions", 20, "concurrent logged-in sessions")
	mix := flag.String("mix", defaultMix, "commands, separated by ';', sent in turn by every session")
	mailbox := flag.String("mailbox", "INBOX", "mailbox to SELECT first")
	duration := flag.Duration("duration", 20*time.Second, "how long to drive commands (after every session is set up)")
	rate := flag.Float64("rate", 0, "commands per second over all sessions, evenly paced (0: as fast as replies come)")
	sourceIPs := flag.String("source-ips", "", "client source addresses, round robin: a range 127.0.3.1-127.0.3.50 and/or a comma list")
	timeout := flag.Duration("timeout", 10*time.Second, "limit for each step")
	seed := flag.Int("seed", 0, "before SELECT, APPEND small messages until -mailbox holds this many (run it straight at the backend once)")
	flag.Parse()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "cmdmix: "+format+"\n", a...)
		return 2
	}
	if *usersFile == "" {
		return fail("-users is required")
	}
	accts, err := loadutil.ReadUsers(*usersFile)
	if err != nil {
		return fail("%v", err)
	}
	if len(accts) == 0 {
		return fail("no users in %s", *usersFile)
	}
	var cmds []string
	for _, c := range strings.Split(*mix, ";") {
		if c = strings.TrimSpace(c); c != "" {
			cmds = append(cmds, c)
		}
	}
	if len(cmds) == 0 {
		return fail("-mix has no command")
	}
	srcs, err := loadutil.ParseSourceIPs(*sourceIPs)
	if err != nil {
		return fail("-source-ips: %v", err)
	}

	// Set up every session first, so that logins do not share the measured time.
	conns := make([]*client, *sessions)
	var setup sync.WaitGroup
	var setupErr atomic.Value
	for i := range conns {
		setup.Add(1)
		go func() {
			defer setup.Done()
			var d net.Dialer
			d.Timeout = *timeout
			if len(srcs) > 0 {
				d.LocalAddr = &net.TCPAddr{IP: srcs[i%len(srcs)].AsSlice()}
				d.Control = loadutil.NoPort
			}
			c, err := open(&d, *addr, accts[i%len(accts)], *mailbox, *seed, *timeout)
			if err != nil {
				setupErr.Store(err)
				return
			}
			conns[i] = c
		}()
	}
	setup.Wait()
	if err, _ := setupErr.Load().(error); err != nil {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
		return fail("session setup: %v", err)
	}

	type stat struct {
		lats []time.Duration
		errs int
	}
	stats := make([][]stat, len(conns)) // per session, per command: no sharing
	var stop atomic.Bool
	done := make(chan struct{})
	started := time.Now()
	time.AfterFunc(*duration, func() { stop.Store(true); close(done) })
	tokens := loadutil.Pace(*rate, started, done)
	var (
		errOnce sync.Map
		wg      sync.WaitGroup
	)
	for i, c := range conns {
		stats[i] = make([]stat, len(cmds))
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.conn.Close()
			for k := i % len(cmds); !stop.Load(); k = (k + 1) % len(cmds) {
				if tokens != nil {
					select {
					case <-tokens:
					case <-done:
						return
					}
				}
				t0 := time.Now()
				err := c.command(cmds[k], *timeout)
				if err != nil {
					stats[i][k].errs++
					if _, seen := errOnce.LoadOrStore(cmds[k], true); !seen {
						fmt.Fprintf(os.Stderr, "cmdmix: %s: %v\n", cmds[k], err)
					}
					var ne net.Error
					if errors.As(err, &ne) || errors.Is(err, errClosed) {
						return // the session is gone
					}
					continue
				}
				stats[i][k].lats = append(stats[i][k].lats, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	secs := time.Since(started).Seconds()

	pct := func(all []time.Duration, p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))]) / float64(time.Millisecond)
	}
	var total []time.Duration
	nerr := 0
	for k, name := range cmds {
		var all []time.Duration
		e := 0
		for i := range stats {
			all = append(all, stats[i][k].lats...)
			e += stats[i][k].errs
		}
		slices.Sort(all)
		total = append(total, all...)
		nerr += e
		fmt.Printf("CMD name=%q n=%d errors=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f\n",
			name, len(all), e, pct(all, 0.5), pct(all, 0.9), pct(all, 0.99), pct(all, 0.999))
	}
	slices.Sort(total)
	fmt.Printf("RESULT commands=%d errors=%d secs=%.3f rate=%.1f sessions=%d p50_ms=%.3f p99_ms=%.3f\n",
		len(total), nerr, secs, float64(len(total))/secs, len(conns), pct(total, 0.5), pct(total, 0.99))
	return 0
}

var errClosed = errors.New("connection closed")

// client is one logged-in IMAP session.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	tag  int
	line []byte
}

func open(d *net.Dialer, addr string, a loadutil.Account, mailbox string, seed int, timeout time.Duration) (*client, error) {
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, r: bufio.NewReaderSize(conn, 16<<10)}
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := c.readLine(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if err := c.command("LOGIN "+quote(a.User)+" "+quote(a.Pass), timeout); err != nil {
		conn.Close()
		return nil, fmt.Errorf("LOGIN %s: %w", a.User, err)
	}
	if seed > 0 && mailbox != "" {
		if err := c.seed(mailbox, seed, timeout); err != nil {
			conn.Close()
			return nil, fmt.Errorf("seeding %s: %w", mailbox, err)
		}
	}
	if mailbox != "" {
		if err := c.command("SELECT "+quote(mailbox), timeout); err != nil {
			conn.Close()
			return nil, fmt.Errorf("SELECT: %w", err)
		}
	}
	return c, nil
}

func quote(s string) string { return strconv.Quote(s) }

// seed APPENDs small messages until mailbox holds n.
func (c *client) seed(mailbox string, n int, timeout time.Duration) error {
	have := 0
	c.tag++
	tag := "t" + strconv.Itoa(c.tag)
	c.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := c.conn.Write([]byte(tag + " STATUS " + quote(mailbox) + " (MESSAGES)\r\n")); err != nil {
		return err
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		s := string(line)
		if i := strings.Index(s, "(MESSAGES "); strings.HasPrefix(s, "* STATUS") && i >= 0 {
			have, _ = strconv.Atoi(strings.TrimRight(s[i+len("(MESSAGES "):], ")\r\n"))
			continue
		}
		if strings.HasPrefix(s, tag+" ") {
			if !strings.HasPrefix(s, tag+" OK") {
				return fmt.Errorf("STATUS: %s", strings.TrimSpace(s))
			}
			break
		}
	}
	for k := have; k < n; k++ {
		msg := "From: cmdmix@example.org\r\nTo: user@example.org\r\nSubject: cmdmix message " + strconv.Itoa(k+1) +
			"\r\nMessage-ID: <cmdmix-" + strconv.Itoa(k+1) + "@example.org>\r\n\r\n" + strings.Repeat("A line of the body.\r\n", 40)
		// A non-synchronizing literal (LITERAL+, which Dovecot has): no continuation wait.
		if err := c.command("APPEND "+quote(mailbox)+" {"+strconv.Itoa(len(msg))+"+}\r\n"+msg, timeout); err != nil {
			return fmt.Errorf("APPEND: %w", err)
		}
	}
	return nil
}

// command sends one command and reads up to its tagged reply; a NO or BAD is an error.
func (c *client) command(cmd string, timeout time.Duration) error {
	c.tag++
	tag := "t" + strconv.Itoa(c.tag)
	c.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := c.conn.Write([]byte(tag + " " + cmd + "\r\n")); err != nil {
		return err
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return err
		}
		if rest, ok := bytes.CutPrefix(line, []byte(tag+" ")); ok {
			if bytes.HasPrefix(rest, []byte("OK")) {
				return nil
			}
			return fmt.Errorf("%s", strings.TrimSpace(string(rest)))
		}
	}
}

// readLine reads one response line, with any literals ({N} at a line's end) inside it.
func (c *client) readLine() ([]byte, error) {
	c.line = c.line[:0]
	for {
		part, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			c.line = append(c.line, part...)
			continue
		}
		if err != nil {
			if len(part) == 0 && len(c.line) == 0 {
				return nil, errClosed
			}
			return nil, err
		}
		c.line = append(c.line, part...)
		n, ok := literalSize(c.line)
		if !ok {
			return c.line, nil
		}
		if _, err := c.r.Discard(n); err != nil {
			return nil, err
		}
	}
}

// literalSize reads "{N}\r\n" (or "{N+}") at the end of line.
func literalSize(line []byte) (int, bool) {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSuffix(string(line[i+1:len(line)-1]), "+"))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}
