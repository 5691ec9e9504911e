// Package testenv starts private, real backends (Dovecot: IMAP, and on
// request POP3, submission, LMTP and ManageSieve) on loopback ports for tests
// and for `make run`: by default on 127.0.0.1, or on another loopback address
// (DovecotOptions.ListenIP), where a dev backend can use the standard ports.
//
// Every instance has its own instance_name, base_dir, state_dir, run folder
// and ports (or listen address), so several instances can run side by side
// and none of them touches the system Dovecot instance (/etc/dovecot,
// /run/dovecot, /var/lib/dovecot; ports 143/993 unless asked for
// explicitly).
//
// Requirements: the Debian packages dovecot-core and dovecot-imapd, and root
// (the backend stores mail as the `mail` user, uid 8); for the other
// protocols dovecot-pop3d, dovecot-submissiond, dovecot-lmtpd,
// dovecot-managesieved and dovecot-sieve (see AvailableProtocols).
package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// User is one account of the backend's passwd-file.
type User struct{ Name, Password string }

// DovecotOptions configures StartDovecot.
type DovecotOptions struct {
	// Dir is the run folder (created if missing). "" creates a new temporary
	// folder, which Stop removes again unless KeepDir is set.
	Dir string
	// ListenIP is the loopback address Dovecot listens on (every
	// protocol), e.g. "127.0.0.2"; "" means "127.0.0.1". On an address
	// of its own a backend can use the standard ports (143, 110, ...).
	// The SMTP sink that submission relays to stays on 127.0.0.1.
	ListenIP string
	// IMAPPort is the plain IMAP port on ListenIP; 0 picks a free one.
	IMAPPort int
	// Protocols are the protocols to serve besides IMAP, which is always
	// served: "pop3", "submission", "lmtp" and "sieve" (ManageSieve);
	// "imap" may be listed too. nil means just IMAP (the fastest start).
	// The protocols' packages must be installed (AvailableProtocols).
	Protocols []string
	// Plain-text ports on ListenIP of the other protocols, used only if
	// the protocol is enabled; 0 picks a free one.
	POP3Port, SubmissionPort, LMTPPort, SievePort int
	// LMTPUsernameFormat is auth_username_format for LMTP recipients. ""
	// means "%Ln": RCPT TO:<alice@example.org> delivers to the passwd-file
	// user "alice" (the lowercased local part; users here have no domain).
	LMTPUsernameFormat string
	// Users are written to the backend's passwd-file (scheme PLAIN). Names
	// and passwords must not contain ':' or line breaks.
	Users []User
	// MasterUser and MasterPass, if set, enable master logins: LOGIN
	// "user*master" and SASL PLAIN with authzid=user, authcid=master.
	MasterUser, MasterPass string
	// TrustedNetworks is login_trusted_networks (ID x-originating-ip and
	// friends are accepted from there). "" means "127.0.0.0/8"; "none"
	// trusts no one (see SSL: Dovecot counts trusted clients as secure).
	TrustedNetworks string
	// SSL is Dovecot's ssl setting: "" (or "no") serves plain text only,
	// "yes" adds STARTTLS (plain-text logins stay allowed:
	// disable_plaintext_auth = no), "required" refuses logins on
	// connections that Dovecot does not count as secure.
	//
	// Dovecot 2.3 counts as secure not only TLS but also a client whose
	// IP is the local IP of the connection (127.0.0.1 → 127.0.0.1) or is
	// in login_trusted_networks: such logins succeed even with
	// "required". For a backend that makes a client on 127.0.0.1 use TLS,
	// set ListenIP to another loopback address (a connection to 127.0.0.X
	// comes from 127.0.0.1 unless bound) and TrustedNetworks to "none".
	// A plain-text login there gets, in IMAP (whose greeting then
	// advertises LOGINDISABLED), for LOGIN an untagged "* BAD [ALERT]
	// Plaintext authentication not allowed without SSL/TLS, but your
	// client did it anyway. If anyone was listening, the password was
	// exposed." and "NO [PRIVACYREQUIRED] Plaintext authentication
	// disallowed on non-secure (SSL/TLS) connections.", for AUTHENTICATE
	// "NO [PRIVACYREQUIRED] Authentication not allowed until SSL/TLS is
	// enabled."; in POP3 (already for USER) "-ERR [AUTH] Plaintext
	// authentication disallowed on non-secure (SSL/TLS) connections.";
	// in submission (EHLO without AUTH) "530 5.7.0 TLS required.";
	// ManageSieve: NO (ENCRYPT-NEEDED). LMTP (no login) still accepts
	// recipients.
	SSL string
	// SSLCert and SSLKey are the PEM files of the server certificate
	// (with any intermediates) and its key, required unless SSL is ""
	// or "no" (e.g. from CA.Issue). Dovecot reads them when it starts.
	SSLCert, SSLKey string
	// TLSPorts also opens implicit-TLS listeners on free ports of
	// ListenIP: imaps, and pop3s and submissions if those protocols are
	// enabled (LMTP and ManageSieve have none). Needs SSL.
	TLSPorts bool
	// OAuth2IntrospectionURL, if set, adds Dovecot's oauth2 passdb (after
	// the passwd-file one) checking XOAUTH2 and OAUTHBEARER tokens at this
	// RFC 7662 endpoint (introspection_mode = post, username_attribute =
	// username, active_attribute = active), and offers those mechanisms:
	// auth_mechanisms = plain login xoauth2 oauthbearer. Its settings go to
	// dovecot-oauth2.conf.ext in Dir.
	OAuth2IntrospectionURL string
	// ExtraConfig is appended verbatim to the generated dovecot.conf.
	ExtraConfig string
	// StartTimeout bounds the wait for the first greeting; 0 means 30s.
	StartTimeout time.Duration
	// AuthPenalty keeps Dovecot's per-IP delay after failed logins (anvil
	// auth penalty, up to 15 s, also delaying later good logins from that
	// IP). Off by default: auth_failure_delay = 0 is not enough for that.
	AuthPenalty bool
	// KeepDir keeps a temporary Dir (Dir == "") after Stop.
	KeepDir bool
}

