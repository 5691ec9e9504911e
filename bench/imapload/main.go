// Command imapload opens many IMAP sessions to one address and holds them idle: each
// session reads the greeting, sends `a LOGIN user pass` and `b SELECT INBOX`, then stays
// connected without sending anything until the hold ends. It measures login latency and
// counts failures by their reply, so a load test can tell a refused login from a dropped
// connection.
//
//	imapload -addr 127.0.0.1:1143 -n 4000 -user alice -pass secret \
//	         -source-ips 127.0.1.1-127.0.1.50 -concurrency 64 -hold 0
//
// Output: progress lines on stderr; on stdout one `READY ...` line once every session has
// either been established or has failed (scripts wait for it), then a summary when the
// hold ends (after -hold, or at SIGINT/SIGTERM). Before closing, every held session is
// checked with NOOP (-check), so a session the proxy silently broke is counted.
//
// With -tls every session starts with a TLS handshake (implicit TLS, as on an imaps port)
// before the greeting: verified against -cafile, or not at all with -insecure. -curves
// x25519 offers only X25519 (a classic ClientHello); -curves default offers Go's list, which
// starts with the X25519MLKEM768 hybrid, as current clients do. Without -tickets no session
// cache is kept, so every session is a full handshake. The summary then has a `tls` line
// (versions, groups, resumptions, handshake latency).
//
// -idle holds each IMAP session in IDLE instead (the NOOP check sends DONE first). -stall
// CMD makes every session a stalled reader: it sends `s CMD` (e.g. a large FETCH) and never
// reads again (use -check=false; -rcvbuf keeps its receive buffer small). -proto pop3 (USER,
// PASS) and -proto submission (EHLO, AUTH PLAIN) hold POP3 and Submission sessions the same
// way, checked with NOOP.
//
// One session is one file descriptor. The process refuses -n above maxSessions (and above
// what RLIMIT_NOFILE allows): run several processes for more.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"doorman/bench/internal/loadutil"
)

// maxSessions keeps one process well under this machine's 20,000 open files per process
// (the runtime, stdio and the epoll fd need a few more).
const maxSessions = 18000

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (include/uapi/linux/in.h), which
// package syscall does not name.
const ipBindAddressNoPort = 24

type account struct{ user, pass string }

func main() { os.Exit(run()) }

