package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"doorman/codec/sasl"
	"doorman/route"
)

// Config is Doorman's configuration: one YAML file. Settings keep Dovecot's names and
// meanings; their defaults are set in one place, Defaults.
type Config struct {
	Listeners []Listener `yaml:"listeners"`
	Passdb    []Passdb   `yaml:"passdb"`

	// login_trusted_networks: clients from these networks are "secured" (plaintext login
	// allowed without TLS) and, in a later issue, may override their address via ID/XCLIENT.
	LoginTrustedNetworks []string `yaml:"login_trusted_networks"`
	// haproxy_trusted_networks: the load balancers that may connect to haproxy listeners;
	// anyone else is disconnected at once.
	HAProxyTrustedNetworks []string `yaml:"haproxy_trusted_networks"`
	// haproxy_timeout: how long a PROXY header may take to arrive (Dovecot: 3s).
	HAProxyTimeout Duration `yaml:"haproxy_timeout"`
	// auth_proxy_self: more addresses that count as this server for passdb proxy_maybe.
	AuthProxySelf []string `yaml:"auth_proxy_self"`
	// login_source_ips: local addresses used round robin for backend connections.
	LoginSourceIPs []string `yaml:"login_source_ips"`
	// login_proxy_timeout: connect → successful backend login, per login (Dovecot: 30s).
	LoginProxyTimeout Duration `yaml:"login_proxy_timeout"`
	// login_proxy_max_disconnect_delay: when a backend drops many sessions, their clients
	// are disconnected spread over up to this long (Dovecot: 0, off).
	LoginProxyMaxDisconnectDelay Duration `yaml:"login_proxy_max_disconnect_delay"`
	// login_proxy_max_reconnects: retries after a retryable backend failure, 1s apart (Dovecot: 3).
	LoginProxyMaxReconnects *int `yaml:"login_proxy_max_reconnects"`
	// auth_failure_delay: how long a failed login waits before its reply (Dovecot: 2s).
	AuthFailureDelay Duration `yaml:"auth_failure_delay"`
	// login_greeting: the text of the greeting line.
	LoginGreeting string `yaml:"login_greeting"`
	// hostname: this host's name in SMTP greetings (Dovecot: the system's host name).
	Hostname string `yaml:"hostname"`
	// submission_max_mail_size: the SIZE advertised before login; 0 = no limit given.
	SubmissionMaxMailSize int64 `yaml:"submission_max_mail_size"`
	// managesieve_implementation_string, managesieve_sieve_capability and
	// managesieve_notify_capability: what the ManageSieve greeting announces before login.
	// Set the SIEVE list to the backends' own (Dovecot's advice for capabilities: the
	// proxy must not promise more than the backend does); "" = a Pigeonhole 0.5 default.
	ManagesieveImplementationString string `yaml:"managesieve_implementation_string"`
	ManagesieveSieveCapability      string `yaml:"managesieve_sieve_capability"`
	ManagesieveNotifyCapability     string `yaml:"managesieve_notify_capability"`
	// imap_id_retain: pass the client's own ID (up to 256 bytes, Dovecot's
	// LOGIN_MAX_CLIENT_ID_LEN) on to the backend, before the proxy's own ID fields.
	IMAPIDRetain bool `yaml:"imap_id_retain"`
	// imap_capability: pre-login capability list; "" = built-in, "+X Y" appends.
	IMAPCapability string `yaml:"imap_capability"`
	// disable_plaintext_auth: refuse LOGIN / AUTHENTICATE PLAIN on connections that are not
	// secured (Dovecot: yes).
	DisablePlaintextAuth *bool `yaml:"disable_plaintext_auth"`
	// login_timeout: pre-login inactivity limit (Dovecot's built-in 180s).
	LoginTimeout Duration `yaml:"login_timeout"`
	// auth_lookup_timeout: how long one passdb lookup may take before the login gets a
	// temporary failure.
	AuthLookupTimeout Duration `yaml:"auth_lookup_timeout"`
	// auth_username_format: how the user name is normalised before the lookup: "%Lu"
	// (lower case, Dovecot 2.3's default), "%u" (as typed), "%Ln" / "%n" (the part before
	// the @, lower case / as typed).
	AuthUsernameFormat string `yaml:"auth_username_format"`
	// auth_workers: concurrent password hash verifications (0 = number of CPUs).
	AuthWorkers int `yaml:"auth_workers"`
	// auth_cache_size: users kept in each redis passdb's auth cache: a number of entries,
	// or a size with a K/M/G suffix as Dovecot takes it (about 200 bytes an entry).
	// 0 = off (Dovecot's default).
	AuthCacheSize string `yaml:"auth_cache_size"`
	// auth_cache_ttl and auth_cache_negative_ttl: how long a found / unknown user stays
	// cached (Dovecot: 1h each).
	AuthCacheTTL         Duration `yaml:"auth_cache_ttl"`
	AuthCacheNegativeTTL Duration `yaml:"auth_cache_negative_ttl"`
	// vsite_reload_interval: every vsite is reloaded from Redis this often, besides the
	// pub/sub reloads (Doorman; default 60s).
	VsiteReloadInterval Duration `yaml:"vsite_reload_interval"`
	// auth_penalty: delay logins from an address after failed ones, counted in Redis so
	// every proxy host shares them (Dovecot's anvil auth penalty). Default: yes when a
	// redis passdb exists (the first one holds the counters); needs one.
	AuthPenalty *bool `yaml:"auth_penalty"`
	// auth_mechanisms: the SASL mechanisms offered to clients, space separated: plain,
	// login, xoauth2, oauthbearer (Dovecot's name; default "plain login").
	AuthMechanisms string `yaml:"auth_mechanisms"`
	// oauth2_introspection_url: when set, an XOAUTH2 / OAUTHBEARER token is checked here
	// (RFC 7662, POST token=...) before the login is routed; it must be active and its
	// oauth2_username_attribute claim must name the user. Unset: the passdb entry must
	// say nopassword (the token goes on to the backend, which checks it).
	OAuth2IntrospectionURL string `yaml:"oauth2_introspection_url"`
	// oauth2_client_id and oauth2_client_secret: HTTP basic credentials for the
	// introspection endpoint (RFC 7662 section 2.1); unset: none.
	OAuth2ClientID     string `yaml:"oauth2_client_id"`
	OAuth2ClientSecret string `yaml:"oauth2_client_secret"`
	// oauth2_username_attribute: the introspection claim that names the user (default
	// "username"; "sub" and "email" are common).
	OAuth2UsernameAttribute string `yaml:"oauth2_username_attribute"`
	// oauth2_timeout: how long an introspection request may take; past it the login gets
	// a temporary failure (default 2s).
	OAuth2Timeout Duration `yaml:"oauth2_timeout"`

	// ssl: "no" (no TLS: STARTTLS answered as not enabled), "yes" (STARTTLS offered, ssl
	// listeners), "required" (as "yes", and no login at all without TLS: loopback and
	// login_trusted_networks no longer count as secured, as Dovecot 2.4 has it).
	// Default: "yes" when ssl_cert is set, else "no".
	SSL string `yaml:"ssl"`
	// ssl_cert and ssl_key: PEM files of the default certificate (chain first) and its key.
	// Dovecot's "<file" form is accepted.
	SSLCert string `yaml:"ssl_cert"`
	SSLKey  string `yaml:"ssl_key"`
	// local_name: certificates by the name the client asks for (SNI), Dovecot's
	// `local_name name { ssl_cert ssl_key }`; "*.example.com" matches one label.
	LocalName map[string]LocalName `yaml:"local_name"`
	// ssl_min_protocol: TLSv1.2 (Dovecot 2.3's default) or TLSv1.3; TLSv1 and TLSv1.1 are
	// refused (crypto/tls still has them, no current client needs them).
	SSLMinProtocol string `yaml:"ssl_min_protocol"`
	// ssl_cipher_suites: the TLS 1.2 cipher suites, by their IANA names, in no particular
	// order (crypto/tls orders them itself; TLS 1.3's are not configurable). Empty = Go's
	// defaults (ECDHE with AES-GCM or ChaCha20 only).
	SSLCipherSuites []string `yaml:"ssl_cipher_suites"`
	// ssl_curve_list: key exchange groups in preference order (X25519MLKEM768, X25519,
	// P-256, P-384, P-521). Empty = Go's defaults.
	SSLCurveList []string `yaml:"ssl_curve_list"`
	// ssl_session_ticket_keys: a file of 32-byte session ticket keys, one per line in hex:
	// the first encrypts, all decrypt. Proxy hosts that share the file resume each
	// other's sessions; rotate by prepending a key and reloading (SIGHUP). Empty = a
	// random key per process, rotated by crypto/tls.
	SSLSessionTicketKeys string `yaml:"ssl_session_ticket_keys"`
	// ssl_handshake_timeout: how long a client's TLS handshake may take (Doorman).
	SSLHandshakeTimeout Duration `yaml:"ssl_handshake_timeout"`
	// ssl_max_handshakes: TLS handshakes run at once; more wait for a slot (Doorman).
	// 0 = 64 per CPU.
	SSLMaxHandshakes int `yaml:"ssl_max_handshakes"`
	// ssl_client_ca_file: the CAs that backends' certificates (passdb ssl=yes, starttls=yes)
	// are verified against; empty = the system's roots.
	SSLClientCAFile string `yaml:"ssl_client_ca_file"`
	// ssl_client_cert and ssl_client_key: the certificate Doorman shows to backends.
	SSLClientCert string `yaml:"ssl_client_cert"`
	SSLClientKey  string `yaml:"ssl_client_key"`

	// shutdown_timeout: after SIGTERM, how long relayed sessions may go on by themselves
	// once the listeners are closed (Doorman; default 30s); shutdown_spread: the sessions
	// still open then are disconnected spread over this long, so their clients do not
	// all reconnect elsewhere at once (default 30s).
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	ShutdownSpread  Duration `yaml:"shutdown_spread"`
	// memory_trim_interval: once a burst of logins is over, a garbage collection returns
	// the free memory to the kernel, at most once per this interval (Doorman; default
	// 10s; 0 = off). See memtrim.go.
	MemoryTrimInterval *Duration `yaml:"memory_trim_interval"`

	Relay RelayConfig `yaml:"relay"`
	Log   LogConfig   `yaml:"log"`
	Admin AdminConfig `yaml:"admin"`
	Fleet FleetConfig `yaml:"fleet"`

	// dir is where the file was read from; relative paths in it resolve against it.
	dir string
}

