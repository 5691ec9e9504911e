// Command fetchbench compares FETCH throughput of one large message directly from an IMAP
// backend and through a proxy, and the proxy's CPU time per GB relayed.
//
//	fetchbench -direct 127.0.0.1:10143 -proxy 127.0.0.1:1143 -user alice -pass secret \
//	           -size 20000000 -rounds 15 -proxy-pid $(pidof doorman)
//
// It logs in directly to the backend once, empties the mailbox -mailbox (created if
// missing) and APPENDs one message of exactly -size bytes. It then keeps one session open
// on each path (direct and proxied, both SELECTed), fetches the message once on each to
// warm caches, and runs -rounds interleaved rounds: each round fetches the whole message
// (BODY.PEEK[]) once directly and once through the proxy, alternating which goes first.
// A fetch is timed from sending the command to the tagged OK. With -reconnect (the
// default) every round uses new sessions on both paths: on a small shared machine a
// session keeps whatever CPU placement its processes got, which otherwise biases every
// round the same way (an A/A run, the backend on both sides, showed 1.18x that way).
//
// Proxy CPU: utime+stime of -proxy-pid from /proc/PID/stat (clock ticks, USER_HZ = 100 on
// Linux) read right before and right after each proxied fetch, summed over the rounds;
// also the sum of the threads' run time from /proc/PID/task/*/schedstat (nanoseconds) as a
// finer cross-check. Both divided by the bytes relayed.
//
// TLS mode (-tls-proxy ADDR, the proxy's implicit-TLS listener): the rounds compare paths
// that all go through the proxy, and the proxy's CPU is measured on each of them:
//
//   - plain: -proxy, plain text on both legs;
//   - tls-client: -tls-proxy, TLS from this client to the proxy, plain to the backend;
//   - with -tls-backend-user U (a proxy user routed to the backend's imaps port with
//     passdb ssl=yes and destuser=-user, same password) also tls-backend (-proxy as U:
//     plain to the proxy, TLS to the backend) and tls-both (-tls-proxy as U);
//   - with -direct-tls ADDR (the backend's imaps port) also direct-tls: TLS straight to
//     the backend, no proxy, for what the backend's own TLS can deliver (verified against
//     -cafile too; no proxy CPU is counted for it).
//
// The order of the paths rotates by round; the result is each path's median MB/s and the
// proxy's CPU seconds per GB, and per round the ratio of each TLS path to plain (the
// median of those ratios is the figure: side by side, so the machine's drift cancels).
// The client verifies the proxy's certificate against -cafile, or not at all with
// -insecure; it offers Go's default groups and keeps no session cache. The MB/s of a TLS
// path include this client's own decryption, on the same machine.
//
// -proto pop3 and -proto submission run the same rounds for POP3 RETR and for Submission
// (MAIL, RCPT, DATA) of one large message: see other.go.
//
// MB means 10^6 bytes, GB 10^9.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"doorman/bench/internal/loadutil"
)

func main() { os.Exit(run()) }

