package engine

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"doorman/engine/testenv"
)

// login_proxy_max_disconnect_delay: a backend holding 500 sessions dies; without the delay
// every client would see its connection close within a moment, with it the closes spread
// over the configured time.
func TestDisconnectSpreading(t *testing.T) {
	testenv.RequireDovecot(t)
	const n, delay = 500, 3 * time.Second
	be := testenv.MustStartDovecot(t, testenv.DovecotOptions{Users: []testenv.User{{Name: "alice", Password: "secret"}}})
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		fmt.Sprintf("login_proxy_max_disconnect_delay: %s", delay))
	clients := make([]*client, n)
	for i := range clients {
		c := dial(t, p.addr, fmt.Sprintf("127.0.3.%d", 1+i%200))
		c.send("a LOGIN alice secret\r\n")
		expectPrefix(t, last(c.until("a", 20*time.Second)), "a OK")
		clients[i] = c
	}
	var mu sync.Mutex
	var closedAt []time.Time
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func(c *client) {
			defer wg.Done()
			_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
			buf := make([]byte, 512)
			for {
				if _, err := c.r.Read(buf); err != nil {
					break
				}
			}
			mu.Lock()
			closedAt = append(closedAt, time.Now())
			mu.Unlock()
		}(c)
	}
	stopped := time.Now()
	if err := be.Stop(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	sort.Slice(closedAt, func(i, j int) bool { return closedAt[i].Before(closedAt[j]) })
	first, p10, p90, last := closedAt[0], closedAt[n/10], closedAt[n*9/10], closedAt[n-1]
	t.Logf("closes after the backend stop: first %v, p10 %v, p90 %v, last %v",
		first.Sub(stopped), p10.Sub(stopped), p90.Sub(stopped), last.Sub(stopped))
	if spread := p90.Sub(p10); spread < delay/2 {
		t.Fatalf("closes not spread: p10→p90 %v, want at least %v", spread, delay/2)
	}
	if total := last.Sub(first); total > delay+2*time.Second {
		t.Fatalf("closes spread over %v, more than the %v configured", total, delay)
	}
}