// Listener is one listening socket.
type Listener struct {
	Name     string `yaml:"name"`
	Protocol string `yaml:"protocol"`
	Address  string `yaml:"address"`
	// HAProxy (Dovecot's haproxy=yes): every connection must start with a PROXY v1 or v2
	// header, from a peer in haproxy_trusted_networks; the header's client address is the
	// client's address from then on.
	HAProxy bool `yaml:"haproxy"`
	// SSL (Dovecot's inet_listener ssl=yes): implicit TLS, the handshake comes first (after
	// the PROXY header on a haproxy listener). Needs ssl_cert.
	SSL bool `yaml:"ssl"`
}

// LocalName is one SNI name's certificate.
type LocalName struct {
	SSLCert string `yaml:"ssl_cert"`
	SSLKey  string `yaml:"ssl_key"`
}

// Passdb is one entry of the passdb list; fields by driver.
type Passdb struct {
	Driver string `yaml:"driver"`

	// Dovecot's chain settings (route.Link): skip = never | authenticated |
	// unauthenticated; result_* = return-ok | return | return-fail | continue |
	// continue-ok | continue-fail. Empty: Dovecot's defaults.
	Skip               string `yaml:"skip"`
	ResultSuccess      string `yaml:"result_success"`      // default return-ok
	ResultFailure      string `yaml:"result_failure"`      // default continue
	ResultInternalFail string `yaml:"result_internalfail"` // default continue

	// passwd-file
	Path          string `yaml:"path"`
	DefaultScheme string `yaml:"default_scheme"`

	// redis
	Addrs        []string `yaml:"addrs"`
	MasterName   string   `yaml:"master_name"`
	Username     string   `yaml:"username"`
	Password     string   `yaml:"password"`
	DB           int      `yaml:"db"`
	KeyPrefix    string   `yaml:"key_prefix"`
	DialTimeout  Duration `yaml:"dial_timeout"`
	ReadTimeout  Duration `yaml:"read_timeout"`
	WriteTimeout Duration `yaml:"write_timeout"`
	PoolTimeout  Duration `yaml:"pool_timeout"`
	PoolSize     int      `yaml:"pool_size"` // redis, ldap

	// sql and ldap: default_pass_scheme (sql: MD5, ldap: CRYPT, as Dovecot's) and
	// connect_timeout (sql: half of query_timeout, ldap: 1s).
	DefaultPassScheme string   `yaml:"default_pass_scheme"`
	ConnectTimeout    Duration `yaml:"connect_timeout"`

	// sql (dovecot-sql.conf.ext; sql_driver is its `driver`)
	SQLDriver     string   `yaml:"sql_driver"` // pgsql or mysql
	Connect       string   `yaml:"connect"`
	PasswordQuery string   `yaml:"password_query"`
	QueryTimeout  Duration `yaml:"query_timeout"` // default 1s
	MaxConns      int      `yaml:"max_conns"`     // per host; default maxconns= of connect, else 5

	// ldap (dovecot-ldap.conf.ext)
	URIs           Words    `yaml:"uris"` // a list, or Dovecot's space-separated string
	DN             string   `yaml:"dn"`
	DNPass         string   `yaml:"dnpass"`
	Base           string   `yaml:"base"`
	Scope          string   `yaml:"scope"`
	PassFilter     string   `yaml:"pass_filter"`
	PassAttrs      string   `yaml:"pass_attrs"`
	AuthBind       bool     `yaml:"auth_bind"`
	AuthBindUserDN string   `yaml:"auth_bind_userdn"`
	TLS            bool     `yaml:"tls"`
	TLSCACertFile  string   `yaml:"tls_ca_cert_file"`
	TLSRequireCert string   `yaml:"tls_require_cert"`
	Timeout        Duration `yaml:"timeout"` // a whole lookup; default 2s
	VsiteBase      string   `yaml:"vsite_base"`
	VsiteFilter    string   `yaml:"vsite_filter"`
	VsiteAttrs     string   `yaml:"vsite_attrs"`
	VsiteCacheTTL  Duration `yaml:"vsite_cache_ttl"` // default 10s; negative: no cache
}

