//go:build linux

package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"doorman/engine/tlsio"
)

const testServerName = "doorman.test"

// testCert is a self-signed ECDSA P-256 certificate for testServerName, the
// pool that trusts it and its PEM, made once per test binary.
var testCert = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: testServerName},
		DNSNames:              []string{testServerName},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
})

func testCertPEM() []byte {
	c, _ := testCert()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
}

// tlsConfigs returns a server and a client config that trust each other, at
// most at version.
func tlsConfigs(version uint16) (srv, cli *tls.Config) {
	cert, pool := testCert()
	srv = &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: version}
	cli = &tls.Config{RootCAs: pool, ServerName: testServerName, MaxVersion: version}
	return srv, cli
}

// eofConn notes when the socket itself reports EOF: a tls.Conn that returns
// io.EOF before that has read a close_notify, not a bare FIN.
type eofConn struct {
	*net.TCPConn
	eof atomic.Bool
}

func (c *eofConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if err == io.EOF {
		c.eof.Store(true)
	}
	return n, err
}

// end is the test's end of one leg: plain TCP, or TLS over it.
type end struct {
	tcp *net.TCPConn
	ec  *eofConn
	tc  *tls.Conn // nil on a plain leg
}

func (e *end) Read(p []byte) (int, error) {
	if e.tc != nil {
		return e.tc.Read(p)
	}
	return e.tcp.Read(p)
}

func (e *end) Write(p []byte) (int, error) {
	if e.tc != nil {
		return e.tc.Write(p)
	}
	return e.tcp.Write(p)
}

// CloseWrite sends close_notify on a TLS leg, a FIN on a plain one.
func (e *end) CloseWrite() error {
	if e.tc != nil {
		return e.tc.CloseWrite()
	}
	return e.tcp.CloseWrite()
}

// closeNotified tells, after Read returned io.EOF on a TLS leg, whether a
// close_notify ended the stream (the socket's FIN was not read yet).
func (e *end) closeNotified() bool { return e.tc != nil && !e.ec.eof.Load() }

// tlsPair is a relayed session whose legs may speak TLS.
type tlsPair struct {
	client, backend *end
	cfd, bfd        int
	ctls, btls      *TLS // the proxy's; nil on a plain leg
}

// newTLSPair connects a client and a backend leg; a version (tls.VersionTLS12
// or 13) makes that leg TLS at most at that version, 0 leaves it plain.
func newTLSPair(t testing.TB, ln *net.TCPListener, clientVersion, backendVersion uint16) *tlsPair {
	t.Helper()
	client, pc := connect(t, ln)
	pb, backend := connect(t, ln)
	p := &tlsPair{client: &end{tcp: client}, backend: &end{tcp: backend}}
	t.Cleanup(func() { client.Close(); backend.Close() })
	p.cfd, p.ctls = proxyLeg(t, pc, p.client, true, clientVersion)
	p.bfd, p.btls = proxyLeg(t, pb, p.backend, false, backendVersion)
	return p
}

// proxyLeg makes the proxy's end of a leg what the engine hands the relay.
// proxyServes: the proxy is the TLS server (the client leg).
func proxyLeg(t testing.TB, pc *net.TCPConn, peer *end, proxyServes bool, version uint16) (int, *TLS) {
	t.Helper()
	if version == 0 {
		return rawFD(t, pc), nil
	}
	tc, raw := handshakeLeg(t, pc, peer, proxyServes, version)
	return detachLeg(t, pc, raw), &TLS{Conn: tc, Raw: raw}
}

// handshakeLeg runs the TLS handshake of a leg in blocking mode, the proxy's
// end over tlsio in Net mode, as the engine's login does.
func handshakeLeg(t testing.TB, pc *net.TCPConn, peer *end, proxyServes bool, version uint16) (*tls.Conn, *tlsio.Conn) {
	t.Helper()
	srv, cli := tlsConfigs(version)
	raw := tlsio.NewNet(pc)
	peer.ec = &eofConn{TCPConn: peer.tcp}
	var tc *tls.Conn
	if proxyServes {
		tc, peer.tc = tls.Server(raw, srv), tls.Client(peer.ec, cli)
	} else {
		tc, peer.tc = tls.Client(raw, cli), tls.Server(peer.ec, srv)
	}
	deadline := time.Now().Add(20 * time.Second)
	pc.SetDeadline(deadline)
	peer.tcp.SetDeadline(deadline)
	errc := make(chan error, 1)
	go func() { errc <- peer.tc.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatalf("proxy handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("peer handshake: %v", err)
	}
	peer.tcp.SetDeadline(time.Time{})
	return tc, raw
}

// detachLeg takes the socket out of Go's poller (a close-on-exec dup, the
// original closed) and switches the transport to FD mode over it.
func detachLeg(t testing.TB, pc *net.TCPConn, raw *tlsio.Conn) int {
	t.Helper()
	fd := rawFD(t, pc)
	raw.SetFD(fd)
	return fd
}

func (p *tlsPair) add(t testing.TB, r *Relay, toClient, toBackend []byte, hold func() time.Duration) (*Handle, <-chan Stats) {
	t.Helper()
	done := make(chan Stats, 1)
	h, err := r.Add(&Session{
		ClientFD: p.cfd, BackendFD: p.bfd,
		ClientTLS: p.ctls, BackendTLS: p.btls,
		ToClient: toClient, ToBackend: toBackend,
		HoldClient: hold,
		Done:       func(st Stats) { done <- st },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, done
}

func (p *tlsPair) setDeadlines(d time.Duration) {
	p.client.tcp.SetDeadline(time.Now().Add(d))
	p.backend.tcp.SetDeadline(time.Now().Add(d))
}

// tlsLegs are the three ways a session can use the TLS path.
var tlsLegs = []struct {
	name            string
	client, backend uint16 // TLS versions; 0 for a plain leg
}{
	{"client", tls.VersionTLS13, 0},
	{"backend", 0, tls.VersionTLS13},
	{"both", tls.VersionTLS13, tls.VersionTLS12}, // and TLS 1.2 on one leg
}