func run() int {
	addr := flag.String("addr", "127.0.0.1:1143", "IMAP address to connect to")
	n := flag.Int("n", 100, "number of sessions")
	user := flag.String("user", "", "user name (or -users)")
	pass := flag.String("pass", "", "password for -user")
	usersFile := flag.String("users", "", "file of `user:password` lines (or `user password`), used round robin")
	sourceIPs := flag.String("source-ips", "", "client source addresses, round robin: a range 127.0.1.1-127.0.1.50 and/or a comma list")
	concurrency := flag.Int("concurrency", 50, "sessions being set up at the same time")
	hold := flag.Duration("hold", 0, "how long to hold the sessions once all are set up (0: until SIGINT/SIGTERM)")
	mailbox := flag.String("mailbox", "INBOX", "mailbox to SELECT (empty: no SELECT)")
	proto := flag.String("proto", "imap", "protocol: imap, pop3 (USER/PASS, then held idle) or submission (EHLO, AUTH PLAIN, then held idle); -mailbox, -idle and -stall are IMAP's")
	idle := flag.Bool("idle", false, "hold each session in IDLE (after SELECT); the NOOP check ends it with DONE first")
	rcvbuf := flag.Int("rcvbuf", 0, "SO_RCVBUF for each session's socket, set before connecting (0: the kernel's autotuning); a small one keeps stalled readers from filling the machine's TCP memory")
	stall := flag.String("stall", "", "after SELECT send `s <this command>` (e.g. \"FETCH 1 BODY.PEEK[]\") and never read again: a stalled reader (use with -check=false)")
	timeout := flag.Duration("timeout", 30*time.Second, "limit for each step (connect, greeting, LOGIN, SELECT, NOOP)")
	check := flag.Bool("check", true, "send NOOP on every held session before closing it and count the replies")
	progress := flag.Duration("progress", time.Second, "progress interval on stderr (0: none)")
	label := flag.String("label", "", "prefix for output lines (to tell several processes apart)")
	useTLS := flag.Bool("tls", false, "implicit TLS: a TLS handshake before the greeting")
	caFile := flag.String("cafile", "", "with -tls: verify the server's certificate against the CAs in this PEM file")
	insecure := flag.Bool("insecure", false, "with -tls: do not verify the server's certificate")
	curves := flag.String("curves", "default", "with -tls: key exchange groups offered: x25519 (classic only), x25519mlkem768 (the hybrid only) or default (Go's list, X25519MLKEM768 first)")
	tickets := flag.Bool("tickets", false, "with -tls: keep a session cache, so later sessions may resume (default: every session a full handshake)")
	serverName := flag.String("servername", "", "with -tls: the name to ask for and verify (default: the host of -addr)")
	flag.Parse()

	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "imapload: "+format+"\n", a...)
		return 2
	}
	if *n < 1 {
		return fail("-n must be at least 1")
	}
	if *n > maxSessions {
		return fail("-n %d is above %d sessions per process (one fd each, the limit is 20,000 open files per process): run several processes", *n, maxSessions)
	}
	if lim, err := raiseNoFile(); err == nil && uint64(*n)+100 > lim {
		return fail("-n %d needs about %d open files, RLIMIT_NOFILE is %d: lower -n or run several processes", *n, *n+100, lim)
	}
	if *concurrency < 1 {
		*concurrency = 1
	}
	accounts, err := loadAccounts(*user, *pass, *usersFile)
	if err != nil {
		return fail("%v", err)
	}
	srcs, err := loadutil.ParseSourceIPs(*sourceIPs)
	if err != nil {
		return fail("-source-ips: %v", err)
	}
	var tlsConf *tls.Config
	if *useTLS {
		if tlsConf, err = clientTLSConfig(*addr, *serverName, *caFile, *insecure, *curves, *tickets); err != nil {
			return fail("%v", err)
		}
	} else if *caFile != "" || *insecure || *tickets {
		return fail("-cafile, -insecure and -tickets need -tls")
	}

	switch *proto {
	case "imap":
	case "pop3", "submission":
		*mailbox = ""
		if *idle || *stall != "" {
			return fail("-idle and -stall are for -proto imap")
		}
	default:
		return fail("-proto must be imap, pop3 or submission")
	}
	l := &load{
		addr:     *addr,
		accounts: accounts,
		srcs:     srcs,
		mailbox:  *mailbox,
		proto:    *proto,
		idle:     *idle,
		stall:    *stall,
		rcvbuf:   *rcvbuf,
		timeout:  *timeout,
		failures: map[string]int{},
		sessions: make([]*session, *n),
		prefix:   *label,
		tls:      tlsConf,
	}
	if l.prefix != "" {
		l.prefix += " "
	}

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)

	start := time.Now()
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if *progress > 0 {
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			t := time.NewTicker(*progress)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					fmt.Fprintf(os.Stderr, "%st=%.1fs established=%d failed=%d dropped=%d\n", l.prefix,
						time.Since(start).Seconds(), l.established.Load(), l.failed.Load(), l.dropped.Load())
				}
			}
		}()
	}

	// Set up: a fixed number of workers take session indexes from a counter.
	var next atomic.Int64
	var wg sync.WaitGroup
	interrupted := atomic.Bool{}
	setupDone := make(chan struct{})
	for w := 0; w < *concurrency && w < *n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !interrupted.Load() {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				l.open(i)
			}
		}()
	}
	go func() { wg.Wait(); close(setupDone) }()

	select {
	case <-setupDone:
	case s := <-sig:
		interrupted.Store(true)
		fmt.Fprintf(os.Stderr, "%sinterrupted by %v during set-up\n", l.prefix, s)
		<-setupDone
	}
	setup := time.Since(start)
	close(stopProgress)
	progressDone.Wait()
	fmt.Printf("%sREADY established=%d failed=%d setup=%.2fs rate=%.0f/s\n", l.prefix,
		l.established.Load(), l.failed.Load(), setup.Seconds(), float64(l.established.Load()+l.failed.Load())/setup.Seconds())

	if !interrupted.Load() {
		if *hold > 0 {
			select {
			case <-time.After(*hold):
			case <-sig:
			}
		} else {
			<-sig
		}
	}
	held := time.Since(start) - setup

	alive := 0
	for _, s := range l.sessions {
		if s != nil && !s.isDropped() {
			alive++
		}
	}
	var checked, checkOK int
	checkFail := map[string]int{}
	if *check {
		checked, checkOK = l.noopAll(*concurrency, checkFail)
	}
	for _, s := range l.sessions {
		if s != nil {
			s.mu.Lock()
			s.closing = true // our own close: not a drop
			s.mu.Unlock()
			s.conn.Close()
		}
	}
	l.printSummary(*n, setup, held, alive, *check, checked, checkOK, checkFail)
	if l.established.Load() != int64(*n) || l.dropped.Load() > 0 || checkOK != checked {
		return 1
	}
	return 0
}

