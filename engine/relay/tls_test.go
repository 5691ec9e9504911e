//go:build linux

package relay

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"doorman/engine/tlsio"
)

// runTLSEcho is runEcho over a tlsPair: size bytes each way at once, after
// plaintext prefixes both ways; SHA-256, Stats, and close_notify on every TLS
// leg at the end.
func runTLSEcho(t *testing.T, r *Relay, p *tlsPair, size int64, seed uint64) {
	t.Helper()
	p.setDeadlines(3 * time.Minute)
	toClient := randBytes(3000, seed)
	toBackend := randBytes(100<<10, seed+1)
	_, done := p.add(t, r, toClient, toBackend, nil)

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
	for name, e := range map[string]*end{"client": p.client, "backend": p.backend} {
		if e.tc != nil && !e.closeNotified() {
			t.Errorf("%s: the stream ended without close_notify", name)
		}
	}
}

func TestTLSEcho64MiB(t *testing.T) {
	size := int64(64 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	for i, leg := range tlsLegs {
		t.Run(leg.name, func(t *testing.T) {
			r := newRelay(t, Config{})
			p := newTLSPair(t, listen(t), leg.client, leg.backend)
			runTLSEcho(t, r, p, size, uint64(100+10*i))
			checkIdle(t, r)
		})
	}
}

// Several TLS sessions on one worker with a pool of one pipe: the buffers
// are shared through the worker's free list.
func TestTLSEchoSharedWorker(t *testing.T) {
	r := newRelay(t, Config{Workers: 1, MaxIdlePipes: 1})
	ln := listen(t)
	var pairs []*tlsPair
	for _, leg := range tlsLegs {
		pairs = append(pairs, newTLSPair(t, ln, leg.client, leg.backend))
	}
	pairs = append(pairs, newTLSPair(t, ln, 0, 0)) // and a spliced one beside them
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runTLSEcho(t, r, p, 8<<20, uint64(200+10*i))
		}()
	}
	wg.Wait()
	checkIdle(t, r)
}

// A clean end each way, in both orders: the first side's end (close_notify,
// or a bare FIN at a record boundary) reaches the other as close_notify and
// FIN once everything before it is delivered, the session lives on
// half-closed, and the second side's end finishes it.
func TestTLSCleanClose(t *testing.T) {
	for _, leg := range tlsLegs {
		for _, clientFirst := range []bool{true, false} {
			for _, how := range []string{"close_notify", "fin"} {
				first := "backend"
				if clientFirst {
					first = "client"
				}
				if how == "fin" && (clientFirst && leg.client == 0 || !clientFirst && leg.backend == 0) {
					continue // a plain side has only the FIN
				}
				t.Run(leg.name+"/"+first+"-first/"+how, func(t *testing.T) {
					tlsHalfClose(t, leg.client, leg.backend, clientFirst, how == "fin")
				})
			}
		}
	}
}

func tlsHalfClose(t *testing.T, clientVersion, backendVersion uint16, clientFirst, bareFIN bool) {
	r := newRelay(t, Config{Workers: 1})
	p := newTLSPair(t, listen(t), clientVersion, backendVersion)
	p.setDeadlines(time.Minute)
	_, done := p.add(t, r, nil, nil, nil)
	first, second := p.client, p.backend
	wantEnded := SideClient
	if !clientFirst {
		first, second = second, first
		wantEnded = SideBackend
	}
	word := []byte("a last word\r\n")
	if _, err := first.Write(word); err != nil {
		t.Fatal(err)
	}
	var err error
	if bareFIN {
		err = first.tcp.CloseWrite()
	} else {
		err = first.CloseWrite()
	}
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(second)
	if err != nil || !bytes.Equal(got, word) {
		t.Fatalf("second read %q, %v", got, err)
	}
	if second.tc != nil && !second.closeNotified() {
		t.Error("the end reached the second side without close_notify")
	}
	select {
	case st := <-done:
		t.Fatalf("session ended after one half-close: %+v", st)
	default:
	}

	var wg sync.WaitGroup
	errs := make(chan error, 1)
	transfer(&wg, errs, "after half-close", second, first, nil, 4<<20, 31)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if first.tc != nil && !first.closeNotified() {
		t.Error("the end reached the first side without close_notify")
	}
	st := waitDone(t, done)
	if st.Err != nil || st.EndedBy != wantEnded {
		t.Errorf("Stats = %+v, want EndedBy %v and no error", st, wantEnded)
	}
	up, down := int64(len(word)), int64(4<<20)
	if !clientFirst {
		up, down = down, up
	}
	if st.ToBackend != up || st.ToClient != down {
		t.Errorf("Stats bytes = %d up / %d down, want %d / %d", st.ToBackend, st.ToClient, up, down)
	}
	checkIdle(t, r)
}

