package engine

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"doorman/engine/testenv"
	"doorman/route"
)

// The configuration shown in the README must parse exactly as written (tooling outside the
// project drives Doorman with it); only its passwd-file path is pointed at a real file.
func TestREADMEConfigParses(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Configuration.*?```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no yaml block under ## Configuration in README.md")
	}
	dir := t.TempDir()
	users := filepath.Join(dir, "users.passwd")
	if err := os.WriteFile(users, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	yml := strings.ReplaceAll(string(m[1]), "/etc/doorman/users.passwd", users)
	cfg, err := ParseConfig([]byte(yml), dir)
	if err != nil {
		t.Fatalf("README config: %v", err)
	}
	if len(cfg.Listeners) != 1 || cfg.Listeners[0].Protocol != "imap" || cfg.Listeners[0].Address != "127.0.0.1:1143" {
		t.Fatalf("listeners: %+v", cfg.Listeners)
	}
	if len(cfg.Passdb) != 2 || cfg.Passdb[0].Driver != "passwd-file" || cfg.Passdb[1].Driver != "redis" ||
		cfg.Passdb[1].KeyPrefix != "doorman:" || cfg.Passdb[1].Addrs[0] != "127.0.0.1:6379" {
		t.Fatalf("passdb: %+v", cfg.Passdb)
	}
	if time.Duration(cfg.AuthFailureDelay) != 2*time.Second || cfg.Log.Format != "json" || cfg.Log.Level != "info" {
		t.Fatalf("settings: %+v", cfg)
	}
	// Dovecot's defaults where the file is silent.
	if time.Duration(cfg.LoginProxyTimeout) != 30*time.Second || *cfg.LoginProxyMaxReconnects != 3 ||
		!*cfg.DisablePlaintextAuth || time.Duration(cfg.LoginTimeout) != 180*time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestExampleConfigParses(t *testing.T) {
	// The example's certificates are made by `make run` (tools/devcert): make them here
	// beside a copy.
	dir := t.TempDir()
	for _, f := range []string{"doorman.yaml", "users.passwd"} {
		b, err := os.ReadFile(filepath.Join("../cmd/doorman/example", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := LoadConfig(filepath.Join(dir, "doorman.yaml"))
	if err == nil || !strings.Contains(err.Error(), "ssl_cert") {
		t.Fatalf("without its certificate the example config gave %v, want an ssl_cert error", err)
	}
	ca, err := testenv.NewCA(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue("doorman", "localhost"); err != nil {
		t.Fatal(err)
	}
	if cfg, err = LoadConfig(filepath.Join(dir, "doorman.yaml")); err != nil {
		t.Fatal(err)
	}
	if cfg.SSL != "yes" {
		t.Fatalf("ssl = %q, want the default yes when ssl_cert is set", cfg.SSL)
	}
}

// Validate reports every error at once, each with its key path.
func TestValidateReportsEveryErrorWithItsPath(t *testing.T) {
	yml := `listeners:
  - {name: imap, protocol: imap, address: "127.0.0.1:1143"}
  - {name: imap, protocol: smtp, address: "nowhere"}
passdb:
  - {driver: passwd-file}
  - {driver: redis}
  - {driver: ldap}
  - {driver: mongo}
login_trusted_networks: [10.0.0.0/8, "bogus/99"]
login_source_ips: [127.0.0.2, "no pe", "?"]
login_proxy_timeout: -1s
log: {level: loud, format: xml}
`
	_, err := ParseConfig([]byte(yml), t.TempDir())
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		"listeners[1].name: duplicate listener name",
		"listeners[1].protocol: unknown protocol \"smtp\"",
		"listeners[1].address: \"nowhere\" is not ip:port",
		"passdb[0].path: is required",
		"passdb[1].addrs: at least one address",
		"passdb[2].uris: none",
		"passdb[3].driver: unknown driver \"mongo\" (supported: passwd-file, redis, sql, ldap)",
		"login_trusted_networks[1]: \"bogus/99\" is not a network",
		"login_source_ips[1]: \"no pe\" is neither an IP address nor a host name",
		"login_source_ips[2]: \"?\" is neither an IP address nor a host name",
		"login_proxy_timeout: must not be negative",
		"log.level: unknown level \"loud\"",
		"log.format: unknown format \"xml\"",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := ParseConfig([]byte("listeners: []\nlogin_trusted_network: [127.0.0.0/8]\n"), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "login_trusted_network") {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestDurationForms(t *testing.T) {
	for in, want := range map[string]time.Duration{"2s": 2 * time.Second, "500ms": 500 * time.Millisecond, "30": 30 * time.Second} {
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	if _, err := parseDuration("soon"); err == nil {
		t.Error("\"soon\" accepted")
	}
}

func TestNormalizeUser(t *testing.T) {
	for _, c := range []struct{ format, in, want string }{
		{"%u", "Alice@Example.ORG", "Alice@Example.ORG"},
		{"%Lu", "Alice@Example.ORG", "alice@example.org"},
		{"%n", "Alice@Example.ORG", "Alice"},
		{"%Ln", "Alice@Example.ORG", "alice"},
		{"%Ln", "Bob", "bob"},
	} {
		if got := normalizeUser(c.format, c.in); got != c.want {
			t.Errorf("%s(%q) = %q, want %q", c.format, c.in, got, c.want)
		}
	}
}

func TestIsOwnListener(t *testing.T) {
	srv := &Server{listeners: map[netip.AddrPort]*listener{
		netip.MustParseAddrPort("127.0.0.1:1143"): {},
		netip.MustParseAddrPort("0.0.0.0:143"):    {},
	}, hostAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	for target, want := range map[string]bool{
		"127.0.0.1:1143":   true,
		"127.0.0.2:1143":   false,
		"127.0.0.3:143":    true,  // the wildcard listener, on loopback
		"192.0.2.10:143":   true,  // the wildcard listener, on this host's address
		"198.51.100.7:143": false, // a backend elsewhere on the same port
	} {
		if got := srv.isOwnListener(netip.MustParseAddrPort(target)); got != want {
			t.Errorf("%s: %v, want %v", target, got, want)
		}
	}
}

func TestConfigPassdbChainSettings(t *testing.T) {
	const head = "listeners:\n  - {name: imap, protocol: imap, address: \"127.0.0.1:1143\"}\npassdb:\n"
	yml := head +
		"  - {driver: redis, addrs: [\"127.0.0.1:6379\"], result_success: continue-ok, result_failure: return-fail, result_internalfail: return}\n" +
		"  - {driver: redis, addrs: [\"127.0.0.1:6380\"], skip: unauthenticated, result_success: continue-fail}\n" +
		"  - {driver: redis, addrs: [\"127.0.0.1:6381\"], skip: never, result_internalfail: return-ok, result_failure: continue}\n"
	cfg, err := ParseConfig([]byte(yml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := []route.Link{
		{ResultSuccess: route.ActionContinueOK, ResultFailure: route.ActionReturnFail, ResultInternalFail: route.ActionReturn},
		{Skip: route.SkipUnauthenticated, ResultSuccess: route.ActionContinueFail},
		{ResultInternalFail: route.ActionReturnOK, ResultFailure: route.ActionContinue},
	}
	for i, p := range cfg.Passdb {
		l, err := chainLink(p, nil)
		if err != nil || l != want[i] {
			t.Errorf("passdb[%d]: %+v, %v; want %+v", i, l, err, want[i])
		}
	}

	yml = head +
		"  - {driver: redis, addrs: [\"127.0.0.1:6379\"]}\n" +
		"  - {driver: redis, addrs: [\"127.0.0.1:6380\"], skip: always, result_success: ok, result_failure: Continue, result_internalfail: continue_ok}\n"
	_, err = ParseConfig([]byte(yml), t.TempDir())
	if err == nil {
		t.Fatal("bad chain settings accepted")
	}
	for _, w := range []string{
		`passdb[1].skip: unknown value "always"`,
		`passdb[1].result_success: unknown value "ok" (return-ok, return, return-fail, continue, continue-ok, continue-fail)`,
		`passdb[1].result_failure: unknown value "Continue"`,
		`passdb[1].result_internalfail: unknown value "continue_ok"`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
	if strings.Contains(err.Error(), "passdb[0]") {
		t.Errorf("passdb[0] reported:\n%v", err)
	}
}
