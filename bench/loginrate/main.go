// Command loginrate measures logins per second: -workers concurrent workers, each looping
// connect → greeting → login → logout → close. The login depends on -proto:
//
//   - imap (default): `a LOGIN user pass` → tagged OK; `b LOGOUT` → tagged OK (or EOF);
//   - pop3: `USER user` → +OK, `PASS pass` → +OK; `QUIT` → +OK (or EOF);
//   - submission: `EHLO` → 250, `AUTH PLAIN <initial response>` → 235; `QUIT` → 221 (or EOF).
//
// Users come from -users (lines `user:password` or `user password`).
//
//	loginrate -addr 127.0.0.1:21301 -users users.txt -workers 64 -pass \
//	          -source-ips 127.0.2.1-127.0.2.100
//
// With -pass each user logs in exactly once, in file order (the first -n users), and the
// run ends when every one has been tried (or at -duration): a pass over a cold auth cache
// counts only first logins, and a second pass measures the warm cache. Without -pass the
// workers loop over the users round robin until -duration ends.
//
// Connections come from -source-ips round robin, each bound with IP_BIND_ADDRESS_NO_PORT
// so the port is chosen per destination: the client end of a closed connection waits in
// TIME_WAIT, and many source addresses keep that from running out of ports. -linger0
// closes with SO_LINGER 0 instead (an RST, no TIME_WAIT).
//
// Output: on stdout one line
//
//	RESULT logins=N errors=E secs=S rate=R p50_ms=… p90_ms=… p99_ms=… max_ms=… cpu_s=…
//
// (rate = successful logins / seconds from the first connect to the last close; the
// latencies are connect → the login's success reply (IMAP's tagged OK of LOGIN, POP3's +OK
// of PASS, Submission's 235); cpu_s is this process's own CPU), then the errors by reason,
// if any.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"doorman/bench/internal/loadutil"
)

func main() { os.Exit(run()) }

func run() int {
	addr := flag.String("addr", "127.0.0.1:1143", "address of the proxy or server")
	proto := flag.String("proto", "imap", "protocol: imap (LOGIN), pop3 (USER/PASS) or submission (EHLO, AUTH PLAIN)")
	usersFile := flag.String("users", "", "file of `user:password` lines (or `user password`)")
	n := flag.Int("n", 0, "use only the first n users (0: all)")
	workers := flag.Int("workers", 32, "concurrent sessions")
	pass := flag.Bool("pass", false, "one login per user, in file order, then stop")
	duration := flag.Duration("duration", 30*time.Second, "run length (with -pass: an upper limit)")
	sourceIPs := flag.String("source-ips", "", "client source addresses, round robin: a range 127.0.2.1-127.0.2.100 and/or a comma list")
	linger0 := flag.Bool("linger0", false, "close with SO_LINGER 0 (RST, no TIME_WAIT)")
	timeout := flag.Duration("timeout", 10*time.Second, "limit for each session")
	rate := flag.Float64("rate", 0, "start at most this many logins per second, evenly paced (0: as fast as the workers go); a fixed rate gives comparable CPU-per-login figures")
	flag.Parse()

	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "loginrate: "+format+"\n", a...)
		return 2
	}
	if *usersFile == "" {
		return fail("-users is required")
	}
	var login loginFunc
	switch *proto {
	case "imap":
		login = loginIMAP
	case "pop3":
		login = loginPOP3
	case "submission":
		login = loginSubmission
	default:
		return fail("-proto must be imap, pop3 or submission")
	}
	accts, err := loadutil.ReadUsers(*usersFile)
	if err != nil {
		return fail("%v", err)
	}
	if *n > 0 && *n < len(accts) {
		accts = accts[:*n]
	}
	if len(accts) == 0 {
		return fail("no users in %s", *usersFile)
	}
	srcs, err := loadutil.ParseSourceIPs(*sourceIPs)
	if err != nil {
		return fail("-source-ips: %v", err)
	}

	var (
		next    atomic.Int64 // next user index (and source address)
		ok      atomic.Int64
		mu      sync.Mutex
		errs    = map[string]int{}
		lats    = make([][]time.Duration, *workers)
		stop    atomic.Bool
		wg      sync.WaitGroup
		started = time.Now()
	)
	deadline := started.Add(*duration)
	done := make(chan struct{})
	time.AfterFunc(*duration, func() { stop.Store(true); close(done) })
	// With -rate, one start every 1/rate seconds (loadutil.Pace).
	tokens := loadutil.Pace(*rate, started, done)
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 256)
			for !stop.Load() {
				if tokens != nil {
					select {
					case <-tokens:
					case <-done:
						return
					}
				}
				i := next.Add(1) - 1
				if *pass && i >= int64(len(accts)) {
					return
				}
				a := accts[i%int64(len(accts))]
				var d net.Dialer
				d.Timeout = *timeout
				if len(srcs) > 0 {
					d.LocalAddr = &net.TCPAddr{IP: srcs[i%int64(len(srcs))].AsSlice()}
					d.Control = loadutil.NoPort
				}
				lat, err := session(&d, *addr, login, a, *timeout, *linger0, &buf)
				if err != nil {
					mu.Lock()
					errs[err.Error()]++
					mu.Unlock()
					continue
				}
				ok.Add(1)
				lats[w] = append(lats[w], lat)
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	if end.After(deadline) && *pass && next.Load() < int64(len(accts)) {
		fmt.Fprintf(os.Stderr, "loginrate: -duration ended the pass after %d of %d users\n", next.Load(), len(accts))
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		k := int(p * float64(len(all)-1))
		return float64(all[k]) / float64(time.Millisecond)
	}
	nerr := 0
	for _, c := range errs {
		nerr += c
	}
	secs := end.Sub(started).Seconds()
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("RESULT logins=%d errors=%d secs=%.3f rate=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f cpu_s=%.2f\n",
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

// loginFunc runs one protocol's greeting and login on r/w and returns when the login has
// succeeded (the latency is taken then); logout, run after, ends the session politely.
type loginFunc func(r *bufio.Reader, w io.Writer, a loadutil.Account, buf *[]byte) (logout func() error, err error)

// session runs one connect → login → logout → close and returns the login latency.
func session(d *net.Dialer, addr string, login loginFunc, a loadutil.Account, timeout time.Duration, linger0 bool, buf *[]byte) (time.Duration, error) {
	t0 := time.Now()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("connect: %s", loadutil.ErrText(err))
	}
	tc := c.(*net.TCPConn)
	defer func() {
		if linger0 {
			tc.SetLinger(0)
		}
		tc.Close()
	}()
	tc.SetDeadline(t0.Add(timeout))
	r := bufio.NewReaderSize(tc, 1024)
	logout, err := login(r, tc, a, buf)
	if err != nil {
		return 0, err
	}
	lat := time.Since(t0)
	if err := logout(); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	return lat, nil
}

func loginIMAP(r *bufio.Reader, w io.Writer, a loadutil.Account, buf *[]byte) (func() error, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("greeting: %s", loadutil.ErrText(err))
	}
	if !bytes.HasPrefix(line, []byte("* OK")) {
		return nil, fmt.Errorf("greeting: %q", clip(line))
	}
	b := (*buf)[:0]
	b = append(b, "a LOGIN "...)
	b = appendQuoted(b, a.User)
	b = append(b, ' ')
	b = appendQuoted(b, a.Pass)
	b = append(b, "\r\n"...)
	*buf = b
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("LOGIN write: %s", loadutil.ErrText(err))
	}
	if err := tagged(r, "a "); err != nil {
		return nil, fmt.Errorf("LOGIN: %w", err)
	}
	return func() error {
		if _, err := io.WriteString(w, "b LOGOUT\r\n"); err != nil {
			return fmt.Errorf("LOGOUT write: %s", loadutil.ErrText(err))
		}
		if err := tagged(r, "b "); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("LOGOUT: %w", err)
		}
		return nil
	}, nil
}

