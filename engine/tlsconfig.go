package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
)

// validateTLS checks the TLS settings; files are loaded too, so `doorman -t` catches a
// certificate that does not match its key.
func (c *Config) validateTLS(add func(path, format string, a ...any)) {
	switch c.SSL {
	case "no", "yes", "required":
	default:
		add("ssl", "%q is not no, yes or required", c.SSL)
	}
	if _, err := minVersion(c.SSLMinProtocol); err != nil {
		add("ssl_min_protocol", "%v", err)
	}
	if _, err := cipherSuites(c.SSLCipherSuites); err != nil {
		add("ssl_cipher_suites", "%v", err)
	}
	if _, err := curves(c.SSLCurveList); err != nil {
		add("ssl_curve_list", "%v", err)
	}
	if c.SSLHandshakeTimeout < 0 {
		add("ssl_handshake_timeout", "must not be negative")
	}
	if c.SSLMaxHandshakes < 0 {
		add("ssl_max_handshakes", "must not be negative")
	}
	needCert := c.SSL != "no"
	for i, l := range c.Listeners {
		if l.SSL {
			needCert = true
			if l.Protocol == "lmtp" {
				add(fmt.Sprintf("listeners[%d].ssl", i), "LMTP listeners have no TLS")
			}
			if c.SSL == "no" {
				add(fmt.Sprintf("listeners[%d].ssl", i), "needs ssl: yes (or required)")
			}
		}
	}
	if needCert {
		if c.SSLCert == "" || c.SSLKey == "" {
			add("ssl_cert", "ssl_cert and ssl_key are required when ssl is not \"no\"")
		} else if _, err := loadPair(c.Resolve(fileArg(c.SSLCert)), c.Resolve(fileArg(c.SSLKey))); err != nil {
			add("ssl_cert", "%v", err)
		}
	}
	for name, ln := range c.LocalName {
		if _, err := loadPair(c.Resolve(fileArg(ln.SSLCert)), c.Resolve(fileArg(ln.SSLKey))); err != nil {
			add("local_name."+name, "%v", err)
		}
	}
	if c.SSLSessionTicketKeys != "" {
		if _, err := loadTicketKeys(c.Resolve(fileArg(c.SSLSessionTicketKeys))); err != nil {
			add("ssl_session_ticket_keys", "%v", err)
		}
	}
	if c.SSLClientCAFile != "" {
		if _, err := loadPool(c.Resolve(fileArg(c.SSLClientCAFile))); err != nil {
			add("ssl_client_ca_file", "%v", err)
		}
	}
	if (c.SSLClientCert == "") != (c.SSLClientKey == "") {
		add("ssl_client_cert", "ssl_client_cert and ssl_client_key go together")
	} else if c.SSLClientCert != "" {
		if _, err := loadPair(c.Resolve(fileArg(c.SSLClientCert)), c.Resolve(fileArg(c.SSLClientKey))); err != nil {
			add("ssl_client_cert", "%v", err)
		}
	}
}

// fileArg accepts Dovecot's "<file" form of a file setting.
func fileArg(s string) string { return strings.TrimSpace(strings.TrimPrefix(s, "<")) }

func loadPair(cert, key string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", file)
	}
	return pool, nil
}

// loadTicketKeys reads one 32-byte key per line, in hex; blank lines and # comments are
// skipped.
func loadTicketKeys(file string) ([][32]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var keys [][32]byte
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("%s:%d: not 64 hex digits (a 32-byte key)", file, i+1)
		}
		keys = append(keys, [32]byte(b))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key in it", file)
	}
	return keys, nil
}

func minVersion(s string) (uint16, error) {
	switch s {
	case "TLSv1.2":
		return tls.VersionTLS12, nil
	case "TLSv1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q is not TLSv1.2 or TLSv1.3", s)
}

