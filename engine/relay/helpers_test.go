//go:build linux

package relay

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is one relayed session on loopback: the test plays client and
// backend; the relay gets the proxy's two sockets as raw fds.
type pair struct {
	client  *net.TCPConn // the test's client
	backend *net.TCPConn // the test's backend
	cfd     int          // proxy side of the client connection
	bfd     int          // proxy side of the backend connection
}

func listen(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// connect returns both ends of a fresh connection through ln. Callers must
// not share ln between goroutines.
func connect(t testing.TB, ln *net.TCPListener) (dialed, accepted *net.TCPConn) {
	t.Helper()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	return d, a
}

// rawFD takes the socket out of c the way the engine takes it out of gnet:
// a close-on-exec dup, then the original is closed.
func rawFD(t testing.TB, c *net.TCPConn) int {
	t.Helper()
	sc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd, derr := -1, error(nil)
	if err := sc.Control(func(u uintptr) { fd, derr = unix.FcntlInt(u, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		t.Fatal(err)
	}
	if derr != nil {
		t.Fatal(derr)
	}
	c.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return fd
}

func newPair(t testing.TB, ln *net.TCPListener) *pair {
	t.Helper()
	client, pc := connect(t, ln)
	pb, backend := connect(t, ln)
	p := &pair{client: client, backend: backend, cfd: rawFD(t, pc), bfd: rawFD(t, pb)}
	t.Cleanup(func() { p.client.Close(); p.backend.Close() })
	return p
}

// add hands the pair to r; Done's Stats arrive on the returned channel.
func (p *pair) add(t testing.TB, r *Relay, toClient, toBackend []byte) (*Handle, <-chan Stats) {
	t.Helper()
	done := make(chan Stats, 1)
	h, err := r.Add(&Session{
		ClientFD: p.cfd, BackendFD: p.bfd,
		ToClient: toClient, ToBackend: toBackend,
		Done: func(st Stats) { done <- st },
	})
	if err != nil {
		unix.Close(p.cfd)
		unix.Close(p.bfd)
		t.Fatal(err)
	}
	return h, done
}

func newRelay(t testing.TB, cfg Config) *Relay {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func waitDone(t testing.TB, done <-chan Stats) Stats {
	t.Helper()
	select {
	case st := <-done:
		return st
	case <-time.After(30 * time.Second):
		t.Fatal("Done not called within 30 s")
	}
	return Stats{}
}

// waitFor polls cond; the deadline only stops a hung test.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fdCounts counts this process's open pipes and sockets.
func fdCounts(t testing.TB) (pipes, sockets int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own fd, gone by now
		}
		switch {
		case strings.HasPrefix(l, "pipe:"):
			pipes++
		case strings.HasPrefix(l, "socket:"):
			sockets++
		}
	}
	return pipes, sockets
}

// randPool is the source of test data: writers send slices of it at
// pseudo-random offsets and lengths, so the stream varies with position.
var randPool = func() []byte {
	b := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(b)
	return b
}()

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	rand.NewChaCha8(s).Read(b)
	return b
}

// tiled is n bytes of randPool, each 4 KiB page stamped with its offset and
// seed: cheap to make, and no two pages alike.
func tiled(n int, seed uint64) []byte {
	b := make([]byte, n)
	for off := 0; off < n; off += len(randPool) {
		copy(b[off:], randPool)
	}
	for pg := 0; pg+16 <= n; pg += 4096 {
		binary.LittleEndian.PutUint64(b[pg:], uint64(pg))
		binary.LittleEndian.PutUint64(b[pg+8:], seed)
	}
	return b
}

// writeStream writes total bytes of varied data in writes of 1 B–256 KiB,
// hashing what it wrote into h.
func writeStream(w io.Writer, total int64, seed uint64, h hash.Hash) error {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for total > 0 {
		n := 1 + rng.IntN(256<<10)
		if int64(n) > total {
			n = int(total)
		}
		off := rng.IntN(len(randPool) - n)
		chunk := randPool[off : off+n]
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		h.Write(chunk)
		total -= int64(n)
	}
	return nil
}

// readAll reads to EOF, hashing; it returns the count.
func readAll(r io.Reader, h hash.Hash) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := r.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// halfCloser is a test's end of a connection: a *net.TCPConn, or a
// *tls.Conn whose CloseWrite sends close_notify.
type halfCloser interface {
	io.Writer
	CloseWrite() error
}

// transfer sends total bytes from w (after it CloseWrites) to r, which
// expects prefix first. It runs both ends and reports the first error.
func transfer(wg *sync.WaitGroup, errs chan<- error, name string, w halfCloser, r io.Reader, prefix []byte, total int64, seed uint64) {
	want, got := sha256.New(), sha256.New()
	want.Write(prefix)
	var gotN int64
	var werr, rerr error
	var inner sync.WaitGroup
	inner.Add(2)
	go func() {
		defer inner.Done()
		werr = writeStream(w, total, seed, want)
		if werr == nil {
			werr = w.CloseWrite()
		}
	}()
	go func() {
		defer inner.Done()
		gotN, rerr = readAll(r, got)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		inner.Wait()
		switch {
		case werr != nil:
			errs <- fmt.Errorf("%s: write: %w", name, werr)
		case rerr != nil:
			errs <- fmt.Errorf("%s: read: %w", name, rerr)
		case gotN != int64(len(prefix))+total:
			errs <- fmt.Errorf("%s: got %d bytes, want %d", name, gotN, int64(len(prefix))+total)
		case string(got.Sum(nil)) != string(want.Sum(nil)):
			errs <- fmt.Errorf("%s: SHA-256 differs", name)
		}
	}()
}

func setDeadlines(p *pair, d time.Duration) {
	p.client.SetDeadline(time.Now().Add(d))
	p.backend.SetDeadline(time.Now().Add(d))
}

func init() { accountCPU = true }

// workersCPU is the CPU time r's workers spent serving.
func workersCPU(r *Relay) time.Duration {
	var d time.Duration
	for _, w := range r.workers {
		d += time.Duration(w.cpu.Load())
	}
	return d
}

func processCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
