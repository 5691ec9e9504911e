//go:build linux

package relay

import (
	"bytes"
	"crypto/tls"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"doorman/engine/tlsio"
)

// BenchmarkRelayTLS puts the TLS path (client leg TLS 1.3, backend plain)
// beside the splice path on the same traffic: 1 MiB per iteration through one
// session on one worker (each way for "both"), default pipe size. MB/s,
// worker-cpu-s/GB (the relay's threads: on the TLS path one decryption or
// encryption per byte plus a copy) and process-cpu-s/GB (with the test's own
// client and backend, whose TLS end costs as much again).
//
//	go test -run '^$' -bench BenchmarkRelayTLS ./engine/relay/
func BenchmarkRelayTLS(b *testing.B) {
	for _, way := range []string{"up", "down", "both"} {
		b.Run(way+"/splice", func(b *testing.B) { benchRelayTLS(b, way, 0) })
		b.Run(way+"/tls-client", func(b *testing.B) { benchRelayTLS(b, way, tls.VersionTLS13) })
		b.Run(way+"/tls-client-nocompact", func(b *testing.B) {
			defer func(v bool) { tlsio.CompactEnabled = v }(tlsio.CompactEnabled)
			tlsio.CompactEnabled = false
			benchRelayTLS(b, way, tls.VersionTLS13)
		})
	}
}

func benchRelayTLS(b *testing.B, way string, clientVersion uint16) {
	const chunk = 1 << 20
	r := newRelay(b, Config{Workers: 1})
	p := newTLSPair(b, listen(b), clientVersion, 0)
	p.setDeadlines(10 * time.Minute)
	_, done := p.add(b, r, nil, nil, nil)
	ways := 1
	if way == "both" {
		ways = 2
	}
	b.SetBytes(int64(chunk * ways))
	b.ReportAllocs()

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
		send bool
		end  *end
		buf  []byte
	}
	var jobs []job
	if way != "down" {
		jobs = append(jobs, job{true, p.client, newBuf()}, job{false, p.backend, newBuf()})
	}
	if way != "up" {
		jobs = append(jobs, job{true, p.backend, newBuf()}, job{false, p.client, newBuf()})
	}

	cpu0, wcpu0 := processCPU(), workersCPU(r)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if j.send {
				send(j.end, j.buf, b.N)
			} else {
				recv(j.end, j.buf, b.N)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	gb := float64(b.N) * chunk * float64(ways) / 1e9
	b.ReportMetric((workersCPU(r)-wcpu0).Seconds()/gb, "worker-cpu-s/GB")
	b.ReportMetric((processCPU()-cpu0).Seconds()/gb, "process-cpu-s/GB")
	p.client.tcp.Close()
	p.backend.tcp.Close()
	<-done
}

// BenchmarkTLSIdleAfterBulk is the heap an idle TLS session keeps after it moved 64 KiB
// each way in full-size records, with and without tlsio.Compact (the relay calls it each
// time a TLS source is drained). The test's own client-side tls.Conn is in the same heap
// and is never compacted, so the figure that matters is the difference between the two.
// One iteration is the whole measurement: -benchtime 1x.
func BenchmarkTLSIdleAfterBulk(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "compact=off"
		if on {
			name = "compact=on"
		}
		b.Run(name, func(b *testing.B) {
			defer func(v bool) { tlsio.CompactEnabled = v }(tlsio.CompactEnabled)
			tlsio.CompactEnabled = on
			for b.Loop() {
				b.ReportMetric(idleAfterBulk(b, 100), "B/session+peer")
			}
		})
	}
}

func idleAfterBulk(b *testing.B, n int) float64 {
	r := newRelay(b, Config{Workers: 1})
	ln := listen(b)
	msg := bytes.Repeat([]byte("x"), 64<<10)
	pairs := make([]*tlsPair, n)
	for i := range pairs {
		client, pc := connect(b, ln)
		pb, backend := connect(b, ln)
		p := &tlsPair{client: &end{tcp: client}, backend: &end{tcp: backend}}
		tc, raw := handshakeLeg(b, pc, p.client, true, tls.VersionTLS13)
		p.cfd, p.ctls = detachLeg(b, pc, raw), &TLS{Conn: tc, Raw: raw}
		p.bfd = rawFD(b, pb)
		p.add(b, r, nil, nil, nil)
		p.setDeadlines(time.Minute)
		pairs[i] = p
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	got := make([]byte, len(msg))
	for _, p := range pairs {
		go p.client.Write(msg)
		if _, err := io.ReadFull(p.backend, got); err != nil {
			b.Fatal(err)
		}
		go p.backend.Write(msg)
		if _, err := io.ReadFull(p.client, got); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // the worker's last reads (and Compacts) after the bytes went out
	after := heap()
	return (float64(after) - float64(before)) / float64(n)
}