func cipherSuites(names []string) ([]uint16, error) {
	if len(names) == 0 {
		return nil, nil
	}
	known := map[string]uint16{}
	for _, cs := range tls.CipherSuites() {
		known[cs.Name] = cs.ID
	}
	var ids []uint16
	for _, n := range names {
		id, ok := known[n]
		if !ok {
			return nil, fmt.Errorf("unknown or insecure cipher suite %q", n)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func curves(names []string) ([]tls.CurveID, error) {
	var ids []tls.CurveID
	for _, n := range names {
		switch n {
		case "X25519MLKEM768":
			ids = append(ids, tls.X25519MLKEM768)
		case "X25519":
			ids = append(ids, tls.X25519)
		case "P-256", "prime256v1", "secp256r1":
			ids = append(ids, tls.CurveP256)
		case "P-384", "secp384r1":
			ids = append(ids, tls.CurveP384)
		case "P-521", "secp521r1":
			ids = append(ids, tls.CurveP521)
		default:
			return nil, fmt.Errorf("unknown group %q", n)
		}
	}
	return ids, nil
}

// certSet is the certificates in use; a reload swaps the whole set.
type certSet struct {
	def   *tls.Certificate
	exact map[string]*tls.Certificate // lower-case SNI name
	wild  map[string]*tls.Certificate // "example.com" for "*.example.com"
}

func (cs *certSet) pick(name string) *tls.Certificate {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if c, ok := cs.exact[name]; ok {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := cs.wild[name[i+1:]]; ok {
			return c
		}
	}
	return cs.def
}

// tlsState is the server's TLS: the client-facing config (certificates swapped on reload,
// ticket keys set on it), the backend-facing one, and the handshake slots.
type tlsState struct {
	cfg      *Config
	certs    atomic.Pointer[certSet]
	server   *tls.Config
	client   *tls.Config // backends, verified; clone and set ServerName per login
	slots    chan struct{}
	timeout  time.Duration
	required bool // ssl=required
}

func newTLSState(cfg *Config) (*tlsState, error) {
	ts := &tlsState{cfg: cfg, timeout: time.Duration(cfg.SSLHandshakeTimeout), required: cfg.SSL == "required"}
	n := cfg.SSLMaxHandshakes
	if n == 0 {
		n = 64 * runtime.NumCPU()
	}
	ts.slots = make(chan struct{}, n)
	if cfg.SSLCert != "" {
		if err := ts.loadCerts(); err != nil {
			return nil, err
		}
		minV, _ := minVersion(cfg.SSLMinProtocol)
		suites, _ := cipherSuites(cfg.SSLCipherSuites)
		groups, _ := curves(cfg.SSLCurveList)
		ts.server = &tls.Config{
			MinVersion:       minV,
			CipherSuites:     suites,
			CurvePreferences: groups,
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				return ts.certs.Load().pick(hello.ServerName), nil
			},
		}
		if err := ts.loadTicketKeys(); err != nil {
			return nil, err
		}
	}
	ts.client = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.SSLClientCAFile != "" {
		pool, err := loadPool(cfg.Resolve(fileArg(cfg.SSLClientCAFile)))
		if err != nil {
			return nil, fmt.Errorf("ssl_client_ca_file: %w", err)
		}
		ts.client.RootCAs = pool
	}
	if cfg.SSLClientCert != "" {
		c, err := loadPair(cfg.Resolve(fileArg(cfg.SSLClientCert)), cfg.Resolve(fileArg(cfg.SSLClientKey)))
		if err != nil {
			return nil, fmt.Errorf("ssl_client_cert: %w", err)
		}
		ts.client.Certificates = []tls.Certificate{*c}
	}
	return ts, nil
}

func (ts *tlsState) loadCerts() error {
	cfg := ts.cfg
	def, err := loadPair(cfg.Resolve(fileArg(cfg.SSLCert)), cfg.Resolve(fileArg(cfg.SSLKey)))
	if err != nil {
		return fmt.Errorf("ssl_cert: %w", err)
	}
	cs := &certSet{def: def, exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	for name, ln := range cfg.LocalName {
		c, err := loadPair(cfg.Resolve(fileArg(ln.SSLCert)), cfg.Resolve(fileArg(ln.SSLKey)))
		if err != nil {
			return fmt.Errorf("local_name %s: %w", name, err)
		}
		n := strings.ToLower(name)
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			cs.wild[rest] = c
		} else {
			cs.exact[n] = c
		}
	}
	ts.certs.Store(cs)
	return nil
}

func (ts *tlsState) loadTicketKeys() error {
	if ts.cfg.SSLSessionTicketKeys == "" {
		return nil
	}
	keys, err := loadTicketKeys(ts.cfg.Resolve(fileArg(ts.cfg.SSLSessionTicketKeys)))
	if err != nil {
		return fmt.Errorf("ssl_session_ticket_keys: %w", err)
	}
	ts.server.SetSessionTicketKeys(keys)
	return nil
}

// reload re-reads certificates and ticket keys (SIGHUP). On error the old ones stay: live
// sessions are never touched either way.
func (ts *tlsState) reload() error {
	if ts.server == nil {
		return nil
	}
	return errors.Join(ts.loadCerts(), ts.loadTicketKeys())
}

// enabled says whether clients can have TLS at all.
func (ts *tlsState) enabled() bool { return ts.server != nil && ts.cfg.SSL != "no" }

// acquire waits for a handshake slot.
func (ts *tlsState) acquire(ctx context.Context) bool {
	select {
	case ts.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (ts *tlsState) release() { <-ts.slots }

// backendConfig is the config for one backend login: verified against ssl_client_ca_file
// and the passdb's host name, or not at all for any-cert.
func (ts *tlsState) backendConfig(serverName string, anyCert bool) *tls.Config {
	c := ts.client.Clone()
	c.ServerName = serverName
	c.InsecureSkipVerify = anyCert
	return c
}