type load struct {
	addr     string
	accounts []account
	srcs     []netip.Addr
	mailbox  string
	proto    string // imap, pop3 or submission
	idle     bool
	stall    string
	rcvbuf   int
	timeout  time.Duration
	prefix   string
	tls      *tls.Config // nil: plain

	mu         sync.Mutex
	failures   map[string]int
	loginLat   []time.Duration // LOGIN sent → tagged reply
	sessionLat []time.Duration // connect start → SELECT done
	dropReason map[string]int
	hsLat      []time.Duration // TLS: connected → handshake done
	tlsKinds   map[string]int  // TLS: "TLS 1.3 X25519MLKEM768 full", ...

	sessions    []*session
	established atomic.Int64
	failed      atomic.Int64
	dropped     atomic.Int64
}

type session struct {
	conn net.Conn
	r    *bufio.Reader

	noop chan string // the tagged NOOP reply, or a failure

	mu      sync.Mutex
	dropped bool
	closing bool // checked and about to be closed by us: a read error is our own close
}

func (s *session) isDropped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

func (l *load) fail(reason string) {
	l.failed.Add(1)
	l.mu.Lock()
	l.failures[reason]++
	l.mu.Unlock()
}

// open sets up session i: connect, greeting, LOGIN, SELECT. A failure is counted by its
// stage and reply; the connection is then closed.
func (l *load) open(i int) {
	acct := l.accounts[i%len(l.accounts)]
	d := net.Dialer{Timeout: l.timeout}
	if len(l.srcs) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: l.srcs[i%len(l.srcs)].AsSlice()}
	}
	if len(l.srcs) > 0 || l.rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if len(l.srcs) > 0 {
					// Choose the port at connect time, per destination: many source
					// addresses then give far more than 28k ports.
					serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
				}
				if serr == nil && l.rcvbuf > 0 {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, l.rcvbuf)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	t0 := time.Now()
	conn, err := d.Dial("tcp", l.addr)
	if err != nil {
		l.fail("connect: " + loadutil.ErrText(err))
		return
	}
	if l.tls != nil {
		th := time.Now()
		tc := tls.Client(conn, l.tls)
		tc.SetDeadline(th.Add(l.timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			l.fail("tls handshake: " + shorten(loadutil.ErrText(err)))
			return
		}
		hs := time.Since(th)
		st := tc.ConnectionState()
		kind := tls.VersionName(st.Version) + " " + st.CurveID.String()
		if st.DidResume {
			kind += " resumed"
		} else {
			kind += " full"
		}
		l.mu.Lock()
		l.hsLat = append(l.hsLat, hs)
		if l.tlsKinds == nil {
			l.tlsKinds = map[string]int{}
		}
		l.tlsKinds[kind]++
		l.mu.Unlock()
		conn = tc
	}
	r := bufio.NewReaderSize(conn, 1024)
	conn.SetDeadline(time.Now().Add(l.timeout))
	if l.proto != "imap" {
		loginLat, err := l.loginOther(conn, r, acct)
		if err != nil {
			conn.Close()
			l.fail(err.Error())
			return
		}
		l.established1(conn, r, t0, loginLat, i)
		return
	}
	line, err := readLine(r)
	if err != nil {
		conn.Close()
		l.fail("greeting: " + loadutil.ErrText(err))
		return
	}
	if !strings.HasPrefix(line, "* OK") {
		conn.Close()
		l.fail("greeting: " + shorten(line))
		return
	}
	conn.SetDeadline(time.Now().Add(l.timeout))
	t1 := time.Now()
	if _, err := fmt.Fprintf(conn, "a LOGIN %s %s\r\n", quote(acct.user), quote(acct.pass)); err != nil {
		conn.Close()
		l.fail("login: write: " + loadutil.ErrText(err))
		return
	}
	reply, err := readTagged(r, "a")
	loginLat := time.Since(t1)
	if err != nil {
		conn.Close()
		l.fail("login: " + loadutil.ErrText(err))
		return
	}
	if !strings.HasPrefix(reply, "OK") {
		conn.Close()
		l.fail("login: " + shorten(reply))
		return
	}
	if l.mailbox != "" {
		conn.SetDeadline(time.Now().Add(l.timeout))
		if _, err := fmt.Fprintf(conn, "b SELECT %s\r\n", quote(l.mailbox)); err != nil {
			conn.Close()
			l.fail("select: write: " + loadutil.ErrText(err))
			return
		}
		reply, err := readTagged(r, "b")
		if err != nil {
			conn.Close()
			l.fail("select: " + loadutil.ErrText(err))
			return
		}
		if !strings.HasPrefix(reply, "OK") {
			conn.Close()
			l.fail("select: " + shorten(reply))
			return
		}
	}
	if l.idle {
		conn.SetDeadline(time.Now().Add(l.timeout))
		if _, err := io.WriteString(conn, "i IDLE\r\n"); err != nil {
			conn.Close()
			l.fail("idle: write: " + loadutil.ErrText(err))
			return
		}
		line, err := readLine(r)
		if err != nil {
			conn.Close()
			l.fail("idle: " + loadutil.ErrText(err))
			return
		}
		if !strings.HasPrefix(line, "+") {
			conn.Close()
			l.fail("idle: " + shorten(line))
			return
		}
	}
	l.established1(conn, r, t0, loginLat, i)
}

