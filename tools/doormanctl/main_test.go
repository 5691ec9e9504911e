package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/route"
	"doorman/route/routetest"
)

// ctlRun runs doormanctl with args and returns its exit code and output.
func ctlRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// mustRun runs doormanctl and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := ctlRun(t, args...)
	if code != 0 {
		t.Fatalf("doormanctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func init() {
	// go-redis logs failed dials on its own (TestRedisDown): keep them out of the output.
	redis.SetLogger(quietLogger{})
}

func newClient(t *testing.T, addrs ...string) redis.UniversalClient {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: addrs})
	t.Cleanup(func() { c.Close() })
	return c
}

// subscribe returns a channel of the messages published on doorman:events.
func subscribe(t *testing.T, c redis.UniversalClient) <-chan *redis.Message {
	t.Helper()
	ps := c.Subscribe(context.Background(), "doorman:events")
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(context.Background()); err != nil { // the subscription confirmed
		t.Fatal(err)
	}
	return ps.Channel()
}

func wantMessage(t *testing.T, ch <-chan *redis.Message, want string) {
	t.Helper()
	select {
	case m := <-ch:
		if m.Payload != want {
			t.Errorf("published %q; want %q", m.Payload, want)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("nothing published; want %q", want)
	}
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// passwdFile makes n users in Dovecot's passwd-file format, with a few
// special lines: no password (nopassword), a bare crypt hash, %-variables,
// an empty extra field list, and a user= rename.
func passwdFile(n int) string {
	var b strings.Builder
	b.WriteString("# generated\n\n")
	for i := range n {
		switch i % 5 {
		case 0:
			fmt.Fprintf(&b, "user%05d@example.com:{PLAIN}pw%d:1000:1000::/home/u:/bin/false:proxy host=10.0.%d.%d port=10143 vsite=%d\n", i, i, i/250, i%250, i%7)
		case 1:
			fmt.Fprintf(&b, "user%05d@example.com:$1$salt$hash$extra::::::nologin reason=50%%%%-%%u\n", i)
		case 2:
			fmt.Fprintf(&b, "user%05d@example.com::::::::nopassword proxy host=h%%Ln.%%d\n", i)
		case 3:
			fmt.Fprintf(&b, "user%05d@example.com:{SHA256-CRYPT}$5$x$y\n", i)
		case 4:
			fmt.Fprintf(&b, "user%05d@example.com:secret::::::user=renamed%d@example.com proxy host=::1\n", i, i)
		}
	}
	return b.String()
}

func TestImportPasswd(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	c := newClient(t, addr)
	ctx := context.Background()
	const n = 10000
	path := writeFile(t, "passwd", passwdFile(n))
	// A field from an earlier import that the file no longer has.
	routetest.HSet(t, addr, "doorman:user:user00000@example.com", map[string]string{"stale": "1", "password": "old"})
	events := subscribe(t, c)

	out := mustRun(t, "-redis", addr, "import", path)
	t.Log(strings.TrimSpace(out))
	if !strings.HasPrefix(out, fmt.Sprintf("imported %d users from %s in ", n, path)) {
		t.Errorf("output %q", out)
	}
	wantMessage(t, events, "flush")
	if got := c.DBSize(ctx).Val(); got != n {
		t.Errorf("DBSIZE = %d; want %d", got, n)
	}
	h := c.HGetAll(ctx, "doorman:user:user00000@example.com").Val()
	want := map[string]string{"password": "{PLAIN}pw0", "proxy": "", "host": "10.0.0.0", "port": "10143", "vsite": "0"}
	if !maps.Equal(h, want) {
		t.Errorf("user00000 = %v; want %v (replaced, stale field gone)", h, want)
	}

	// The Redis passdb reads every user (without a vsite) exactly as the
	// passwd-file passdb reads the file.
	pf, err := route.NewPasswdFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	rp, err := route.NewRedis(route.RedisConfig{Addrs: []string{addr}, DefaultScheme: "PLAIN"})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	for i := 0; i < n; i += 97 {
		if i%5 == 0 {
			continue // vsite=: see TestImportCluster
		}
		name := fmt.Sprintf("user%05d@example.com", i)
		fe, err1 := pf.Lookup(ctx, name)
		re, err2 := rp.Lookup(ctx, name)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: passwd-file %v, redis %v", name, err1, err2)
		}
		fields := fe.Fields
		if fields == nil {
			fields = map[string]string{}
		}
		if fe.User != re.User || fe.Password != re.Password || !maps.Equal(fields, re.Fields) {
			t.Errorf("%s: passwd-file %+v, redis %+v", name, fe, re)
		}
	}

	// -merge keeps fields the file does not have.
	c.HSet(ctx, "doorman:user:user00003@example.com", "extra", "kept")
	mustRun(t, "-redis", addr, "import", "-merge", "-format", "passwd", path)
	if v := c.HGet(ctx, "doorman:user:user00003@example.com", "extra").Val(); v != "kept" {
		t.Errorf("after -merge, extra = %q", v)
	}
	wantMessage(t, events, "flush")

	// A bad line: nothing is written, the error names file:line.
	bad := writeFile(t, "bad", "new1:{PLAIN}x\nnew2:{PLAIN}x::::::port=http\n")
	code, _, errs := ctlRun(t, "-redis", addr, "import", bad)
	if code != exitFail || !strings.Contains(errs, bad+":2:") {
		t.Errorf("bad file: exit %d, stderr %q", code, errs)
	}
	if c.Exists(ctx, "doorman:user:new1").Val() != 0 {
		t.Error("a file with a bad line was partly imported")
	}
}

func TestImportCSV(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	c := newClient(t, addr)
	ctx := context.Background()
	path := writeFile(t, "users.csv", "user,password,host,port,vsite,proxy\n"+
		"# a comment\n"+
		"alice@example.com,{PLAIN}a,10.0.0.1,10143,,y\n"+
		"bob@example.com,{PLAIN}b,,,7,\n"+
		"\"carol, jr\",{PLAIN}c,h3,,,y\n")
	out := mustRun(t, "-redis", addr, "import", "-format", "csv", path)
	if !strings.HasPrefix(out, "imported 3 users") {
		t.Errorf("output %q", out)
	}
	for key, want := range map[string]map[string]string{
		"doorman:user:alice@example.com": {"password": "{PLAIN}a", "host": "10.0.0.1", "port": "10143", "proxy": "y"},
		"doorman:user:bob@example.com":   {"password": "{PLAIN}b", "vsite": "7"},
		"doorman:user:carol, jr":         {"password": "{PLAIN}c", "host": "h3", "proxy": "y"},
	} {
		if got := c.HGetAll(ctx, key).Val(); !maps.Equal(got, want) {
			t.Errorf("%s = %v; want %v", key, got, want)
		}
	}

	for body, wantErr := range map[string]string{
		"password,host\nx,y\n":           `no "user" column`,
		"user,host,host\na,b,c\n":        `column "host" appears twice`,
		"user,host\na,h\na,h2\n":         `user "a" exists more than once (first on line 2)`,
		"user,port\nok,1\nbad,http\n":    `:3: user "bad": `,
		"user,host\n,h\n":                "empty user",
		"user,host\nnofields,\n":         "has no fields",
		"user,host\n\"unterminated,h\n":  "extraneous or missing",
		"":                               "empty file",
		"user,host\na,h,too,many\n":      "wrong number of fields",
		"user,host\nnew@example.com,h\n": "",
	} {
		p := writeFile(t, "bad.csv", body)
		code, _, errs := ctlRun(t, "-redis", addr, "import", "-format", "csv", p)
		if wantErr == "" {
			if code != 0 {
				t.Errorf("%q: exit %d %s", body, code, errs)
			}
			continue
		}
		if code != exitFail || !strings.Contains(errs, wantErr) {
			t.Errorf("%q: exit %d, stderr %q; want %q", body, code, errs, wantErr)
		}
	}
	if got := c.DBSize(ctx).Val(); got != 4 {
		t.Errorf("DBSIZE = %d; want 4 (bad files write nothing)", got)
	}
}

func TestVsiteAndRoute(t *testing.T) {
	addr, _ := routetest.StartRedis(t)
	c := newClient(t, addr)
	ctx := context.Background()
	events := subscribe(t, c)

	out := mustRun(t, "-redis", addr, "vsite", "set", "7", "host=imap7.example.net", "port=10143", "ssl=yes", "site=ams")
	if !strings.Contains(out, "vsite 7 set") {
		t.Errorf("output %q", out)
	}
	wantMessage(t, events, "vsite 7")
	want := map[string]string{"host": "imap7.example.net", "port": "10143", "ssl": "yes", "site": "ams"}
	if got := c.HGetAll(ctx, "doorman:vsite:7").Val(); !maps.Equal(got, want) {
		t.Errorf("vsite 7 = %v", got)
	}
	// set replaces the whole vsite: the old port is gone.
	mustRun(t, "-redis", addr, "vsite", "set", "8", "host=old", "port=1")
	wantMessage(t, events, "vsite 8")
	mustRun(t, "-redis", addr, "vsite", "set", "8", "host=imap8")
	wantMessage(t, events, "vsite 8")
	if got := c.HGetAll(ctx, "doorman:vsite:8").Val(); !maps.Equal(got, map[string]string{"host": "imap8"}) {
		t.Errorf("vsite 8 = %v", got)
	}

	routetest.HSet(t, addr, "doorman:user:alice", map[string]string{"password": "{PLAIN}secret", "vsite": "7", "proxy": ""})
	routetest.HSet(t, addr, "doorman:user:bob", map[string]string{"password_noscheme": "s", "vsite": "8"})
	routetest.HSet(t, addr, "doorman:user:carol", map[string]string{"password": "x", "vsite": "7", "host": "moved.example.net"})
	routetest.HSet(t, addr, "doorman:user:dave", map[string]string{"password": "x", "vsite": "99"})

	routetest.HSet(t, addr, "doorman:user:erin", map[string]string{"password": "x", "proxy": "", "host": "h5", "user": "erin@example.net"})
	routetest.HSet(t, addr, "doorman:user:frank", map[string]string{"password": "x", "host": "h6"})

	out = mustRun(t, "-redis", addr, "route", "alice")
	for _, s := range []string{"user alice (doorman:user:alice)", "password  <hidden>", `proxy     ""`,
		"vsite 7 (doorman:vsite:7)", "ssl   yes",
		"destination:  imap7.example.net:10143 (port 10143, from vsite 7)", "tls:          ssl=yes"} {
		if !strings.Contains(out, s) {
			t.Errorf("route alice: no %q in\n%s", s, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("route shows the password:\n%s", out)
	}
	for user, want := range map[string]string{
		"bob":   "destination:  imap8 (protocol default port, from vsite 8)", // a vsite implies proxy
		"carol": "ignored:      the user's own host (the vsite's routing wins)\n  destination:  imap7.example.net:10143",
		"erin":  "login name:   erin@example.net (renamed by the user's fields)\n  destination:  h5 (protocol default port, from user)",
		"frank": "destination:  none (not proxied",
	} {
		out := mustRun(t, "-redis", addr, "route", user)
		if !strings.Contains(out, want) || strings.Contains(out, " s\n") {
			t.Errorf("route %s: no %q in\n%s", user, want, out)
		}
	}
	if code, _, errs := ctlRun(t, "-redis", addr, "route", "dave"); code != exitFail || !strings.Contains(errs, `vsite "99", which does not exist`) {
		t.Errorf("route dave: %d %q", code, errs)
	}
	if code, _, errs := ctlRun(t, "-redis", addr, "route", "nobody"); code != exitFail || !strings.Contains(errs, "not found") {
		t.Errorf("route nobody: %d %q", code, errs)
	}

	out = mustRun(t, "-redis", addr, "user", "flush", "alice")
	wantMessage(t, events, "user alice")
	if !strings.Contains(out, `published "user alice" on doorman:events`) {
		t.Errorf("user flush output %q", out)
	}

	for _, args := range [][]string{
		{}, {"vsite"}, {"vsite", "set", "9"}, {"vsite", "set", "9", "port=1"}, {"vsite", "set", "9", "host=h", "port=0"},
		{"vsite", "set", "9", "host"}, {"vsite", "set", "9", "host=a", "host=b"}, {"route"}, {"user", "flush"},
		{"import"}, {"import", "-format", "xml", "f"}, {"frobnicate"}, {"-nosuchflag"},
	} {
		if code, _, _ := ctlRun(t, append([]string{"-redis", addr}, args...)...); code != exitUsage {
			t.Errorf("doormanctl %q: exit %d; want %d", args, code, exitUsage)
		}
	}
	for _, args := range [][]string{{"-redis", "", "route", "x"}, {"-redis", addr, "-prefix", "", "route", "x"}} {
		if code, _, _ := ctlRun(t, args...); code != exitUsage {
			t.Errorf("doormanctl %q: exit %d; want %d", args, code, exitUsage)
		}
	}
	if c.Exists(ctx, "doorman:vsite:9").Val() != 0 {
		t.Error("a refused vsite set wrote something")
	}
}

// Redis down: a plain failure, quickly.
func TestRedisDown(t *testing.T) {
	addr, stop := routetest.StartRedis(t)
	stop()
	start := time.Now()
	code, _, errs := ctlRun(t, "-redis", addr, "route", "alice")
	if code != exitFail || !strings.Contains(errs, "refused") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

// Import into a Redis Cluster: go-redis splits each pipeline per node; the
// script is loaded on every master.
func TestImportCluster(t *testing.T) {
	cl := routetest.StartCluster(t, 3)
	addrs := strings.Join(cl.Addrs, ",")
	const n = 3000
	path := writeFile(t, "passwd", passwdFile(n))
	c := newClient(t, cl.Addrs...)
	events := subscribe(t, c)
	out := mustRun(t, "-redis", addrs, "import", path)
	t.Log(strings.TrimSpace(out))
	wantMessage(t, events, "flush")

	// The passwd file's users name vsites 0 to 6.
	for id := range 7 {
		mustRun(t, "-redis", addrs, "vsite", "set", fmt.Sprint(id), fmt.Sprintf("host=site%d.example.net", id), "port=10993", "ssl=yes")
		wantMessage(t, events, fmt.Sprintf("vsite %d", id))
	}

	rp, err := route.NewRedis(route.RedisConfig{Addrs: cl.Addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	ctx := context.Background()
	if err := rp.ReloadVsites(ctx); err != nil { // SCAN on every master
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("user%05d@example.com", i)
		e, err := rp.Lookup(ctx, name)
		if err != nil {
			t.Fatalf("Lookup(%s) after a Cluster import: %v", name, err)
		}
		if i%5 == 0 && (e.Fields["host"] != fmt.Sprintf("site%d.example.net", i%7) || e.Fields["ssl"] != "yes") {
			t.Errorf("Lookup(%s) = %+v; want vsite %d's routing", name, e, i%7)
		}
	}
	if out := mustRun(t, "-redis", addrs, "route", "user00005@example.com"); !strings.Contains(out, "destination:  site5.example.net:10993 (port 10993, from vsite 5)") ||
		!strings.Contains(out, "ignored:      the user's own host, port") {
		t.Errorf("route on Cluster:\n%s", out)
	}
}

// Through Sentinel: -master-name makes the addresses Sentinels, and the
// writes reach the master.
func TestSentinel(t *testing.T) {
	s := routetest.StartSentinel(t)
	path := writeFile(t, "passwd", passwdFile(500))
	args := []string{"-redis", strings.Join(s.Sentinels, ","), "-master-name", s.MasterName}
	out := mustRun(t, append(args, "import", path)...)
	if !strings.HasPrefix(out, "imported 500 users") {
		t.Errorf("output %q", out)
	}
	mustRun(t, append(args, "vsite", "set", "1", "host=h1")...)
	if got := routetest.Do(t, s.Master(t), "DBSIZE"); got[0] != "501" {
		t.Errorf("DBSIZE on the master = %s; want 501", got[0])
	}
	if out := mustRun(t, append(args, "route", "user00001@example.com")...); !strings.Contains(out, "destination:  none (not proxied") {
		t.Errorf("route:\n%s", out)
	}
}
