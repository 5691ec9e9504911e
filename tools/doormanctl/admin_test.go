package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"doorman/engine"
	"doorman/engine/testenv"
)

// doormanctl host talks to one Doorman's admin API over its unix socket: metrics, the
// host's sessions, a kick there; a wrong token is refused.
func TestHostAdminAPI(t *testing.T) {
	if err := testenv.Available(); err != nil {
		t.Skip(err)
	}
	be, err := testenv.StartDovecot(testenv.DovecotOptions{Users: []testenv.User{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Stop() })
	_, bePort, _ := net.SplitHostPort(be.IMAPAddr)

	dir := t.TempDir()
	passwd := fmt.Sprintf("alice:{PLAIN}secret::::::proxy host=127.0.0.1 port=%s\nbob:{PLAIN}secret::::::proxy host=127.0.0.1 port=%s\n", bePort, bePort)
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(passwd), 0o600); err != nil {
		t.Fatal(err)
	}
	token := "0123456789abcdef-host-test"
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sock := filepath.Join(dir, "admin.sock")
	cfg, err := engine.ParseConfig([]byte(fmt.Sprintf(`hostname: h1
listeners:
  - {name: imap, protocol: imap, address: %q}
passdb:
  - {driver: passwd-file, path: users}
login_trusted_networks: [127.0.0.0/8]
admin: {address: "unix:%s", token_file: token}
`, addr, sock)), dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := engine.New(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
	})

	login := func(user string) (net.Conn, *bufio.Reader) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
			t.Fatalf("greeting %q, %v", l, err)
		}
		fmt.Fprintf(c, "a LOGIN %s secret\r\n", user)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s LOGIN: %v", user, err)
			}
			if strings.HasPrefix(l, "a ") {
				if !strings.HasPrefix(l, "a OK") {
					t.Fatalf("%s LOGIN: %q", user, l)
				}
				break
			}
		}
		return c, r
	}
	ca, ra := login("alice")
	login("bob")

	admin := "-admin=unix:" + sock
	tok := "-token-file=" + filepath.Join(dir, "token")
	var out string
	deadline := time.Now().Add(10 * time.Second)
	for {
		out = mustRun(t, "host", admin, tok, "sessions")
		if strings.Contains(out, "2 sessions on h1") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "2 sessions on h1") || !strings.Contains(out, "alice") || !strings.Contains(out, "bob") ||
		!strings.Contains(out, "127.0.0.1:"+bePort) {
		t.Fatalf("host sessions:\n%s", out)
	}
	if out := mustRun(t, "host", admin, tok, "sessions", "-user", "bob"); !strings.Contains(out, "1 sessions on h1") || strings.Contains(out, "alice") {
		t.Fatalf("host sessions -user bob:\n%s", out)
	}
	if out := mustRun(t, "host", admin, tok, "metrics"); !strings.Contains(out, `doorman_sessions{stage="relay"} 2`) {
		t.Fatalf("host metrics: no doorman_sessions{stage=\"relay\"} 2 in\n%s", out)
	}
	if out := mustRun(t, "host", admin, tok, "kick", "-user", "alice"); out != "1 sessions kicked\n" {
		t.Fatalf("host kick: %q", out)
	}
	_ = ca.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, err := ra.ReadString('\n')
		if err == nil {
			continue // the backend's BYE, if it sends one
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("alice's session still open 5 s after the kick")
		}
		break // ended
	}
	// A wrong token is refused, and says so.
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not-the-token-at-all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := ctlRun(t, "host", admin, "-token-file="+bad, "sessions"); code != exitFail || !strings.Contains(errs, "refused the token") {
		t.Fatalf("wrong token: exit %d, %q", code, errs)
	}
	if code, _, _ := ctlRun(t, "host", admin, tok, "kick"); code != exitUsage {
		t.Fatalf("host kick without a filter: exit %d, want %d", code, exitUsage)
	}
}