func run() int {
	direct := flag.String("direct", "", "backend address (required): IMAP, or -proto's")
	proxy := flag.String("proxy", "", "proxy address (required): IMAP, or -proto's")
	proto := flag.String("proto", "imap", "protocol: imap (FETCH, and APPEND with -append), pop3 (RETR) or submission (MAIL, RCPT, DATA)")
	imapAddr := flag.String("imap", "", "-proto pop3: the backend's IMAP address, to put the message in the INBOX (which is emptied first)")
	user := flag.String("user", "", "user (same on both paths)")
	pass := flag.String("pass", "", "password")
	mailbox := flag.String("mailbox", "fetchbench", "mailbox to hold the message (emptied, created if missing)")
	size := flag.Int("size", 20_000_000, "message size in bytes")
	rounds := flag.Int("rounds", 15, "interleaved rounds (one direct and one proxied fetch each)")
	warmup := flag.Int("warmup", 1, "untimed fetches per path before the rounds")
	reconnect := flag.Bool("reconnect", true, "new sessions on both paths for every round (so no round inherits one process placement)")
	pidList := flag.String("proxy-pid", "", "proxy process id(s), comma-separated, for its CPU time (summed; empty or 0: not measured)")
	appendToo := flag.Bool("append", false, "plain mode: also time an APPEND of -size bytes on each path every round (to -mailbox + \"-append\", emptied directly after each round)")
	timeout := flag.Duration("timeout", 2*time.Minute, "limit per command")
	tlsProxy := flag.String("tls-proxy", "", "the proxy's implicit-TLS address: compare TLS with plain through the proxy (TLS mode)")
	tlsBackendUser := flag.String("tls-backend-user", "", "TLS mode: a proxy user whose backend leg is TLS (destuser -user, same password)")
	caFile := flag.String("cafile", "", "TLS mode: verify the proxy's certificate against this PEM file")
	insecure := flag.Bool("insecure", false, "TLS mode: do not verify the proxy's certificate")
	directTLS := flag.String("direct-tls", "", "TLS mode: the backend's implicit-TLS address, for a direct-tls path")
	flag.Parse()
	pid, err := parsePids(*pidList)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetchbench: -proxy-pid:", err)
		return 2
	}
	if *direct == "" || *proxy == "" || *user == "" {
		fmt.Fprintln(os.Stderr, "fetchbench: -direct, -proxy and -user are required")
		return 2
	}
	if *size < 1000 || *rounds < 1 {
		fmt.Fprintln(os.Stderr, "fetchbench: -size must be at least 1000 and -rounds at least 1")
		return 2
	}
	switch *proto {
	case "imap":
		if *imapAddr != "" {
			fmt.Fprintln(os.Stderr, "fetchbench: -imap is for -proto pop3")
			return 2
		}
	case "pop3", "submission":
		if *appendToo || *tlsProxy != "" || *tlsBackendUser != "" || *directTLS != "" || *caFile != "" || *insecure {
			fmt.Fprintln(os.Stderr, "fetchbench: -append and the TLS mode are IMAP's")
			return 2
		}
		return otherMode(*proto, *direct, *proxy, *imapAddr, *user, *pass, *size, *rounds, *warmup, pid, *timeout)
	default:
		fmt.Fprintln(os.Stderr, "fetchbench: -proto must be imap, pop3 or submission")
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "fetchbench: "+format+"\n", a...)
		return 1
	}
	var tlsConf *tls.Config
	if *tlsProxy != "" {
		host, _, err := net.SplitHostPort(*tlsProxy)
		if err != nil {
			return fail("-tls-proxy: %v", err)
		}
		if (*caFile == "") == !*insecure {
			fmt.Fprintln(os.Stderr, "fetchbench: -tls-proxy needs either -cafile FILE or -insecure")
			return 2
		}
		tlsConf = &tls.Config{ServerName: host, InsecureSkipVerify: *insecure}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return fail("%v", err)
			}
			tlsConf.RootCAs = x509.NewCertPool()
			if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
				return fail("%s: no PEM certificate in it", *caFile)
			}
		}
	} else if *tlsBackendUser != "" || *caFile != "" || *insecure || *directTLS != "" {
		fmt.Fprintln(os.Stderr, "fetchbench: -tls-backend-user, -direct-tls, -cafile and -insecure need -tls-proxy")
		return 2
	}

	// Set up the message, directly on the backend.
	setup, err := dial(*direct, *user, *pass, *timeout, nil)
	if err != nil {
		return fail("direct login: %v", err)
	}
	if err := setup.prepare(*mailbox, *size); err != nil {
		return fail("preparing %s: %v", *mailbox, err)
	}
	setup.logout()
	fmt.Printf("appended one message of %d bytes to %q\n", *size, *mailbox)

	// openAs logs in on one path and SELECTs the mailbox, which must hold the one message.
	openAs := func(addr, user string, tlsConf *tls.Config) (*client, error) {
		c, err := dial(addr, user, *pass, *timeout, tlsConf)
		if err != nil {
			return nil, err
		}
		if n, err := c.selectBox(*mailbox); err != nil {
			c.conn.Close()
			return nil, fmt.Errorf("SELECT %s: %v", *mailbox, err)
		} else if n != 1 {
			c.conn.Close()
			return nil, fmt.Errorf("%s holds %d messages, want 1 (another fetchbench running?)", *mailbox, n)
		}
		return c, nil
	}
	if tlsConf != nil {
		paths := []path{
			{name: "plain", addr: *proxy, user: *user, proxied: true},
			{name: "tls-client", addr: *tlsProxy, user: *user, tls: tlsConf, proxied: true},
		}
		if *tlsBackendUser != "" {
			paths = append(paths,
				path{name: "tls-backend", addr: *proxy, user: *tlsBackendUser, proxied: true},
				path{name: "tls-both", addr: *tlsProxy, user: *tlsBackendUser, tls: tlsConf, proxied: true})
		}
		if *directTLS != "" {
			host, _, err := net.SplitHostPort(*directTLS)
			if err != nil {
				return fail("-direct-tls: %v", err)
			}
			dc := tlsConf.Clone()
			dc.ServerName = host
			paths = append(paths, path{name: "direct-tls", addr: *directTLS, user: *user, tls: dc})
		}
		return tlsMode(paths, openAs, *size, *rounds, *warmup, pid, fail)
	}
	open := func(addr string) (*client, error) { return openAs(addr, *user, nil) }
	d, err := open(*direct)
	if err != nil {
		return fail("direct: %v", err)
	}
	p, err := open(*proxy)
	if err != nil {
		return fail("proxy: %v", err)
	}
	for i := 0; i < *warmup; i++ {
		for _, c := range []*client{d, p} {
			if _, err := c.fetch(*size); err != nil {
				return fail("warm-up fetch: %v", err)
			}
		}
	}

	type round struct {
		direct, proxy float64 // MB/s
		ticks         int64   // proxy utime+stime, clock ticks
		runNs         int64   // proxy thread run time, ns
	}
	var res []round
	var totTicks, totNs int64
	cpuOK := len(pid) > 0
	appendBox := *mailbox + "-append"
	var appD, appP []float64 // APPEND MB/s per round
	var appTicks, appNs int64
	msg := message(*size)
	if *appendToo {
		c, err := dial(*direct, *user, *pass, *timeout, nil)
		if err != nil {
			return fail("direct login: %v", err)
		}
		err = c.empty(appendBox)
		c.logout()
		if err != nil {
			return fail("emptying %s: %v", appendBox, err)
		}
	}
	fmt.Printf("%-6s %-7s %12s %12s %8s %14s %14s\n", "round", "first", "direct MB/s", "proxy MB/s", "ratio", "proxy cpu ms", "(schedstat ms)")
	for r := 0; r < *rounds; r++ {
		var rr round
		order := []string{"direct", "proxy"}
		if r%2 == 1 {
			order = []string{"proxy", "direct"}
		}
		if *reconnect && r > 0 {
			d.logout()
			p.logout()
			for _, path := range order {
				if path == "direct" {
					d, err = open(*direct)
				} else {
					p, err = open(*proxy)
				}
				if err != nil {
					return fail("round %d %s: %v", r+1, path, err)
				}
			}
		}
		for _, path := range order {
			if path == "direct" {
				el, err := d.fetch(*size)
				if err != nil {
					return fail("round %d direct fetch: %v", r+1, err)
				}
				rr.direct = mbps(*size, el)
				continue
			}
			var t0, n0 int64
			if cpuOK {
				if t0, n0, err = loadutil.CPUOf(pid); err != nil {
					fmt.Fprintf(os.Stderr, "fetchbench: proxy CPU not measured: %v\n", err)
					cpuOK = false
				}
			}
			el, err := p.fetch(*size)
			if err != nil {
				return fail("round %d proxied fetch: %v", r+1, err)
			}
			if cpuOK {
				t1, n1, err := loadutil.CPUOf(pid)
				if err != nil {
					fmt.Fprintf(os.Stderr, "fetchbench: proxy CPU not measured: %v\n", err)
					cpuOK = false
				} else {
					rr.ticks, rr.runNs = t1-t0, n1-n0
					totTicks += rr.ticks
					totNs += rr.runNs
				}
			}
			rr.proxy = mbps(*size, el)
		}
		if *appendToo {
			for _, path := range order {
				c := d
				if path == "proxy" {
					c = p
				}
				var t0, n0 int64
				measure := cpuOK && path == "proxy"
				if measure {
					t0, n0, _ = loadutil.CPUOf(pid)
				}
				el, err := c.appendMsg(appendBox, msg)
				if err != nil {
					return fail("round %d %s APPEND: %v", r+1, path, err)
				}
				if measure {
					t1, n1, _ := loadutil.CPUOf(pid)
					appTicks += t1 - t0
					appNs += n1 - n0
				}
				if path == "direct" {
					appD = append(appD, mbps(*size, el))
				} else {
					appP = append(appP, mbps(*size, el))
				}
			}
			c, err := dial(*direct, *user, *pass, *timeout, nil)
			if err == nil {
				err = c.empty(appendBox)
				c.logout()
			}
			if err != nil {
				return fail("round %d emptying %s: %v", r+1, appendBox, err)
			}
		}
		res = append(res, rr)
		fmt.Printf("%-6d %-7s %12.1f %12.1f %8.3f %14d %14.1f\n", r+1, order[0], rr.direct, rr.proxy, rr.proxy/rr.direct,
			rr.ticks*10, float64(rr.runNs)/1e6)
	}
	d.logout()
	p.logout()

	var ds, ps, ratios []float64
	for _, r := range res {
		ds = append(ds, r.direct)
		ps = append(ps, r.proxy)
		ratios = append(ratios, r.proxy/r.direct)
	}
	gb := float64(*size) * float64(*rounds) / 1e9
	fmt.Printf("RESULT size=%d rounds=%d direct_median_MBps=%.1f proxy_median_MBps=%.1f ratio_median=%.3f ratio_min=%.3f ratio_max=%.3f\n",
		*size, *rounds, median(ds), median(ps), median(ratios), minOf(ratios), maxOf(ratios))
	if cpuOK {
		fmt.Printf("RESULT proxy_cpu_s=%.2f relayed_GB=%.3f cpu_s_per_GB=%.3f (utime+stime, 10 ms ticks) schedstat_cpu_s=%.3f schedstat_cpu_s_per_GB=%.3f\n",
			float64(totTicks)/100, gb, float64(totTicks)/100/gb, float64(totNs)/1e9, float64(totNs)/1e9/gb)
	} else {
		fmt.Println("RESULT proxy CPU not measured (no -proxy-pid)")
	}
	if *appendToo {
		var ratios []float64
		for i := range appD {
			ratios = append(ratios, appP[i]/appD[i])
		}
		fmt.Printf("RESULT append size=%d rounds=%d direct_median_MBps=%.1f proxy_median_MBps=%.1f ratio_median=%.3f ratio_min=%.3f ratio_max=%.3f",
			*size, *rounds, median(appD), median(appP), median(ratios), minOf(ratios), maxOf(ratios))
		if cpuOK {
			fmt.Printf(" proxy_cpu_s=%.2f cpu_s_per_GB=%.3f schedstat_cpu_s_per_GB=%.3f", float64(appTicks)/100, float64(appTicks)/100/gb, float64(appNs)/1e9/gb)
		}
		fmt.Println()
	}
	return 0
}

