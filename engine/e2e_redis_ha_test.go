package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/engine/testenv"
	"doorman/route/routetest"
)

// Routing through vsites, a vsite move seen by two proxy hosts within a second, and
// auth cache invalidation reaching both, against a 3-master Redis Cluster and against
// Sentinel (a master and one replica), including a failover. Real Redis, real Dovecot.

// haStore is how a test writes to the Redis deployment under test.
type haStore struct {
	hset    func(key string, fields map[string]string)
	publish func(msg string)
}

// startRedisHAProxy runs Doorman with one IMAP listener and the given redis passdb line
// (a YAML flow mapping), the auth cache on.
func startRedisHAProxy(t *testing.T, passdb string) *proxy {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	yml := fmt.Sprintf(`listeners:
  - {name: imap, protocol: imap, address: %q}
auth_failure_delay: 200ms
login_proxy_max_reconnects: 0
login_trusted_networks: [127.0.0.0/8]
auth_cache_size: 1000
passdb:
  - %s
`, addr, passdb)
	p := startProxyYAML(t, t.TempDir(), yml)
	p.addr = addr
	return p
}

// yamlList renders addresses as a YAML flow sequence.
func yamlList(addrs []string) string {
	q := make([]string, len(addrs))
	for i, a := range addrs {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// haLogin logs in, reports the tagged reply and, after a successful login, whether the
// session reached the second backend; the connection is closed before it returns.
func haLogin(t *testing.T, addr, user, pass string) (reply string, onB2 bool) {
	t.Helper()
	got, c := imapLogin(t, addr, user, pass)
	defer c.c.Close()
	if strings.HasPrefix(got, "a OK") {
		onB2 = onSecondBackend(c)
	}
	return got, onB2
}

// haSeed writes the users and vsites every HA test uses:
//
//	alice  vsite v1 (moved between the two backends), password secret
//	carol  vsite v2 (the shared backend), password pw1, logged in there through the
//	       backend's master user so that Doorman's own password check decides
//	bob    vsite v2, password secret: never logged in before a failover (uncached)
func haSeed(st haStore, be *testenv.Dovecot) {
	st.hset("doorman:vsite:v1", map[string]string{"host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	st.hset("doorman:vsite:v2", map[string]string{"host": "127.0.0.1", "port": portOf(be.IMAPAddr)})
	st.hset("doorman:user:alice", map[string]string{"password": "{PLAIN}secret", "vsite": "v1"})
	st.hset("doorman:user:carol", map[string]string{"password": "{PLAIN}pw1", "vsite": "v2",
		"master": "proxy", "pass": "masterpw"})
	st.hset("doorman:user:bob", map[string]string{"password": "{PLAIN}secret", "vsite": "v2"})
}

// haRouting checks that alice logs in through every server and lands on the backend
// wantB2 says.
func haRouting(t *testing.T, servers []*proxy, wantB2 bool) {
	t.Helper()
	for i, p := range servers {
		got, onB2 := haLogin(t, p.addr, "alice", "secret")
		expectPrefix(t, got, "a OK")
		if onB2 != wantB2 {
			t.Fatalf("server %d: alice on the second backend: %v, want %v", i, onB2, wantB2)
		}
	}
}

// haMove points vsite v1 at port (one HSET, one PUBLISH) and waits until new logins of
// alice on every server land on the backend wantB2 says; it fails if that takes more
// than a second, and returns how long it took.
func haMove(t *testing.T, st haStore, servers []*proxy, port string, wantB2 bool) time.Duration {
	t.Helper()
	st.hset("doorman:vsite:v1", map[string]string{"port": port})
	moved := time.Now()
	st.publish("vsite v1")
	for i, p := range servers {
		for {
			got, onB2 := haLogin(t, p.addr, "alice", "secret")
			expectPrefix(t, got, "a OK")
			if onB2 == wantB2 {
				break
			}
			if time.Since(moved) > 3*time.Second {
				t.Fatalf("server %d: alice not moved %v after the PUBLISH", i, time.Since(moved))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	took := time.Since(moved)
	if took > time.Second {
		t.Fatalf("vsite move reached both servers after %v, want ≤ 1s", took)
	}
	return took
}

// haInvalidate changes carol's password in Redis from old to new: both servers keep
// the cached hash (old works, new does not) until "user carol" is published; then new
// works and old fails on both. It returns how long after the PUBLISH the new password
// worked on both.
func haInvalidate(t *testing.T, st haStore, servers []*proxy, old, new string) time.Duration {
	t.Helper()
	for i, p := range servers { // cache carol on both
		if got, _ := haLogin(t, p.addr, "carol", old); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("server %d: carol with %q: %q", i, old, got)
		}
	}
	st.hset("doorman:user:carol", map[string]string{"password": "{PLAIN}" + new})
	for i, p := range servers {
		if got, _ := haLogin(t, p.addr, "carol", old); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("server %d: carol not served from the auth cache: %q", i, got)
		}
		if got, _ := haLogin(t, p.addr, "carol", new); !strings.HasPrefix(got, "a NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("server %d: new password accepted before \"user carol\" (auth cache off?): %q", i, got)
		}
	}
	published := time.Now()
	st.publish("user carol")
	for i, p := range servers {
		for {
			got, _ := haLogin(t, p.addr, "carol", new)
			if strings.HasPrefix(got, "a OK") {
				break
			}
			if !strings.HasPrefix(got, "a NO [AUTHENTICATIONFAILED]") || time.Since(published) > 3*time.Second {
				t.Fatalf("server %d: new password of carol %v after \"user carol\": %q", i, time.Since(published), got)
			}
		}
	}
	took := time.Since(published) // the old password's failures below wait auth_failure_delay
	for i, p := range servers {
		if got, _ := haLogin(t, p.addr, "carol", old); !strings.HasPrefix(got, "a NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("server %d: old password of carol after \"user carol\": %q", i, got)
		}
	}
	if took > 2*time.Second {
		t.Fatalf("invalidation reached both servers after %v", took)
	}
	return took
}

// numsub is how many subscribers a node reports for doorman:events (in Redis Cluster,
// its own subscribers only); -1 when it does not answer.
func numsub(addr string) int {
	reply, err := redisCommand(addr, "PUBSUB", "NUMSUB", "doorman:events")
	if err != nil || len(reply) != 2 {
		return -1
	}
	n, err := strconv.Atoi(reply[1])
	if err != nil {
		return -1
	}
	return n
}

// redisCommand runs one command on one node, reporting errors instead of failing.
func redisCommand(addr string, args ...any) ([]string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second,
		MaxRetries: -1, Protocol: 2})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := c.Do(ctx, args...).Slice()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(v))
	for i, e := range v {
		out[i] = fmt.Sprint(e)
	}
	return out, nil
}