func loginPOP3(r *bufio.Reader, w io.Writer, a loadutil.Account, buf *[]byte) (func() error, error) {
	if err := reply(r, "+OK", false); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	b := append(append(append((*buf)[:0], "USER "...), a.User...), "\r\n"...)
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("USER write: %s", loadutil.ErrText(err))
	}
	if err := reply(r, "+OK", false); err != nil {
		return nil, fmt.Errorf("USER: %w", err)
	}
	b = append(append(append(b[:0], "PASS "...), a.Pass...), "\r\n"...)
	*buf = b
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("PASS write: %s", loadutil.ErrText(err))
	}
	if err := reply(r, "+OK", false); err != nil {
		return nil, fmt.Errorf("PASS: %w", err)
	}
	return func() error { return quit(r, w, "+OK", false) }, nil
}

func loginSubmission(r *bufio.Reader, w io.Writer, a loadutil.Account, buf *[]byte) (func() error, error) {
	if err := reply(r, "220", true); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if _, err := io.WriteString(w, "EHLO bench.invalid\r\n"); err != nil {
		return nil, fmt.Errorf("EHLO write: %s", loadutil.ErrText(err))
	}
	if err := reply(r, "250", true); err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	cred := append(append(append([]byte{0}, a.User...), 0), a.Pass...)
	b := append((*buf)[:0], "AUTH PLAIN "...)
	b = base64.StdEncoding.AppendEncode(b, cred)
	b = append(b, "\r\n"...)
	*buf = b
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("AUTH write: %s", loadutil.ErrText(err))
	}
	if err := reply(r, "235", true); err != nil {
		return nil, fmt.Errorf("AUTH: %w", err)
	}
	return func() error { return quit(r, w, "221", true) }, nil
}

// quit sends QUIT and expects want (or EOF: a server may close first).
func quit(r *bufio.Reader, w io.Writer, want string, smtp bool) error {
	if _, err := io.WriteString(w, "QUIT\r\n"); err != nil {
		return fmt.Errorf("QUIT write: %s", loadutil.ErrText(err))
	}
	if err := reply(r, want, smtp); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("QUIT: %w", err)
	}
	return nil
}

// reply reads one reply (for SMTP its continuation lines, "250-", too) and fails unless
// it starts with want.
func reply(r *bufio.Reader, want string, smtp bool) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return errors.New(loadutil.ErrText(err))
		}
		if smtp && len(line) > 3 && line[3] == '-' {
			continue
		}
		if !bytes.HasPrefix(line, []byte(want)) {
			return fmt.Errorf("%q", clip(line))
		}
		return nil
	}
}

// tagged reads up to the line with tag and fails unless it says OK.
func tagged(r *bufio.Reader, tag string) error {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return errors.New(loadutil.ErrText(err))
		}
		if !bytes.HasPrefix(line, []byte(tag)) {
			continue
		}
		if bytes.HasPrefix(line[len(tag):], []byte("OK")) {
			return nil
		}
		return fmt.Errorf("%q", clip(line))
	}
}

func clip(b []byte) string {
	s := strings.TrimRight(string(b), "\r\n")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}
