// Command tlshs measures the server's CPU cost of full TLS handshakes on an implicit-TLS
// IMAP listener: -c clients connect over and over, each doing a full TLS 1.3 handshake (no
// session cache, so no resumption), reading the IMAP greeting and closing the TCP
// connection (no close_notify, no LOGOUT). The server's CPU comes from /proc/PID/stat
// (utime+stime of -pid, 10 ms clock ticks, exited threads included) and, as a finer
// cross-check, the sum of /proc/PID/task/*/schedstat run times; both are read at the start
// and the end of each measuring window, with the count of greetings received in between.
//
//	tlshs -addr 127.0.0.1:1993 -pid $(pidof doorman) -insecure -curves x25519,default \
//	      -c 32 -duration 4s -rounds 3
//
// The figure is full handshakes per server CPU-second (1 / the server's CPU per
// handshake, TCP accept and close included), which does not depend on how busy the
// machine is; the wall-clock rate is printed too but tracks the neighbours. For a stable
// figure run the server and this client on different cores (taskset -c 0 / -c 1).
//
// -curves is the list of groups to measure, each in its own window, in an order that
// alternates by round so the groups are compared side by side: x25519 (the client offers
// only X25519), default (Go's list: X25519MLKEM768 first, as current clients send) or
// x25519mlkem768 (the hybrid only). Each window starts with -warmup seconds unmeasured.
// Every handshake's negotiated group is checked against the expected one.
//
// Output: one line per window, then `RESULT curve=... hs_per_cpu_s_median=...` per group
// and the per-round ratio between the first two groups.
//
// For a reference point on the same machine, `tlshs -serve ADDR -cert F -key F` is a plain
// crypto/tls server (a goroutine per connection, Go's defaults): it writes an IMAP greeting
// after the handshake and reads until the client goes. Measure it the same way.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"doorman/bench/internal/loadutil"
)

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT.
const ipBindAddressNoPort = 24

func main() { os.Exit(run()) }

type group struct {
	name string
	conf *tls.Config
	want tls.CurveID // the group the server should pick
}

