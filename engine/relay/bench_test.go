//go:build linux

package relay

import (
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// BenchmarkRelay moves 1 MiB per iteration through one session (each way
// for "both"). Besides MB/s it reports the CPU of the relay's worker
// threads per GB moved (worker-cpu-s/GB: the proxy's cost, measured on the
// worker threads themselves) and of the whole process, which also runs the
// test's client and backend (process-cpu-s/GB).
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime 2000x ./engine/relay/
func BenchmarkRelay(b *testing.B) {
	for _, way := range []string{"up", "down", "both"} {
		for _, ps := range []int{64 << 10, 256 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/pipe=%dKiB", way, ps>>10), func(b *testing.B) { benchRelay(b, way, Config{PipeSize: ps}, 1) })
		}
	}
}

// BenchmarkRelayParallel runs 8 sessions at once over the default workers.
func BenchmarkRelayParallel(b *testing.B) {
	benchRelay(b, "both", Config{}, 8)
}

// BenchmarkRelayBounds is what Config.NotSentLowat and BackendRcvBuf cost one
// session's download (backend to client, the only way they act on; -1: the
// kernel's own, unbounded). On loopback part of the worker's extra CPU is work
// moved, not added: a splice into a socket whose peer reads in the same
// process also runs the peer's receive path, and with short queues more of
// the sending happens on the worker's splices instead of on the reader's acks.
//
//	go test -run '^$' -bench BenchmarkRelayBounds -benchtime 500x -count 5 ./engine/relay/
func BenchmarkRelayBounds(b *testing.B) {
	for _, lowat := range []int{-1, 64 << 10, 128 << 10, 256 << 10, 512 << 10} {
		for _, rcv := range []int{-1, 64 << 10, 128 << 10, 256 << 10} {
			name := fmt.Sprintf("down/lowat=%s/rcvbuf=%s", kib(lowat), kib(rcv))
			b.Run(name, func(b *testing.B) {
				benchRelay(b, "down", Config{NotSentLowat: lowat, BackendRcvBuf: rcv}, 1)
			})
		}
	}
}

func kib(n int) string {
	if n < 0 {
		return "off"
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

func benchRelay(b *testing.B, way string, cfg Config, sessions int) {
	const chunk = 1 << 20
	cfg.Workers = 1
	if sessions > 1 {
		cfg.Workers = 0
	}
	r := newRelay(b, cfg)
	ln := listen(b)
	pairs := make([]*pair, sessions)
	dones := make([]<-chan Stats, sessions)
	for i := range pairs {
		pairs[i] = newPair(b, ln)
		setDeadlines(pairs[i], 10*time.Minute)
		_, dones[i] = pairs[i].add(b, r, nil, nil)
	}
	ways := 1
	if way == "both" {
		ways = 2
	}
	b.SetBytes(int64(chunk * ways * sessions))
	b.ReportAllocs()

	// Buffers are made before the timer starts, so B/op and allocs/op are
	// the relay's alone.
	newBuf := func() []byte { b := make([]byte, chunk); copy(b, randPool); return b }
	send := func(w io.Writer, buf []byte, n int) {
		for range n {
			if _, err := w.Write(buf); err != nil {
				b.Error(err)
				return
			}
		}
	}
	recv := func(r io.Reader, buf []byte, n int) {
		for left := int64(n) * chunk; left > 0; {
			m, err := r.Read(buf[:min(int64(len(buf)), left)])
			left -= int64(m)
			if err != nil {
				b.Error(err)
				return
			}
		}
	}
	type job struct {
		run func(io.ReadWriter, []byte, int)
		rw  io.ReadWriter
		buf []byte
	}
	var jobs []job
	for _, p := range pairs {
		if way != "down" {
			jobs = append(jobs, job{func(c io.ReadWriter, buf []byte, n int) { send(c, buf, n) }, p.client, newBuf()},
				job{func(c io.ReadWriter, buf []byte, n int) { recv(c, buf, n) }, p.backend, newBuf()})
		}
		if way != "up" {
			jobs = append(jobs, job{func(c io.ReadWriter, buf []byte, n int) { send(c, buf, n) }, p.backend, newBuf()},
				job{func(c io.ReadWriter, buf []byte, n int) { recv(c, buf, n) }, p.client, newBuf()})
		}
	}

	cpu0, wcpu0 := processCPU(), workersCPU(r)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() { defer wg.Done(); j.run(j.rw, j.buf, b.N) }()
	}
	wg.Wait()
	b.StopTimer()
	gb := float64(b.N) * chunk * float64(ways*sessions) / 1e9
	b.ReportMetric((workersCPU(r)-wcpu0).Seconds()/gb, "worker-cpu-s/GB")
	b.ReportMetric((processCPU()-cpu0).Seconds()/gb, "process-cpu-s/GB")

	for i, p := range pairs {
		p.client.Close()
		p.backend.Close()
		<-dones[i]
	}
}