// parsePids parses a comma-separated list of process ids ("" and "0": none).
func parsePids(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" || f == "0" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad process id %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

func mbps(size int, d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }

// path is one way to the message in TLS mode; every path goes through the proxy.
type path struct {
	name, addr, user string
	tls              *tls.Config // nil: plain to the proxy
	proxied          bool        // through the proxy: its CPU is counted
}

// tlsMode runs the rounds of TLS mode: every path once per round, new sessions each round,
// the order rotating, the proxy's CPU read around every fetch.
func tlsMode(paths []path, openAs func(addr, user string, tlsConf *tls.Config) (*client, error),
	size, rounds, warmup int, pid []int, fail func(string, ...any) int) int {
	open := func(p path) (*client, error) {
		c, err := openAs(p.addr, p.user, p.tls)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", p.name, err)
		}
		return c, nil
	}
	for _, p := range paths {
		c, err := open(p)
		if err != nil {
			return fail("%v", err)
		}
		for i := 0; i < warmup; i++ {
			if _, err := c.fetch(size); err != nil {
				c.conn.Close()
				return fail("warm-up fetch %s: %v", p.name, err)
			}
		}
		if tc, ok := c.conn.(*tls.Conn); ok {
			st := tc.ConnectionState()
			fmt.Printf("path %s: %s, %s, %s\n", p.name, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID)
		}
		c.logout()
	}
	n := len(paths)
	mb := make([][]float64, n)     // per path, per round
	ticks := make([]int64, n)      // per path, summed (the round lines show schedstat ms)
	runNs := make([]int64, n)      // per path, summed
	ratios := make([][]float64, n) // per TLS path, per round: MB/s ÷ plain's
	cpuOK := len(pid) > 0
	fmt.Printf("%-6s %-12s", "round", "first")
	for _, p := range paths {
		fmt.Printf(" %16s %16s", p.name+"_MBps", p.name+"_cpu_ms")
	}
	fmt.Println()
	for r := 0; r < rounds; r++ {
		order := make([]int, n)
		for i := range order {
			order[i] = (i + r) % n
		}
		row := make([]float64, n)
		rowMs := make([]float64, n)
		for _, i := range order {
			c, err := open(paths[i])
			if err != nil {
				return fail("round %d: %v", r+1, err)
			}
			var t0, n0 int64
			measure := cpuOK && paths[i].proxied
			if measure {
				if t0, n0, err = loadutil.CPUOf(pid); err != nil {
					fmt.Fprintf(os.Stderr, "fetchbench: proxy CPU not measured: %v\n", err)
					cpuOK, measure = false, false
				}
			}
			el, err := c.fetch(size)
			if err != nil {
				return fail("round %d %s fetch: %v", r+1, paths[i].name, err)
			}
			if measure {
				t1, n1, err := loadutil.CPUOf(pid)
				if err != nil {
					fmt.Fprintf(os.Stderr, "fetchbench: proxy CPU not measured: %v\n", err)
					cpuOK = false
				} else {
					ticks[i] += t1 - t0
					runNs[i] += n1 - n0
					rowMs[i] = float64(n1-n0) / 1e6
				}
			}
			c.logout()
			row[i] = mbps(size, el)
			mb[i] = append(mb[i], row[i])
		}
		for i := 1; i < n; i++ {
			ratios[i] = append(ratios[i], row[i]/row[0])
		}
		fmt.Printf("%-6d %-12s", r+1, paths[order[0]].name)
		for i := range paths {
			fmt.Printf(" %16.1f %16.1f", row[i], rowMs[i])
		}
		fmt.Println()
	}
	gb := float64(size) * float64(rounds) / 1e9
	for i, p := range paths {
		fmt.Printf("RESULT path=%s size=%d rounds=%d median_MBps=%.1f min_MBps=%.1f max_MBps=%.1f", p.name, size, rounds,
			median(mb[i]), minOf(mb[i]), maxOf(mb[i]))
		if cpuOK && p.proxied {
			fmt.Printf(" proxy_cpu_s=%.2f schedstat_cpu_s=%.3f relayed_GB=%.3f cpu_s_per_GB=%.3f schedstat_cpu_s_per_GB=%.3f",
				float64(ticks[i])/100, float64(runNs[i])/1e9, gb, float64(ticks[i])/100/gb, float64(runNs[i])/1e9/gb)
		}
		fmt.Println()
	}
	for i := 1; i < n; i++ {
		fmt.Printf("RESULT ratio %s/plain median=%.3f min=%.3f max=%.3f\n", paths[i].name, median(ratios[i]), minOf(ratios[i]), maxOf(ratios[i]))
	}
	return 0
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// client is a minimal synchronous IMAP client.
type client struct {
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	tag     int
	buf     []byte
}

func dial(addr, user, pass string, timeout time.Duration, tlsConf *tls.Config) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		tc := tls.Client(conn, tlsConf)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	c := &client{conn: conn, r: bufio.NewReaderSize(conn, 1<<20), timeout: timeout, buf: make([]byte, 1<<20)}
	conn.SetDeadline(time.Now().Add(timeout))
	line, err := c.line()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(line, "* OK") {
		conn.Close()
		return nil, fmt.Errorf("greeting %q", line)
	}
	if _, err := c.cmd("LOGIN "+quote(user)+" "+quote(pass), nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("LOGIN: %w", err)
	}
	return c, nil
}