// Dovecot is a running private Dovecot instance.
type Dovecot struct {
	Dir      string // run folder
	IMAPAddr string // "127.0.0.1:NNNN" (ListenIP:port)

	// Addresses of the other protocols, "" unless enabled in
	// DovecotOptions.Protocols.
	POP3Addr       string
	SubmissionAddr string // SMTP submission (AUTH PLAIN/LOGIN; STARTTLS if DovecotOptions.SSL), relays to Sink
	LMTPAddr       string // LMTP delivering into the users' maildirs
	SieveAddr      string // ManageSieve

	// Implicit-TLS addresses, "" unless DovecotOptions.TLSPorts (and for
	// POP3 and submission, the protocol) is enabled.
	IMAPSAddr       string // IMAP over TLS (imaps)
	POP3SAddr       string // POP3 over TLS (pop3s)
	SubmissionsAddr string // submission over TLS (submissions, RFC 8314)

	// Sink receives what the submission service relays; nil unless
	// submission is enabled. Stop closes it.
	Sink *SMTPSink
	// Protocols are the served protocols, "imap" first.
	Protocols []string

	LogPath  string // log file (errors, info and debug lines), e.g. "rip=" of logins
	ConfPath string // generated dovecot.conf
	BaseDir  string // Dovecot's base_dir (sockets, master.pid)
	Instance string // instance_name
	PID      int    // master process id

	listenIP  string // DovecotOptions.ListenIP, "127.0.0.1" if unset
	removeDir bool   // Dir was created by StartDovecot
	cmd       *exec.Cmd
	done      chan struct{} // closed when the master has exited and was reaped
	waitErr   error

	stopOnce sync.Once
	stopErr  error
}

// libexecDirs are where Debian and other distributions put Dovecot's helper
// binaries (imap, imap-login, ...).
var libexecDirs = []string{"/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot"}

