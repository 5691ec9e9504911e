package engine

import (
	"bytes"
	"os"
	"runtime/metrics"
	"strconv"
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
	m.one("doorman_connections_accepted_total", "counter", "Client connections accepted.", c.Accepted.Load())
	m.family("doorman_logins_total", "counter", "Logins by result: ok (handed to the relay) or failed.")
	m.sample("doorman_logins_total", `result="ok"`, c.LoginsOK.Load())
	m.sample("doorman_logins_total", `result="failed"`, c.LoginsFailed.Load())
	m.one("doorman_admin_kicks_total", "counter", "Relayed sessions kicked through the admin API.", c.Kicked.Load())

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