func run() int {
	addr := flag.String("addr", "127.0.0.1:993", "implicit-TLS IMAP address")
	pidList := flag.String("pid", "", "server process id(s), comma-separated (a multi-process server: their CPU is summed); required")
	conc := flag.Int("c", 32, "concurrent clients")
	duration := flag.Duration("duration", 4*time.Second, "measuring window per group and round")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "unmeasured start of each window")
	rounds := flag.Int("rounds", 3, "rounds (each measures every group once)")
	curves := flag.String("curves", "x25519,default", "groups to measure, comma-separated: x25519, default, x25519mlkem768")
	caFile := flag.String("cafile", "", "verify the server's certificate against this PEM file")
	insecure := flag.Bool("insecure", false, "do not verify the server's certificate (less client CPU; the server's work is the same)")
	serverName := flag.String("servername", "", "SNI name (default: the host of -addr)")
	sourceIPs := flag.String("source-ips", "", "client source addresses, round robin: a range 127.0.3.1-127.0.3.50 and/or a comma list")
	timeout := flag.Duration("timeout", 10*time.Second, "limit per connection (connect, handshake, greeting)")
	serve := flag.String("serve", "", "instead: run a reference crypto/tls server on this address (with -cert, -key)")
	certFile := flag.String("cert", "", "-serve: PEM certificate")
	keyFile := flag.String("key", "", "-serve: PEM key")
	flag.Parse()
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "tlshs: "+format+"\n", a...)
		return 2
	}
	if *serve != "" {
		if err := serveReference(*serve, *certFile, *keyFile); err != nil {
			return fail("-serve: %v", err)
		}
		return 0
	}
	pid, perr := parsePids(*pidList)
	if perr != nil || len(pid) == 0 {
		return fail("-pid is required (one or more process ids)")
	}
	if (*caFile == "") == !*insecure {
		return fail("give either -cafile FILE or -insecure")
	}
	if *conc < 1 || *rounds < 1 || *duration <= 0 {
		return fail("-c, -rounds and -duration must be positive")
	}
	if _, _, err := loadutil.CPUOf(pid); err != nil {
		return fail("-pid %s: %v", *pidList, err)
	}
	name := *serverName
	if name == "" {
		host, _, err := net.SplitHostPort(*addr)
		if err != nil {
			return fail("-addr: %v", err)
		}
		name = host
	}
	base := &tls.Config{ServerName: name, InsecureSkipVerify: *insecure, MinVersion: tls.VersionTLS13}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fail("%v", err)
		}
		base.RootCAs = x509.NewCertPool()
		if !base.RootCAs.AppendCertsFromPEM(pem) {
			return fail("%s: no PEM certificate in it", *caFile)
		}
	}
	var groups []group
	for _, c := range strings.Split(*curves, ",") {
		g := group{name: strings.ToLower(strings.TrimSpace(c)), conf: base.Clone()}
		switch g.name {
		case "x25519":
			g.conf.CurvePreferences, g.want = []tls.CurveID{tls.X25519}, tls.X25519
		case "default":
			g.want = tls.X25519MLKEM768 // Go's server and client both put it first
		case "x25519mlkem768", "mlkem":
			g.name = "x25519mlkem768"
			g.conf.CurvePreferences, g.want = []tls.CurveID{tls.X25519MLKEM768}, tls.X25519MLKEM768
		default:
			return fail("-curves: unknown group %q", c)
		}
		groups = append(groups, g)
	}
	srcs, err := loadutil.ParseSourceIPs(*sourceIPs)
	if err != nil {
		return fail("-source-ips: %v", err)
	}

	fmt.Printf("tlshs: %s, %d clients, %d rounds of %v (+%v warm-up) per group, server pid %s\n",
		*addr, *conc, *rounds, *duration, *warmup, *pidList)
	fmt.Printf("%-5s %-15s %8s %7s %9s %11s %11s %11s %11s %6s %9s %6s\n", "round", "group", "hs", "wall_s", "hs/s_wall",
		"srv_cpu_s", "(sched_s)", "hs/cpu_s", "(sched)", "util", "client_s", "errors")
	perGroup := map[string][]float64{}
	perGroupSched := map[string][]float64{}
	byRound := make([]map[string]float64, *rounds)
	for r := 0; r < *rounds; r++ {
		byRound[r] = map[string]float64{}
		for i := range groups {
			g := groups[(i+r)%len(groups)] // the order rotates by round
			w, err := window(*addr, g, srcs, *conc, *warmup, *duration, *timeout, pid)
			if err != nil {
				return fail("round %d %s: %v", r+1, g.name, err)
			}
			rate := float64(w.hs) / (float64(w.ticks) / 100)
			sched := float64(w.hs) / (float64(w.runNs) / 1e9)
			fmt.Printf("%-5d %-15s %8d %7.2f %9.0f %11.2f %11.3f %11.0f %11.0f %6.2f %9.2f %6d\n", r+1, g.name, w.hs,
				w.wall.Seconds(), float64(w.hs)/w.wall.Seconds(), float64(w.ticks)/100, float64(w.runNs)/1e9, rate, sched,
				float64(w.runNs)/1e9/w.wall.Seconds(), w.clientCPU, w.errs)
			for _, e := range w.errKinds {
				fmt.Printf("      error: %s\n", e)
			}
			if w.wrongGroup > 0 {
				return fail("round %d %s: %d handshakes negotiated another group than %v (%v)", r+1, g.name, w.wrongGroup, g.want, w.gotGroup)
			}
			perGroup[g.name] = append(perGroup[g.name], rate)
			perGroupSched[g.name] = append(perGroupSched[g.name], sched)
			byRound[r][g.name] = rate
		}
	}
	for _, g := range groups {
		v, s := perGroup[g.name], perGroupSched[g.name]
		fmt.Printf("RESULT curve=%s negotiated=%v hs_per_cpu_s_median=%.0f min=%.0f max=%.0f cpu_us_per_hs=%.0f sched_hs_per_cpu_s_median=%.0f (runs: %s)\n",
			g.name, g.want, median(v), minOf(v), maxOf(v), 1e6/median(v), median(s), join(v))
	}
	if len(groups) >= 2 {
		a, b := groups[1].name, groups[0].name
		var ratios []float64
		for _, m := range byRound {
			ratios = append(ratios, m[a]/m[b])
		}
		fmt.Printf("RESULT ratio %s/%s per round: median %.3f (rounds: %s)\n", a, b, median(ratios), join(ratios))
	}
	return 0
}

