//go:build linux

package relay

import (
	"crypto/sha256"
	"encoding/binary"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// sysctlMax reads the third field of tcp_rmem or tcp_wmem: the most one
// socket's buffer can grow to.
func sysctlMax(t *testing.T, name string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	v, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// A fast backend pushes 1 GB to a client that stops reading. The relay must
// stop reading from the backend once its one pipe is full: what it holds is
// bounded by the pipe plus kernel socket buffers, its heap does not grow,
// and once the client reads again every byte arrives intact.
func TestStalledReaderBoundedMemory(t *testing.T) {
	const pipeSize = 256 << 10
	total := int64(1 << 30)
	if testing.Short() {
		total = 256 << 20
	}
	r := newRelay(t, Config{PipeSize: pipeSize})
	p := newPair(t, listen(t))
	setDeadlines(p, 2*time.Minute)
	greeting := []byte("a1 OK [CAPABILITY IMAP4rev1] Logged in\r\n")

	// One reused buffer for the sender; each 4 KiB page is stamped with its
	// position, so a lost, repeated or reordered page changes the hash.
	buf := make([]byte, 1<<20)
	copy(buf, randPool)
	rbuf := make([]byte, 1<<20)
	heapBefore := heapInuse()

	h, done := p.add(t, r, greeting, nil)
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

	waitStalled(t, h, &sent)
	cpu0, wcpu0 := processCPU(), workersCPU(r)
	time.Sleep(500 * time.Millisecond) // only to report the CPU a stall costs
	cpuStall, wcpuStall := processCPU()-cpu0, workersCPU(r)-wcpu0
	heapStalled := heapInuse()

	c := r.Counters()
	toClient, _ := h.Bytes()
	s := sent.Load()
	wmem, rmem := sysctlMax(t, "tcp_wmem"), sysctlMax(t, "tcp_rmem")
	relayRead := toClient - int64(len(greeting)) + pipeSize // at most: delivered plus a full pipe
	t.Logf("stalled: sender wrote %d MB of %d MB; relay delivered %d MB to the client; counters %+v",
		s/1e6, total/1e6, toClient/1e6, c)
	t.Logf("stalled: sent-but-undelivered %d KB (bound %d KB = pipe + 2 wmem + 2 rmem max); heap %d KB → %d KB; CPU over 500 ms of stall: process %v, workers %v",
		(s-(toClient-int64(len(greeting))))>>10, (pipeSize+2*wmem+2*rmem)>>10, heapBefore>>10, heapStalled>>10, cpuStall, wcpuStall)

	if s >= total {
		t.Fatalf("the sender wrote all %d bytes to a reader that does not read", total)
	}
	if c.PipesInUse > 1 || c.PrefixBytes != 0 {
		t.Errorf("stalled counters: %+v; want PipesInUse <= 1, PrefixBytes 0", c)
	}
	// Client leg: what the relay delivered but the client has not read sits
	// in the proxy's send buffer and the client's receive buffer.
	if held := toClient; held > wmem+rmem {
		t.Errorf("relay delivered %d bytes the client has not read; kernel buffers allow %d", held, wmem+rmem)
	}
	// Backend leg: the relay stopped reading, so the rest of what the sender
	// wrote sits in the backend's send buffer and the proxy's receive buffer.
	if ahead := s - relayRead; ahead > wmem+rmem {
		t.Errorf("sender is %d bytes ahead of the relay; kernel buffers allow %d", ahead, wmem+rmem)
	}
	if growth := int64(heapStalled) - int64(heapBefore); growth > 16<<20 {
		t.Errorf("heap in use grew %d KB while stalled, want < 16 MiB", growth>>10)
	}

	// Resume: everything arrives, in order.
	got := sha256.New()
	var n int64
	for {
		m, err := p.client.Read(rbuf)
		got.Write(rbuf[:m])
		n += int64(m)
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("client read: %v after %d bytes", err, n)
			}
			break
		}
	}
	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}
	if n != int64(len(greeting))+total || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("client got %d bytes, want %d; hashes equal: %v", n, int64(len(greeting))+total,
			string(got.Sum(nil)) == string(want.Sum(nil)))
	}
	p.client.Close()
	st := waitDone(t, done)
	if st.Err != nil || st.EndedBy != SideBackend || st.ToClient != n {
		t.Errorf("Stats = %+v", st)
	}
	checkIdle(t, r)
}
