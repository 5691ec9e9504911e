// Package routetest holds test helpers shared by route and engine tests: a
// real redis-server on a free loopback port (also as a Redis Cluster, or a
// master and replica under Sentinel), a "hung" server that accepts
// connections and never answers, and a minimal Redis command sender for
// seeding data without a client library.
//
// It is imported only from _test.go files.
package routetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// StartRedis starts redis-server on a free 127.0.0.1 port with persistence
// off, waits until it answers PING, and stops it when the test ends. stop
// may be called earlier (e.g. to test an outage); calling it again is a
// no-op. Without redis-server on PATH the test is skipped, unless the CI
// environment variable is set, in which case it fails.
func StartRedis(t testing.TB) (addr string, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("redis-server not installed (apt-get install -y redis-server)")
		}
		t.Fatalf("redis-server not installed and CI is set: %v", err)
	}
	var lastErr error
	// A free port can be taken by someone else between our probe and
	// redis-server's bind: try a few times.
	for range 3 {
		addr, stop, lastErr = startRedis(t, bin, nil)
		if lastErr == nil {
			return addr, stop
		}
	}
	t.Fatalf("routetest: redis-server did not start: %v", lastErr)
	return "", nil
}

// startRedis starts one redis-server on a free port in its own directory.
// extra, when not nil, returns more arguments for that port and directory
// (pre goes first, where a config file must be: see StartSentinels).
func startRedis(t testing.TB, bin string, extra func(port int, dir string) (pre, post []string, err error)) (string, func(), error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	var pre, post []string
	if extra != nil {
		if pre, post, err = extra(port, dir); err != nil {
			return "", nil, err
		}
	}
	var logBuf syncBuffer
	args := append(pre,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--dir", dir, "--loglevel", "warning")
	cmd := exec.Command(bin, append(args, post...)...)
	cmd.Stdout = &logBuf
	cmd.Stderr = &logBuf
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(stop)

	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ping(addr); err == nil {
			return addr, stop, nil
		}
		select {
		case <-exited:
			return "", nil, fmt.Errorf("redis-server exited: %s", strings.TrimSpace(logBuf.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("no PONG from %s within 10s: %s", addr, strings.TrimSpace(logBuf.String()))
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func ping(addr string) error {
	reply, err := command(addr, "PING")
	if err != nil {
		return err
	}
	if len(reply) != 1 || reply[0] != "PONG" {
		return fmt.Errorf("PING: got %q", reply)
	}
	return nil
}

// Do sends one command to the Redis at addr on a fresh connection and
// returns the reply flattened to strings (a simple string, an integer, a
// bulk string, or the elements of an array; a nil bulk is ""). A Redis
// error reply fails the test.
func Do(t testing.TB, addr string, args ...string) []string {
	t.Helper()
	reply, err := command(addr, args...)
	if err != nil {
		t.Fatalf("routetest: redis %s: %v", strings.Join(args, " "), err)
	}
	return reply
}

// HSet stores fields in the hash at key (HSET key f1 v1 f2 v2 …).
func HSet(t testing.TB, addr, key string, fields map[string]string) {
	t.Helper()
	args := []string{"HSET", key}
	for k, v := range fields {
		args = append(args, k, v)
	}
	Do(t, addr, args...)
}

func command(addr string, args ...string) ([]string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(c))
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return []string{line[1:]}, nil
	case '-':
		return nil, errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return []string{""}, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return []string{string(buf[:n])}, nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, err
		}
		var out []string
		for range max(n, 0) {
			el, err := readReply(r)
			if err != nil {
				return nil, err
			}
			out = append(out, el...)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

// StartHungServer listens on a free 127.0.0.1 port, accepts connections and
// never writes a byte — like a Redis (or backend) that is SIGSTOPped. It is
// closed, with its connections, when the test ends.
func StartHungServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("routetest: listen: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
