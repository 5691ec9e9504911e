//go:build linux

package tlsio

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const serverName = "tlsio.test"

// configs returns a server and a client config at most at version, sharing a
// self-signed ECDSA P-256 certificate made once.
func configs(t testing.TB, version uint16) (srv, cli *tls.Config) {
	t.Helper()
	cert, pool := testCert()
	return &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: version},
		&tls.Config{RootCAs: pool, ServerName: serverName, MaxVersion: version}
}

var testCert = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: serverName},
		DNSNames:              []string{serverName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
})

// tcpPair returns both ends of a loopback connection.
func tcpPair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	d.SetDeadline(time.Now().Add(time.Minute))
	a.SetDeadline(time.Now().Add(time.Minute))
	return d, a
}

// dupFD takes a non-blocking close-on-exec duplicate of c's socket, as the
// engine does at the hand-off; the test closes it.
func dupFD(t testing.TB, c *net.TCPConn) int {
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
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// feeder is the "loop" of Handshake mode: one goroutine moves bytes read
// from the socket into Feed, one sends what Write queued (Take) whenever wake
// fires. oneByte feeds a byte at a time, the next only once TLS has read the
// last: every read inside the handshake returns one byte.
type feeder struct {
	sock    *net.TCPConn
	raw     *Conn
	wake    chan struct{}
	wakes   atomic.Int32 // calls of the wake function, attached or not
	oneByte bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newFeeder(sock *net.TCPConn, oneByte bool) *feeder {
	f := &feeder{sock: sock, wake: make(chan struct{}, 1), oneByte: oneByte, stop: make(chan struct{})}
	f.raw = NewBuffered(sock.LocalAddr(), sock.RemoteAddr(), func() {
		f.wakes.Add(1)
		select {
		case f.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	})
	f.wg.Add(2)
	go func() { // socket → Feed
		defer f.wg.Done()
		buf := make([]byte, 4096)
		for {
			n, err := sock.Read(buf)
			if !f.oneByte {
				f.raw.Feed(buf[:n])
			}
			for i := 0; f.oneByte && i < n; i++ {
				f.raw.Feed(buf[i : i+1])
				for f.raw.Buffered() > 0 && !f.stopped() {
					time.Sleep(20 * time.Microsecond)
				}
			}
			if err != nil {
				select {
				case <-f.stop:
				default:
					f.raw.FeedEOF()
				}
				return
			}
		}
	}()
	go func() { // Take → socket
		defer f.wg.Done()
		for {
			select {
			case <-f.wake:
				if p := f.raw.Take(); len(p) > 0 {
					sock.Write(p)
				}
			case <-f.stop:
				return
			}
		}
	}()
	return f
}

func (f *feeder) stopped() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

// detach stops both goroutines; Fed bytes stay in raw.
func (f *feeder) detach() {
	close(f.stop)
	f.sock.SetReadDeadline(time.Unix(1, 0))
	f.wg.Wait()
	f.sock.SetReadDeadline(time.Now().Add(time.Minute))
	if p := f.raw.Take(); len(p) > 0 {
		f.sock.Write(p)
	}
}

// handshake runs a tls.Server over a Handshake-mode Conn on its own
// goroutine, fed by a feeder, against a blocking tls.Client; it returns the
// server Conn and its feeder, detached, plus the client.
func handshake(t *testing.T, version uint16, oneByte bool) (*tls.Conn, *feeder, *net.TCPConn, *tls.Conn) {
	t.Helper()
	cside, sside := tcpPair(t)
	srv, cli := configs(t, version)
	f := newFeeder(sside, oneByte)
	sc := tls.Server(f.raw, srv)
	hs := make(chan error, 1)
	go func() { hs <- sc.Handshake() }() // the short-lived handshake goroutine
	cc := tls.Client(cside, cli)
	if err := cc.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	select {
	case err := <-hs:
		if err != nil {
			t.Fatalf("server handshake: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server handshake hangs")
	}
	if f.raw.Mode() != Handshake {
		t.Fatalf("mode %v, want Handshake", f.raw.Mode())
	}
	if f.wakes.Load() == 0 {
		t.Error("the handshake wrote without waking the loop")
	}
	f.detach()
	return sc, f, sside, cc
}

func TestHandshakeModeFedByLoop(t *testing.T) {
	for _, v := range []struct {
		name    string
		version uint16
	}{{"tls13", tls.VersionTLS13}, {"tls12", tls.VersionTLS12}} {
		for _, s := range []struct {
			name    string
			oneByte bool
		}{{"whole", false}, {"1-byte", true}} {
			t.Run(v.name+"/"+s.name, func(t *testing.T) {
				sc, f, _, cc := handshake(t, v.version, s.oneByte)
				raw := f.raw
				if got := sc.ConnectionState(); !got.HandshakeComplete || got.Version != v.version {
					t.Errorf("server state: complete %v, version %x", got.HandshakeComplete, got.Version)
				}
				if got := cc.ConnectionState().Version; got != v.version {
					t.Errorf("client version %x", got)
				}
				if raw.Pending() != 0 || raw.out != nil {
					t.Errorf("queue after the handshake: %d bytes", raw.Pending())
				}
			})
		}
	}
}

// Loop mode: the record layer on the loop. Records arrive 1–7 bytes at a
// time; Read says ErrWouldBlock in the middle of records and resumes, and
// nothing is lost. Writes queue for the loop and call wake.
func TestLoopModeChaos(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			sc, f, sock, cc := handshake(t, version, false)
			raw := f.raw
			raw.SetLoop()

			const total = 2 << 20
			want := sha256.New()
			sent := make(chan error, 1)
			go func() {
				rng := mrand.New(mrand.NewPCG(1, 2))
				src := mrand.NewChaCha8([32]byte{1})
				buf := make([]byte, 40<<10)
				for left := total; left > 0; {
					n := min(1+rng.IntN(len(buf)), left)
					src.Read(buf[:n])
					want.Write(buf[:n])
					if _, err := cc.Write(buf[:n]); err != nil {
						sent <- err
						return
					}
					left -= n
				}
				sent <- cc.CloseWrite() // close_notify
			}()

			got := sha256.New()
			var gotN, blocks int
			rng := mrand.New(mrand.NewPCG(3, 4))
			in := make([]byte, 64<<10)
			plain := make([]byte, 16<<10)
			eof := false
		loop:
			for {
				n, rerr := sock.Read(in)
				for p := in[:n]; len(p) > 0; {
					k := min(1+rng.IntN(7), len(p))
					raw.Feed(p[:k])
					p = p[k:]
					for {
						m, err := sc.Read(plain)
						got.Write(plain[:m])
						gotN += m
						if err == nil {
							continue
						}
						if errors.Is(err, ErrWouldBlock) {
							blocks++
							break
						}
						if err == io.EOF {
							eof = true
							break loop
						}
						t.Fatalf("Read after %d bytes: %v", gotN, err)
					}
				}
				if rerr != nil {
					t.Fatalf("socket read: %v", rerr)
				}
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if !eof || gotN != total || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Fatalf("got %d bytes (EOF %v), want %d; hashes equal %v", gotN, eof, total, bytes.Equal(got.Sum(nil), want.Sum(nil)))
			}
			if blocks < total/(16<<10) {
				t.Errorf("only %d ErrWouldBlock for %d bytes fed 1–7 at a time", blocks, total)
			}
			t.Logf("%d bytes, %d ErrWouldBlock", gotN, blocks)

			// The other way: Write never fails and queues for the loop.
			reply := bytes.Repeat([]byte("pong "), 10000)
			woke := f.wakes.Load()
			if n, err := sc.Write(reply); err != nil || n != len(reply) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			if raw.Pending() <= len(reply) || f.wakes.Load() == woke {
				t.Fatalf("Pending %d: want the records queued and a wake-up", raw.Pending())
			}
			out := raw.Take()
			if raw.Pending() != 0 || raw.Take() != nil {
				t.Fatal("Take left bytes queued")
			}
			go sock.Write(out)
			back := make([]byte, len(reply))
			if _, err := io.ReadFull(cc, back); err != nil || !bytes.Equal(back, reply) {
				t.Fatalf("client read %d bytes, %v", len(back), err)
			}
		})
	}
}

// Read in Loop mode before anything is Fed is ErrWouldBlock, a temporary
// net.Error; after FeedEOF with nothing left, io.EOF. No buffer is kept
// once everything Fed has been read.
func TestLoopModeReadStates(t *testing.T) {
	c := NewBuffered(nil, nil, nil)
	c.SetLoop()
	buf := make([]byte, 8)
	_, err := c.Read(buf)
	var ne net.Error
	if !errors.Is(err, ErrWouldBlock) || !errors.As(err, &ne) || !ne.Timeout() || !ne.(interface{ Temporary() bool }).Temporary() {
		t.Fatalf("Read = %v, want ErrWouldBlock, temporary", err)
	}
	c.Feed([]byte("abc"))
	c.Feed([]byte("def"))
	if c.Buffered() != 6 {
		t.Fatalf("Buffered = %d", c.Buffered())
	}
	if n, err := c.Read(buf[:4]); n != 4 || err != nil || string(buf[:4]) != "abcd" {
		t.Fatalf("Read = %d %q, %v", n, buf[:n], err)
	}
	c.FeedEOF()
	if n, err := c.Read(buf); n != 2 || err != nil || string(buf[:2]) != "ef" {
		t.Fatalf("Read = %d %q, %v", n, buf[:n], err)
	}
	if c.in != nil {
		t.Error("a drained input keeps its buffer")
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("Read after FeedEOF = %v, want io.EOF", err)
	}
	c.Feed([]byte("xyz"))
	if p := c.TakeIn(); string(p) != "xyz" || c.Buffered() != 0 {
		t.Fatalf("TakeIn = %q, Buffered %d", p, c.Buffered())
	}
}

// FD mode writes what the socket takes and queues the rest: Write never
// fails and keeps order, Flush sends the queue as the socket drains, and a
// socket error waits in Err.
func TestFDModePartialWritesQueuedAndFlushed(t *testing.T) {
	a, b := tcpPair(t)
	fd := dupFD(t, a)
	a.Close()
	// Small buffers (no autotuning): the socket takes little at a time.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10); err != nil {
		t.Fatal(err)
	}
	b.SetReadBuffer(16 << 10)
	c := NewBuffered(nil, nil, nil)
	c.SetFD(fd)
	if c.Mode() != FD {
		t.Fatal("not in FD mode")
	}

	const total = 8 << 20
	data := make([]byte, total)
	mrand.NewChaCha8([32]byte{7}).Read(data)
	got := make(chan []byte, 1)
	go func() {
		p, _ := io.ReadAll(b)
		got <- p
	}()
	// Several writes while the first is still queued: they queue behind it.
	for off := 0; off < total; off += 1 << 20 {
		if n, err := c.Write(data[off : off+1<<20]); n != 1<<20 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if c.Pending() == 0 {
		t.Fatal("8 MiB into a 16 KiB socket buffer: nothing queued")
	}
	flushes := 0
	for !c.Flush() {
		if err := c.Err(); err != nil {
			t.Fatal(err)
		}
		flushes++
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, 10_000); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
	}
	if c.Pending() != 0 || c.out != nil {
		t.Errorf("after Flush: %d pending, buffer kept %v", c.Pending(), c.out != nil)
	}
	t.Logf("%d partial flushes", flushes)
	unix.Shutdown(fd, unix.SHUT_WR)
	if p := <-got; !bytes.Equal(p, data) {
		t.Fatalf("peer got %d bytes, not the %d written, in order", len(p), total)
	}

	// The peer resets: writes still "succeed", the error waits in Err.
	b.SetLinger(0)
	b.Close()
	time.Sleep(20 * time.Millisecond)
	for range 3 {
		if n, err := c.Write([]byte("after the reset")); n != 15 || err != nil {
			t.Fatalf("Write after reset = %d, %v", n, err)
		}
	}
	if err := c.Err(); err == nil || c.Flush() {
		t.Fatalf("Err = %v after writing to a reset socket", err)
	}
}