// Words reads a YAML list of strings, or one string of space-separated words (Dovecot's
// `uris = ldap://a ldap://b`).
type Words []string

func (w *Words) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*w = strings.Fields(n.Value)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*w = l
	return nil
}

// sqlConfig is the route configuration of an sql passdb.
func (p *Passdb) sqlConfig() route.SQLConfig {
	return route.SQLConfig{
		Driver:         p.SQLDriver,
		Connect:        p.Connect,
		PasswordQuery:  p.PasswordQuery,
		DefaultScheme:  p.DefaultPassScheme,
		QueryTimeout:   time.Duration(p.QueryTimeout),
		ConnectTimeout: time.Duration(p.ConnectTimeout),
		MaxConns:       p.MaxConns,
	}
}

// ldapConfig is the route configuration of an ldap passdb; relative file names resolve
// against the configuration's directory.
func (c *Config) ldapConfig(p *Passdb) route.LDAPConfig {
	return route.LDAPConfig{
		URIs:              p.URIs,
		DN:                p.DN,
		DNPass:            p.DNPass,
		Base:              p.Base,
		Scope:             p.Scope,
		PassFilter:        p.PassFilter,
		PassAttrs:         p.PassAttrs,
		AuthBind:          p.AuthBind,
		AuthBindUserDN:    p.AuthBindUserDN,
		TLS:               p.TLS,
		TLSCACertFile:     c.Resolve(p.TLSCACertFile),
		TLSRequireCert:    p.TLSRequireCert,
		DefaultPassScheme: p.DefaultPassScheme,
		Timeout:           time.Duration(p.Timeout),
		ConnectTimeout:    time.Duration(p.ConnectTimeout),
		PoolSize:          p.PoolSize,
		VsiteBase:         p.VsiteBase,
		VsiteFilter:       p.VsiteFilter,
		VsiteAttrs:        p.VsiteAttrs,
		VsiteCacheTTL:     time.Duration(p.VsiteCacheTTL),
	}
}

