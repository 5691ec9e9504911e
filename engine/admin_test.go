package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"doorman/engine/relay"
	"doorman/engine/testenv"
)

const adminTestToken = "s3cret-admin-token-0123456789"

// adminDo does one request to the admin API; tok "" sends no Authorization.
func adminDo(t *testing.T, method, url, tok string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func adminAddr(t *testing.T) string {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// metricLine is Prometheus's text format for a sample without timestamp.
var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*\})? (-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?)$`)

// parseMetrics checks every line and returns the samples by "name{labels}".
func parseMetrics(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	typed := map[string]bool{}
	for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if rest, ok := strings.CutPrefix(l, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || (f[1] != "gauge" && f[1] != "counter" && f[1] != "histogram") {
				t.Fatalf("line %d: bad TYPE %q", i+1, l)
			}
			typed[f[0]] = true
			if f[1] == "histogram" { // its samples are <name>_bucket, _sum and _count
				typed[f[0]+"_bucket"], typed[f[0]+"_sum"], typed[f[0]+"_count"] = true, true, true
			}
			continue
		}
		if strings.HasPrefix(l, "# HELP ") {
			continue
		}
		m := metricLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %d: not a sample: %q", i+1, l)
		}
		if !typed[m[1]] {
			t.Fatalf("line %d: %s has no TYPE before it", i+1, m[1])
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		key := m[1] + m[2]
		if _, dup := out[key]; dup {
			t.Fatalf("line %d: duplicate sample %s", i+1, key)
		}
		out[key] = v
	}
	return out
}

func TestAdminConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "short"), []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "good"), []byte(adminTestToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "listeners: [{name: imap, protocol: imap, address: \"127.0.0.1:1143\"}]\npassdb: [{driver: passwd-file, path: good}]\n"
	for _, c := range []struct{ admin, err string }{
		{"", ""},
		{`{address: "127.0.0.1:9100", token: "` + adminTestToken + `"}`, ""},
		{`{address: "unix:/run/doorman/admin.sock", token_file: good}`, ""},
		{`{address: "127.0.0.1:9100", metrics_public: true}`, ""},
		{`{address: "127.0.0.1:9100"}`, "admin.token: token or token_file is required"},
		{`{address: "127.0.0.1:9100", token: "x", token_file: good}`, "admin.token: set token or token_file, not both"},
		{`{address: "127.0.0.1:9100", token: "short"}`, "admin.token: the token must be at least 16"},
		{`{address: "127.0.0.1:9100", token_file: short}`, "admin.token_file: the token must be at least 16"},
		{`{address: "127.0.0.1:9100", token_file: missing}`, "admin.token_file: open"},
		{`{address: "localhost", token: "` + adminTestToken + `"}`, "admin.address: \"localhost\" is neither"},
		{`{address: "unix:admin.sock", token: "` + adminTestToken + `"}`, "must be absolute"},
		{`{token: "` + adminTestToken + `"}`, "admin.address: is required"},
	} {
		yml := base
		if c.admin != "" {
			yml += "admin: " + c.admin + "\n"
		}
		_, err := ParseConfig([]byte(yml), dir)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.admin, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: got %v, want %q", c.admin, err, c.err)
		}
		if err != nil && strings.Contains(err.Error(), adminTestToken) {
			t.Errorf("%s: the error shows the token: %v", c.admin, err)
		}
	}
}

func TestAdminAuth(t *testing.T) {
	addr := adminAddr(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port=1"),
		fmt.Sprintf("admin: {address: %q, token: %q}", addr, adminTestToken))
	base := "http://" + addr
	for _, c := range []struct {
		method, path, tok string
		want              int
	}{
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", "wrong-token-wrong-token", 401},
		{"GET", "/metrics", adminTestToken + "x", 401},
		{"GET", "/metrics", adminTestToken, 200},
		{"GET", "/sessions", "", 401},
		{"GET", "/sessions", "nope", 401},
		{"GET", "/sessions", adminTestToken, 200},
		{"GET", "/sessions?backend=nohost", adminTestToken, 400},
		{"POST", "/kick?user=alice", "", 401},
		{"POST", "/kick?user=alice", adminTestToken[:len(adminTestToken)-1], 401},
		{"POST", "/kick?user=alice", adminTestToken, 200},
		{"POST", "/kick", adminTestToken, 400}, // kicking everyone needs saying so
		{"GET", "/kick?user=alice", adminTestToken, 405},
		{"GET", "/nothing", adminTestToken, 404},
	} {
		if got, body := adminDo(t, c.method, base+c.path, c.tok); got != c.want {
			t.Errorf("%s %s (token %q): %d %q, want %d", c.method, c.path, c.tok, got, body, c.want)
		}
	}
	if _, body := adminDo(t, "GET", base+"/sessions", adminTestToken); body != `{"host":"`+p.srv.cfg.Hostname+`","sessions":[]}`+"\n" {
		t.Errorf("/sessions: %q", body)
	}
	if _, body := adminDo(t, "POST", base+"/kick?user=alice", adminTestToken); body != `{"kicked":0}`+"\n" {
		t.Errorf("/kick: %q", body)
	}
	for _, e := range p.logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), adminTestToken) {
			t.Errorf("a log line shows the token: %v %v", e.Message, e.ContextMap())
		}
	}
}

func TestAdminMetricsPublic(t *testing.T) {
	addr := adminAddr(t)
	startProxy(t, "", fmt.Sprintf("admin: {address: %q, metrics_public: true}", addr))
	if code, body := adminDo(t, "GET", "http://"+addr+"/metrics", ""); code != 200 {
		t.Fatalf("/metrics: %d %q", code, body)
	}
	// No token configured: everything else stays shut, even to a guess of "".
	if code, _ := adminDo(t, "GET", "http://"+addr+"/sessions", ""); code != 401 {
		t.Fatalf("/sessions without a configured token: %d", code)
	}
}

func TestAdminUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	// A socket left by a dead process is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	p := startProxy(t, "", fmt.Sprintf("admin: {address: %q, token: %q}", "unix:"+sock, adminTestToken))
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", fi, err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequest("GET", "http://admin/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+adminTestToken)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics over the socket: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.srv.stopAdmin(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after stop: %v", err)
	}
}

func TestMetricsAfterLogin(t *testing.T) {
	be := sharedBackend(t)
	addr := adminAddr(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		fmt.Sprintf("admin: {address: %q, token: %q}", addr, adminTestToken))
	scrape := func() map[string]float64 {
		t.Helper()
		code, body := adminDo(t, "GET", "http://"+addr+"/metrics", adminTestToken)
		if code != 200 {
			t.Fatalf("/metrics: %d %q", code, body)
		}
		return parseMetrics(t, body)
	}
	before := scrape()
	for _, name := range []string{
		`doorman_sessions{stage="login"}`, `doorman_sessions{stage="relay"}`,
		"doorman_connections_accepted_total", `doorman_logins_total{result="ok"}`,
		`doorman_logins_total{result="failed"}`, "doorman_relay_pipes_in_use", "doorman_relay_pipes_idle",
		"doorman_relay_tls_buffers_in_use", "doorman_relay_prefix_bytes", "doorman_relay_panics_total",
		"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("no sample %s", name)
		}
	}
	if before["go_goroutines"] < 1 || before["process_resident_memory_bytes"] < 1<<20 || before["go_memstats_heap_inuse_bytes"] < 1<<10 {
		t.Errorf("process metrics: %v", before)
	}

	c := dial(t, p.addr, "")
	c.send("a LOGIN alice wrong\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a NO")
	c.send("b LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK")
	during := scrape()
	for name, want := range map[string]float64{
		"doorman_connections_accepted_total":    before["doorman_connections_accepted_total"] + 1,
		`doorman_logins_total{result="ok"}`:     before[`doorman_logins_total{result="ok"}`] + 1,
		`doorman_logins_total{result="failed"}`: before[`doorman_logins_total{result="failed"}`] + 1,
		`doorman_sessions{stage="relay"}`:       1,
		`doorman_sessions{stage="login"}`:       0,
		"doorman_relay_sessions":                1,
	} {
		if during[name] != want {
			t.Errorf("%s = %v during the session, want %v", name, during[name], want)
		}
	}
	c.send("c LOGOUT\r\n")
	expectPrefix(t, last(c.until("c", 10*time.Second)), "c OK")
	c.c.Close()
	waitFor(t, func() bool { return p.srv.stats.Relaying.Load() == 0 }, "the relayed session ends")
	if after := scrape(); after[`doorman_sessions{stage="relay"}`] != 0 || after["doorman_relay_sessions"] != 0 {
		t.Errorf("after the session: relay %v, relay sessions %v", after[`doorman_sessions{stage="relay"}`], after["doorman_relay_sessions"])
	}
}

// adminPair is a connected client socket and backend socket whose far ends are raw,
// non-blocking fds, as the engine hands them to the relay.
type adminPair struct {
	client, backend net.Conn
	cfd, bfd        int
}

func newAdminPair(t testing.TB, ln net.Listener) *adminPair {
	t.Helper()
	conn := func() (net.Conn, int) {
		d, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		f, err := a.(*net.TCPConn).File() // a dup, blocking: make it non-blocking
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		a.Close()
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		return d, fd
	}
	p := &adminPair{}
	p.client, p.cfd = conn()
	p.backend, p.bfd = conn()
	t.Cleanup(func() { p.client.Close(); p.backend.Close() })
	return p
}

// adminTestServer is a Server with only what the registry and the admin handlers use.
func adminTestServer(t testing.TB) *Server {
	t.Helper()
	r, err := relay.New(relay.Config{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	cfg := &Config{Hostname: "proxy1", Listeners: []Listener{{Name: "imap-in", Protocol: "imap"}},
		Admin: AdminConfig{Address: "127.0.0.1:0", Token: adminTestToken}}
	return &Server{cfg: cfg, log: zap.NewNop(), relay: r}
}

// relaySession hands a pair to the relay the way handOff should: register after Add,
// unregister first thing in Done.
func relaySession(t testing.TB, srv *Server, p *adminPair, rec *endRecord) <-chan relay.Stats {
	t.Helper()
	done := make(chan relay.Stats, 1)
	h, err := srv.relay.Add(&relay.Session{ClientFD: p.cfd, BackendFD: p.bfd,
		Done: func(st relay.Stats) {
			srv.unregisterSession(rec)
			done <- st
		}})
	if err != nil {
		unix.Close(p.cfd)
		unix.Close(p.bfd)
		t.Fatal(err)
	}
	srv.registerSession(rec, h)
	return done
}

func TestSessionsAndKick(t *testing.T) {
	srv := adminTestServer(t)
	a, err := newAdminServer(srv)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	imapIn := &listener{Listener: Listener{Name: "imap-in"}}
	recs := []*endRecord{
		{id: "s1", lst: imapIn, user: "alice", target: "10.0.0.1:143", started: start.UnixNano(), in: 20, out: 100},
		{id: "s2", lst: imapIn, user: "bob", target: "10.0.0.1:143", started: start.UnixNano() + 1, extra: &endExtra{vsite: "v2"}},
		{id: "s3", lst: imapIn, user: "alice", target: "10.0.0.2:143", started: start.UnixNano() + 2, extra: &endExtra{vsite: "v1"}},
	}
	pairs := make([]*adminPair, len(recs))
	dones := make([]<-chan relay.Stats, len(recs))
	for i, rec := range recs {
		pairs[i] = newAdminPair(t, ln)
		dones[i] = relaySession(t, srv, pairs[i], rec)
	}
	// Bytes through s1 show in /sessions on top of the login phase's.
	if _, err := pairs[0].client.Write([]byte("a NOOP\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(pairs[0].backend, buf); err != nil {
		t.Fatal(err)
	}

	call := func(method, target string) (int, string) {
		req := httptest.NewRequest(method, target, nil)
		req.Header.Set("Authorization", "Bearer "+adminTestToken)
		w := httptest.NewRecorder()
		a.hs.Handler.ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	list := func(q string) []SessionInfo {
		t.Helper()
		code, body := call("GET", "/sessions"+q)
		if code != 200 {
			t.Fatalf("/sessions%s: %d %s", q, code, body)
		}
		var v struct {
			Host     string
			Sessions []SessionInfo
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil || v.Host != "proxy1" {
			t.Fatalf("/sessions%s: %v %s", q, err, body)
		}
		return v.Sessions
	}
	// The relay writes the prefixes on its own thread: wait until they are counted.
	waitFor(t, func() bool {
		all := list("")
		return len(all) == 3 && all[0].ToBackend == 28
	}, "the relay has written s1's prefix")
	all := list("")
	if len(all) != 3 || all[0].ID != "s1" || all[1].ID != "s2" || all[2].ID != "s3" {
		t.Fatalf("all sessions: %+v", all)
	}
	s1 := all[0]
	if s1.User != "alice" || s1.Protocol != "imap" || s1.Listener != "imap-in" || s1.Backend != "10.0.0.1:143" ||
		s1.ToBackend != 28 || s1.ToClient != 100 || !s1.Started.Equal(time.Unix(0, start.UnixNano())) {
		t.Fatalf("s1: %+v", s1)
	}
	if got := list("?user=alice"); len(got) != 2 {
		t.Fatalf("alice: %+v", got)
	}
	if got := list("?backend=10.0.0.1:143"); len(got) != 2 {
		t.Fatalf("10.0.0.1:143: %+v", got)
	}
	if got := list("?user=alice&backend=10.0.0.2:143"); len(got) != 1 || got[0].ID != "s3" {
		t.Fatalf("alice at 10.0.0.2: %+v", got)
	}
	// A backend as an IP alone (any port), IPv4-mapped or not; a vsite.
	if got := list("?backend=::ffff:10.0.0.1"); len(got) != 2 || got[0].ID != "s1" || got[1].ID != "s2" {
		t.Fatalf("10.0.0.1: %+v", got)
	}
	if got := list("?backend=10.0.0.2"); len(got) != 1 || got[0].ID != "s3" {
		t.Fatalf("10.0.0.2: %+v", got)
	}
	if got := list("?vsite=v1"); len(got) != 1 || got[0].ID != "s3" || got[0].Vsite != "v1" {
		t.Fatalf("vsite v1: %+v", got)
	}
	if code, body := call("GET", "/sessions?backend=nohost"); code != 400 {
		t.Fatalf("/sessions?backend=nohost: %d %s", code, body)
	}
	if code, body := call("POST", "/kick"); code != 400 || !strings.Contains(body, "user, backend or vsite is required") {
		t.Fatalf("/kick without a filter: %d %s", code, body)
	}
	if code, body := call("POST", "/kick?vsite=v9"); code != 200 || body != `{"kicked":0}`+"\n" {
		t.Fatalf("kick vsite v9: %d %s", code, body)
	}

	// Kick alice: both her sessions end, from the proxy's side, and leave the registry.
	if code, body := call("POST", "/kick?user=alice"); code != 200 || body != `{"kicked":2}`+"\n" {
		t.Fatalf("kick: %d %s", code, body)
	}
	for _, i := range []int{0, 2} {
		select {
		case st := <-dones[i]:
			if !errors.Is(st.Err, relay.ErrKicked) || st.EndedBy != relay.SideProxy {
				t.Fatalf("%s ended with %v by %v", recs[i].id, st.Err, st.EndedBy)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s not kicked", recs[i].id)
		}
		_ = pairs[i].client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := pairs[i].client.Read(buf); err == nil {
			t.Fatalf("%s: the client's socket is still open", recs[i].id)
		}
	}
	if got := list(""); len(got) != 1 || got[0].ID != "s2" {
		t.Fatalf("after the kick: %+v", got)
	}
	if srv.stats.Kicked.Load() != 2 {
		t.Fatalf("Kicked = %d", srv.stats.Kicked.Load())
	}
	// By backend; the client ending it instead leaves the registry as well.
	if code, body := call("POST", "/kick?backend=10.0.0.9:143"); code != 200 || body != `{"kicked":0}`+"\n" {
		t.Fatalf("kick nobody: %d %s", code, body)
	}
	pairs[1].client.Close()
	pairs[1].backend.Close()
	<-dones[1]
	if got := list(""); len(got) != 0 {
		t.Fatalf("after the last end: %+v", got)
	}
	if n := registrySize(srv); n != 0 {
		t.Fatalf("registry keeps %d entries", n)
	}
}

func registrySize(srv *Server) int {
	n := 0
	for i := range srv.sessions.shards {
		sh := &srv.sessions.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Done may run before registerSession: the late registration must not leave an entry.
func TestSessionsEndBeforeRegister(t *testing.T) {
	srv := &Server{cfg: &Config{}}
	rec, h := &endRecord{id: "x", user: "u"}, &relay.Handle{}
	srv.unregisterSession(rec)
	srv.registerSession(rec, h)
	if n := registrySize(srv); n != 0 {
		t.Fatalf("%d entries after end-then-register", n)
	}
	srv.registerSession(rec, h)
	n := 0
	srv.eachSession(sessionFilter{user: "u"}, func(*endRecord, *relay.Handle) { n++ })
	if n != 1 {
		t.Fatalf("listed %d times", n)
	}
	srv.unregisterSession(rec)
	if n := registrySize(srv); n != 0 {
		t.Fatalf("%d entries after register-then-end", n)
	}
}

// BenchmarkSessionsRegister measures the registry's memory per live session (the
// endRecord and the relay's Handle exist anyway) and the cost of register + unregister.
func BenchmarkSessionsRegister(b *testing.B) {
	const live = 100_000
	recs := make([]*endRecord, live)
	for i := range recs {
		recs[i] = &endRecord{id: strconv.Itoa(i), user: "user" + strconv.Itoa(i%1000), target: "10.0.0.1:143"}
	}
	h := &relay.Handle{}
	srv := &Server{cfg: &Config{}}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	h0 := heap()
	for _, rec := range recs {
		srv.registerSession(rec, h)
	}
	perSession := float64(heap()-h0) / live
	for _, rec := range recs {
		srv.unregisterSession(rec)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := recs[i%live]
		srv.registerSession(rec, h)
		srv.unregisterSession(rec)
	}
	b.StopTimer()
	b.ReportMetric(perSession, "bytes/session")
	runtime.KeepAlive(recs)
}

// A real login through Doorman shows in /sessions, and /kick ends it: the registry is fed
// by the hand-off and emptied by the relay's Done.
func TestAdminSessionsAndKickEndToEnd(t *testing.T) {
	be := sharedBackend(t)
	addr := adminAddr(t)
	p := startProxy(t, passwdLine("alice", "{PLAIN}secret", "proxy host=127.0.0.1 port="+portOf(be.IMAPAddr)),
		fmt.Sprintf("admin: {address: %q, token: %q}", addr, adminTestToken))
	c := dial(t, p.addr, "127.0.0.23")
	c.send("a LOGIN alice secret\r\n")
	expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
	code, body := adminDo(t, "GET", "http://"+addr+"/sessions?user=alice", adminTestToken)
	if code != 200 || !strings.Contains(body, `"user":"alice"`) || !strings.Contains(body, "127.0.0.23") {
		t.Fatalf("/sessions: %d %s", code, body)
	}
	code, body = adminDo(t, "POST", "http://"+addr+"/kick?user=alice", adminTestToken)
	if code != 200 || !strings.Contains(body, `"kicked":1`) {
		t.Fatalf("/kick: %d %s", code, body)
	}
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Fatal("the kicked session is still open")
	}
	waitFor(t, func() bool {
		_, body := adminDo(t, "GET", "http://"+addr+"/sessions", adminTestToken)
		return !strings.Contains(body, `"user":"alice"`)
	}, "the kicked session leaves /sessions")
}

// Every idle relayed session holds one endRecord: it must stay in the 160-byte size
// class (the rarely set fields live behind endRecord.extra).
func TestEndRecordSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(endRecord{}); n > 160 {
		t.Fatalf("endRecord is %d bytes: past the 160-byte size class, every idle session pays the next one", n)
	}
}