// A TLS peer that breaks the record layer after the handshake ends the
// session with Op "tls" on its side.
func TestTLSBadRecords(t *testing.T) {
	cases := []struct {
		name string
		send func(e *end) error
	}{
		{"garbage", func(e *end) error {
			_, err := e.tcp.Write([]byte("a1 LOGIN bob secret\r\n"))
			return err
		}},
		{"bad-mac", func(e *end) error { // a well-formed application_data record that fails to decrypt
			_, err := e.tcp.Write(append([]byte{0x17, 3, 3, 0, 48}, randBytes(48, 9)...))
			return err
		}},
		{"eof-mid-record", func(e *end) error {
			if _, err := e.tcp.Write([]byte{0x17, 3, 3, 0, 64, 1, 2, 3}); err != nil {
				return err
			}
			return e.tcp.CloseWrite()
		}},
	}
	for _, side := range []Side{SideClient, SideBackend} {
		for _, c := range cases {
			t.Run(side.String()+"/"+c.name, func(t *testing.T) {
				r := newRelay(t, Config{Workers: 1})
				// TLS 1.3 towards the client, 1.2 towards the backend.
				p := newTLSPair(t, listen(t), tls.VersionTLS13, tls.VersionTLS12)
				p.setDeadlines(time.Minute)
				_, done := p.add(t, r, nil, nil, nil)
				bad, other := p.client, p.backend
				if side == SideBackend {
					bad, other = other, bad
				}
				// A live session first.
				if _, err := bad.Write([]byte("ping\r\n")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 6)
				if _, err := io.ReadFull(other, buf); err != nil || string(buf) != "ping\r\n" {
					t.Fatalf("read %q, %v", buf, err)
				}
				if err := c.send(bad); err != nil {
					t.Fatal(err)
				}
				st := waitDone(t, done)
				var oe *OpError
				if !errors.As(st.Err, &oe) || oe.Op != "tls" || oe.Side != side || st.EndedBy != side {
					t.Fatalf("Stats = %+v, want an OpError tls %v ended by %v", st, side, side)
				}
				t.Logf("%v", st.Err)
				if _, err := other.Read(buf); err == nil {
					t.Error("the other side still open")
				}
				checkIdle(t, r)
			})
		}
	}
}

// A TLS client resets while uploading: the socket error under the record
// layer is reported with its errno as on the splice path, not as "tls".
func TestTLSResetClientMidTransfer(t *testing.T) {
	r := newRelay(t, Config{})
	p := newTLSPair(t, listen(t), tls.VersionTLS13, tls.VersionTLS13)
	p.setDeadlines(time.Minute)
	h, done := p.add(t, r, nil, nil, nil)
	go writeStream(p.client, 1<<40, 43, sha256.New())
	go io.Copy(io.Discard, p.backend)
	waitFor(t, "4 MiB relayed", func() bool { _, up := h.Bytes(); return up >= 4<<20 })
	resetConn(t, p.client.tcp)
	st := waitDone(t, done)
	var oe *OpError
	// "socket" when the reset came while the direction made no syscall on the
	// client's socket (it waited for the backend) and EPOLLERR surfaced it.
	if !errors.Is(st.Err, syscall.ECONNRESET) || !errors.As(st.Err, &oe) || oe.Op != "read" && oe.Op != "socket" || st.EndedBy != SideClient {
		t.Errorf("Stats = %+v, want read (or socket) ECONNRESET ended by the client", st)
	}
	checkIdle(t, r)
}