// routeErrors turns the errors of route.NewSQL / route.NewLDAP ("route: ldap: pass_filter:
// ...") into errors on the passdb's keys ("passdb[0].pass_filter: ..."). A message that
// names no key is reported on the passdb itself.
func routeErrors(path, prefix string, err error, keys ...string) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		msg := strings.TrimPrefix(e.Error(), prefix)
		at := path
		for _, k := range keys {
			if rest, ok := strings.CutPrefix(msg, k+": "); ok {
				at, msg = path+"."+k, rest
				break
			}
		}
		out = append(out, fmt.Errorf("%s: %s", at, msg))
	}
	return out
}

// RelayConfig sizes the splice relay.
type RelayConfig struct {
	Workers  int `yaml:"workers"`   // 0 = number of CPUs
	PipeSize int `yaml:"pipe_size"` // bytes; 0 = 256 KiB
	// The kernel memory a client that stops reading can pin (relay.Config has the why):
	// TCP_NOTSENT_LOWAT on the client socket and SO_RCVBUF on the backend socket. Bytes;
	// 0 = 128 KiB; -1 = not set (the kernel's own, which lets both grow to several MB).
	NotSentLowat  int `yaml:"notsent_lowat"`
	BackendRcvBuf int `yaml:"backend_rcvbuf"`
}

