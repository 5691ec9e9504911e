//go:build linux

package relay

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockMem is a socket's memory as the kernel accounts it (SO_MEMINFO, what
// `ss -tm` shows as skmem), in bytes.
type sockMem struct {
	RcvQueue int // rmem_alloc: received, not yet read
	RcvBuf   int // the receive buffer's limit
	SndQueue int // wmem_queued: written, not yet acknowledged by the peer
	SndBuf   int // the send buffer's limit
	FwdAlloc int // reserved for the socket ahead of use
}

// total is what the socket holds of the machine's TCP memory (tcp_mem).
func (m sockMem) total() int { return m.RcvQueue + m.SndQueue + m.FwdAlloc }

func (m sockMem) String() string {
	return fmt.Sprintf("recv queue %d KB (buffer %d KB), send queue %d KB (buffer %d KB), reserved %d KB",
		m.RcvQueue>>10, m.RcvBuf>>10, m.SndQueue>>10, m.SndBuf>>10, m.FwdAlloc>>10)
}

func readSockMem(t testing.TB, fd int) sockMem {
	t.Helper()
	var v [9]uint32 // SK_MEMINFO_VARS in linux/sock_diag.h
	l := uint32(unsafe.Sizeof(v))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		t.Fatalf("getsockopt SO_MEMINFO: %v", e)
	}
	return sockMem{RcvQueue: int(v[0]), RcvBuf: int(v[1]), SndQueue: int(v[5]), SndBuf: int(v[3]), FwdAlloc: int(v[4])}
}

func tcpConnFD(t testing.TB, c *net.TCPConn) int {
	t.Helper()
	sc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	sc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// A client downloads fast, so that the kernel autotunes every buffer on the
// way up, then stops reading while the backend keeps sending. What the proxy's
// two sockets hold must then stay near Config.NotSentLowat (the client
// socket's send queue) and Config.BackendRcvBuf (the backend socket's receive
// queue) instead of tcp_wmem's and tcp_rmem's maxima; once the client reads
// again every byte arrives, in order. With both options off the same run shows
// what they bound (and that the test would see it).
func TestStalledReaderKernelMemory(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		bounded bool
	}{
		{"defaults", Config{}, true},
		{"small", Config{NotSentLowat: 32 << 10, BackendRcvBuf: 64 << 10}, true},
		{"off", Config{NotSentLowat: -1, BackendRcvBuf: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { stalledKernelMemory(t, tc.cfg, tc.bounded) })
	}
}

func stalledKernelMemory(t *testing.T, cfg Config, bounded bool) {
	const (
		fast  = 48 << 20 // read at full speed before the stall
		total = 96 << 20
	)
	r := newRelay(t, cfg)
	lowat, rcvbuf := r.notSentLowat, r.backendRcvBuf
	p := newPair(t, listen(t))
	setDeadlines(p, 2*time.Minute)
	h, done := p.add(t, r, nil, nil)

	want := sha256.New()
	var sent atomic.Int64
	senderDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		copy(buf, randPool)
		for off := int64(0); off < total; {
			for pg := 0; pg < len(buf); pg += 4096 {
				binary.LittleEndian.PutUint64(buf[pg:], uint64(off)+uint64(pg))
			}
			n, err := p.backend.Write(buf)
			want.Write(buf[:n])
			off += int64(n)
			sent.Store(off)
			if err != nil {
				senderDone <- err
				return
			}
		}
		senderDone <- p.backend.CloseWrite()
	}()

	got := sha256.New()
	if _, err := io.CopyN(got, p.client, fast); err != nil {
		t.Fatal(err)
	}
	waitStalled(t, h, &sent)

	proxyClient, proxyBackend := readSockMem(t, p.cfd), readSockMem(t, p.bfd)
	client, backend := readSockMem(t, tcpConnFD(t, p.client)), readSockMem(t, tcpConnFD(t, p.backend))
	pipes := r.Counters().PipesInUse * int64(r.workers[0].pipeSize)
	toClient, _ := h.Bytes()
	t.Logf("NotSentLowat %d, BackendRcvBuf %d; stalled after %d MB delivered to the client (%d MB read), sender %d MB ahead of the client",
		lowat, rcvbuf, toClient>>20, fast>>20, (sent.Load()-fast)>>20)
	t.Logf("proxy, client socket:  %v", proxyClient)
	t.Logf("proxy, backend socket: %v", proxyBackend)
	t.Logf("proxy total: %d KB of TCP memory + %d KB of pipes; the peers hold %d KB (client) and %d KB (backend)",
		(proxyClient.total()+proxyBackend.total())>>10, pipes>>10, client.total()>>10, backend.total()>>10)

	if bounded {
		// Not yet sent is at most NotSentLowat plus the one packet that crossed
		// it; what is sent is acknowledged once the client's window has closed.
		// The rest is the kernel's per-packet overhead.
		if limit := 2*lowat + 64<<10; proxyClient.SndQueue > limit {
			t.Errorf("the proxy's send queue to the client holds %d KB; NotSentLowat %d KB allows about %d KB",
				proxyClient.SndQueue>>10, lowat>>10, limit>>10)
		}
		// The kernel doubles SO_RCVBUF, and lets a queue pass its limit by one packet.
		if proxyBackend.RcvBuf > 2*rcvbuf {
			t.Errorf("the proxy's receive buffer from the backend is %d KB; BackendRcvBuf %d KB allows %d KB",
				proxyBackend.RcvBuf>>10, rcvbuf>>10, 2*rcvbuf>>10)
		}
		if limit := 2*rcvbuf + 64<<10; proxyBackend.RcvQueue > limit {
			t.Errorf("the proxy's receive queue from the backend holds %d KB; BackendRcvBuf %d KB allows about %d KB",
				proxyBackend.RcvQueue>>10, rcvbuf>>10, limit>>10)
		}
	} else if wmax := sysctlMax(t, "tcp_wmem"); wmax >= 1<<20 && proxyClient.SndQueue < 1<<20 {
		// The control: without the option the queue grows towards tcp_wmem's
		// maximum, or the bounds above prove nothing.
		t.Errorf("without NotSentLowat the proxy's send queue to the client holds only %d KB (tcp_wmem max %d KB)",
			proxyClient.SndQueue>>10, wmax>>10)
	}

	n, err := readAll(p.client, got)
	if err != nil {
		t.Fatalf("client read after %d more bytes: %v", n, err)
	}
	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}
	if fast+n != total || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("client got %d bytes, want %d; SHA-256 equal: %v", fast+n, total,
			string(got.Sum(nil)) == string(want.Sum(nil)))
	}
	p.client.Close()
	if st := waitDone(t, done); st.Err != nil || st.ToClient != total {
		t.Errorf("Stats = %+v", st)
	}
	checkIdle(t, r)
}
