// Package ldaptest runs a private OpenLDAP slapd for tests: its own
// slapd.conf, mdb database and schema in t.TempDir(), loopback ports only,
// plain LDAP and LDAPS (StartTLS works on the plain port) with a throwaway
// CA made here, so route stays independent of engine.
//
// The directory (see DefaultLDIF) holds users under ou=people with the
// attributes a Doorman passdb reads: userPassword, mailHost (misc.schema),
// mailRoutingAddress (destuser), and doormanVsite, a one-attribute custom
// schema (doorman.schema, written here) naming the user's virtual site. The
// sites themselves are ipHost entries under ou=vsites (cn = site id,
// ipHostNumber = backend address), the user → vsite → address layout of
// Dovecot's site-failover design.
//
// It is imported only from _test.go files.
package ldaptest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Names in the test directory.
const (
	BaseDN          = "dc=example,dc=com"
	AdminDN         = "cn=admin,dc=example,dc=com"
	AdminPassword   = "adminsecret"
	ServiceDN       = "cn=doorman,ou=services,dc=example,dc=com"
	ServicePassword = "servicesecret"
)

// Schema is doorman.schema: the doormanVsite attribute and the auxiliary
// doormanUser class that carries it. The OIDs sit under an arc reserved for
// examples; they are for tests only.
const Schema = `attributetype ( 1.3.6.1.4.1.32473.1.1 NAME 'doormanVsite'
	DESC 'Doorman virtual site id of a user'
	EQUALITY caseIgnoreMatch
	SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.2.1 NAME 'doormanUser' SUP top AUXILIARY
	MAY ( doormanVsite ) )
`

// DefaultLDIF is loaded into every server. Passwords: alice "alicepw"
// ({SSHA}), bob "bobpw" (cleartext, for auth binds), carol none.
const DefaultLDIF = `dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: ou=services,dc=example,dc=com
objectClass: organizationalUnit
ou: services

dn: ou=vsites,dc=example,dc=com
objectClass: organizationalUnit
ou: vsites

dn: cn=doorman,ou=services,dc=example,dc=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: doorman
userPassword: servicesecret

dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: Alice
uidNumber: 1001
gidNumber: 1001
homeDirectory: /home/alice
mail: alice@example.com
mail: alice.alias@example.com
mailHost: 10.0.0.1
mailRoutingAddress: alice@backend.example.com
userPassword: {SSHA}HsWPVN14TLVNMxKmVrJehqEKZ5qIhofE

dn: uid=bob,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: doormanUser
uid: bob
cn: Bob
sn: Bob
uidNumber: 1002
gidNumber: 1002
homeDirectory: /home/bob
mail: bob@example.com
doormanVsite: site1
userPassword: bobpw

dn: uid=carol,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
uid: carol
cn: Carol
sn: Carol
uidNumber: 1003
gidNumber: 1003
homeDirectory: /home/carol

dn: uid=twin,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
uid: twin
cn: Twin
sn: One
uidNumber: 1004
gidNumber: 1004
homeDirectory: /home/twin

dn: cn=twin2,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
uid: twin
cn: twin2
sn: Two
uidNumber: 1005
gidNumber: 1005
homeDirectory: /home/twin2

dn: cn=site1,ou=vsites,dc=example,dc=com
objectClass: device
objectClass: ipHost
cn: site1
ipHostNumber: 10.0.1.1
`

// Server is one running slapd.
type Server struct {
	URI      string // ldap://127.0.0.1:<port> (StartTLS available)
	LDAPSURI string // ldaps://127.0.0.1:<port>
	LDAPIURI string // ldapi://<%-encoded socket path>
	CAFile   string // PEM file of the CA that signed the server's certificate
	CAPool   *x509.CertPool
	Dir      string

	p1, p2 int
	slapd  string
	cmd    *exec.Cmd
	exited chan struct{}
	once   *sync.Once
	log    *bytes.Buffer // written only by the process until exited
}

// StartSlapd starts slapd on free loopback ports with DefaultLDIF and
// extra (more LDIF, loaded after it) and stops it when the test ends.
// Without slapd on PATH (or in /usr/sbin) the test is skipped, unless the
// CI environment variable is set, in which case it fails.
func StartSlapd(t testing.TB, extra ...string) *Server {
	t.Helper()
	slapd := lookPath("slapd")
	slapadd := lookPath("slapadd")
	if slapd == "" || slapadd == "" {
		if os.Getenv("CI") == "" {
			t.Skip("slapd not installed (apt-get install -y slapd)")
		}
		t.Fatalf("slapd not installed and CI is set")
	}
	var lastErr error
	for range 3 { // a probed free port can be taken before slapd binds it
		s, err := start(t, slapd, slapadd, extra)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("ldaptest: slapd did not start: %v", lastErr)
	return nil
}

func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; fileExists(p) {
		return p
	}
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func start(t testing.TB, slapd, slapadd string, extra []string) (*Server, error) {
	dir := t.TempDir()
	s := &Server{Dir: dir}
	if err := s.writeFiles(); err != nil {
		return nil, err
	}
	ldif := DefaultLDIF + "\n" + strings.Join(extra, "\n")
	if err := os.WriteFile(filepath.Join(dir, "data.ldif"), []byte(ldif), 0o600); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "slapd.conf")
	if out, err := exec.Command(slapadd, "-q", "-f", conf, "-l", filepath.Join(dir, "data.ldif")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("slapadd: %v: %s", err, out)
	}
	p1, err := freePort()
	if err != nil {
		return nil, err
	}
	p2, err := freePort()
	if err != nil {
		return nil, err
	}
	s.URI = "ldap://127.0.0.1:" + strconv.Itoa(p1)
	s.LDAPSURI = "ldaps://127.0.0.1:" + strconv.Itoa(p2)
	s.p1, s.p2, s.slapd = p1, p2, slapd
	s.LDAPIURI = "ldapi://" + url.PathEscape(filepath.Join(dir, "ldapi"))
	if err := s.run(t); err != nil {
		return nil, err
	}
	return s, nil
}