// AdminConfig is the local HTTP admin API: /metrics, /sessions, /kick. Off when Address
// is empty.
type AdminConfig struct {
	Address string `yaml:"address"` // "ip:port" or "unix:/path"
	// Token (or the first line of TokenFile) is the bearer token every request needs,
	// except /metrics when MetricsPublic is set.
	Token         string `yaml:"token"`
	TokenFile     string `yaml:"token_file"`
	MetricsPublic bool   `yaml:"metrics_public"`
}

// LogConfig selects zap's level and encoding.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or console
}

// Duration reads "2s", "500ms", or a bare integer meaning seconds (Dovecot's habit).
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return v, nil
}

// Defaults fills every unset setting with Dovecot's default (or Doorman's where Dovecot
// has no such setting). This is the one place defaults live.
func (c *Config) Defaults() {
	if c.LoginProxyTimeout == 0 {
		c.LoginProxyTimeout = Duration(30 * time.Second)
	}
	if c.LoginProxyMaxReconnects == nil {
		n := 3
		c.LoginProxyMaxReconnects = &n
	}
	if c.AuthFailureDelay == 0 {
		c.AuthFailureDelay = Duration(2 * time.Second)
	}
	if c.LoginGreeting == "" {
		c.LoginGreeting = "Doorman ready."
	}
	if c.DisablePlaintextAuth == nil {
		t := true
		c.DisablePlaintextAuth = &t
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
		if c.Hostname == "" {
			c.Hostname = "localhost"
		}
	}
	if c.AuthUsernameFormat == "" {
		c.AuthUsernameFormat = "%Lu"
	}
	if c.HAProxyTimeout == 0 {
		c.HAProxyTimeout = Duration(3 * time.Second)
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = Duration(180 * time.Second)
	}
	if c.AuthLookupTimeout == 0 {
		c.AuthLookupTimeout = Duration(5 * time.Second)
	}
	if c.AuthCacheSize == "" {
		c.AuthCacheSize = "0"
	}
	if c.AuthCacheTTL == 0 {
		c.AuthCacheTTL = Duration(time.Hour)
	}
	if c.AuthCacheNegativeTTL == 0 {
		c.AuthCacheNegativeTTL = Duration(time.Hour)
	}
	if c.VsiteReloadInterval == 0 {
		c.VsiteReloadInterval = Duration(60 * time.Second)
	}
	if c.AuthPenalty == nil {
		on := c.hasRedis()
		c.AuthPenalty = &on
	}
	if c.AuthMechanisms == "" {
		c.AuthMechanisms = "plain login"
	}
	if c.OAuth2UsernameAttribute == "" {
		c.OAuth2UsernameAttribute = "username"
	}
	if c.OAuth2Timeout == 0 {
		c.OAuth2Timeout = Duration(2 * time.Second)
	}
	if c.SSL == "" {
		c.SSL = "no"
		if c.SSLCert != "" {
			c.SSL = "yes"
		}
	}
	if c.SSLMinProtocol == "" {
		c.SSLMinProtocol = "TLSv1.2"
	}
	if c.SSLHandshakeTimeout == 0 {
		c.SSLHandshakeTimeout = Duration(30 * time.Second)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(30 * time.Second)
	}
	if c.ShutdownSpread == 0 {
		c.ShutdownSpread = Duration(30 * time.Second)
	}
	if c.MemoryTrimInterval == nil {
		d := Duration(10 * time.Second)
		c.MemoryTrimInterval = &d
	}
	c.defaultsFleet()
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	for i := range c.Passdb {
		p := &c.Passdb[i]
		if p.Driver == "redis" && p.KeyPrefix == "" {
			p.KeyPrefix = "doorman:"
		}
	}
}