// established1 records session i as set up and starts watching it (or, with -stall, sends
// the stalling command and reads no more).
func (l *load) established1(conn net.Conn, r *bufio.Reader, t0 time.Time, loginLat time.Duration, i int) {
	conn.SetDeadline(time.Time{})
	sessLat := time.Since(t0)
	s := &session{conn: conn, r: r, noop: make(chan string, 1)}
	l.sessions[i] = s
	l.mu.Lock()
	l.loginLat = append(l.loginLat, loginLat)
	l.sessionLat = append(l.sessionLat, sessLat)
	l.mu.Unlock()
	l.established.Add(1)
	if l.stall != "" {
		// A stalled reader: ask for a lot, then read nothing (no watch).
		if _, err := io.WriteString(conn, "s "+l.stall+"\r\n"); err != nil {
			l.fail("stall: write: " + loadutil.ErrText(err))
		}
		return
	}
	go l.watch(s)
}

// loginOther runs the greeting and login of POP3 (USER, PASS) or Submission (EHLO, AUTH
// PLAIN with an initial response) and returns the login latency (the login command sent →
// its final reply).
func (l *load) loginOther(conn net.Conn, r *bufio.Reader, acct account) (time.Duration, error) {
	// reply reads one reply: a line, or for SMTP the lines up to the last one ("250 " after
	// "250-"), and returns the last.
	reply := func(smtp bool) (string, error) {
		for {
			line, err := readLine(r)
			if err != nil {
				return "", err
			}
			if smtp && len(line) > 3 && line[3] == '-' {
				continue
			}
			return line, nil
		}
	}
	send := func(s string) error {
		_, err := io.WriteString(conn, s+"\r\n")
		return err
	}
	if l.proto == "pop3" {
		line, err := reply(false)
		if err != nil {
			return 0, fmt.Errorf("greeting: %s", loadutil.ErrText(err))
		}
		if !strings.HasPrefix(line, "+OK") {
			return 0, fmt.Errorf("greeting: %s", shorten(line))
		}
		t1 := time.Now()
		if err := send("USER " + acct.user); err != nil {
			return 0, fmt.Errorf("login: write: %s", loadutil.ErrText(err))
		}
		if line, err = reply(false); err != nil || !strings.HasPrefix(line, "+OK") {
			return 0, fmt.Errorf("login: USER: %s%s", shorten(line), errOrEmpty(err))
		}
		if err := send("PASS " + acct.pass); err != nil {
			return 0, fmt.Errorf("login: write: %s", loadutil.ErrText(err))
		}
		if line, err = reply(false); err != nil || !strings.HasPrefix(line, "+OK") {
			return 0, fmt.Errorf("login: PASS: %s%s", shorten(line), errOrEmpty(err))
		}
		return time.Since(t1), nil
	}
	line, err := reply(true)
	if err != nil {
		return 0, fmt.Errorf("greeting: %s", loadutil.ErrText(err))
	}
	if !strings.HasPrefix(line, "220") {
		return 0, fmt.Errorf("greeting: %s", shorten(line))
	}
	if err := send("EHLO bench.invalid"); err != nil {
		return 0, fmt.Errorf("ehlo: write: %s", loadutil.ErrText(err))
	}
	if line, err = reply(true); err != nil || !strings.HasPrefix(line, "250") {
		return 0, fmt.Errorf("ehlo: %s%s", shorten(line), errOrEmpty(err))
	}
	t1 := time.Now()
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + acct.user + "\x00" + acct.pass))
	if err := send("AUTH PLAIN " + ir); err != nil {
		return 0, fmt.Errorf("login: write: %s", loadutil.ErrText(err))
	}
	if line, err = reply(true); err != nil || !strings.HasPrefix(line, "235") {
		return 0, fmt.Errorf("login: AUTH: %s%s", shorten(line), errOrEmpty(err))
	}
	return time.Since(t1), nil
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return loadutil.ErrText(err)
}