// Restart stops slapd and starts it again on the same ports and data:
// connections made before are broken.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	for range 3 { // the ports may linger a moment
		if err = s.run(t); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("ldaptest: slapd did not restart: %v", err)
}

func (s *Server) run(t testing.TB) error {
	// -d 0 keeps slapd in the foreground (a child we can wait for) with no
	// debug output.
	s.cmd = exec.Command(s.slapd, "-f", filepath.Join(s.Dir, "slapd.conf"), "-h", s.URI+"/ "+s.LDAPSURI+"/ "+s.LDAPIURI, "-d", "0")
	s.log = new(bytes.Buffer)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.once = new(sync.Once)
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(s.cmd, s.exited)
	t.Cleanup(s.Stop)

	p1, p2 := s.p1, s.p2
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ready(p1) && ready(p2) {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("slapd exited: %s", strings.TrimSpace(s.log.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("slapd not listening on %d and %d within 10s", p1, p2)
		}
	}
}

// ready reports whether something accepts on port. slapd opens its
// listeners only once the database is open, so this is enough.
func ready(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Stop kills slapd; it may be called more than once.
func (s *Server) Stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused slapd cannot die cleanly
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
}

// Pause stops slapd with SIGSTOP: its sockets stay open and connections are
// still accepted by the kernel, but nothing answers. Resume undoes it.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("ldaptest: SIGSTOP: %v", err)
	}
	// The signal is asynchronous: wait until every thread is stopped, or
	// a request sent now might still be answered.
	deadline := time.Now().Add(2 * time.Second)
	for !stopped(s.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("ldaptest: slapd not stopped 2s after SIGSTOP")
		}
		time.Sleep(time.Millisecond)
	}
}

// stopped reports whether every thread of pid is in state T (Linux /proc;
// elsewhere it reports true and hopes).
func stopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return true
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		// pid (comm) state …: comm may hold spaces, the state follows the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' && b[i+2] != 't' {
			return false
		}
	}
	return true
}

// Resume continues a paused slapd.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("ldaptest: SIGCONT: %v", err)
	}
}

// TLSConfig trusts the test CA.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.CAPool, ServerName: "127.0.0.1"}
}

func (s *Server) writeFiles() error {
	dir := s.Dir
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "doorman.schema"), []byte(Schema), 0o644); err != nil {
		return err
	}
	if err := s.writeCerts(); err != nil {
		return err
	}
	var b strings.Builder
	for _, sch := range []string{"core", "cosine", "inetorgperson", "nis", "misc"} {
		fmt.Fprintf(&b, "include /etc/ldap/schema/%s.schema\n", sch)
	}
	fmt.Fprintf(&b, `include %[1]s/doorman.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
TLSCACertificateFile %[1]s/ca.pem
TLSCertificateFile %[1]s/server.pem
TLSCertificateKeyFile %[1]s/server.key

database mdb
maxsize 16777216
suffix "%[2]s"
rootdn "%[3]s"
rootpw %[4]s
directory %[1]s/db
index objectClass,uid eq
access to attrs=userPassword
	by dn.exact="%[5]s" read
	by anonymous auth
	by * none
access to *
	by * read
`, dir, BaseDN, AdminDN, AdminPassword, ServiceDN)
	return os.WriteFile(filepath.Join(dir, "slapd.conf"), []byte(b.String()), 0o600)
}

// writeCerts makes a CA and a server certificate for 127.0.0.1 and
// localhost.
func (s *Server) writeCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ldaptest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	s.CAFile = filepath.Join(s.Dir, "ca.pem")
	s.CAPool = x509.NewCertPool()
	s.CAPool.AddCert(ca)
	for name, blk := range map[string]*pem.Block{
		"ca.pem":     {Type: "CERTIFICATE", Bytes: caDER},
		"server.pem": {Type: "CERTIFICATE", Bytes: der},
		"server.key": {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(s.Dir, name), pem.EncodeToMemory(blk), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Modify replaces attr's values in the entry dn, bound as the rootdn.
func Modify(t testing.TB, s *Server, dn, attr string, values ...string) {
	t.Helper()
	c, err := ldap.DialURL(s.URI, ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	defer c.Close()
	c.SetTimeout(5 * time.Second)
	if err := c.Bind(AdminDN, AdminPassword); err != nil {
		t.Fatalf("ldaptest: bind as %s: %v", AdminDN, err)
	}
	req := ldap.NewModifyRequest(dn, nil)
	req.Replace(attr, values)
	if err := c.Modify(req); err != nil {
		t.Fatalf("ldaptest: modify %s: %v", dn, err)
	}
}

// StartHungServer listens on a loopback port, accepts connections and never
// answers (nor closes them until the test ends). It returns an ldap:// URI.
func StartHungServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "ldap://" + l.Addr().String()
}

// DeadURI is an ldap:// URI on a loopback port nobody listens on.
func DeadURI(t testing.TB) string {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatalf("ldaptest: %v", err)
	}
	return "ldap://127.0.0.1:" + strconv.Itoa(p)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