func (c *client) line() (string, error) {
	s, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// cmd sends a command and reads to its tagged reply, which must be OK. Each untagged line
// goes to onLine (if set); a literal at a line's end is passed to onLine as its size and
// then discarded here.
func (c *client) cmd(command string, onLine func(line string)) (string, error) {
	c.tag++
	tag := "t" + strconv.Itoa(c.tag)
	c.conn.SetDeadline(time.Now().Add(c.timeout))
	if _, err := io.WriteString(c.conn, tag+" "+command+"\r\n"); err != nil {
		return "", err
	}
	return c.readTagged(tag, onLine)
}

func (c *client) readTagged(tag string, onLine func(string)) (string, error) {
	for {
		line, err := c.line()
		if err != nil {
			return "", err
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				return rest, fmt.Errorf("%s", rest)
			}
			return rest, nil
		}
		if onLine != nil {
			onLine(line)
		}
		if n, ok := literalLen(line); ok {
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(c.r, n), c.buf); err != nil {
				return "", err
			}
		}
	}
}

func (c *client) logout() {
	c.cmd("LOGOUT", nil)
	c.conn.Close()
}

// selectBox SELECTs mailbox and returns its message count.
func (c *client) selectBox(mailbox string) (int, error) {
	exists := -1
	_, err := c.cmd("SELECT "+quote(mailbox), func(line string) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "*" && f[2] == "EXISTS" {
			exists, _ = strconv.Atoi(f[1])
		}
	})
	return exists, err
}

