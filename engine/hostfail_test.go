package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// The rule, step by step, on a fake clock.
func TestHostFailuresRule(t *testing.T) {
	hf := newHostFailures()
	be := netip.MustParseAddrPort("192.0.2.10:143")
	other := netip.MustParseAddrPort("192.0.2.11:143")
	t0 := time.Unix(1_700_000_000, 0)
	after := 30 * time.Second
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	// A first attempt never fails at once; it counts as under way.
	if ok, _ := hf.begin(be, at(0), after); !ok {
		t.Fatal("first attempt refused")
	}
	// Connects keep failing (each a timeout) while others wait: failures up to 30 s past
	// the last success (t0-1s) do not trip the rule.
	hf.end(be, at(0), at(10), connectFailed)
	for s := 10; s < 29; s += 9 {
		if ok, _ := hf.begin(be, at(s), after); !ok {
			t.Fatalf("refused at %ds, only %ds of failures", s, s)
		}
		if ok, _ := hf.begin(be, at(s), after); !ok { // a second one waiting alongside
			t.Fatalf("refused at %ds (second)", s)
		}
		hf.end(be, at(s), at(s+9), connectFailed)
		hf.end(be, at(s), at(s+9), connectFailed)
	}
	// Now the newest failure (t=37) is 38 s past the newest success (t=-1): down. But no
	// connect is under way, so a new one still goes out (it probes the backend)...
	probe, _ := hf.begin(be, at(40), after)
	if !probe {
		t.Fatal("the probe was refused although nothing was under way")
	}
	// ...and while it waits, the others fail at once.
	ok, down := hf.begin(be, at(41), after)
	if ok || down != 38*time.Second {
		t.Fatalf("while the probe waits: ok=%v down=%v; want refused, 38s", ok, down)
	}
	// Another backend is not affected.
	if ok, _ := hf.begin(other, at(41), after); !ok {
		t.Fatal("an unrelated backend was refused")
	}
	// 0 disables the rule.
	if ok, _ := hf.begin(be, at(41), 0); !ok {
		t.Fatal("refused with the rule off")
	}
	hf.end(be, at(41), at(42), connectAbandoned) // that one's client left: no record
	// A larger limit than the outage lets them through.
	if ok, _ := hf.begin(be, at(41), time.Minute); !ok {
		t.Fatal("refused with a one-minute limit after 38 s of failures")
	}
	hf.end(be, at(41), at(42), connectAbandoned)
	// The probe connects: the backend is up again, nothing fails at once.
	hf.end(be, at(40), at(43), connectOK)
	if ok, _ := hf.begin(be, at(44), after); !ok {
		t.Fatal("refused after a success")
	}
	// A login that began before that success and fails now is a one-off: not recorded.
	hf.end(be, at(39), at(45), connectFailed)
	sh := hf.shard(be)
	sh.mu.Lock()
	st := *sh.m[be]
	sh.mu.Unlock()
	if !st.lastFailure.Equal(at(37)) || !st.lastSuccess.Equal(at(43)) || st.waiting != 0 {
		t.Fatalf("state %+v; want last failure at 37, success at 43, nothing under way", st)
	}
}

func TestHostFailuresBounded(t *testing.T) {
	hf := newHostFailures()
	t0 := time.Unix(1_700_000_000, 0)
	for i := 0; i < hostFailShards*hostFailMax+500; i++ {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 143)
		hf.begin(ap, t0, time.Second)
		hf.end(ap, t0, t0, connectOK)
	}
	if n := hf.len(); n > hostFailShards*hostFailMax {
		t.Fatalf("%d targets tracked, bound %d", n, hostFailShards*hostFailMax)
	}
	// Much later, the stale ones make room for new targets.
	later := t0.Add(2 * hostFailForget)
	fresh := netip.MustParseAddrPort("10.255.0.1:143")
	for i := 0; i < 50; i++ {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 255, 1, byte(i)}), 143)
		hf.begin(ap, later, time.Second)
	}
	hf.begin(fresh, later, time.Second)
	sh := hf.shard(fresh)
	sh.mu.Lock()
	_, tracked := sh.m[fresh]
	sh.mu.Unlock()
	if !tracked {
		t.Fatal("a new target is not tracked after the stale ones aged out")
	}
}