// FD mode reads: bytes put back first, then the socket; EAGAIN is
// ErrWouldBlock and the peer's FIN io.EOF.
func TestFDModeRead(t *testing.T) {
	a, b := tcpPair(t)
	fd := dupFD(t, a)
	a.Close()
	c := NewNet(b) // any mode; SetFD takes over
	c.SetFD(fd)
	c.PutIn([]byte("put back "))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "put back " {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if _, err := c.Read(buf); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("Read of an empty socket = %v, want ErrWouldBlock", err)
	}
	b.Write([]byte("from the socket"))
	b.CloseWrite()
	var got []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, ErrWouldBlock) || time.Now().After(deadline) {
			t.Fatalf("Read = %v after %q", err, got)
		}
	}
	if string(got) != "from the socket" {
		t.Fatalf("read %q", got)
	}
}

// Close unblocks a handshake waiting in Read (its deadline passed, or the
// client went away): the Read gets ErrClosed and the handshake fails.
func TestCloseUnblocksHandshakeRead(t *testing.T) {
	c := NewBuffered(nil, nil, nil)
	res := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		res <- err
	}()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-res:
		t.Fatalf("Read returned %v before Close", err)
	default:
	}
	c.Close()
	select {
	case err := <-res:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Read = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Read")
	}

	// A whole server handshake waiting for its ClientHello.
	srv, _ := configs(t, tls.VersionTLS13)
	raw := NewBuffered(nil, nil, func() {})
	raw.Feed([]byte{0x16, 3, 1, 0, 200}) // the start of a record, no more
	hs := make(chan error, 1)
	go func() { hs <- tls.Server(raw, srv).Handshake() }()
	time.Sleep(20 * time.Millisecond)
	raw.Close()
	select {
	case err := <-hs:
		if err == nil {
			t.Fatal("handshake succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the handshake")
	}
	if n, err := raw.Write([]byte("x")); n != 1 || err != nil || raw.Pending() != 0 {
		t.Fatalf("Write after Close = %d, %v, %d pending", n, err, raw.Pending())
	}
}

