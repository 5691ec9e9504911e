package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// relayedClients logs n clients in (alice, through the shared backend) and leaves them
// relayed.
func relayedClients(t *testing.T, p *proxy, n int) []*client {
	t.Helper()
	var cs []*client
	for range n {
		c := dial(t, p.addr, "")
		c.send("a LOGIN alice secret\r\n")
		expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
		cs = append(cs, c)
	}
	waitFor(t, func() bool { return p.srv.stats.Relaying.Load() == int64(n) }, "the sessions relayed")
	return cs
}

// SIGTERM's shutdown: the listener refuses new connections at once; a client in its login
// phase may still log in for a while (and is relayed from then on), one that does not is
// closed then; relayed sessions go on working until shutdown_timeout; then they end one
// by one over shutdown_spread.
func TestShutdownDrainsThenSpreads(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		"shutdown_timeout: 2s\nshutdown_spread: 2s")
	cs := relayedClients(t, p, 4)
	// Two clients still in their login phase.
	late := dial(t, p.addr, "")
	idle := dial(t, p.addr, "")

	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.srv.Shutdown(context.Background()) }()

	// New connections are refused at once (after a pause of about 100 ms in which they
	// are dropped: see closeListeners).
	for {
		c, err := net.DialTimeout("tcp", p.addr, 200*time.Millisecond)
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err == nil {
			c.Close()
		}
		if time.Since(start) > time.Second {
			t.Fatalf("connections not refused %v after the shutdown began (last: %v)", time.Since(start), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	refusedAfter := time.Since(start)
	if l := p.logs.FilterMessage("shutdown: cannot close the listeners alone; closing the login-phase sessions with them").All(); len(l) > 0 {
		t.Fatalf("the listeners could not be closed alone: %v", l[0].ContextMap())
	}
	// The login-phase client logs in during the grace, and is relayed like the others.
	late.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(late.until("a", 5*time.Second)), "a OK")
	cs = append(cs, late)
	// The relayed sessions keep working meanwhile.
	for i, c := range cs {
		c.send(fmt.Sprintf("n%d NOOP\r\n", i))
		expectPrefix(t, last(c.until(fmt.Sprintf("n%d", i), 5*time.Second)), fmt.Sprintf("n%d OK", i))
	}
	if took := time.Since(start); took > 1800*time.Millisecond {
		t.Logf("the NOOPs finished only %v into the 2s timeout (a loaded machine?)", took)
	}
	// The idle one is closed when the login grace (here: shutdown_timeout) is over.
	_ = idle.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.r.ReadString('\n'); err == nil {
		t.Fatal("the login-phase client got a line instead of the close")
	}
	if closed := time.Since(start); closed < 1800*time.Millisecond {
		t.Fatalf("the login-phase client was closed %v into the shutdown, before its grace", closed)
	}
	// Then each relayed session ends; note when.
	var mu sync.Mutex
	var ends []time.Duration
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.c.SetReadDeadline(time.Now().Add(15 * time.Second))
			for {
				if _, err := c.r.ReadString('\n'); err != nil {
					mu.Lock()
					ends = append(ends, time.Since(start))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	slices.Sort(ends)
	t.Logf("refused after %v; sessions ended at %v", refusedAfter, ends)
	if ends[0] < 1900*time.Millisecond {
		t.Fatalf("a session ended %v into the shutdown, before shutdown_timeout (2s)", ends[0])
	}
	// Kicks at 0, 1/5, ..., 4/5 of the 2 s spread: the last comes 1.6 s after the first
	// (some margin for a loaded machine, both ways).
	if spread := ends[len(ends)-1] - ends[0]; spread < time.Second || spread > 3*time.Second {
		t.Fatalf("sessions ended %v apart; want about 1.6s (spread over 2s)", spread)
	}
	if n := p.srv.stats.ShutdownKicked.Load(); n != 5 {
		t.Fatalf("%d sessions kicked by the shutdown, want 5", n)
	}
	if !strings.Contains(string(p.srv.appendMetrics(nil)), "\ndoorman_shutdown_kicks_total 5\n") {
		t.Fatal("metrics lack the shutdown kicks")
	}
}

// When every relayed session ends by itself, the shutdown does not wait out its timeout;
// and cancelling its context (a second signal) skips the spread.
func TestShutdownEndsEarly(t *testing.T) {
	be := sharedBackend(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		"shutdown_timeout: 30s\nshutdown_spread: 30s")
	cs := relayedClients(t, p, 2)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.srv.Shutdown(context.Background()) }()
	time.Sleep(300 * time.Millisecond)
	for i, c := range cs {
		c.send(fmt.Sprintf("z%d LOGOUT\r\n", i))
		expectPrefix(t, last(c.until(fmt.Sprintf("z%d", i), 5*time.Second)), fmt.Sprintf("z%d OK", i))
		c.c.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown still waiting 10 s after the last session left")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("shutdown took %v", took)
	} else {
		t.Logf("shutdown done %v after it began (timeout 30s)", took)
	}
	if n := p.srv.stats.ShutdownKicked.Load(); n != 0 {
		t.Fatalf("%d kicked; every session had left by itself", n)
	}

	// A second server: its shutdown is hurried (ctx cancelled) while sessions remain.
	p2 := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		"shutdown_timeout: 30s\nshutdown_spread: 30s")
	relayedClients(t, p2, 3)
	ctx, hurry := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	start = time.Now()
	go func() { done2 <- p2.srv.Shutdown(ctx) }()
	time.Sleep(300 * time.Millisecond)
	hurry()
	select {
	case <-done2:
	case <-time.After(10 * time.Second):
		t.Fatal("a hurried shutdown still runs after 10 s")
	}
	if n := p2.srv.stats.ShutdownKicked.Load(); n != 3 || p2.srv.stats.Relaying.Load() != 0 {
		t.Fatalf("hurried shutdown: %d kicked, %d left", n, p2.srv.stats.Relaying.Load())
	}
}