// mechanismNames splits auth_mechanisms (spaces or commas, as Dovecot takes it).
func (c *Config) mechanismNames() []string {
	return strings.FieldsFunc(c.AuthMechanisms, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
}

func (c *Config) hasRedis() bool {
	for _, p := range c.Passdb {
		if p.Driver == "redis" {
			return true
		}
	}
	return false
}

// knownProtocol says whether a listener may have this protocol: the login-phase protocols
// of the engine's table, and LMTP.
func knownProtocol(p string) bool {
	_, ok := protocols[p]
	return ok || p == "lmtp"
}

// Validate reports every error in the configuration, each with its key path.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
	}
	if len(c.Listeners) == 0 {
		add("listeners", "at least one listener is required")
	}
	names := map[string]bool{}
	addrs := map[string]bool{}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		if l.Name == "" {
			add(p+".name", "is required")
		} else if names[l.Name] {
			add(p+".name", "duplicate listener name %q", l.Name)
		}
		names[l.Name] = true
		if !knownProtocol(l.Protocol) {
			add(p+".protocol", "unknown protocol %q (supported: imap, pop3, submission, managesieve, lmtp)", l.Protocol)
		}
		if _, err := netip.ParseAddrPort(l.Address); err != nil {
			add(p+".address", "%q is not ip:port", l.Address)
		} else if addrs[l.Address] {
			add(p+".address", "duplicate address %q", l.Address)
		}
		addrs[l.Address] = true
	}
	if len(c.Passdb) == 0 {
		add("passdb", "at least one passdb is required")
	}
	for i, p := range c.Passdb {
		path := fmt.Sprintf("passdb[%d]", i)
		switch p.Driver {
		case "passwd-file":
			if p.Path == "" {
				add(path+".path", "is required for driver passwd-file")
			} else if _, err := os.Stat(c.Resolve(p.Path)); err != nil {
				add(path+".path", "%v", err)
			}
		case "redis":
			if len(p.Addrs) == 0 {
				add(path+".addrs", "at least one address is required for driver redis")
			}
		case "sql":
			errs = append(errs, c.validateSQL(path, &p)...)
		case "ldap":
			errs = append(errs, c.validateLDAP(path, &p)...)
		case "":
			add(path+".driver", "is required")
		default:
			add(path+".driver", "unknown driver %q (supported: passwd-file, redis, sql, ldap)", p.Driver)
		}
		if _, err := route.ParseSkip(p.Skip); err != nil {
			add(path+".skip", "%v", err)
		}
		for _, r := range []struct{ key, v string }{
			{"result_success", p.ResultSuccess},
			{"result_failure", p.ResultFailure},
			{"result_internalfail", p.ResultInternalFail},
		} {
			if _, err := route.ParseAction(r.v); err != nil {
				add(path+"."+r.key, "%v", err)
			}
		}
	}
	for i, n := range c.LoginTrustedNetworks {
		if _, err := parsePrefix(n); err != nil {
			add(fmt.Sprintf("login_trusted_networks[%d]", i), "%v", err)
		}
	}
	for i, n := range c.HAProxyTrustedNetworks {
		if _, err := parsePrefix(n); err != nil {
			add(fmt.Sprintf("haproxy_trusted_networks[%d]", i), "%v", err)
		}
	}
	for i, l := range c.Listeners {
		if l.HAProxy && len(c.HAProxyTrustedNetworks) == 0 {
			add(fmt.Sprintf("listeners[%d].haproxy", i), "needs haproxy_trusted_networks (no peer could connect)")
		}
	}
	for i, s := range c.AuthProxySelf {
		if _, err := netip.ParseAddr(s); err != nil {
			add(fmt.Sprintf("auth_proxy_self[%d]", i), "%q is not an IP address", s)
		}
	}
	for i, s := range c.LoginSourceIPs {
		// An IP address, a host name, or "?name" (only this host's addresses of it).
		if name := strings.TrimPrefix(s, "?"); name == "" || strings.ContainsAny(name, " /") {
			add(fmt.Sprintf("login_source_ips[%d]", i), "%q is neither an IP address nor a host name", s)
		}
	}
	if *c.LoginProxyMaxReconnects < 0 {
		add("login_proxy_max_reconnects", "must not be negative")
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"login_proxy_timeout", c.LoginProxyTimeout},
		{"auth_failure_delay", c.AuthFailureDelay},
		{"login_timeout", c.LoginTimeout},
		{"haproxy_timeout", c.HAProxyTimeout},
		{"login_proxy_max_disconnect_delay", c.LoginProxyMaxDisconnectDelay},
		{"auth_lookup_timeout", c.AuthLookupTimeout},
		{"auth_cache_ttl", c.AuthCacheTTL},
		{"auth_cache_negative_ttl", c.AuthCacheNegativeTTL},
		{"vsite_reload_interval", c.VsiteReloadInterval},
		{"memory_trim_interval", *c.MemoryTrimInterval},
	} {
		if d.v < 0 {
			add(d.key, "must not be negative")
		}
	}
	if _, err := route.ParseCacheSize(c.AuthCacheSize); err != nil {
		add("auth_cache_size", "%v", err)
	}
	if _, err := sasl.ParseMechanisms(c.mechanismNames()); err != nil {
		add("auth_mechanisms", "%v", err)
	}
	if u := c.OAuth2IntrospectionURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			add("oauth2_introspection_url", "%q is not an http or https URL", u)
		}
	}
	if c.OAuth2Timeout < 0 {
		add("oauth2_timeout", "must not be negative")
	}
	if *c.AuthPenalty && !c.hasRedis() {
		add("auth_penalty", "needs a redis passdb to keep the counters in")
	}
	switch c.AuthUsernameFormat {
	case "%Lu", "%u", "%Ln", "%n":
	default:
		add("auth_username_format", "%q is not supported (%%Lu, %%u, %%Ln or %%n)", c.AuthUsernameFormat)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "unknown level %q (debug, info, warn, error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "unknown format %q (json, console)", c.Log.Format)
	}
	c.validateTLS(add)
	if c.Relay.PipeSize < 0 || c.Relay.Workers < 0 {
		add("relay", "workers and pipe_size must not be negative")
	}
	if c.Relay.NotSentLowat < -1 {
		add("relay.notsent_lowat", "must be -1 (not set), 0 (default) or a size in bytes")
	}
	if c.Relay.BackendRcvBuf < -1 {
		add("relay.backend_rcvbuf", "must be -1 (not set), 0 (default) or a size in bytes")
	}
	c.validateAdmin(add)
	c.validateFleet(add)
	return errors.Join(errs...)
}

