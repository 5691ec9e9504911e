package loadutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestParseSourceIPs(t *testing.T) {
	got, err := ParseSourceIPs("127.0.1.1-127.0.1.3, 127.0.2.9")
	if err != nil || len(got) != 4 || got[0].String() != "127.0.1.1" || got[2].String() != "127.0.1.3" || got[3].String() != "127.0.2.9" {
		t.Fatalf("%v, %v", got, err)
	}
	for _, bad := range []string{"127.0.1.3-127.0.1.1", "127.0.0.1-::1", "x", "10.0.0.0-10.2.0.0"} {
		if _, err := ParseSourceIPs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCPUOf(t *testing.T) {
	ticks, runNs, err := CPUOf([]int{os.Getpid()})
	if err != nil || ticks < 0 || runNs <= 0 {
		t.Fatalf("own CPU: %d ticks, %d ns, %v", ticks, runNs, err)
	}
	if _, _, err := CPUOf([]int{1 << 30}); err == nil {
		t.Fatal("a process that does not exist has no error")
	}
}

func TestReadUsers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.txt")
	if err := os.WriteFile(path, []byte("# comment\nu001:pw-u001\n\nu002 secret two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Account{{"u001", "pw-u001"}, {"u002", "secret two"}}
	if !slices.Equal(got, want) {
		t.Fatalf("ReadUsers = %v; want %v", got, want)
	}
	if err := os.WriteFile(path, []byte("nopassword\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadUsers(path); err == nil {
		t.Fatal("a line without a password was accepted")
	}
}

func TestErrText(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{io.EOF, "EOF"},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "connection reset by peer"},
		{os.ErrDeadlineExceeded, "timeout"},
		{errors.New("a NO reply"), "a NO reply"},
	} {
		if got := ErrText(tc.err); got != tc.want {
			t.Errorf("ErrText(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}
}

func TestPace(t *testing.T) {
	if Pace(0, time.Now(), nil) != nil {
		t.Fatal("Pace(0) paces")
	}
	done := make(chan struct{})
	defer close(done)
	start := time.Now()
	tokens := Pace(1000, start, done)
	for range 50 {
		<-tokens
	}
	// Token k comes no sooner than start + k ms, however fast it is taken.
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("50 tokens at 1,000/s came in %v", d)
	}
}
