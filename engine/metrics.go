package engine

import (
	"bytes"
	"os"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"time"

	"doorman/codec/login"
)

// appendMetrics appends the Prometheus text format (version 0.0.4) of the server's
// counters and a few cheap process metrics. Written by hand: the format is lines of
// "# HELP", "# TYPE" and "name{label="v"} value".
func (srv *Server) appendMetrics(b []byte) []byte {
	c := &srv.stats
	rc := srv.relay.Counters()
	m := metricWriter{b: b}

	m.family("doorman_sessions", "gauge", "Client connections by stage: login (any stage before the relay) or relay.")
	m.sample("doorman_sessions", `stage="login"`, c.Active.Load())
	m.sample("doorman_sessions", `stage="relay"`, c.Relaying.Load())
	m.family("doorman_protocol_sessions", "gauge", "Client connections by protocol and stage (login or relay).")
	for i, name := range protocolNames {
		m.sample("doorman_protocol_sessions", `protocol="`+name+`",stage="login"`, c.ByProtocol[i].Login.Load())
		m.sample("doorman_protocol_sessions", `protocol="`+name+`",stage="relay"`, c.ByProtocol[i].Relay.Load())
	}
	m.one("doorman_connections_accepted_total", "counter", "Client connections accepted.", c.Accepted.Load())
	m.family("doorman_logins_total", "counter", "Logins by result: ok (handed to the relay) or failed.")
	m.sample("doorman_logins_total", `result="ok"`, c.LoginsOK.Load())
	m.sample("doorman_logins_total", `result="failed"`, c.LoginsFailed.Load())
	m.family("doorman_login_results_total", "counter", "Logins by outcome class: ok; auth (wrong user or password, here or at the backend); tempfail (passdb or backend temporary failure); unavailable (backend unreachable or failing, host down, director); disabled (nologin, no proxy field); config (the backend cannot be logged in to as configured).")
	for i, name := range loginClasses {
		m.sample("doorman_login_results_total", `class="`+name+`"`, c.Logins[i].Load())
	}
	m.one("doorman_passdb_tempfail_total", "counter", "Logins whose passdb lookup failed temporarily (Redis, SQL or LDAP errors, timeouts).", c.PassdbTempFails.Load())
	m.one("doorman_backend_host_down_total", "counter", "Logins failed at once because their backend is down (proxy_host_immediate_failure_after).", c.HostDown.Load())
	c.BackendLogin.write(&m, "doorman_backend_login_seconds", "Backend connect and login of successful attempts, in seconds.")
	m.one("doorman_admin_kicks_total", "counter", "Relayed sessions kicked through the admin API.", c.Kicked.Load())
	if srv.memTrim != nil {
		m.one("doorman_memory_trims_total", "counter", "Garbage collections run after a burst of logins to return free memory to the kernel (memory_trim_interval).", srv.memTrim.trims.Load())
	}
	m.one("doorman_shutdown_kicks_total", "counter", "Relayed sessions disconnected by a shutdown after shutdown_timeout.", c.ShutdownKicked.Load())
	m.family("doorman_relay_bytes_total", "counter", "Bytes relayed by ended sessions, by direction.")
	m.sample("doorman_relay_bytes_total", `direction="to_backend"`, c.RelayToBackend.Load())
	m.sample("doorman_relay_bytes_total", `direction="to_client"`, c.RelayToClient.Load())

	m.one("doorman_relay_sessions", "gauge", "Sessions in the relay's workers (added, Done not yet run).", rc.Sessions)
	m.one("doorman_relay_pipes_in_use", "gauge", "Kernel pipes held by a relay direction.", rc.PipesInUse)
	m.one("doorman_relay_pipes_idle", "gauge", "Empty kernel pipes pooled for reuse.", rc.PipesIdle)
	m.one("doorman_relay_tls_buffers_in_use", "gauge", "16 KiB plaintext buffers held by TLS relay directions.", rc.TLSBuffersInUse)
	m.one("doorman_relay_prefix_bytes", "gauge", "Login-phase bytes not yet written by the relay.", rc.PrefixBytes)
	m.one("doorman_relay_pipes_created_total", "counter", "Kernel pipes created.", rc.PipesCreated)
	m.one("doorman_relay_pipe_resize_failures_total", "counter", "Pipes the kernel kept at their default size.", rc.PipesResizeFailed)
	m.one("doorman_relay_panics_total", "counter", "Panics recovered in relay workers (each closed its session).", rc.Panics)

	srv.fleet.appendMetrics(&m)
	srv.director.appendMetrics(&m)
	srv.watchdog.appendMetrics(&m)

	rt := [...]metrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(rt[:])
	m.one("go_goroutines", "gauge", "Goroutines that currently exist.", int64(rt[0].Value.Uint64()))
	// MemStats.HeapInuse is heap objects plus the unused space of in-use spans.
	m.one("go_memstats_heap_inuse_bytes", "gauge", "Bytes in in-use heap spans.", int64(rt[1].Value.Uint64()+rt[2].Value.Uint64()))
	m.one("go_gc_cycles_total", "counter", "Completed GC cycles.", int64(rt[3].Value.Uint64()))
	if rss, ok := residentBytes(); ok {
		m.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss)
	}
	return m.b
}