// validateSQL checks an sql passdb by building it (route.NewSQL parses the connect string
// and the query but does not connect), so `doorman -t` catches a bad query.
func (c *Config) validateSQL(path string, p *Passdb) []error {
	var errs []error
	add := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", path, key, fmt.Sprintf(format, a...)))
	}
	switch p.SQLDriver {
	case "pgsql", "mysql":
	case "":
		add("sql_driver", "is required for driver sql (pgsql or mysql)")
	default:
		add("sql_driver", "unknown sql driver %q (pgsql or mysql)", p.SQLDriver)
	}
	if strings.TrimSpace(p.PasswordQuery) == "" {
		add("password_query", "is required for driver sql")
	}
	if p.DefaultScheme != "" {
		add("default_scheme", "is passwd-file's; sql takes default_pass_scheme")
	}
	if p.DefaultPassScheme != "" && !route.SchemeSupported(p.DefaultPassScheme) {
		add("default_pass_scheme", "unknown scheme %q", p.DefaultPassScheme)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"query_timeout", p.QueryTimeout}, {"connect_timeout", p.ConnectTimeout}} {
		if d.v < 0 {
			add(d.key, "must not be negative")
		}
	}
	if p.MaxConns < 0 {
		add("max_conns", "must not be negative")
	}
	if len(errs) > 0 {
		return errs
	}
	db, err := route.NewSQL(p.sqlConfig())
	if err != nil {
		return routeErrors(path, "route: sql: ", err, "password_query", "connect")
	}
	_ = db.Close()
	return nil
}

// validateLDAP checks an ldap passdb by building it (route.NewLDAP checks every setting,
// the filters included, but does not connect).
func (c *Config) validateLDAP(path string, p *Passdb) []error {
	if p.DefaultScheme != "" {
		return []error{fmt.Errorf("%s.default_scheme: is passwd-file's; ldap takes default_pass_scheme", path)}
	}
	db, err := route.NewLDAP(c.ldapConfig(p))
	if err != nil {
		return routeErrors(path, "route: ldap: ", err, "uris", "base", "scope", "pass_filter",
			"pass_attrs", "auth_bind_userdn", "vsite_base", "vsite_filter", "vsite_attrs",
			"default_pass_scheme", "tls_require_cert", "tls_ca_cert_file")
	}
	_ = db.Close()
	return nil
}

// Resolve makes a path from the file relative to the file's directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// parsePrefix accepts a CIDR or a bare address (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not a network", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a network", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseConfig reads a configuration from YAML bytes, fills defaults and validates it.
// dir is the directory relative paths resolve against.
func ParseConfig(data []byte, dir string) (*Config, error) {
	c := &Config{dir: dir}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, err
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadConfig reads and validates the file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(data, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