// watch reads a held session. Nothing is expected except the NOOP reply at the end; EOF,
// an error or a BYE means the session was dropped while it was held.
func (l *load) watch(s *session) {
	var bye string
	for {
		line, err := readLine(s.r)
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.dropped = true
			s.mu.Unlock()
			if closing {
				return // closed by us after the check
			}
			reason := loadutil.ErrText(err)
			if bye != "" {
				reason = "BYE " + bye
			}
			l.dropped.Add(1)
			l.mu.Lock()
			if l.dropReason == nil {
				l.dropReason = map[string]int{}
			}
			l.dropReason[reason]++
			l.mu.Unlock()
			select {
			case s.noop <- "dropped: " + reason:
			default:
			}
			return
		}
		if strings.HasPrefix(line, "* BYE") {
			bye = shorten(strings.TrimPrefix(line, "* BYE "))
		}
		if l.proto != "imap" {
			// POP3 and Submission: nothing is expected while held but the NOOP reply.
			reply := line
			if strings.HasPrefix(line, "+OK") || strings.HasPrefix(line, "250") {
				reply = "OK " + line
			}
			select {
			case s.noop <- reply:
			default:
			}
			continue
		}
		if strings.HasPrefix(line, "c ") {
			select {
			case s.noop <- strings.TrimPrefix(line, "c "):
			default:
			}
		}
	}
}

// noopAll sends NOOP on every held session and waits for the tagged replies.
func (l *load) noopAll(concurrency int, fails map[string]int) (checked, ok int) {
	noopCmd := "c NOOP\r\n"
	if l.proto != "imap" {
		noopCmd = "NOOP\r\n"
	} else if l.idle {
		noopCmd = "DONE\r\n" + noopCmd
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan *session)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				res := ""
				if s.isDropped() {
					res = "dropped before the check"
				} else if _, err := io.WriteString(s.conn, noopCmd); err != nil {
					res = "write: " + loadutil.ErrText(err)
				} else {
					select {
					case r := <-s.noop:
						res = r
					case <-time.After(l.timeout):
						res = "no reply within " + l.timeout.String()
					}
				}
				s.mu.Lock()
				s.closing = true
				s.mu.Unlock()
				mu.Lock()
				checked++
				if strings.HasPrefix(res, "OK") {
					ok++
				} else {
					fails[shorten(res)]++
				}
				mu.Unlock()
			}
		}()
	}
	for _, s := range l.sessions {
		if s != nil {
			work <- s
		}
	}
	close(work)
	wg.Wait()
	return checked, ok
}