type metricWriter struct{ b []byte }

func (m *metricWriter) family(name, typ, help string) {
	m.b = append(m.b, "# HELP "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = append(m.b, help...)
	m.b = append(m.b, "\n# TYPE "...)
	m.b = append(m.b, name...)
	m.b = append(m.b, ' ')
	m.b = append(m.b, typ...)
	m.b = append(m.b, '\n')
}

// sample writes one line; labels are written as given (`k="v"`, already escaped).
func (m *metricWriter) sample(name, labels string, v int64) {
	m.b = append(m.b, name...)
	if labels != "" {
		m.b = append(m.b, '{')
		m.b = append(m.b, labels...)
		m.b = append(m.b, '}')
	}
	m.b = append(m.b, ' ')
	m.b = strconv.AppendInt(m.b, v, 10)
	m.b = append(m.b, '\n')
}

func (m *metricWriter) one(name, typ, help string, v int64) {
	m.family(name, typ, help)
	m.sample(name, "", v)
}

// sampleFloat is sample for a value that is not a whole number.
func (m *metricWriter) sampleFloat(name, labels string, v float64) {
	m.b = append(m.b, name...)
	if labels != "" {
		m.b = append(m.b, '{')
		m.b = append(m.b, labels...)
		m.b = append(m.b, '}')
	}
	m.b = append(m.b, ' ')
	m.b = strconv.AppendFloat(m.b, v, 'g', -1, 64)
	m.b = append(m.b, '\n')
}

// histogramBounds are the upper bounds of a latency histogram's buckets, in seconds
// (Prometheus's default buckets, with 1 ms and 30 s added at the ends).
var histogramBounds = [...]float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// histogram counts durations into histogramBounds: lock-free, written as Prometheus's
// cumulative buckets.
type histogram struct {
	buckets [len(histogramBounds) + 1]atomic.Int64 // the last one is +Inf
	sumNs   atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(histogramBounds) && s > histogramBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNs.Add(int64(d))
}

func (h *histogram) write(m *metricWriter, name, help string) {
	m.family(name, "histogram", help)
	var n int64
	for i := range h.buckets {
		n += h.buckets[i].Load()
		le := "+Inf"
		if i < len(histogramBounds) {
			le = strconv.FormatFloat(histogramBounds[i], 'g', -1, 64)
		}
		m.sample(name+"_bucket", `le="`+le+`"`, n)
	}
	m.sampleFloat(name+"_sum", "", time.Duration(h.sumNs.Load()).Seconds())
	m.sample(name+"_count", "", n)
}

// protocolNames are the protocols counted in Counters.ByProtocol, by protocolIndex.
var protocolNames = [...]string{"imap", "pop3", "submission", "managesieve"}

func protocolIndex(p *protocol) int {
	if p != nil {
		for i, n := range protocolNames {
			if n == p.name {
				return i
			}
		}
	}
	return -1
}

// sessionOpened, sessionRelayed and sessionClosed keep Counters.ByProtocol: a session of
// protocol p was accepted; was handed to the relay; ended (relayed: in the relay).
func (c *Counters) sessionOpened(p *protocol) {
	if i := protocolIndex(p); i >= 0 {
		c.ByProtocol[i].Login.Add(1)
	}
}

func (c *Counters) sessionRelayed(p *protocol) {
	if i := protocolIndex(p); i >= 0 {
		c.ByProtocol[i].Login.Add(-1)
		c.ByProtocol[i].Relay.Add(1)
	}
}

func (c *Counters) sessionClosed(p *protocol, relayed bool) {
	if i := protocolIndex(p); i >= 0 {
		if relayed {
			c.ByProtocol[i].Relay.Add(-1)
		} else {
			c.ByProtocol[i].Login.Add(-1)
		}
	}
}

// loginClasses are the outcome classes of Counters.Logins, by loginClass.
var loginClasses = [...]string{"ok", "auth", "tempfail", "unavailable", "disabled", "config"}

func loginClass(st login.AuthStatus) int {
	switch st {
	case login.AuthOK:
		return 0
	case login.AuthFailed, login.AuthAuthzFailed:
		return 1
	case login.AuthTempFail:
		return 2
	case login.AuthDisabled:
		return 4
	case login.AuthServerBug:
		return 5
	}
	return 3
}

// residentBytes reads the resident set from /proc/self/statm (its second field, in pages).
func residentBytes() (int64, bool) {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(data)
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}
