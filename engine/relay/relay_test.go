//go:build linux

package relay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func checkIdle(t *testing.T, r *Relay) {
	t.Helper()
	c := r.Counters()
	if c.Sessions != 0 || c.PipesInUse != 0 || c.PrefixBytes != 0 || c.TLSBuffersInUse != 0 {
		t.Errorf("counters after the sessions ended: %+v", c)
	}
}

// runEcho relays size bytes each way at once, with prefixes both ways, and
// checks SHA-256 and the Stats.
func runEcho(t *testing.T, r *Relay, p *pair, size int64, seed uint64) {
	t.Helper()
	setDeadlines(p, time.Minute)
	toClient := randBytes(3000, seed)       // e.g. the backend's OK line plus what followed it
	toBackend := randBytes(100<<10, seed+1) // e.g. commands the client pipelined behind LOGIN
	_, done := p.add(t, r, toClient, toBackend)

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	transfer(&wg, errs, "up", p.client, p.backend, toBackend, size, seed+2)
	transfer(&wg, errs, "down", p.backend, p.client, toClient, size, seed+3)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := waitDone(t, done)
	if st.Err != nil {
		t.Errorf("Err = %v, want nil", st.Err)
	}
	if st.ToBackend != int64(len(toBackend))+size || st.ToClient != int64(len(toClient))+size {
		t.Errorf("Stats bytes = %d up / %d down, want %d / %d", st.ToBackend, st.ToClient,
			int64(len(toBackend))+size, int64(len(toClient))+size)
	}
	if st.EndedBy != SideClient && st.EndedBy != SideBackend {
		t.Errorf("EndedBy = %v", st.EndedBy)
	}
}

func TestEcho64MiB(t *testing.T) {
	size := int64(64 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	r := newRelay(t, Config{})
	p := newPair(t, listen(t))
	runEcho(t, r, p, size, 1)
	checkIdle(t, r)
}

// Several sessions on one worker with small pipes and a pool of one: the
// worker must interleave them and reuse pipes between them.
func TestEchoSharedWorkerSmallPipes(t *testing.T) {
	r := newRelay(t, Config{Workers: 1, PipeSize: 64 << 10, MaxIdlePipes: 1})
	ln := listen(t)
	pairs := make([]*pair, 4)
	for i := range pairs {
		pairs[i] = newPair(t, ln)
	}
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runEcho(t, r, p, 8<<20, uint64(10*i))
		}()
	}
	wg.Wait()
	checkIdle(t, r)
	if c := r.Counters(); c.PipesIdle > 1 {
		t.Errorf("PipesIdle = %d, want <= MaxIdlePipes (1)", c.PipesIdle)
	}
}

// A size the kernel refuses (above 2 GiB is EINVAL) must leave a working
// default-size pipe, counted.
func TestPipeResizeFailureKeepsPipe(t *testing.T) {
	r := newRelay(t, Config{Workers: 1, PipeSize: 1<<31 + 1})
	p := newPair(t, listen(t))
	runEcho(t, r, p, 4<<20, 20)
	c := r.Counters()
	if c.PipesCreated == 0 || c.PipesResizeFailed != c.PipesCreated {
		t.Errorf("PipesCreated = %d, PipesResizeFailed = %d; want equal and > 0", c.PipesCreated, c.PipesResizeFailed)
	}
	checkIdle(t, r)
}

