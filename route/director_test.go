package route

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"doorman/route/routetest"
)

// Two proxy hosts (two clients of one Redis) assign users to a site's backends.
func TestDirectorAssignTwoHostsAgree(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	a := newTestRedis(t, RedisConfig{Addrs: []string{addr}}).Fleet()
	b := newTestRedis(t, RedisConfig{Addrs: []string{addr}}).Fleet()
	ctx := context.Background()
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3:1143"}
	ring := NewRing(hosts)
	for i := 0; i < 50; i++ {
		u := fmt.Sprintf("user%d", i)
		as, err := a.Assign(ctx, u, hosts, time.Minute)
		if err != nil || as.Moved || !as.Stored {
			t.Fatalf("a: %s: %+v %v", u, as, err)
		}
		bs, err := b.Assign(ctx, u, []string{"10.0.0.3:1143", "10.0.0.2", "10.0.0.1"}, time.Minute)
		if err != nil || bs.Stored || bs.Moved {
			t.Fatalf("b: %s: %+v %v", u, bs, err)
		}
		ha, hb := as.Host, bs.Host
		if ha != hb || ha != ring.Host(u) {
			t.Fatalf("%s: host a %s, host b %s, ring %s", u, ha, hb, ring.Host(u))
		}
	}
	// The record is there, with its expiry.
	host, ttl, err := a.DirectorLookup(ctx, "user7")
	if err != nil || host != ring.Host("user7") || ttl <= 50*time.Second || ttl > time.Minute {
		t.Fatalf("lookup user7: %q %v %v", host, ttl, err)
	}
	if got := routetest.Do(t, addr, "GET", "doorman:director:user7"); len(got) != 1 || got[0] != host {
		t.Fatalf("record %v, want %s", got, host)
	}
	if h, ttl, err := a.DirectorLookup(ctx, "nobody"); h != "" || ttl != 0 || err != nil {
		t.Fatalf("lookup of an unassigned user: %q %v %v", h, ttl, err)
	}
}

// A stored host wins over the ring while it is healthy: a user keeps the backend the
// record names even when the ring (after the site changed) would choose another.
func TestDirectorStoredHostWins(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	f := newTestRedis(t, RedisConfig{Addrs: []string{addr}}).Fleet()
	ctx := context.Background()
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}
	ring := NewRing(hosts)
	// A user whose ring choice is not 10.0.0.3, stored on 10.0.0.3.
	u := ""
	for i := 0; ; i++ {
		u = "u" + strconv.Itoa(i)
		if ring.Host(u) != "10.0.0.3" {
			break
		}
	}
	routetest.Do(t, addr, "SET", f.DirectorKey(u), "10.0.0.3", "EX", "600")
	as, err := f.Assign(ctx, u, hosts, time.Minute)
	if err != nil || as.Host != "10.0.0.3" || as.Moved || as.Stored {
		t.Fatalf("stored host not kept: %+v %v", as, err)
	}
	// 10.0.0.3 leaves the healthy set: the user re-hashes over the others, and the record
	// follows.
	as, err = f.Assign(ctx, u, hosts[:2], time.Minute)
	h := as.Host
	if err != nil || !as.Moved || !as.Stored || h != NewRing(hosts[:2]).Host(u) {
		t.Fatalf("after 10.0.0.3 went: %+v %v", as, err)
	}
	if got := routetest.Do(t, addr, "GET", f.DirectorKey(u)); got[0] != h {
		t.Fatalf("record %v, want %s", got, h)
	}
	if _, err := f.Assign(ctx, u, nil, time.Minute); err == nil {
		t.Fatal("no healthy host, no error")
	}
}

// Many logins of one new user at once, from two hosts whose views of the site differ
// (one has a backend more): all get the same host, because the first store wins.
func TestDirectorAssignRace(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	a := newTestRedis(t, RedisConfig{Addrs: []string{addr}}).Fleet()
	b := newTestRedis(t, RedisConfig{Addrs: []string{addr}}).Fleet()
	ctx := context.Background()
	viewA := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
	viewB := viewA[:3]
	for i := 0; i < 20; i++ {
		u := fmt.Sprintf("race%d", i)
		var wg sync.WaitGroup
		got := make([]string, 16)
		for j := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, view := a, viewA
				if j%2 == 1 {
					f, view = b, viewB
				}
				as, err := f.Assign(ctx, u, view, time.Minute)
				if err != nil {
					t.Error(err)
				}
				got[j] = as.Host
			}()
		}
		wg.Wait()
		// B's view lacks 10.0.0.4: if A stored it, B replaces it; so the users whose
		// ring choice differs may end on either, but every answer given after the
		// last store agrees with the record, and the answers of one view agree.
		stored := routetest.Do(t, addr, "GET", "doorman:director:"+u)[0]
		for j := range got {
			if j%2 == 1 && got[j] == "10.0.0.4" {
				t.Fatalf("%s: host B (without 10.0.0.4) was given 10.0.0.4", u)
			}
		}
		if NewRing(viewA).Host(u) != "10.0.0.4" {
			// Both views choose the same: everyone agrees, and with the record.
			for j := range got {
				if got[j] != stored {
					t.Fatalf("%s: answer %d is %s, record %s (answers %v)", u, j, got[j], stored, got)
				}
			}
		}
	}
}

func TestDirectorTouch(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	f := newTestRedis(t, RedisConfig{Addrs: []string{addr}}).Fleet()
	ctx := context.Background()
	for _, u := range []string{"a", "b"} {
		if _, err := f.Assign(ctx, u, []string{"10.0.0.1"}, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.DirectorTouch(ctx, []string{"a", "b", "unknown"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"a", "b"} {
		if _, ttl, _ := f.DirectorLookup(ctx, u); ttl < 59*time.Minute {
			t.Fatalf("%s: ttl %v after touch", u, ttl)
		}
	}
	if n := routetest.Do(t, addr, "EXISTS", "doorman:director:unknown"); n[0] != "0" {
		t.Fatal("touch created a record")
	}
	if err := f.DirectorForget(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := f.DirectorLookup(ctx, "a"); h != "" {
		t.Fatalf("forgotten, still %q", h)
	}
}