// A plain backend pushes 512 MiB at a TLS client that stopped reading. The
// relay holds at most a buffer and a batch of records per direction, its
// heap does not grow, and once the client reads every byte arrives.
func TestTLSStalledReaderBoundedMemory(t *testing.T) {
	total := int64(512 << 20)
	if testing.Short() {
		total = 128 << 20
	}
	r := newRelay(t, Config{})
	p := newTLSPair(t, listen(t), tls.VersionTLS13, 0)
	p.setDeadlines(5 * time.Minute)
	greeting := []byte("a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
	buf := make([]byte, 1<<20)
	copy(buf, randPool)
	heapBefore := heapInuse()

	h, done := p.add(t, r, greeting, nil, nil)
	var sent atomic.Int64
	want := sha256.New()
	want.Write(greeting)
	senderDone := make(chan error, 1)
	go func() {
		var off int64
		for off < total {
			for pg := 0; pg < len(buf); pg += 4096 {
				binary.LittleEndian.PutUint64(buf[pg:], uint64(off)+uint64(pg))
			}
			n, err := p.backend.tcp.Write(buf[:min(int64(len(buf)), total-off)])
			want.Write(buf[:n])
			off += int64(n)
			sent.Store(off)
			if err != nil {
				senderDone <- err
				return
			}
		}
		senderDone <- p.backend.tcp.CloseWrite()
	}()

	waitStalled(t, h, &sent)
	cpu0, wcpu0 := processCPU(), workersCPU(r)
	time.Sleep(500 * time.Millisecond) // only to report the CPU a stall costs
	cpuStall, wcpuStall := processCPU()-cpu0, workersCPU(r)-wcpu0
	heapStalled := heapInuse()
	c := r.Counters()
	toClient, _ := h.Bytes()
	s := sent.Load()
	wmem, rmem := sysctlMax(t, "tcp_wmem"), sysctlMax(t, "tcp_rmem")
	t.Logf("stalled: sender wrote %d MB of %d MB; relay delivered %d MB; counters %+v", s/1e6, total/1e6, toClient/1e6, c)
	t.Logf("stalled: heap %d KB → %d KB; CPU over 500 ms of stall: process %v, workers %v",
		heapBefore>>10, heapStalled>>10, cpuStall, wcpuStall)
	if s >= total {
		t.Fatalf("the sender wrote all %d bytes to a reader that does not read", total)
	}
	if c.TLSBuffersInUse > 2 || c.PipesInUse != 0 || c.PrefixBytes != 0 {
		t.Errorf("stalled counters: %+v; want TLSBuffersInUse <= 2, no pipe, no prefix", c)
	}
	// Client leg: delivered plaintext is at most the ciphertext in the kernel.
	if toClient > wmem+rmem {
		t.Errorf("relay delivered %d bytes the client has not read; kernel buffers allow %d", toClient, wmem+rmem)
	}
	// Backend leg: beyond what was delivered, the relay holds one buffer and
	// one batch of records; the rest waits in the kernel.
	if ahead := s - (toClient - int64(len(greeting))) - 2*tlsBufSize; ahead > wmem+rmem {
		t.Errorf("sender is %d bytes ahead of the relay; kernel buffers allow %d", ahead, wmem+rmem)
	}
	if growth := int64(heapStalled) - int64(heapBefore); growth > 4<<20 {
		t.Errorf("heap in use grew %d KB while stalled, want < 4 MiB", growth>>10)
	}

	got := sha256.New()
	n, err := readAll(p.client, got)
	if err != nil {
		t.Fatalf("client read: %v after %d bytes", err, n)
	}
	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}
	if n != int64(len(greeting))+total || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatalf("client got %d bytes, want %d; hashes equal: %v", n, int64(len(greeting))+total,
			bytes.Equal(got.Sum(nil), want.Sum(nil)))
	}
	p.client.tcp.Close()
	st := waitDone(t, done)
	if st.Err != nil || st.EndedBy != SideBackend || st.ToClient != n {
		t.Errorf("Stats = %+v", st)
	}
	checkIdle(t, r)
}

// Records (or plaintext) that crypto/tls read ahead while the destination
// was full must go out once it drains, with no new bytes on the socket: a
// client pipelines many small records into a backend that reads only after
// the relay stalled, and never sends again.
func TestTLSStalledTailArrives(t *testing.T) {
	r := newRelay(t, Config{Workers: 1})
	p := newTLSPair(t, listen(t), tls.VersionTLS13, 0)
	p.setDeadlines(2 * time.Minute)
	// Small kernel buffers on the backend leg (no autotuning): the relay
	// stalls early and often.
	if err := unix.SetsockoptInt(p.bfd, unix.SOL_SOCKET, unix.SO_SNDBUF, 64<<10); err != nil {
		t.Fatal(err)
	}
	p.backend.tcp.SetReadBuffer(64 << 10)
	h, done := p.add(t, r, []byte("* OK\r\n"), nil, nil) // the prefix only makes waitStalled work
	const total = 4 << 20
	want := sha256.New()
	var sent atomic.Int64
	wrote := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(5, 6))
		off := 0
		for off < total {
			n := min(1+rng.IntN(300), total-off) // one record each
			chunk := randPool[off%(len(randPool)-300):][:n]
			if _, err := p.client.Write(chunk); err != nil {
				wrote <- err
				return
			}
			want.Write(chunk)
			off += n
			sent.Store(int64(off))
		}
		wrote <- nil
	}()
	waitStalled(t, h, &sent)
	got := sha256.New()
	if _, err := io.CopyN(got, p.backend, total); err != nil {
		t.Fatalf("backend read: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("SHA-256 differs")
	}
	p.client.CloseWrite()
	if n, err := p.backend.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("backend read after the client's end: %d, %v", n, err)
	}
	p.backend.tcp.Close()
	p.client.tcp.Close()
	waitDone(t, done)
	checkIdle(t, r)
}