// prepare empties (or creates) mailbox and appends one message of exactly size bytes.
func (c *client) prepare(mailbox string, size int) error {
	c.cmd("CREATE "+quote(mailbox), nil) // "already exists" is fine
	n, err := c.selectBox(mailbox)
	if err != nil {
		return err
	}
	if n > 0 {
		if _, err := c.cmd("STORE 1:* +FLAGS.SILENT (\\Deleted)", nil); err != nil {
			return err
		}
		if _, err := c.cmd("EXPUNGE", nil); err != nil {
			return err
		}
	}
	if _, err := c.cmd("CLOSE", nil); err != nil {
		return err
	}
	msg := message(size)
	c.tag++
	tag := "t" + strconv.Itoa(c.tag)
	c.conn.SetDeadline(time.Now().Add(c.timeout))
	if _, err := fmt.Fprintf(c.conn, "%s APPEND %s {%d}\r\n", tag, quote(mailbox), len(msg)); err != nil {
		return err
	}
	line, err := c.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+") {
		return fmt.Errorf("APPEND: %s", line)
	}
	if _, err := c.conn.Write(append(msg, '\r', '\n')); err != nil {
		return err
	}
	_, err = c.readTagged(tag, nil)
	return err
}

// empty creates mailbox if missing and expunges every message in it.
func (c *client) empty(mailbox string) error {
	c.cmd("CREATE "+quote(mailbox), nil) // "already exists" is fine
	n, err := c.selectBox(mailbox)
	if err != nil {
		return err
	}
	if n > 0 {
		if _, err := c.cmd("STORE 1:* +FLAGS.SILENT (\\Deleted)", nil); err != nil {
			return err
		}
		if _, err := c.cmd("EXPUNGE", nil); err != nil {
			return err
		}
	}
	_, err = c.cmd("CLOSE", nil)
	return err
}

