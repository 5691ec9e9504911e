package routetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisBinary finds a redis-server binary exactly as StartRedis does:
// without it the test is skipped, unless CI is set, in which case it fails.
func redisBinary(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not installed (apt-get install -y redis-server)", name)
		}
		t.Fatalf("%s not installed and CI is set: %v", name, err)
	}
	return bin
}

// startRetrying starts one server like StartRedis, trying a few times in
// case a free port was taken between the probe and the bind.
func startRetrying(t testing.TB, bin string, extra func(port int, dir string) (pre, post []string, err error)) (string, func()) {
	t.Helper()
	var lastErr error
	for range 3 {
		addr, stop, err := startRedis(t, bin, extra)
		if err == nil {
			return addr, stop
		}
		lastErr = err
	}
	t.Fatalf("routetest: redis-server did not start: %v", lastErr)
	return "", nil
}

// Cluster is a Redis Cluster of masters without replicas, started by
// StartCluster.
type Cluster struct {
	Addrs []string // one per node, 127.0.0.1:port
	stops []func()
}

// Stop kills every node; it is also registered with t.Cleanup.
func (c *Cluster) Stop() {
	for _, s := range c.stops {
		s()
	}
}

// StartCluster starts n (at least 3) redis-server processes with
// cluster-enabled on free loopback ports (each with its own directory and
// cluster bus port), joins them with `redis-cli --cluster create
// --cluster-replicas 0`, and waits until every node reports
// cluster_state:ok. The nodes are killed when the test ends. Without
// redis-server or redis-cli the test is skipped (failed if CI is set).
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 3 {
		t.Fatalf("routetest: a Redis Cluster needs at least 3 masters, not %d", n)
	}
	bin := redisBinary(t, "redis-server")
	cli := redisBinary(t, "redis-cli")
	c := &Cluster{}
	t.Cleanup(c.Stop)
	for range n {
		addr, stop := startRetrying(t, bin, func(_ int, dir string) ([]string, []string, error) {
			// The default bus port (port+10000) may be past 65535 or taken.
			bus, err := freePort()
			if err != nil {
				return nil, nil, err
			}
			return nil, []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-node-timeout", "2000",
			}, nil
		})
		c.Addrs = append(c.Addrs, addr)
		c.stops = append(c.stops, stop)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("routetest: redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, addr := range c.Addrs {
		for {
			reply, err := command(addr, "CLUSTER", "INFO")
			if err == nil && len(reply) == 1 && strings.Contains(reply[0], "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("routetest: cluster node %s not ok within 20s: %q %v", addr, reply, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// SentinelMasterName is the name StartSentinels' Sentinels monitor.
const SentinelMasterName = "doorman"

// Sentinel is a master, one replica and the Sentinels monitoring them
// (quorum: a majority of them; down-after-milliseconds 1000,
// failover-timeout 3000), started by StartSentinel or StartSentinels.
type Sentinel struct {
	MasterName string   // SentinelMasterName
	Sentinels  []string // Sentinel addresses, for RedisConfig.Addrs
	Nodes      []string // the data nodes: the initial master, then the replica

	stops         map[string]func() // data node address → kill (SIGKILL)
	sentinelStops []func()
}

// StartSentinel is StartSentinels with one Sentinel (quorum 1).
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	return StartSentinels(t, 1)
}

// StartSentinels starts the master, a replica of it and n Sentinels (quorum
// n/2+1), waits until the replica is in sync and every Sentinel knows it
// and the other Sentinels, and kills them all when the test ends. Without
// redis-server the test is skipped (failed if CI is set).
func StartSentinels(t testing.TB, n int) *Sentinel {
	t.Helper()
	if n < 1 {
		t.Fatalf("routetest: %d Sentinels", n)
	}
	bin := redisBinary(t, "redis-server")
	s := &Sentinel{MasterName: SentinelMasterName, stops: map[string]func(){}}

	// The replica's full sync would wait 5 s for more replicas by default.
	fastSync := func(int, string) ([]string, []string, error) {
		return nil, []string{"--repl-diskless-sync-delay", "0"}, nil
	}
	master, stopMaster := startRetrying(t, bin, fastSync)
	_, masterPort, _ := strings.Cut(master, ":")
	replica, stopReplica := startRetrying(t, bin, func(int, string) ([]string, []string, error) {
		// Also fast to sync from, once it is promoted.
		return nil, []string{"--replicaof", "127.0.0.1", masterPort, "--repl-diskless-sync-delay", "0"}, nil
	})
	s.Nodes = []string{master, replica}
	s.stops[master], s.stops[replica] = stopMaster, stopReplica

	for range n {
		sentinel, stop := startRetrying(t, bin, func(port int, dir string) ([]string, []string, error) {
			// Sentinel rewrites its configuration file: it must be writable.
			conf := filepath.Join(dir, "sentinel.conf")
			body := fmt.Sprintf("port %d\nbind 127.0.0.1\n"+
				"sentinel monitor %[2]s 127.0.0.1 %[3]s %[4]d\n"+
				"sentinel down-after-milliseconds %[2]s 1000\n"+
				"sentinel failover-timeout %[2]s 3000\n", port, s.MasterName, masterPort, n/2+1)
			if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
				return nil, nil, err
			}
			return []string{conf, "--sentinel"}, nil, nil
		})
		s.Sentinels = append(s.Sentinels, sentinel)
		s.sentinelStops = append(s.sentinelStops, stop)
	}

	// Ready: the replica has synced and every Sentinel is connected to it
	// and has its INFO (otherwise a failover finds nothing to promote, and
	// is retried only after failover-timeout) and knows the other Sentinels
	// (otherwise there is no quorum). Sentinels find each other through
	// hello messages sent every 2 s.
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := command(replica, "INFO", "replication")
		synced := err == nil && len(info) == 1 && strings.Contains(info[0], "master_link_status:up")
		ready := synced
		for _, sentinel := range s.Sentinels {
			if !ready {
				break
			}
			// One replica: its fields are the reply's key/value pairs.
			reply, err := command(sentinel, "SENTINEL", "REPLICAS", s.MasterName)
			f := pairs(reply)
			ready = err == nil && f["name"] == replica && f["flags"] == "slave" && f["master-link-status"] == "ok"
			if ready && n > 1 {
				reply, err := command(sentinel, "SENTINEL", "SENTINELS", s.MasterName)
				ready = err == nil && count(reply, "runid") == n-1
			}
		}
		if ready {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("routetest: sentinel set-up not ready within 30s (replica synced: %v)", synced)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func pairs(list []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(list); i += 2 {
		m[list[i]] = list[i+1]
	}
	return m
}

func count(list []string, s string) int {
	n := 0
	for _, e := range list {
		if e == s {
			n++
		}
	}
	return n
}

// Master asks the Sentinels, the first that answers, which node is the
// master now (SENTINEL GET-MASTER-ADDR-BY-NAME).
func (s *Sentinel) Master(t testing.TB) string {
	t.Helper()
	var lastErr error
	for _, sentinel := range s.Sentinels {
		reply, err := command(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
		if err == nil && len(reply) == 2 {
			return reply[0] + ":" + reply[1]
		}
		lastErr = fmt.Errorf("%s: %q %v", sentinel, reply, err)
	}
	t.Fatalf("routetest: SENTINEL GET-MASTER-ADDR-BY-NAME: no Sentinel answers: %v", lastErr)
	return ""
}

// KillMaster kills (SIGKILL) the node that is the master now and returns
// its address.
func (s *Sentinel) KillMaster(t testing.TB) string {
	t.Helper()
	m := s.Master(t)
	stop := s.stops[m]
	if stop == nil {
		t.Fatalf("routetest: master %s is not one of the nodes %v", m, s.Nodes)
	}
	stop()
	return m
}

// KillSentinel kills (SIGKILL) Sentinel i (an index into Sentinels).
func (s *Sentinel) KillSentinel(i int) { s.sentinelStops[i]() }

// Role is the role a data node reports (ROLE): "master" or "slave", or ""
// when it does not answer.
func Role(addr string) string {
	reply, err := command(addr, "ROLE")
	if err != nil || len(reply) == 0 {
		return ""
	}
	return reply[0]
}
