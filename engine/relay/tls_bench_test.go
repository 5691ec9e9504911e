//go:build linux

package relay

import (
	"crypto/tls"
	"io"
	"sync"
	"testing"
	"time"
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