func TestAttemptOutcome(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(live)
	cancel()
	boom := errors.New("connect: connection refused")
	for _, c := range []struct {
		ctx  context.Context
		st   Stage
		err  error
		want connectOutcome
	}{
		{live, StageConnect, boom, connectFailed},
		{gone, StageConnect, boom, connectAbandoned},
		{live, StageBackendLogin, boom, connectOK}, // it connected; the login failed
		{live, StageBackendLogin, nil, connectOK},
	} {
		if got := attemptOutcome(c.ctx, c.st, c.err); got != c.want {
			t.Errorf("%v %v: %v, want %v", c.st, c.err, got, c.want)
		}
	}
}

// blackhole is a listening socket whose accept queue is full: the kernel drops further
// SYNs, so connects to it hang until their timeout, as to a backend that died without a
// word (no RST).
func blackhole(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue (never accepted), then make sure a connect now hangs.
	for range 2 {
		if c, err := net.DialTimeout("tcp", ap.String(), 200*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if c, err := net.DialTimeout("tcp", ap.String(), 300*time.Millisecond); err == nil {
		c.Close()
		t.Skip("this kernel completes connects to a full accept queue; no blackhole here")
	}
	return ap
}

// A backend whose connects hang: once its failures are older than the newest success by
// more than proxy_host_immediate_failure_after, a login that comes while another waits on
// it fails at once with "Host is down", instead of waiting out its own timeout.
func TestHostDownFailsFast(t *testing.T) {
	be := blackhole(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", fmt.Sprintf(
		"proxy host=%s port=%d proxy_timeout=2 proxy_host_immediate_failure_after=1s", be.Addr(), be.Port())),
		"login_proxy_max_reconnects: 0")
	login := func() (reply string, took time.Duration) {
		c := dial(t, p.addr, "")
		start := time.Now()
		c.send("a LOGIN alice secret\r\n")
		return last(c.until("a", 10*time.Second)), time.Since(start)
	}
	const unavailable = "a NO [UNAVAILABLE] Account is temporarily unavailable.\r\n"
	// The first login waits out its timeout (2 s): the failure is now 3 s past the
	// "success" a second before the first attempt.
	if r, took := login(); r != unavailable || took < 1500*time.Millisecond {
		t.Fatalf("first login: %q after %v; want UNAVAILABLE after about 2s", r, took)
	}
	// A probe goes out (nothing else is waiting) and hangs...
	probe := make(chan time.Duration, 1)
	go func() {
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			probe <- -1
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = r.ReadString('\n')
		start := time.Now()
		fmt.Fprintf(c, "a LOGIN alice secret\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil || strings.HasPrefix(l, "a ") {
				probe <- time.Since(start)
				return
			}
		}
	}()
	waitFor(t, func() bool {
		sh := p.srv.hostFail.shard(be)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		st := sh.m[be]
		return st != nil && st.waiting == 1
	}, "the probe's connect under way")
	// ...and while it does, another login fails at once.
	r, took := login()
	if r != unavailable || took > time.Second {
		t.Fatalf("login while the probe waits: %q after %v; want UNAVAILABLE at once", r, took)
	}
	if p.srv.stats.HostDown.Load() != 1 {
		t.Fatalf("host-down count %d, want 1", p.srv.stats.HostDown.Load())
	}
	if n := p.logs.FilterMessage("login failed").FilterFieldKey("reason").Filter(func(e observer.LoggedEntry) bool {
		return strings.HasPrefix(e.ContextMap()["reason"].(string), "Host is down")
	}).Len(); n != 1 {
		t.Fatalf("%d \"Host is down\" log lines, want 1", n)
	}
	if d := <-probe; d < 1500*time.Millisecond {
		t.Fatalf("the probe ended after %v; it should have waited out its timeout", d)
	}
	m := string(p.srv.appendMetrics(nil))
	if !strings.Contains(m, "\ndoorman_backend_host_down_total 1\n") {
		t.Fatalf("metrics lack the host-down count:\n%s", m)
	}
}
