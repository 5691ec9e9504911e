package loadutil

import (
	"os"
	"testing"
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
