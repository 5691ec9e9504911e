package tlsio

import (
	"bytes"
	"crypto/tls"
	"io"
	"reflect"
	"runtime"
	"testing"
	"unsafe"
)

// rawCap reads the capacity of crypto/tls's raw-input buffer, as Compact sees it.
func rawCap(c *tls.Conn) int {
	v := reflect.ValueOf(c).Elem()
	return (*bytes.Buffer)(unsafe.Pointer(v.Field(rawInputField).UnsafeAddr())).Cap()
}

func TestCompactReleasesAndKeepsWorking(t *testing.T) {
	if !CompactSupported() {
		t.Fatalf("crypto/tls's fields changed in %s: Compact is off (memory only); recheck compact.go", runtime.Version())
	}
	srvCfg, cliCfg := configs(t, tls.VersionTLS13)
	d, a := tcpPair(t)
	srv := tls.Server(a, srvCfg)
	cli := tls.Client(d, cliCfg)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: full-size records
	errc := make(chan error, 1)
	go func() {
		if _, err := cli.Write(msg); err != nil {
			errc <- err
			return
		}
		_, err := cli.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(srv, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("first transfer: %v", err)
	}
	// The second 64 KiB may be partly inside crypto/tls already: Compact must not drop
	// it. Read one byte so that input holds the rest of a record, and try.
	one := make([]byte, 1)
	if _, err := io.ReadFull(srv, one); err != nil {
		t.Fatal(err)
	}
	held := rawCap(srv)
	Compact(srv) // may drop the handshake buffer, never the raw input holding plaintext
	if rawCap(srv) != held || held == 0 {
		t.Fatalf("Compact released the raw input holding unread plaintext (cap %d → %d)", held, rawCap(srv))
	}
	rest := make([]byte, len(msg)-1)
	if _, err := io.ReadFull(srv, rest); err != nil || !bytes.Equal(append(one, rest...), msg) {
		t.Fatalf("second transfer: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if c := rawCap(srv); c < 16<<10 {
		t.Fatalf("raw input capacity %d after full-size records; want ≥ 16 KiB (the case Compact is for)", c)
	}
	if !Compact(srv) || rawCap(srv) != 0 {
		t.Fatalf("Compact on a drained conn: capacity %d, want 0", rawCap(srv))
	}
	// And the connection goes on both ways.
	go func() { _, err := cli.Write(msg); errc <- err }()
	if _, err := io.ReadFull(srv, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("after Compact: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	go func() { _, err := srv.Write([]byte("pong")); errc <- err }()
	pong := make([]byte, 4)
	if _, err := io.ReadFull(cli, pong); err != nil || string(pong) != "pong" {
		t.Fatalf("server to client after Compact: %q %v", pong, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func BenchmarkCompactNothingToDo(b *testing.B) {
	srvCfg, _ := configs(b, tls.VersionTLS13)
	d, _ := tcpPair(b)
	c := tls.Server(d, srvCfg)
	b.ReportAllocs()
	for b.Loop() {
		Compact(c)
	}
}