// Net mode is a blocking net.Conn with its deadlines.
func TestNetMode(t *testing.T) {
	a, b := tcpPair(t)
	c := NewNet(a)
	if c.LocalAddr().String() != a.LocalAddr().String() || c.RemoteAddr().String() != a.RemoteAddr().String() {
		t.Error("addresses differ from the net.Conn's")
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v, want a deadline error", err)
	}
	c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	c.Close()
	if _, err := a.Write([]byte("x")); err == nil {
		t.Error("Close in Net mode left the net.Conn open")
	}
}

func TestFDReadAfterCloseAndPutInOrder(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	c := NewBuffered(nil, nil, nil)
	c.Feed([]byte("a"))
	c.PutIn([]byte("b"))
	c.SetFD(fds[0])
	if _, err := unix.Write(fds[1], []byte("c")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 8)
	for len(got) < 3 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read after %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "abc" {
		t.Fatalf("read %q, want the held bytes in order, then the socket's: \"abc\"", got)
	}
	if _, err := unix.Write(fds[1], []byte("secret")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n, err := c.Read(buf); err != ErrClosed || n != 0 {
		t.Fatalf("FD-mode Read after Close: %d, %v; want 0, ErrClosed", n, err)
	}
	var ne net.Error
	if _, err := readFD(-1, buf); !errors.As(err, &ne) || ne.Temporary() || !errors.Is(err, unix.EBADF) {
		t.Fatalf("a socket error must not look temporary to crypto/tls, and keep its errno: %v", err)
	}
}

func TestSetWakeNil(t *testing.T) {
	var woke atomic.Int32
	c := NewBuffered(nil, nil, func() { woke.Add(1) })
	c.Write([]byte("a"))
	c.SetLoop()
	c.SetWake(nil)
	c.Write([]byte("b"))
	if woke.Load() != 1 || string(c.Take()) != "ab" {
		t.Fatalf("wake calls %d, queue must hold both writes", woke.Load())
	}
}