// Available returns nil if a private Dovecot IMAP backend can be started
// here, or an error saying what is missing.
func Available() error {
	var missing []string
	for _, bin := range []string{"dovecot", "doveadm"} {
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("testenv: dovecot not installed (%s not found): apt-get install -y dovecot-core dovecot-imapd", strings.Join(missing, ", "))
	}
	if libexecDir() == "" {
		return errors.New("testenv: dovecot IMAP server not installed (no imap/imap-login binary): apt-get install -y dovecot-imapd")
	}
	for _, name := range []string{"mail", "dovenull", "dovecot"} {
		if _, err := user.Lookup(name); err != nil {
			return fmt.Errorf("testenv: system user %q missing (normally created by the dovecot-core package): %v", name, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("testenv: a private dovecot backend must be started as root (it stores mail as user mail)")
	}
	return nil
}

// protocolNeeds lists, per protocol, the helper binaries (in libexecDir) and
// the Debian packages that provide them.
var protocolNeeds = map[string]struct {
	bins []string
	pkgs string
}{
	"imap":       {[]string{"imap", "imap-login"}, "dovecot-imapd"},
	"pop3":       {[]string{"pop3", "pop3-login"}, "dovecot-pop3d"},
	"submission": {[]string{"submission", "submission-login"}, "dovecot-submissiond"},
	"lmtp":       {[]string{"lmtp"}, "dovecot-lmtpd"},
	"sieve":      {[]string{"managesieve", "managesieve-login"}, "dovecot-managesieved dovecot-sieve"},
}

// protocolOrder is the order of Dovecot.Protocols and of the config.
var protocolOrder = []string{"imap", "pop3", "submission", "lmtp", "sieve"}

// normProtocols validates protocols and returns them in protocolOrder,
// with "imap" always first and without duplicates.
func normProtocols(protocols []string) ([]string, error) {
	want := map[string]bool{"imap": true}
	for _, p := range protocols {
		p = strings.ToLower(strings.TrimSpace(p))
		if _, ok := protocolNeeds[p]; !ok {
			return nil, fmt.Errorf("testenv: unknown protocol %q (want imap, pop3, submission, lmtp or sieve)", p)
		}
		want[p] = true
	}
	var out []string
	for _, p := range protocolOrder {
		if want[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// AvailableProtocols is Available plus a check that the helper binaries of
// the given protocols ("pop3", "submission", "lmtp", "sieve"; "imap" is
// always checked) are installed.
func AvailableProtocols(protocols ...string) error {
	if err := Available(); err != nil {
		return err
	}
	protos, err := normProtocols(protocols)
	if err != nil {
		return err
	}
	dir := libexecDir()
	var missing, pkgs []string
	for _, p := range protos {
		need := protocolNeeds[p]
		for _, bin := range need.bins {
			if !fileExists(filepath.Join(dir, bin)) {
				missing = append(missing, p)
				pkgs = append(pkgs, need.pkgs)
				break
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("testenv: dovecot %s not installed (no helper binaries in %s): apt-get install -y %s",
			strings.Join(missing, ", "), dir, strings.Join(pkgs, " "))
	}
	return nil
}

// sievePlugin reports whether Pigeonhole's Sieve plugin for LMTP is
// installed (package dovecot-sieve).
func sievePlugin() bool {
	return fileExists(filepath.Join(libexecDir(), "modules", "lib90_sieve_plugin.so"))
}

func libexecDir() string {
	for _, d := range libexecDirs {
		if fileExists(filepath.Join(d, "imap")) && fileExists(filepath.Join(d, "imap-login")) {
			return d
		}
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// lookPath finds a binary in PATH or in the sbin folders (which are often
// missing from PATH of non-login shells).
func lookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(d, bin)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", bin)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) { return freePortOn(defaultListenIP) }

// freePortOn returns a TCP port on ip that was free a moment ago.
func freePortOn(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// defaultListenIP is where Dovecot listens unless DovecotOptions.ListenIP
// says otherwise.
const defaultListenIP = "127.0.0.1"

// listenIP validates DovecotOptions.ListenIP and returns it in canonical
// form ("" → defaultListenIP). Only loopback addresses are accepted: the
// backend has well-known passwords and plain-text logins.
func listenIP(s string) (string, error) {
	if s == "" {
		return defaultListenIP, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return "", fmt.Errorf("testenv: ListenIP %q is not an IP address", s)
	}
	if !ip.IsLoopback() {
		return "", fmt.Errorf("testenv: ListenIP %s is not a loopback address", s)
	}
	return ip.String(), nil
}

// StartDovecot writes a configuration into opts.Dir, starts `dovecot -F -c
// CONF` and returns once the IMAP port has greeted with "* OK" and every
// other enabled protocol has greeted too.
func StartDovecot(opts DovecotOptions) (*Dovecot, error) {
	protos, err := normProtocols(opts.Protocols)
	if err != nil {
		return nil, err
	}
	ip, err := listenIP(opts.ListenIP)
	if err != nil {
		return nil, err
	}
	if err := checkSSL(&opts); err != nil {
		return nil, err
	}
	if err := AvailableProtocols(protos...); err != nil {
		return nil, err
	}
	d := &Dovecot{Protocols: protos, listenIP: ip}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "doorman-dovecot-")
		if err != nil {
			return nil, err
		}
		d.removeDir = !opts.KeepDir
		opts.Dir = dir
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	d.Dir = dir
	fail := func(err error) (*Dovecot, error) {
		if d.Sink != nil {
			d.Sink.Close()
		}
		if d.removeDir {
			os.RemoveAll(d.Dir)
		}
		return nil, err
	}
	if err := prepareDir(dir); err != nil {
		return fail(err)
	}
	d.ConfPath = filepath.Join(dir, "dovecot.conf")
	d.LogPath = filepath.Join(dir, "dovecot.log")
	d.Instance, d.BaseDir = instanceNames(dir)
	if err := stopStale(d.BaseDir); err != nil {
		return fail(err)
	}
	if err := writeAuthFiles(dir, opts); err != nil {
		return fail(err)
	}

	if d.has("submission") {
		if d.Sink, err = StartSMTPSink(); err != nil {
			return fail(err)
		}
	}

	// the ports asked for, per listener (0: pick a free one)
	asked := map[string]int{"imap": opts.IMAPPort, "pop3": opts.POP3Port,
		"submission": opts.SubmissionPort, "lmtp": opts.LMTPPort, "sieve": opts.SievePort}
	listeners := append([]string(nil), protos...)
	if opts.TLSPorts {
		for _, p := range protos {
			if l := tlsListener[p]; l != "" {
				listeners = append(listeners, l)
			}
		}
	}
	tries := 1
	portOf := map[int]string{}
	for _, p := range listeners {
		if asked[p] == 0 {
			tries = 3 // a free port may be taken between FreePort and bind
		} else if q, dup := portOf[asked[p]]; dup {
			return fail(fmt.Errorf("testenv: port %d given for both %s and %s", asked[p], q, p))
		} else {
			portOf[asked[p]] = p
		}
	}
	var lastErr error
	for i := 0; i < tries; i++ {
		ports := map[string]int{}
		taken := map[int]bool{}
		for _, p := range listeners {
			if asked[p] != 0 {
				taken[asked[p]] = true
			}
		}
		for _, p := range listeners {
			port := asked[p]
			for port == 0 || (asked[p] == 0 && taken[port]) {
				if port, err = freePortOn(d.listenIP); err != nil {
					return fail(err)
				}
			}
			taken[port] = true
			ports[p] = port
		}
		d.setAddrs(ports)
		if err := os.WriteFile(d.ConfPath, []byte(d.config(opts, ports)), 0o644); err != nil {
			return fail(err)
		}
		if lastErr = d.start(opts); lastErr == nil {
			return d, nil
		}
		if !strings.Contains(lastErr.Error(), "in use") {
			break
		}
	}
	return fail(lastErr)
}

// tlsListener names the implicit-TLS listener of a protocol (TLSPorts).
var tlsListener = map[string]string{"imap": "imaps", "pop3": "pop3s", "submission": "submissions"}

// listenerOrder is the order in which start greets the listeners: the
// plain ones as protocolOrder, each followed by its implicit-TLS one.
var listenerOrder = []string{"imap", "imaps", "pop3", "pop3s", "submission", "submissions", "lmtp", "sieve"}

// checkSSL validates the SSL options and makes the file names absolute
// (dovecot runs in the run folder).
func checkSSL(opts *DovecotOptions) error {
	switch opts.SSL {
	case "", "no":
		if opts.TLSPorts {
			return errors.New("testenv: TLSPorts needs SSL \"yes\" or \"required\"")
		}
		return nil
	case "yes", "required":
	default:
		return fmt.Errorf("testenv: SSL %q: want \"\", \"no\", \"yes\" or \"required\"", opts.SSL)
	}
	if opts.SSLCert == "" || opts.SSLKey == "" {
		return fmt.Errorf("testenv: SSL %q needs SSLCert and SSLKey", opts.SSL)
	}
	for _, f := range []*string{&opts.SSLCert, &opts.SSLKey} {
		abs, err := filepath.Abs(*f)
		if err != nil {
			return err
		}
		// Dovecot would only say so in its log, after a start that
		// looks fine
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("testenv: %v", err)
		}
		*f = abs
	}
	return nil
}

// instanceNames derives a unique instance_name and a short base_dir from the
// run folder. Unix socket paths are limited to 108 bytes, so base_dir lives
// in the run folder only if that is short enough.
func instanceNames(dir string) (instance, baseDir string) {
	h := fnv.New64a()
	h.Write([]byte(dir))
	id := fmt.Sprintf("%016x", h.Sum64())[:12]
	instance = "doorman-" + id
	baseDir = filepath.Join(dir, "base")
	// the longest socket name below base_dir is about 30 bytes
	// ("token-login/imap-urlauth", "imap-urlauth-worker", ...)
	if len(baseDir) > 64 {
		baseDir = filepath.Join(os.TempDir(), "dovecot-"+id)
	}
	return instance, baseDir
}

// prepareDir creates the run folder, makes it and its parents traversable
// for Dovecot's unprivileged users (dovenull, dovecot, mail) and creates the
// mail folder owned by mail.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	// Parents: add only o+x where it is missing (e.g. t.TempDir's 0700 parent).
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("testenv: %s is not traversable for dovecot's users: %v", p, err)
			}
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	mail, err := user.Lookup("mail")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(mail.Uid)
	gid, _ := strconv.Atoi(mail.Gid)
	mailDir := filepath.Join(dir, "mail")
	if err := os.MkdirAll(mailDir, 0o750); err != nil {
		return err
	}
	// chown the whole tree: a reused run folder may hold older mail
	if err := filepath.Walk(mailDir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		return err
	}
	return os.MkdirAll(filepath.Join(dir, "state"), 0o755)
}

func writeAuthFiles(dir string, opts DovecotOptions) error {
	grp, err := user.LookupGroup("dovecot")
	if err != nil {
		return err
	}
	gid, _ := strconv.Atoi(grp.Gid)
	write := func(name string, users []User) error {
		var b strings.Builder
		for _, u := range users {
			if strings.ContainsAny(u.Name+u.Password, ":\r\n") || u.Name == "" {
				return fmt.Errorf("testenv: invalid user %q (no ':' or line breaks allowed)", u.Name)
			}
			fmt.Fprintf(&b, "%s:{PLAIN}%s::::::\n", u.Name, u.Password)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o640); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o640); err != nil {
			return err
		}
		return os.Chown(p, 0, gid)
	}
	if err := write("users.passwd", opts.Users); err != nil {
		return err
	}
	if opts.OAuth2IntrospectionURL != "" {
		// tokeninfo_url stays unset: introspection alone decides.
		conf := fmt.Sprintf("introspection_url = %s\nintrospection_mode = post\n"+
			"username_attribute = username\nactive_attribute = active\nactive_value = true\n",
			opts.OAuth2IntrospectionURL)
		p := filepath.Join(dir, "dovecot-oauth2.conf.ext")
		if err := os.WriteFile(p, []byte(conf), 0o640); err != nil {
			return err
		}
		if err := os.Chown(p, 0, gid); err != nil {
			return err
		}
	}
	if opts.MasterUser != "" {
		return write("masters.passwd", []User{{opts.MasterUser, opts.MasterPass}})
	}
	return nil
}

// has reports whether protocol p is enabled.
func (d *Dovecot) has(p string) bool {
	for _, q := range d.Protocols {
		if q == p {
			return true
		}
	}
	return false
}

func (d *Dovecot) setAddrs(ports map[string]int) {
	addr := func(p string) string {
		if ports[p] == 0 {
			return ""
		}
		return net.JoinHostPort(d.listenIP, strconv.Itoa(ports[p]))
	}
	d.IMAPAddr = addr("imap")
	d.POP3Addr = addr("pop3")
	d.SubmissionAddr = addr("submission")
	d.LMTPAddr = addr("lmtp")
	d.SieveAddr = addr("sieve")
	d.IMAPSAddr = addr("imaps")
	d.POP3SAddr = addr("pop3s")
	d.SubmissionsAddr = addr("submissions")
}

// addrs returns the open listeners' addresses, keyed by protocol or, for
// the implicit-TLS ones, by listener name (tlsListener).
func (d *Dovecot) addrs() map[string]string {
	m := map[string]string{}
	for p, a := range map[string]string{"imap": d.IMAPAddr, "pop3": d.POP3Addr,
		"submission": d.SubmissionAddr, "lmtp": d.LMTPAddr, "sieve": d.SieveAddr,
		"imaps": d.IMAPSAddr, "pop3s": d.POP3SAddr, "submissions": d.SubmissionsAddr} {
		if a != "" {
			m[p] = a
		}
	}
	return m
}

func (d *Dovecot) config(opts DovecotOptions, ports map[string]int) string {
	trusted := opts.TrustedNetworks
	if trusted == "" {
		trusted = "127.0.0.0/8"
	} else if trusted == "none" {
		trusted = ""
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# generated by doorman/engine/testenv - do not edit")
	p("instance_name = %s", d.Instance)
	p("base_dir = %s", d.BaseDir)
	p("state_dir = %s", filepath.Join(d.Dir, "state"))
	p("listen = %s", d.listenIP)
	p("protocols = %s", strings.Join(d.Protocols, " "))
	switch opts.SSL {
	case "", "no":
		p("ssl = no")
	default:
		p("ssl = %s", opts.SSL)
		p("ssl_cert = <%s", opts.SSLCert)
		p("ssl_key = <%s", opts.SSLKey)
	}
	if opts.SSL != "required" {
		// (ssl = required implies disable_plaintext_auth = yes)
		p("disable_plaintext_auth = no")
	}
	if opts.OAuth2IntrospectionURL != "" {
		p("auth_mechanisms = plain login xoauth2 oauthbearer")
	} else {
		p("auth_mechanisms = plain login")
	}
	p("auth_failure_delay = 0")
	p("auth_verbose = yes")
	p("log_path = %s", d.LogPath)
	p("info_log_path = %s", d.LogPath)
	p("debug_log_path = %s", d.LogPath)
	p("login_log_format_elements = user=<%%u> method=%%m rip=%%r lip=%%l mpid=%%e %%c session=<%%{session}>")
	p("login_trusted_networks = %s", trusted)
	p("mail_location = maildir:%s/mail/%%d/%%n/Maildir", d.Dir)
	p("mail_uid = mail")
	p("mail_gid = mail")
	p("first_valid_uid = 8")
	p("first_valid_gid = 8")
	p("mail_max_userip_connections = 10000")
	p("imap_id_log = *")
	p("default_vsz_limit = 1G")
	p("default_client_limit = 20000")
	p("shutdown_clients = yes")
	p("")
	if opts.MasterUser != "" {
		p("auth_master_user_separator = *")
		p("passdb {")
		p("  driver = passwd-file")
		p("  args = scheme=PLAIN username_format=%%u %s", filepath.Join(d.Dir, "masters.passwd"))
		p("  master = yes")
		p("  pass = yes")
		p("}")
	}
	p("passdb {")
	p("  driver = passwd-file")
	p("  args = scheme=PLAIN username_format=%%u %s", filepath.Join(d.Dir, "users.passwd"))
	p("}")
	if opts.OAuth2IntrospectionURL != "" {
		p("passdb {")
		p("  driver = oauth2")
		p("  mechanisms = xoauth2 oauthbearer")
		p("  args = %s", filepath.Join(d.Dir, "dovecot-oauth2.conf.ext"))
		p("}")
	}
	p("userdb {")
	p("  driver = static")
	p("  args = uid=mail gid=mail home=%s/mail/%%d/%%n", d.Dir)
	p("}")
	p("")
	p("service imap-login {")
	p("  inet_listener imap {")
	p("    address = %s", d.listenIP)
	p("    port = %d", ports["imap"])
	p("  }")
	p("  inet_listener imaps {")
	if ports["imaps"] != 0 {
		p("    address = %s", d.listenIP)
		p("    port = %d", ports["imaps"])
		p("    ssl = yes")
	} else {
		p("    port = 0")
	}
	p("  }")
	p("  service_count = 0")
	p("  process_min_avail = 2")
	p("  client_limit = 9000")
	p("}")
	p("service imap {")
	p("  process_limit = 12000")
	p("}")
	d.protocolConfig(p, opts, ports)
	if !opts.AuthPenalty {
		// Without this socket the auth process disables its per-IP
		// penalty (2..15 s delays after failed logins, applied to all
		// later logins from that IP, e.g. from the proxy).
		p("service anvil {")
		p("  unix_listener anvil-auth-penalty {")
		p("    mode = 0")
		p("  }")
		p("}")
	}
	if opts.ExtraConfig != "" {
		p("")
		p("%s", opts.ExtraConfig)
	}
	return b.String()
}

// start runs the master in the foreground (-F) as a child of this process,
// so it can be reaped and is killed (SIGTERM) if this process dies.
func (d *Dovecot) start(opts DovecotOptions) error {
	bin, err := lookPath("dovecot")
	if err != nil {
		return err
	}
	// Raise the fd limit for the master and its children (up to 9,000
	// sessions; the log and stats processes hold one fd per session
	// process): to 65536 if allowed (needs CAP_SYS_RESOURCE), else soft
	// to the hard limit.
	cmd := exec.Command("/bin/sh", "-c",
		`ulimit -n 65536 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"`,
		bin, "-F", "-c", d.ConfPath)
	cmd.Dir = d.Dir
	// A file, not a pipe: dovecot's children inherit it, and os/exec would
	// wait for all of them to close a pipe before Wait returns.
	out, err := os.OpenFile(d.StderrPath(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true, // a terminal's Ctrl-C reaches only us; Stop shuts dovecot down in order
		Pdeathsig: syscall.SIGTERM,
	}
	d.cmd = cmd
	d.done = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the creating OS thread exits: keep this
		// thread locked and alive for the lifetime of the master.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(d.done)
			return
		}
		started <- nil
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("testenv: starting dovecot: %v", err)
	}
	d.PID = cmd.Process.Pid

	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	pending := d.addrs()
	for {
		select {
		case <-d.done:
			log, _ := d.Log()
			return fmt.Errorf("testenv: dovecot exited (%v): %s%s", d.waitErr, d.stderr(), tail(log, 20))
		default:
		}
		var lastErr error
		for _, p := range listenerOrder {
			addr, ok := pending[p]
			if !ok {
				continue
			}
			if err := greetProtocol(p, addr); err != nil {
				lastErr = fmt.Errorf("%s on %s: %v", p, addr, err)
				break // the next try starts again with this one
			}
			delete(pending, p)
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			d.kill()
			<-d.done
			log, _ := d.Log()
			return fmt.Errorf("testenv: dovecot did not greet within %v: %v; %s%s", timeout, lastErr, d.stderr(), tail(log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return ""
	}
	return "\nlog tail:\n" + strings.Join(lines, "\n")
}

// greet connects to addr and expects an IMAP "* OK" greeting.
func greet(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return greetIMAP(c)
}

// greetIMAP expects an IMAP "* OK" greeting on c.
func greetIMAP(c net.Conn) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("unexpected greeting %q", line)
	}
	c.Write([]byte("z LOGOUT\r\n"))
	return nil
}

// Pids returns the master's pid and those of its live children.
func (d *Dovecot) Pids() []int {
	if !d.Running() || !alive(d.PID) {
		return nil
	}
	return append([]int{d.PID}, children(d.PID)...)
}

// Running reports whether the master process is still alive.
func (d *Dovecot) Running() bool {
	select {
	case <-d.done:
		return false
	default:
		return d.PID != 0
	}
}

// Done is closed when the master process has exited.
func (d *Dovecot) Done() <-chan struct{} { return d.done }

// Stop stops the instance (SIGTERM to the master, which stops its children),
// waits until all its processes are gone and its ports are closed, and
// removes the base_dir (and a temporary Dir). It is safe to call twice.
func (d *Dovecot) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.stop() })
	return d.stopErr
}

func (d *Dovecot) stop() error {
	var errs []error
	procs := d.Pids()
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
	}
	// alive, and still one of ours (pids are reused)
	ours := func(pid int) bool { return alive(pid) && d.owns(pid) }
	kill := func(pids []int, sig syscall.Signal) {
		for _, pid := range pids {
			if ours(pid) {
				syscall.Kill(pid, sig)
			}
		}
	}
	waitGone := func(pids []int, timeout time.Duration) bool {
		deadline := time.Now().Add(timeout)
		for _, pid := range pids {
			for ours(pid) {
				if time.Now().After(deadline) {
					return false
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		return true
	}
	// The master normally exits within about a second and stops most
	// services, but mail processes (imap) only notice that up to 10 s
	// later (despite shutdown_clients = yes), and a service process that
	// was still starting up may ignore the master for 5 s. Terminate what
	// is left directly; the log process goes last, so that it records
	// their last lines.
	master := procs[:min(1, len(procs))]
	var logProc, others []int
	for _, pid := range procs[len(master):] {
		if strings.HasSuffix(procName(pid), "/log") {
			logProc = append(logProc, pid)
		} else {
			others = append(others, pid)
		}
	}
	termOthers := func() {
		// the master may have started processes since the snapshot
		var now []int
		if d.Running() {
			now = children(d.PID)
		}
	next:
		for _, pid := range now {
			for _, p := range append(others, logProc...) {
				if p == pid {
					continue next
				}
			}
			if strings.HasSuffix(procName(pid), "/log") {
				logProc = append(logProc, pid)
			} else {
				others = append(others, pid)
			}
		}
		kill(others, syscall.SIGTERM)
	}
	if !waitGone(master, 1500*time.Millisecond) {
		termOthers()
		if !waitGone(master, 10*time.Second) {
			errs = append(errs, fmt.Errorf("testenv: dovecot master %d ignored SIGTERM, killing it", d.PID))
			kill(master, syscall.SIGKILL)
		}
	}
	termOthers()
	if !waitGone(others, 5*time.Second) {
		errs = append(errs, fmt.Errorf("testenv: dovecot processes ignored SIGTERM, killing them"))
		kill(others, syscall.SIGKILL)
	}
	if !waitGone(logProc, 2*time.Second) {
		kill(logProc, syscall.SIGTERM)
		if !waitGone(logProc, 2*time.Second) {
			kill(logProc, syscall.SIGKILL)
		}
	}
	if d.done != nil {
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("testenv: dovecot master %d not reaped", d.PID))
		}
	}
	if all := append(append(master, others...), logProc...); !waitGone(all, 5*time.Second) {
		errs = append(errs, fmt.Errorf("testenv: dovecot processes %v still alive", all))
	}
	// The listening sockets are closed with the last process holding them.
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range listenerOrder {
		addr := d.addrs()[p]
		for addr != "" {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("testenv: %s (%s) still accepts connections after stop", addr, p))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if d.Sink != nil {
		if err := d.Sink.Close(); err != nil {
			errs = append(errs, fmt.Errorf("testenv: closing the SMTP sink: %v", err))
		}
	}
	if !strings.HasPrefix(d.BaseDir, d.Dir+string(filepath.Separator)) {
		os.RemoveAll(d.BaseDir)
	}
	if d.removeDir && len(errs) == 0 {
		if err := os.RemoveAll(d.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// procName returns the process title (dovecot names its services
// "dovecot-INSTANCE/SERVICE").
func procName(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimRight(strings.SplitN(string(b), "\x00", 2)[0], " ")
}

// StderrPath is where the master's stdout and stderr go (startup errors
// before logging is set up).
func (d *Dovecot) StderrPath() string { return filepath.Join(d.Dir, "dovecot.stderr") }

func (d *Dovecot) stderr() string {
	b, _ := os.ReadFile(d.StderrPath())
	return strings.TrimSpace(string(b))
}

// kill SIGKILLs the master and its children.
func (d *Dovecot) kill() {
	for _, pid := range d.Pids() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// owns reports whether pid is a process of this instance: the master, or a
// service titled "dovecot-INSTANCE/..." (or a fresh fork still showing the
// master's command line).
func (d *Dovecot) owns(pid int) bool {
	if pid == d.PID {
		return d.Running()
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	cmdline := string(b)
	if cmdline == "" {
		// A process on its way out has released its memory, cmdline included, before it
		// becomes a zombie: it is one of ours still exiting (a reused pid would show its
		// new command line), so keep waiting for it.
		return true
	}
	return strings.HasPrefix(cmdline, "dovecot-"+d.Instance+"/") || strings.Contains(cmdline, d.ConfPath)
}

// Log returns the current contents of the log file.
func (d *Dovecot) Log() (string, error) {
	b, err := os.ReadFile(d.LogPath)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return string(b), err
}

// WaitLog polls the log until it contains substr or timeout expires; the log
// is written asynchronously by Dovecot's log process.
func (d *Dovecot) WaitLog(substr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		log, err := d.Log()
		if err != nil {
			return log, err
		}
		if strings.Contains(log, substr) {
			return log, nil
		}
		if time.Now().After(deadline) {
			return log, fmt.Errorf("testenv: %q not in %s after %v", substr, d.LogPath, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopStale kills a master left running by an earlier run on the same run
// folder (its master.pid in our base_dir), so a restart does not fail.
func stopStale(baseDir string) error {
	b, err := os.ReadFile(filepath.Join(baseDir, "master.pid"))
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !alive(pid) {
		return nil
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if filepath.Base(exe) != "dovecot" {
		return nil
	}
	all := append([]int{pid}, children(pid)...)
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range all {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	return nil
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, ok := procStat(pid)
	return ok && st.state != 'Z' && st.state != 'X'
}

type stat struct {
	state byte
	ppid  int
}

func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	// "pid (comm) state ppid ..."; comm may contain spaces and parens.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	return stat{state: f[0][0], ppid: ppid}, true
}

// children returns the live processes whose parent is pid (Dovecot's
// services are all direct children of the master).
func children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(p); ok && st.ppid == pid && st.state != 'Z' {
			out = append(out, p)
		}
	}
	return out
}
