package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/engine/testenv"
	"doorman/route"
	"doorman/route/routetest"
)

// The director, as an operator runs it: two Doorman processes sharing one Redis, a site of
// three real Dovecot backends, users with proxy but no host. Each user lands on the same
// backend through either process (the ring's choice, stored in Redis); after a backend is
// taken out of the site, only the users that were on it move, to the ring's choice over
// the two left, and everyone else stays where they were.

// directorLogin logs user in through addr from the client address from and logs out; the
// backend whose log shows that address is where the login went.
func directorLogin(t *testing.T, addr, from, user string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting from %s: %q %v", addr, l, err)
	}
	fmt.Fprintf(c, "a LOGIN %s secret\r\n", user)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("login of %s through %s: %v", user, addr, err)
		}
		if strings.HasPrefix(l, "a ") {
			if !strings.HasPrefix(l, "a OK") {
				t.Fatalf("login of %s through %s from %s: %q", user, addr, from, l)
			}
			break
		}
	}
	fmt.Fprintf(c, "b LOGOUT\r\n")
}

// directorBackendOf waits for one backend's log to show the login from the address from.
func directorBackendOf(t *testing.T, from string, backends []*testenv.Dovecot) int {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for i, be := range backends {
			if log, _ := be.Log(); strings.Contains(log, "rip="+from+",") {
				return i
			}
		}
	}
	t.Fatalf("no backend logged the login from %s", from)
	return -1
}

func TestDirectorOnTwoProcesses(t *testing.T) {
	// Users chosen so that each backend has some (by the ring, as the daemons compute it).
	var backends []*testenv.Dovecot
	var hosts []string
	candidates := make([]testenv.User, 0, 60)
	for i := range 60 {
		candidates = append(candidates, testenv.User{Name: fmt.Sprintf("user%d", i), Password: "secret"})
	}
	for i := range 3 {
		be := testenv.MustStartDovecot(t, testenv.DovecotOptions{ListenIP: fmt.Sprintf("127.0.0.%d", 81+i), Users: candidates})
		backends = append(backends, be)
		hosts = append(hosts, be.IMAPAddr) // "ip:port": the site's hosts may carry a port
	}
	ring := route.NewRing(hosts)
	per := map[string][]string{}
	var users []string
	for _, u := range candidates {
		h := ring.Host(u.Name)
		if len(per[h]) < 3 {
			per[h] = append(per[h], u.Name)
			users = append(users, u.Name)
		}
	}
	if len(users) != 9 {
		t.Fatalf("could not pick 3 users per backend from 60: %v", per)
	}

	raddr, _ := routetest.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: raddr})
	defer rc.Close()
	ctx := context.Background()
	for _, u := range users {
		// proxy, no host: the director assigns one (fleet.director_site).
		if err := rc.HSet(ctx, "doorman:user:"+u, "password", "{PLAIN}secret", "proxy", "").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.HSet(ctx, "doorman:site:s1", "hosts", strings.Join(hosts, ",")).Err(); err != nil {
		t.Fatal(err)
	}
	var proxies []string
	for range 2 {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		startDaemon(t, t.TempDir(), fmt.Sprintf(`listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: redis, addrs: [%q]}
login_trusted_networks: [127.0.0.0/8]
shutdown_timeout: 1s
shutdown_spread: 1s
log: {level: info, format: json}
fleet:
  director_site: s1
  director_user_expire: 10m
`, addr, raddr), addr)
		proxies = append(proxies, addr)
	}

	n := 0
	from := func() string { n++; return fmt.Sprintf("127.0.8.%d", n) }
	where := map[string]int{}
	for i, u := range users {
		// Alternate which process sees the user first.
		first, second := proxies[i%2], proxies[(i+1)%2]
		f1 := from()
		directorLogin(t, first, f1, u)
		b1 := directorBackendOf(t, f1, backends)
		f2 := from()
		directorLogin(t, second, f2, u)
		b2 := directorBackendOf(t, f2, backends)
		if b1 != b2 {
			t.Fatalf("%s: backend %d through one process, %d through the other", u, b1, b2)
		}
		if hosts[b1] != ring.Host(u) {
			t.Fatalf("%s went to %s; the ring says %s", u, hosts[b1], ring.Host(u))
		}
		stored, err := rc.Get(ctx, "doorman:director:"+u).Result()
		if err != nil || stored != hosts[b1] {
			t.Fatalf("%s: record %q (%v), want %s", u, stored, err, hosts[b1])
		}
		if ttl := rc.TTL(ctx, "doorman:director:"+u).Val(); ttl < 9*time.Minute {
			t.Fatalf("%s: record expires in %v; want about director_user_expire (10m) and more", u, ttl)
		}
		where[u] = b1
	}

	// Take backend 2 out of the site (it keeps running: only the site changed).
	gone := 2
	if err := rc.HSet(ctx, "doorman:site:s1", "hosts", hosts[0]+","+hosts[1]).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(ctx, "doorman:events", "site s1").Err(); err != nil {
		t.Fatal(err)
	}
	less := route.NewRing(hosts[:2])
	// Each process follows the change within a few seconds: a user of the removed
	// backend moves.
	probe := per[hosts[gone]][0]
	for _, p := range proxies {
		deadline := time.Now().Add(5 * time.Second)
		for {
			f := from()
			directorLogin(t, p, f, probe)
			if directorBackendOf(t, f, backends) != gone {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %s still sends %s to the removed backend", p, probe)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	moved := 0
	for _, u := range users {
		for _, p := range proxies {
			f := from()
			directorLogin(t, p, f, u)
			got := directorBackendOf(t, f, backends)
			switch {
			case where[u] != gone && got != where[u]:
				t.Fatalf("%s moved from backend %d to %d, though only backend %d left the site", u, where[u], got, gone)
			case where[u] == gone && hosts[got] != less.Host(u):
				t.Fatalf("%s (on the removed backend) went to %s; the ring of the two left says %s", u, hosts[got], less.Host(u))
			}
			if where[u] == gone && p == proxies[0] {
				moved++
			}
		}
	}
	if moved != 3 {
		t.Fatalf("%d users moved, want the 3 of the removed backend", moved)
	}
	for _, u := range users {
		if stored := rc.Get(ctx, "doorman:director:"+u).Val(); where[u] != gone && stored != hosts[where[u]] ||
			where[u] == gone && stored != less.Host(u) {
			t.Fatalf("%s: record %q after the change", u, stored)
		}
	}
}