// appendMsg APPENDs msg to mailbox with a synchronizing literal and returns the time from
// sending the command to the tagged OK.
func (c *client) appendMsg(mailbox string, msg []byte) (time.Duration, error) {
	c.tag++
	tag := "t" + strconv.Itoa(c.tag)
	c.conn.SetDeadline(time.Now().Add(c.timeout))
	start := time.Now()
	if _, err := fmt.Fprintf(c.conn, "%s APPEND %s {%d}\r\n", tag, quote(mailbox), len(msg)); err != nil {
		return 0, err
	}
	line, err := c.line()
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "+") {
		return 0, fmt.Errorf("APPEND: %s", line)
	}
	if _, err := c.conn.Write(append(msg, '\r', '\n')); err != nil {
		return 0, err
	}
	if _, err := c.readTagged(tag, nil); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// message builds an RFC 5322 message of exactly size bytes: headers, then lines of 76
// pseudo-random base64 characters (the shape of a big attachment).
func message(size int) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	h := fmt.Sprintf("From: fetchbench <fetchbench@example.org>\r\nTo: user@example.org\r\n"+
		"Subject: fetchbench %d bytes\r\nDate: %s\r\nMessage-ID: <fetchbench-%d@example.org>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
		size, time.Now().Format(time.RFC1123Z), time.Now().UnixNano())
	b := make([]byte, 0, size)
	b = append(b, h...)
	rng := rand.New(rand.NewSource(1))
	for remaining := size - len(b); remaining > 0; remaining = size - len(b) {
		n := 76 // characters on this line, before its CRLF
		switch {
		case remaining <= 78:
			n = remaining - 2 // the last line
		case remaining < 78+3:
			n = remaining - 2 - 3 // leave room for a last line of at least one character
		}
		for i := 0; i < n; i++ {
			b = append(b, alphabet[rng.Intn(64)])
		}
		b = append(b, '\r', '\n')
	}
	return b
}

// fetch fetches message 1's full body and returns the time from sending the command to the
// tagged OK. It checks that exactly size bytes arrived as the literal.
func (c *client) fetch(size int) (time.Duration, error) {
	got := int64(-1)
	start := time.Now()
	_, err := c.cmd("FETCH 1 (BODY.PEEK[])", func(line string) {
		if n, ok := literalLen(line); ok {
			got = n
		}
	})
	el := time.Since(start)
	if err != nil {
		return 0, err
	}
	if got != int64(size) {
		return 0, fmt.Errorf("FETCH returned a literal of %d bytes, want %d", got, size)
	}
	return el, nil
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
	n, err := strconv.ParseInt(strings.TrimSuffix(line[i+1:len(line)-1], "+"), 10, 64)
	return n, err == nil
}

func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