// halfClose: first shuts its write side after sending a little; second must
// still be able to send 4 MiB, which must arrive, before it shuts too.
func halfClose(t *testing.T, clientFirst bool) {
	r := newRelay(t, Config{})
	p := newPair(t, listen(t))
	setDeadlines(p, time.Minute)
	_, done := p.add(t, r, nil, nil)
	first, second := p.client, p.backend
	wantEnded := SideClient
	if !clientFirst {
		first, second = second, first
		wantEnded = SideBackend
	}

	if _, err := first.Write([]byte("a last word\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := first.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(second) // ends at the FIN the relay passed on
	if err != nil || string(got) != "a last word\r\n" {
		t.Fatalf("second read %q, %v", got, err)
	}
	select {
	case st := <-done:
		t.Fatalf("session ended after one half-close: %+v", st)
	default:
	}

	var wg sync.WaitGroup
	errs := make(chan error, 1)
	transfer(&wg, errs, "after half-close", second, first, nil, 4<<20, 30)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := waitDone(t, done)
	if st.Err != nil || st.EndedBy != wantEnded {
		t.Errorf("Stats = %+v, want EndedBy %v and no error", st, wantEnded)
	}
	checkIdle(t, r)
}

func TestHalfCloseClientFirst(t *testing.T)  { halfClose(t, true) }
func TestHalfCloseBackendFirst(t *testing.T) { halfClose(t, false) }

// resetConn closes c with SO_LINGER 0, which sends an RST.
func resetConn(t *testing.T, c interface {
	SetLinger(int) error
	Close() error
}) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// The client resets while it is uploading and the backend reading.
func TestResetClientMidTransfer(t *testing.T) {
	pipesBefore, socksBefore := fdCounts(t)
	r := newRelay(t, Config{})
	p := newPair(t, listen(t))
	setDeadlines(p, time.Minute)
	h, done := p.add(t, r, nil, nil)

	go writeStream(p.client, 1<<40, 40, sha256.New()) // until the reset breaks it
	go io.Copy(io.Discard, p.backend)
	waitFor(t, "4 MiB relayed", func() bool { _, up := h.Bytes(); return up >= 4<<20 })
	resetConn(t, p.client)

	st := waitDone(t, done)
	if st.Err == nil || st.EndedBy != SideClient {
		t.Errorf("Stats = %+v, want an error ended by the client", st)
	}
	t.Logf("ended with %v after %d bytes up", st.Err, st.ToBackend)
	checkIdle(t, r)
	p.backend.Close()
	r.Close()
	if pipes, socks := fdCounts(t); pipes != pipesBefore || socks > socksBefore+1 { // +1: the listener
		t.Errorf("fds after: %d pipes, %d sockets; before: %d, %d", pipes, socks, pipesBefore, socksBefore)
	}
}

// The backend closes (not resets) while the client uploads: the relay's
// next splice to it fails (EPIPE or a reset), which must end the session,
// and the SIGPIPE it raises must not hurt the process.
func TestBackendClosesDuringUpload(t *testing.T) {
	r := newRelay(t, Config{})
	p := newPair(t, listen(t))
	setDeadlines(p, time.Minute)
	h, done := p.add(t, r, nil, nil)
	go writeStream(p.client, 1<<40, 42, sha256.New())
	if _, err := io.ReadFull(p.backend, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	p.backend.Close() // unread data: the kernel answers with an RST
	st := waitDone(t, done)
	if st.Err == nil || st.EndedBy != SideBackend {
		t.Errorf("Stats = %+v, want an error ended by the backend", st)
	}
	t.Logf("ended with %v", st.Err)
	_ = h
	checkIdle(t, r)
}

// The backend resets while its direction is stalled: the client does not
// read, so the relay holds a full pipe and makes no syscall on the backend
// socket. The reset must still end the session, and the pipe with its
// stranded bytes must be closed, not pooled.
func TestResetBackendWhileClientStalled(t *testing.T) {
	r := newRelay(t, Config{Workers: 1})
	p := newPair(t, listen(t))
	setDeadlines(p, time.Minute)
	h, done := p.add(t, r, nil, nil)

	go writeStream(p.backend, 1<<40, 41, sha256.New())
	waitFor(t, "a full pipe", func() bool { return r.Counters().PipesInUse == 1 })
	waitStalled(t, h, nil)
	c := r.Counters()
	resetConn(t, p.backend)

	st := waitDone(t, done)
	if !errors.Is(st.Err, syscall.ECONNRESET) || st.EndedBy != SideBackend {
		t.Errorf("Stats = %+v, want ECONNRESET ended by the backend", st)
	}
	after := r.Counters()
	if after.PipesInUse != 0 || after.PipesIdle != c.PipesIdle {
		t.Errorf("pipes after the reset: %d in use, %d idle (idle before: %d); the full pipe must be closed",
			after.PipesInUse, after.PipesIdle, c.PipesIdle)
	}
	checkIdle(t, r)
}

// waitStalled waits until neither the sender (if sent is given) nor the
// relay make progress for 300 ms: the relay is saturated.
func waitStalled(t *testing.T, h *Handle, sent *atomic.Int64) {
	t.Helper()
	var last [3]int64
	still := 0
	waitFor(t, "the relay to stall", func() bool {
		time.Sleep(20 * time.Millisecond)
		down, up := h.Bytes()
		now := [3]int64{down, up, 0}
		if sent != nil {
			now[2] = sent.Load()
		}
		if now == last && down > 0 {
			still++
		} else {
			still = 0
		}
		last = now
		return still >= 15
	})
}

func TestKick(t *testing.T) {
	r := newRelay(t, Config{})
	p := newPair(t, listen(t))
	setDeadlines(p, time.Minute)
	h, done := p.add(t, r, []byte("* OK\r\n"), nil)

	buf := make([]byte, 6)
	if _, err := io.ReadFull(p.client, buf); err != nil || string(buf) != "* OK\r\n" {
		t.Fatalf("prefix: %q, %v", buf, err)
	}
	var wg sync.WaitGroup
	for range 8 { // concurrent and repeated kicks end it once
		wg.Add(1)
		go func() { defer wg.Done(); h.Kick() }()
	}
	wg.Wait()
	st := waitDone(t, done)
	if st.EndedBy != SideProxy || !errors.Is(st.Err, ErrKicked) || st.ToClient != 6 {
		t.Errorf("Stats = %+v, want SideProxy, ErrKicked, 6 bytes to the client", st)
	}
	if n, err := p.client.Read(buf); n != 0 || err == nil {
		t.Errorf("client read after kick: %d, %v; want EOF or reset", n, err)
	}
	if n, err := p.backend.Read(buf); n != 0 || err == nil {
		t.Errorf("backend read after kick: %d, %v; want EOF or reset", n, err)
	}
	h.Kick() // after Done: nothing
	select {
	case st := <-done:
		t.Fatalf("Done called twice: %+v", st)
	case <-time.After(50 * time.Millisecond):
	}
	checkIdle(t, r)
}

func TestCloseWithLiveSessions(t *testing.T) {
	pipesBefore, _ := fdCounts(t)
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	const n = 20
	var calls atomic.Int32
	stats := make(chan Stats, n)
	pairs := make([]*pair, n)
	for i := range pairs {
		p := newPair(t, ln)
		setDeadlines(p, time.Minute)
		if _, err := r.Add(&Session{ClientFD: p.cfd, BackendFD: p.bfd,
			Done: func(st Stats) { calls.Add(1); stats <- st }}); err != nil {
			t.Fatal(err)
		}
		pairs[i] = p
	}
	for i, p := range pairs {
		if i%2 == 0 { // half of them busy both ways
			go writeStream(p.client, 1<<40, uint64(i), sha256.New())
			go writeStream(p.backend, 1<<40, uint64(i+100), sha256.New())
			go io.Copy(io.Discard, p.client)
			go io.Copy(io.Discard, p.backend)
		}
	}
	waitFor(t, "pipes in use", func() bool { return r.Counters().PipesInUse > 0 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != n {
		t.Fatalf("Done called %d times, want %d", got, n)
	}
	for range n {
		if st := <-stats; st.EndedBy != SideProxy || !errors.Is(st.Err, ErrClosed) {
			t.Errorf("Stats = %+v, want SideProxy and ErrClosed", st)
		}
	}
	c := r.Counters()
	if c.Sessions != 0 || c.PipesInUse != 0 || c.PipesIdle != 0 || c.PrefixBytes != 0 {
		t.Errorf("counters after Close: %+v", c)
	}
	if pipes, _ := fdCounts(t); pipes != pipesBefore {
		t.Errorf("%d pipe fds after Close, %d before", pipes, pipesBefore)
	}

	// After Close, Add fails and the caller keeps the fds.
	p := newPair(t, ln)
	if _, err := r.Add(&Session{ClientFD: p.cfd, BackendFD: p.bfd}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
	for _, fd := range []int{p.cfd, p.bfd} {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("fd %d closed by a failed Add: %v", fd, err)
		}
		unix.Close(fd)
	}
	if err := r.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}

// 2,000 sessions each exchange a line and go idle: they hold no pipe, and
// the pool's pipes are all the pipe fds there are.
func TestManyIdleSessions(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	pipesBefore, socksBefore := fdCounts(t)
	r := newRelay(t, Config{})
	ln := listen(t)
	pairs := make([]*pair, n)
	dones := make([]<-chan Stats, n)
	ping, pong := []byte("a1 NOOP\r\n"), []byte("a1 OK NOOP completed\r\n")
	buf := make([]byte, 64)
	for i := range pairs {
		pairs[i] = newPair(t, ln)
		setDeadlines(pairs[i], time.Minute)
	}
	heap0 := heapInuse()
	for i, p := range pairs {
		_, dones[i] = p.add(t, r, nil, nil)
		if _, err := p.client.Write(ping); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.backend, buf[:len(ping)]); err != nil || !bytes.Equal(buf[:len(ping)], ping) {
			t.Fatalf("session %d: backend got %q, %v", i, buf[:len(ping)], err)
		}
		if _, err := p.backend.Write(pong); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.client, buf[:len(pong)]); err != nil || !bytes.Equal(buf[:len(pong)], pong) {
			t.Fatalf("session %d: client got %q, %v", i, buf[:len(pong)], err)
		}
	}
	// The last pong can reach the client a moment before its pipe is back.
	waitFor(t, "pipes back in the pool", func() bool { return r.Counters().PipesInUse == 0 })
	heap1 := heapInuse()
	c := r.Counters()
	pipes, socks := fdCounts(t)
	t.Logf("%d idle sessions: %+v; %d pipe fds, %d sockets; heap in use %+d B per session (relay's and the test's Done channel)",
		n, c, pipes-pipesBefore, socks-socksBefore, (int64(heap1)-int64(heap0))/int64(n))
	if c.Sessions != int64(n) || c.PipesInUse != 0 || c.PrefixBytes != 0 {
		t.Errorf("idle counters: %+v", c)
	}
	if pipes-pipesBefore != 2*int(c.PipesIdle) || c.PipesIdle > int64(len(r.workers)*DefaultMaxIdlePipes) {
		t.Errorf("%d pipe fds for %d idle pooled pipes", pipes-pipesBefore, c.PipesIdle)
	}

	for i, p := range pairs {
		p.client.Close()
		p.backend.Close()
		if st := waitDone(t, dones[i]); st.Err != nil {
			t.Errorf("session %d: %v", i, st.Err)
		}
	}
	checkIdle(t, r)
	r.Close()
	ln.Close()
	if pipes, socks := fdCounts(t); pipes != pipesBefore || socks != socksBefore {
		t.Errorf("fds after: %d pipes, %d sockets; before: %d, %d", pipes, socks, pipesBefore, socksBefore)
	}
}

// Prefixes bigger than the socket buffers: the relay keeps them and writes
// them as the peers read, before anything spliced.
func TestLargePrefix(t *testing.T) {
	r := newRelay(t, Config{})
	p := newPair(t, listen(t))
	setDeadlines(p, time.Minute)
	// More than the kernel buffers of a leg can take.
	size := int(max(32<<20, sysctlMax(t, "tcp_wmem")+sysctlMax(t, "tcp_rmem")+1<<20))
	toClient, toBackend := tiled(size, 50), tiled(size, 51)
	h, done := p.add(t, r, toClient, toBackend)
	waitStalled(t, h, nil)
	if c := r.Counters(); c.PrefixBytes <= 0 || c.PipesInUse != 0 {
		t.Errorf("stalled on the prefixes: %+v", c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	transfer(&wg, errs, "up", p.client, p.backend, toBackend, 1<<20, 52)
	transfer(&wg, errs, "down", p.backend, p.client, toClient, 1<<20, 53)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := waitDone(t, done); st.Err != nil {
		t.Error(st.Err)
	}
	checkIdle(t, r)
}

func TestPanicInDone(t *testing.T) {
	var panics atomic.Int32
	r := newRelay(t, Config{Workers: 1, OnPanic: func(any, []byte) { panics.Add(1) }})
	ln := listen(t)
	p := newPair(t, ln)
	if _, err := r.Add(&Session{ClientFD: p.cfd, BackendFD: p.bfd, Done: func(Stats) { panic("boom") }}); err != nil {
		t.Fatal(err)
	}
	p.client.Close()
	p.backend.Close()
	waitFor(t, "the panic", func() bool { return panics.Load() == 1 })
	// The worker lives on.
	runEcho(t, r, newPair(t, ln), 1<<20, 60)
	if c := r.Counters(); c.Panics != 1 {
		t.Errorf("Panics = %d", c.Panics)
	}
	checkIdle(t, r)
}

func TestPanicWhileServing(t *testing.T) {
	var arm atomic.Bool
	testHookServe = func() {
		if arm.CompareAndSwap(true, false) {
			panic("boom")
		}
	}
	defer func() { testHookServe = nil }()
	r, err := New(Config{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ln := listen(t)
	p := newPair(t, ln)
	setDeadlines(p, time.Minute)
	arm.Store(true)
	_, done := p.add(t, r, nil, nil)
	p.client.Write([]byte("x")) // an event to serve
	st := waitDone(t, done)
	var pe *PanicError
	if !errors.As(st.Err, &pe) || st.EndedBy != SideProxy {
		t.Errorf("Stats = %+v, want a PanicError from the proxy side", st)
	}
	if _, err := p.backend.Read(make([]byte, 1)); err == nil {
		t.Error("backend still open after the panic")
	}
	runEcho(t, r, newPair(t, ln), 1<<20, 61)
	checkIdle(t, r)
	r.Close()
}

func TestAddInvalid(t *testing.T) {
	r := newRelay(t, Config{Workers: 1})
	for _, s := range []*Session{nil, {ClientFD: -1, BackendFD: 5}, {ClientFD: 5, BackendFD: -1}, {ClientFD: 5, BackendFD: 5}} {
		if _, err := r.Add(s); err == nil {
			t.Errorf("Add(%+v) succeeded", s)
		}
	}
	if _, err := New(Config{PipeSize: -1}); err == nil {
		t.Error("New with a negative PipeSize succeeded")
	}
}