func TestRedisClusterVsitesOnTwoServers(t *testing.T) {
	be := sharedBackend(t)
	be2 := secondBackend(t)
	c := routetest.StartCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = cc.Close() })
	ctx := context.Background()

	// PUBLISH goes to a node with no subscriber of its own: Redis Cluster must carry the
	// message to the nodes the Doorman subscriptions happen to be on.
	var via string
	st := haStore{
		hset: func(key string, fields map[string]string) {
			t.Helper()
			if err := cc.HSet(ctx, key, fields).Err(); err != nil {
				t.Fatalf("HSET %s: %v", key, err)
			}
		},
		publish: func(msg string) {
			t.Helper()
			routetest.Do(t, via, "PUBLISH", "doorman:events", msg)
		},
	}
	haSeed(st, be)
	nodes := map[string]bool{}
	for _, k := range []string{"doorman:vsite:v1", "doorman:vsite:v2", "doorman:user:alice", "doorman:user:carol"} {
		n, err := cc.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		nodes[n.Options().Addr] = true
	}
	t.Logf("the vsites and users live on %d of the %d masters", len(nodes), len(c.Addrs))

	passdb := fmt.Sprintf("{driver: redis, addrs: %s}", yamlList(c.Addrs))
	servers := []*proxy{startRedisHAProxy(t, passdb), startRedisHAProxy(t, passdb)}

	// Both subscriptions are up somewhere in the cluster.
	var subs map[string]int
	waitFor(t, func() bool {
		subs = map[string]int{}
		total := 0
		for _, a := range c.Addrs {
			subs[a] = numsub(a)
			total += subs[a]
		}
		return total == 2
	}, "two subscribers of doorman:events in the cluster")
	for _, a := range c.Addrs {
		if subs[a] == 0 {
			via = a
			break
		}
	}
	t.Logf("subscribers per node %v; publishing on %s", subs, via)

	haRouting(t, servers, false)
	took := haMove(t, st, servers, portOf(be2.IMAPAddr), true)
	t.Logf("cluster: both servers route alice to the moved vsite %v after the PUBLISH", took)
	took = haMove(t, st, servers, portOf(be.IMAPAddr), false)
	t.Logf("cluster: and back %v after the PUBLISH", took)
	took = haInvalidate(t, st, servers, "pw1", "pw2")
	t.Logf("cluster: \"user carol\" reached both servers within %v", took)
}