// At the hand-off the engine may leave bytes above the socket: plaintext
// crypto/tls decrypted but login did not consume, and raw records put back
// into the transport. Neither comes with an epoll edge; both must be
// relayed, after the prefix, without the client sending anything more.
func TestTLSHandoffLeftovers(t *testing.T) {
	r := newRelay(t, Config{Workers: 1})
	ln := listen(t)
	client, pc := connect(t, ln)
	pb, backend := connect(t, ln)
	p := &tlsPair{client: &end{tcp: client}, backend: &end{tcp: backend}}
	t.Cleanup(func() { client.Close(); backend.Close() })
	tc, raw := handshakeLeg(t, pc, p.client, true, tls.VersionTLS13)
	p.setDeadlines(time.Minute)

	// One record read by login, one byte at a time as it were: the rest of
	// its plaintext stays inside crypto/tls.
	if _, err := p.client.Write([]byte("a1 NOOP\r\n")); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(tc, first); err != nil {
		t.Fatal(err)
	}
	// Two more records the loop read off the socket but TLS did not.
	for _, line := range []string{"a2 NOOP\r\n", "a3 LOGOUT\r\n"} {
		if _, err := p.client.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(pc, hdr); err != nil {
			t.Fatal(err)
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
		if _, err := io.ReadFull(pc, body); err != nil {
			t.Fatal(err)
		}
		raw.PutIn(append(hdr, body...))
	}
	p.cfd, p.ctls = detachLeg(t, pc, raw), &TLS{Conn: tc, Raw: raw}
	p.bfd = rawFD(t, pb)
	_, done := p.add(t, r, nil, first, nil)

	want := "a1 NOOP\r\na2 NOOP\r\na3 LOGOUT\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(p.backend, got); err != nil || string(got) != want {
		t.Fatalf("backend read %q, %v; want %q", got, err, want)
	}
	if _, err := p.backend.Write([]byte("* BYE\r\n")); err != nil {
		t.Fatal(err)
	}
	bye := make([]byte, 7)
	if _, err := io.ReadFull(p.client, bye); err != nil || string(bye) != "* BYE\r\n" {
		t.Fatalf("client read %q, %v", bye, err)
	}
	p.client.CloseWrite()
	p.backend.CloseWrite()
	if st := waitDone(t, done); st.Err != nil || st.ToBackend != int64(len(want)) || st.ToClient != 7 {
		t.Errorf("Stats = %+v", st)
	}
	checkIdle(t, r)
}

// Prefixes bigger than the kernel buffers go through TLS a buffer's worth at
// a time, before anything relayed; stalled on them the relay holds no buffer.
func TestTLSBigPrefix(t *testing.T) {
	r := newRelay(t, Config{})
	p := newTLSPair(t, listen(t), tls.VersionTLS13, tls.VersionTLS13)
	p.setDeadlines(2 * time.Minute)
	size := int(max(32<<20, sysctlMax(t, "tcp_wmem")+sysctlMax(t, "tcp_rmem")+1<<20))
	toClient, toBackend := tiled(size, 70), tiled(size, 71)
	h, done := p.add(t, r, toClient, toBackend, nil)
	waitStalled(t, h, nil)
	if c := r.Counters(); c.PrefixBytes <= 0 || c.TLSBuffersInUse != 0 {
		t.Errorf("stalled on the prefixes: %+v", c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	transfer(&wg, errs, "up", p.client, p.backend, toBackend, 1<<20, 72)
	transfer(&wg, errs, "down", p.backend, p.client, toClient, 1<<20, 73)
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

func TestTLSKick(t *testing.T) {
	r := newRelay(t, Config{})
	p := newTLSPair(t, listen(t), tls.VersionTLS13, tls.VersionTLS13)
	p.setDeadlines(time.Minute)
	h, done := p.add(t, r, []byte("* OK\r\n"), nil, nil)
	buf := make([]byte, 6)
	if _, err := io.ReadFull(p.client, buf); err != nil || string(buf) != "* OK\r\n" {
		t.Fatalf("prefix: %q, %v", buf, err)
	}
	// Data in flight both ways at the kick.
	go p.client.Write(bytes.Repeat([]byte("x"), 1<<20))
	go p.backend.Write(bytes.Repeat([]byte("y"), 1<<20))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); h.Kick() }()
	}
	wg.Wait()
	st := waitDone(t, done)
	if st.EndedBy != SideProxy || !errors.Is(st.Err, ErrKicked) {
		t.Errorf("Stats = %+v, want SideProxy, ErrKicked", st)
	}
	for name, e := range map[string]*end{"client": p.client, "backend": p.backend} {
		if _, err := io.Copy(io.Discard, e); err == nil && e.closeNotified() {
			t.Errorf("%s: a kick sent close_notify", name)
		}
	}
	h.Kick()
	select {
	case st := <-done:
		t.Fatalf("Done called twice: %+v", st)
	case <-time.After(50 * time.Millisecond):
	}
	checkIdle(t, r)
}

