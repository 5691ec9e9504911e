package engine

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWorthTrim(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		name   string
		h      heapState
		recent uint64
		want   bool
	}{
		{"quiet after a burst", heapState{live: 4 * mb, returnable: 5 * mb}, 0, true},
		{"a trickle that takes long to fill it again", heapState{live: 100 * mb, returnable: 40 * mb}, 2 * mb, true},
		{"during a burst", heapState{live: 4 * mb, returnable: 5 * mb}, 20 * mb, false},
		{"just too fast: it would be filled in under 32 s", heapState{live: 4 * mb, returnable: 16 * mb}, mb + 1, false},
		{"too little to return", heapState{live: mb, returnable: mb}, 0, false},
		{"too little for so big a live heap", heapState{live: 100 * mb, returnable: 20 * mb}, 0, false},
	} {
		if got := worthTrim(c.h, c.recent); got != c.want {
			t.Errorf("%s: worthTrim(%+v, %d) = %v, want %v", c.name, c.h, c.recent, got, c.want)
		}
	}
}

func TestMemoryTrimConfig(t *testing.T) {
	for _, c := range []struct {
		yml  string
		want time.Duration
	}{
		{"", 10 * time.Second},
		{"memory_trim_interval: 0", 0},
		{"memory_trim_interval: 30s", 30 * time.Second},
		{"memory_trim_interval: 60", time.Minute},
	} {
		cfg, err := ParseConfig([]byte(`listeners: [{name: imap, protocol: imap, address: "127.0.0.1:1143"}]
passdb: [{driver: redis, addrs: ["127.0.0.1:6379"]}]
`+c.yml+"\n"), t.TempDir())
		if err != nil {
			t.Fatalf("%q: %v", c.yml, err)
		}
		if got := time.Duration(*cfg.MemoryTrimInterval); got != c.want {
			t.Errorf("%q: memory_trim_interval %v, want %v", c.yml, got, c.want)
		}
	}
	_, err := ParseConfig([]byte(`listeners: [{name: imap, protocol: imap, address: "127.0.0.1:1143"}]
passdb: [{driver: redis, addrs: ["127.0.0.1:6379"]}]
memory_trim_interval: -1s
`), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "memory_trim_interval: must not be negative") {
		t.Fatalf("a negative interval gave %v", err)
	}
}

// A burst of real logins through Doorman to Dovecot: no trim while it lasts, one within a
// few seconds of its end, logged with what it returned.
func TestMemoryTrimAfterBurst(t *testing.T) {
	be := sharedBackend(t)
	// The test process's heap is small: a burst of a few hundred logins leaves 1-3 MiB
	// to return, around trimMinBytes. (Set before the proxy starts, restored after its
	// Stop, a cleanup that runs earlier.)
	t.Cleanup(func(v uint64) func() { return func() { trimMinBytes = v } }(trimMinBytes))
	trimMinBytes = 256 << 10
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)), "")
	if p.srv.memTrim == nil {
		t.Fatal("memory trim off by default")
	}
	// Longer than the quiet window, so a trim during the burst would have had its chance.
	n := loginBurst(t, p.addr, 3*trimQuiet/2+time.Second)
	if got := p.srv.memTrim.trims.Load(); got != 0 {
		t.Fatalf("%d trims during a burst of %d logins", got, n)
	}
	ended := time.Now()
	waitFor(t, func() bool { return p.srv.memTrim.trims.Load() > 0 }, "a trim after the burst")
	lines := p.logs.FilterMessage("memory returned to the kernel after a burst").All()
	if len(lines) != 1 {
		t.Fatalf("%d trim lines, want 1", len(lines))
	}
	if after := lines[0].Time.Sub(ended); after <= 0 || after > 2*trimQuiet {
		t.Errorf("trim %v after the burst, want within about %v (the quiet window)", after, trimQuiet)
	}
	f := lines[0].ContextMap()
	if f["rss_before"].(int64) <= 0 || f["rss_after"].(int64) <= 0 || f["allocated_since_last"].(uint64) == 0 {
		t.Errorf("trim line: %v", f)
	}
	t.Logf("%d logins; trim: %v", n, f)
	// Quiet since: no second trim (the interval, and nothing to return).
	time.Sleep(2 * trimQuiet)
	if got := p.srv.memTrim.trims.Load(); got != 1 {
		t.Errorf("%d trims, want 1", got)
	}
}

func TestMemoryTrimOff(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		"memory_trim_interval: 0")
	if p.srv.memTrim != nil {
		t.Fatal("memory trim on with memory_trim_interval: 0")
	}
	loginBurst(t, p.addr, time.Second)
	time.Sleep(trimQuiet + 4*trimTick)
	if n := p.logs.FilterMessage("memory returned to the kernel after a burst").Len(); n != 0 {
		t.Fatalf("%d trims with memory_trim_interval: 0", n)
	}
}

// loginBurst logs alice in and out through addr from 8 clients at once for d, and returns
// how many logins succeeded.
func loginBurst(t *testing.T, addr string, d time.Duration) int {
	t.Helper()
	var ok atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	end := time.Now().Add(d)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if err := loginLogout(addr); err != nil {
					errs <- err
					return
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return int(ok.Load())
}

func loginLogout(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	reply := func(tag string) (string, error) {
		for {
			l, err := r.ReadString('\n')
			if err != nil || strings.HasPrefix(l, tag) {
				return l, err
			}
		}
	}
	if l, err := reply("* OK"); err != nil {
		return fmt.Errorf("greeting: %q, %v", l, err)
	}
	fmt.Fprintf(c, "a LOGIN alice secret\r\n")
	if l, err := reply("a "); err != nil || !strings.HasPrefix(l, "a OK") {
		return fmt.Errorf("LOGIN: %q, %v", l, err)
	}
	fmt.Fprintf(c, "b LOGOUT\r\n")
	if l, err := reply("b "); err != nil || !strings.HasPrefix(l, "b OK") {
		return fmt.Errorf("LOGOUT: %q, %v", l, err)
	}
	return nil
}