func TestRedisSentinelVsitesAndFailover(t *testing.T) {
	be := sharedBackend(t)
	be2 := secondBackend(t)
	s := routetest.StartSentinel(t)
	st := haStore{
		hset: func(key string, fields map[string]string) {
			t.Helper()
			routetest.HSet(t, s.Master(t), key, fields)
		},
		publish: func(msg string) {
			t.Helper()
			routetest.Do(t, s.Master(t), "PUBLISH", "doorman:events", msg)
		},
	}
	haSeed(st, be)

	passdb := fmt.Sprintf("{driver: redis, master_name: %s, addrs: %s}", s.MasterName, yamlList(s.Sentinels))
	servers := []*proxy{startRedisHAProxy(t, passdb), startRedisHAProxy(t, passdb)}
	master := s.Master(t)
	waitFor(t, func() bool { return numsub(master) == 2 }, "both servers subscribed on the master")

	haRouting(t, servers, false)
	took := haMove(t, st, servers, portOf(be2.IMAPAddr), true)
	t.Logf("sentinel: both servers route alice to the moved vsite %v after the PUBLISH", took)
	took = haInvalidate(t, st, servers, "pw1", "pw2")
	t.Logf("sentinel: \"user carol\" reached both servers within %v", took)

	// Everything written so far must be on the replica before the master dies.
	if n := routetest.Do(t, master, "WAIT", "1", "5000"); len(n) != 1 || n[0] != "1" {
		t.Fatalf("WAIT 1: %v", n)
	}

	// Kill the master. bob was never looked up, so his logins need Redis: they fail
	// with a temporary failure until Sentinel has promoted the replica and Doorman has
	// found it, then succeed by themselves.
	old := s.KillMaster(t)
	killed := time.Now()
	const bound = 20 * time.Second
	// Both servers are probed in turn, so each one's window is measured on its own.
	recovered := make([]time.Duration, len(servers))
	failures := make([]int, len(servers))
	var slowest time.Duration
	for pending := len(servers); pending > 0; {
		for i, p := range servers {
			if recovered[i] != 0 {
				continue
			}
			start := time.Now()
			got, _ := haLogin(t, p.addr, "bob", "secret")
			slowest = max(slowest, time.Since(start))
			switch {
			case strings.HasPrefix(got, "a OK"):
				recovered[i] = time.Since(killed)
				pending--
			case strings.HasPrefix(got, "a NO [UNAVAILABLE]"):
				failures[i]++
			default:
				t.Fatalf("server %d during failover: %q, want a temporary failure", i, got)
			}
		}
		if pending > 0 && time.Since(killed) > bound {
			t.Fatalf("logins still failing %v after the master was killed (recovered: %v)", bound, recovered)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range servers {
		if failures[i] == 0 {
			t.Errorf("server %d: no temporary failure at all after the master was killed: bob was not looked up in Redis?", i)
		}
		t.Logf("sentinel: server %d logs bob in again %v after the master was killed (%d temporary failures)",
			i, recovered[i].Round(10*time.Millisecond), failures[i])
	}
	t.Logf("sentinel: slowest login during the failover %v", slowest.Round(time.Millisecond))
	now := s.Master(t)
	if now == old {
		t.Fatalf("Sentinel still names the killed master %s", old)
	}

	// The subscriptions have moved to the new master, and the vsite table follows what is
	// published there.
	deadline := killed.Add(bound)
	for numsub(now) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("new master %s has %d subscribers of doorman:events %v after the kill, want 2", now, numsub(now), bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("sentinel: both subscriptions on the new master %s %v after the kill", now, time.Since(killed).Round(10*time.Millisecond))
	haRouting(t, servers, true)
	took = haMove(t, st, servers, portOf(be.IMAPAddr), false)
	t.Logf("sentinel after failover: both servers follow the vsite move %v after the PUBLISH", took)
	took = haInvalidate(t, st, servers, "pw2", "pw3")
	t.Logf("sentinel after failover: \"user carol\" reached both servers within %v", took)
}