// HoldClient on the TLS path: the backend's end reaches a TLS client (as
// close_notify and FIN) only after the hold.
func TestTLSHoldClient(t *testing.T) {
	r := newRelay(t, Config{Workers: 1})
	p := newTLSPair(t, listen(t), tls.VersionTLS13, 0)
	p.setDeadlines(time.Minute)
	const hold = 300 * time.Millisecond
	var asked atomic.Int32
	_, done := p.add(t, r, nil, nil, func() time.Duration { asked.Add(1); return hold })
	if _, err := p.backend.Write([]byte("* BYE\r\n")); err != nil {
		t.Fatal(err)
	}
	p.backend.CloseWrite()
	buf := make([]byte, 7)
	if _, err := io.ReadFull(p.client, buf); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if n, err := p.client.Read(buf); n != 0 || err != io.EOF || !p.client.closeNotified() {
		t.Fatalf("client read %d, %v (close_notify %v); want EOF by close_notify", n, err, p.client.closeNotified())
	}
	if waited := time.Since(t0); waited < hold-50*time.Millisecond {
		t.Errorf("the end reached the client after %v, want about %v", waited, hold)
	}
	p.client.CloseWrite()
	if st := waitDone(t, done); st.Err != nil || st.EndedBy != SideBackend || asked.Load() != 1 {
		t.Errorf("Stats = %+v, HoldClient asked %d times", st, asked.Load())
	}
	checkIdle(t, r)
}

// Idle TLS sessions hold no buffer.
func TestTLSManyIdleSessions(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 40
	}
	r := newRelay(t, Config{})
	ln := listen(t)
	pairs := make([]*tlsPair, n)
	dones := make([]<-chan Stats, n)
	for i := range pairs {
		leg := tlsLegs[i%len(tlsLegs)]
		pairs[i] = newTLSPair(t, ln, leg.client, leg.backend)
		pairs[i].setDeadlines(time.Minute)
	}
	ping, pong := []byte("a1 NOOP\r\n"), []byte("a1 OK NOOP completed\r\n")
	buf := make([]byte, 64)
	for i, p := range pairs {
		_, dones[i] = p.add(t, r, nil, nil, nil)
		if _, err := p.client.Write(ping); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.backend, buf[:len(ping)]); err != nil {
			t.Fatal(err)
		}
		if _, err := p.backend.Write(pong); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(p.client, buf[:len(pong)]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "buffers back", func() bool { return r.Counters().TLSBuffersInUse == 0 })
	if c := r.Counters(); c.Sessions != int64(n) || c.PipesInUse != 0 {
		t.Errorf("idle counters: %+v", c)
	}
	for i, p := range pairs {
		p.client.tcp.Close()
		p.backend.tcp.Close()
		waitDone(t, dones[i])
	}
	checkIdle(t, r)
}