type result struct {
	hs, errs     int64
	ticks, runNs int64
	wall         time.Duration
	clientCPU    float64
	wrongGroup   int64
	gotGroup     tls.CurveID
	errKinds     []string
}

// window runs conc clients with g's config for warmup+duration and measures the last part.
func window(addr string, g group, srcs []netip.Addr, conc int, warmup, duration, timeout time.Duration, pid []int) (result, error) {
	var res result
	var hs, errs, wrong atomic.Int64
	var gotGroup atomic.Uint32
	var mu sync.Mutex
	kinds := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := seq.Add(1)
				got, err := once(ctx, addr, g.conf, srcs, int(i), timeout)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					errs.Add(1)
					mu.Lock()
					kinds[err.Error()]++
					mu.Unlock()
					continue
				}
				if got != g.want {
					wrong.Add(1)
					gotGroup.Store(uint32(got))
				}
				hs.Add(1)
			}
		}()
	}
	time.Sleep(warmup)
	t0, n0, err := loadutil.CPUOf(pid)
	if err != nil {
		cancel()
		wg.Wait()
		return res, err
	}
	c0 := selfCPU()
	h0, e0, start := hs.Load(), errs.Load(), time.Now()
	time.Sleep(duration)
	t1, n1, err := loadutil.CPUOf(pid)
	h1, e1, wall := hs.Load(), errs.Load(), time.Since(start)
	c1 := selfCPU()
	cancel()
	wg.Wait()
	if err != nil {
		return res, err
	}
	res = result{hs: h1 - h0, errs: e1 - e0, ticks: t1 - t0, runNs: n1 - n0, wall: wall, clientCPU: c1 - c0,
		wrongGroup: wrong.Load(), gotGroup: tls.CurveID(gotGroup.Load())}
	for k, n := range kinds {
		res.errKinds = append(res.errKinds, fmt.Sprintf("%d× %s", n, k))
	}
	sort.Strings(res.errKinds)
	if res.hs == 0 {
		return res, fmt.Errorf("no handshake completed in the window (%d errors: %v)", res.errs, res.errKinds)
	}
	if res.ticks == 0 {
		return res, errors.New("the server used no CPU in the window (wrong -pid?)")
	}
	return res, nil
}

// serveReference is the reference server of -serve: stdlib crypto/tls, goroutine per
// connection, Go's default groups and session tickets, the handshake driven by the greeting's
// Write. It runs until the process is killed.
func serveReference(addr, certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	fmt.Fprintf(os.Stderr, "tlshs: reference crypto/tls server on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			tc := tls.Server(c, conf)
			if _, err := io.WriteString(tc, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] reference ready.\r\n"); err != nil {
				return
			}
			io.Copy(io.Discard, tc)
		}()
	}
}

// once connects, does a full handshake, reads the greeting and closes the TCP connection.
func once(ctx context.Context, addr string, conf *tls.Config, srcs []netip.Addr, i int, timeout time.Duration) (tls.CurveID, error) {
	d := net.Dialer{Timeout: timeout}
	if len(srcs) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: srcs[i%len(srcs)].AsSlice()}
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("connect: %v", short(err))
	}
	defer conn.Close() // the TCP connection only: no close_notify
	conn.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return 0, fmt.Errorf("handshake: %v", short(err))
	}
	line, err := bufio.NewReaderSize(tc, 512).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("greeting: %v", short(err))
	}
	if !strings.HasPrefix(line, "* OK") {
		return 0, fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	return tc.ConnectionState().CurveID, nil
}

func short(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "127.") {
		s = s[i+2:] // drop the addresses, so errors group
	}
	return s
}

// parsePids parses a comma-separated list of process ids.
func parsePids(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad process id %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// selfCPU is this process's user+system CPU in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
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

func join(v []float64) string {
	var parts []string
	for _, x := range v {
		if x < 10 {
			parts = append(parts, strconv.FormatFloat(x, 'f', 3, 64))
		} else {
			parts = append(parts, strconv.FormatFloat(x, 'f', 0, 64))
		}
	}
	return strings.Join(parts, " ")
}