func (l *load) printSummary(n int, setup, held time.Duration, alive int, check bool, checked, checkOK int, checkFail map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.prefix
	fmt.Printf("%sSUMMARY addr=%s sessions=%d established=%d failed=%d dropped_while_held=%d alive_at_end=%d setup=%.2fs held=%.1fs\n",
		p, l.addr, n, l.established.Load(), l.failed.Load(), l.dropped.Load(), alive, setup.Seconds(), held.Seconds())
	fmt.Printf("%slogin_latency p50=%s p99=%s p999=%s max=%s (LOGIN sent -> tagged reply, %d logins)\n", p,
		pct(l.loginLat, 50), pct(l.loginLat, 99), pct(l.loginLat, 99.9), pct(l.loginLat, 100), len(l.loginLat))
	fmt.Printf("%ssession_setup p50=%s p99=%s max=%s (connect -> SELECT done)\n", p,
		pct(l.sessionLat, 50), pct(l.sessionLat, 99), pct(l.sessionLat, 100))
	if len(l.hsLat) > 0 {
		var kinds []string
		for _, k := range sortedKeys(l.tlsKinds) {
			kinds = append(kinds, fmt.Sprintf("%d %s", l.tlsKinds[k], k))
		}
		fmt.Printf("%stls handshake p50=%s p99=%s max=%s (%s)\n", p,
			pct(l.hsLat, 50), pct(l.hsLat, 99), pct(l.hsLat, 100), strings.Join(kinds, ", "))
	}
	for _, k := range sortedKeys(l.failures) {
		fmt.Printf("%sfailure %6d  %s\n", p, l.failures[k], k)
	}
	for _, k := range sortedKeys(l.dropReason) {
		fmt.Printf("%sdropped %6d  %s\n", p, l.dropReason[k], k)
	}
	if check {
		fmt.Printf("%snoop_check checked=%d ok=%d\n", p, checked, checkOK)
		for _, k := range sortedKeys(checkFail) {
			fmt.Printf("%snoop_fail %6d  %s\n", p, checkFail[k], k)
		}
	}
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}

func pct(d []time.Duration, p float64) string {
	if len(d) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(float64(len(s)) * p / 100)) // nearest rank
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1].Round(10 * time.Microsecond).String()
}

// readLine reads one CRLF-terminated line (without the CRLF).
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if err == io.EOF && line != "" {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readTagged reads until the tagged reply for tag and returns it without the tag. Literals
// in untagged replies ({n} at a line's end) are skipped.
func readTagged(r *bufio.Reader, tag string) (string, error) {
	for {
		line, err := readLine(r)
		if err != nil {
			return "", err
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			return rest, nil
		}
		if strings.HasPrefix(line, "* BYE") {
			return line, nil
		}
		if n, ok := literalLen(line); ok {
			if _, err := io.CopyN(io.Discard, r, n); err != nil {
				return "", err
			}
		}
	}
}

// literalLen reports the size of a literal announced at the end of line: "{123}" or "{123+}".
func literalLen(line string) (int64, bool) {
	if !strings.HasSuffix(line, "}") {
		return 0, false
	}
	i := strings.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	var n int64
	digits := strings.TrimSuffix(line[i+1:len(line)-1], "+")
	if digits == "" {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// quote makes an IMAP quoted string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// shorten keeps failure keys short and free of per-session details.
func shorten(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return s
}

func loadAccounts(user, pass, file string) ([]account, error) {
	if file == "" {
		if user == "" {
			return nil, errors.New("give -user and -pass, or -users FILE")
		}
		return []account{{user, pass}}, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []account
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, p, ok := strings.Cut(line, ":")
		if !ok {
			u, p, ok = strings.Cut(line, " ")
		}
		if !ok || u == "" {
			return nil, fmt.Errorf("%s:%d: want user:password", file, i+1)
		}
		out = append(out, account{u, strings.TrimSpace(p)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no accounts", file)
	}
	return out, nil
}

// clientTLSConfig is the client side of -tls.
func clientTLSConfig(addr, serverName, caFile string, insecure bool, curves string, tickets bool) (*tls.Config, error) {
	if (caFile == "") == !insecure {
		return nil, errors.New("-tls needs either -cafile FILE or -insecure")
	}
	if serverName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("-addr: %v", err)
		}
		serverName = host
	}
	c := &tls.Config{ServerName: serverName, InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
		}
	}
	switch strings.ToLower(curves) {
	case "default", "":
	case "x25519":
		c.CurvePreferences = []tls.CurveID{tls.X25519}
	case "x25519mlkem768", "mlkem":
		c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768}
	default:
		return nil, fmt.Errorf("-curves %q: want x25519, x25519mlkem768 or default", curves)
	}
	if tickets {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(1024)
	}
	return c, nil
}

// raiseNoFile lifts the soft open-file limit to the hard one and returns it.
func raiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
		}
	}
	return rl.Cur, nil
}