// A panic while a TLS session holds a buffer (its client stalled) ends that
// session only, and the buffer is accounted for.
func TestTLSPanicWhileServing(t *testing.T) {
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
	p := newTLSPair(t, ln, tls.VersionTLS13, 0)
	p.setDeadlines(time.Minute)
	h, done := p.add(t, r, []byte("* OK\r\n"), nil, nil)
	go writeStream(p.backend, 1<<40, 44, sha256.New())
	waitStalled(t, h, nil)
	if c := r.Counters(); c.TLSBuffersInUse == 0 {
		t.Logf("stalled with no buffer held: %+v", c)
	}
	arm.Store(true)
	p.client.tcp.Write([]byte("x")) // an event to serve
	st := waitDone(t, done)
	var pe *PanicError
	if !errors.As(st.Err, &pe) || st.EndedBy != SideProxy {
		t.Errorf("Stats = %+v, want a PanicError from the proxy side", st)
	}
	runTLSEcho(t, r, newTLSPair(t, ln, tls.VersionTLS13, tls.VersionTLS13), 1<<20, 62)
	checkIdle(t, r)
}

func TestAddInvalidTLS(t *testing.T) {
	r := newRelay(t, Config{Workers: 1})
	ln := listen(t)
	c, a := connect(t, ln)
	defer c.Close()
	defer a.Close()
	srv, _ := tlsConfigs(tls.VersionTLS13)
	nc := tlsio.NewNet(a) // not switched to FD mode
	fd := tlsio.NewBuffered(nil, nil, nil)
	fd.SetFD(5)
	for _, tt := range []*TLS{{}, {Conn: tls.Server(nc, srv)}, {Conn: tls.Server(nc, srv), Raw: nc},
		{Conn: tls.Server(fd, srv), Raw: fd}} { // the last one has not shaken hands
		if _, err := r.Add(&Session{ClientFD: 5, BackendFD: 6, ClientTLS: tt}); err == nil {
			t.Errorf("Add with TLS %+v succeeded", tt)
		}
	}
}

// TLS 1.3 KeyUpdate from a real client: OpenSSL's s_client sends one with
// update_requested ("K"); crypto/tls answers it from inside Read, on the
// relay's worker, and that answer must reach the client before any record
// under the new keys. Skipped without an openssl binary.
func TestTLSKeyUpdateOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("no openssl binary")
	}
	r := newRelay(t, Config{Workers: 1})
	ln := listen(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, testCertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "s_client", "-connect", ln.Addr().String(), "-tls1_3",
		"-CAfile", ca, "-servername", testServerName, "-verify_return_error")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ln.SetDeadline(time.Now().Add(20 * time.Second))
	pc, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := tlsConfigs(tls.VersionTLS13)
	raw := tlsio.NewNet(pc)
	tc := tls.Server(raw, srv)
	pc.SetDeadline(time.Now().Add(20 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v; openssl said:\n%s", err, out.String())
	}
	cfd := detachLeg(t, pc, raw)
	pb, backend := connect(t, ln)
	defer backend.Close()
	backend.SetDeadline(time.Now().Add(time.Minute))
	done := make(chan Stats, 1)
	if _, err := r.Add(&Session{ClientFD: cfd, BackendFD: rawFD(t, pb), ClientTLS: &TLS{Conn: tc, Raw: raw},
		ToClient: []byte("* OK ready\r\n"), Done: func(st Stats) { done <- st }}); err != nil {
		t.Fatal(err)
	}
	expect := func(want string) {
		t.Helper()
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(backend, buf); err != nil || string(buf) != want {
			t.Fatalf("backend read %q, %v; want %q; openssl said:\n%s", buf, err, want, out.String())
		}
	}
	io.WriteString(stdin, "a1 NOOP\n")
	expect("a1 NOOP\n")
	for i, ku := range []string{"K", "k", "K"} {
		io.WriteString(stdin, ku+"\n") // a command to s_client, not data
		// s_client takes a whole read of its stdin as the command: wait for it.
		waitFor(t, "s_client to send "+ku, func() bool { return strings.Count(out.String(), "KEYUPDATE") == i+1 })
		line := "a" + string(rune('2'+i)) + " NOOP\n"
		io.WriteString(stdin, line)
		expect(line) // the KeyUpdate came before it, so it has been handled
		reply := "* " + string(rune('2'+i)) + " pong after " + ku + "\r\n"
		if _, err := backend.Write([]byte(reply)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "s_client to print the reply", func() bool { return strings.Contains(out.String(), reply) })
	}
	// The backend ends: s_client gets close_notify, answers with its own and exits.
	backend.CloseWrite()
	if rest, err := io.ReadAll(backend); err != nil || len(rest) > 0 {
		t.Errorf("backend read %q, %v; want the client's end", rest, err)
	}
	st := waitDone(t, done)
	if st.Err != nil || st.EndedBy != SideBackend {
		t.Errorf("Stats = %+v; openssl said:\n%s", st, out.String())
	}
	stdin.Close()
	cmd.Wait()
	checkIdle(t, r)
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
