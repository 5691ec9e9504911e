package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a throw-away certificate authority for tests: its certificate is
// in Dir/ca.pem, its key only in memory (a test never needs to sign
// anything after the process ends).
type CA struct {
	Dir      string            // where ca.pem and the issued files are written
	CertFile string            // Dir/ca.pem: the CA certificate (PEM), e.g. for Dovecot's ssl_ca or -CAfile
	Cert     *x509.Certificate // the parsed CA certificate

	key *ecdsa.PrivateKey
}

// NewCA creates a CA (ECDSA P-256, valid from an hour ago for 24 hours) and
// writes its certificate to dir/ca.pem; dir is created if missing.
func NewCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := validity()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// the serial in the name keeps two test CAs apart in error messages
		Subject:               pkix.Name{Organization: []string{"Doorman tests"}, CommonName: "Doorman test CA " + serial.Text(16)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{Dir: dir, CertFile: filepath.Join(dir, "ca.pem"), Cert: cert, key: key}
	if err := writePEM(ca.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// Pool returns a pool holding just the CA certificate (tls.Config.RootCAs
// or ClientCAs).
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue writes a certificate signed by the CA, usable for both TLS servers
// and clients, to Dir/NAME.pem and its key to Dir/NAME-key.pem (PKCS#8,
// mode 0600). hosts become the subject alternative names: IP addresses as
// IP SANs, anything else as DNS names.
func (ca *CA) Issue(name string, hosts ...string) (certFile, keyFile string, err error) {
	if err := checkName(name); err != nil {
		return "", "", err
	}
	if name == "ca" {
		return "", "", errors.New("testenv: certificate name \"ca\" would overwrite ca.pem")
	}
	return writeLeaf(ca.Dir, name, hosts, ca.Cert, ca.key)
}

// SelfSigned writes a self-signed server and client certificate, issued by
// no CA, to dir/NAME.pem and its key to dir/NAME-key.pem, with hosts as in
// CA.Issue: something every client with a proper root pool must refuse.
func SelfSigned(dir, name string, hosts ...string) (certFile, keyFile string, err error) {
	if err := checkName(name); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	return writeLeaf(dir, name, hosts, nil, nil)
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("testenv: certificate name %q is not a plain file name", name)
	}
	return nil
}

// writeLeaf creates a leaf certificate signed by parent/parentKey, or
// self-signed if parent is nil.
func writeLeaf(dir, name string, hosts []string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := randomSerial()
	if err != nil {
		return "", "", err
	}
	notBefore, notAfter := validity()
	cn := name
	if len(hosts) > 0 {
		cn = hosts[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Doorman tests"}, CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature, // ECDSA: no key encipherment
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return "", "", err
	}
	// PKCS#8 ("PRIVATE KEY"): read by OpenSSL 3 (Dovecot's ssl_key) and
	// by tls.LoadX509KeyPair alike.
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// validity is the certificates' lifetime: an hour of slack for clocks
// that differ a little, and long enough for any test run.
func validity() (notBefore, notAfter time.Time) {
	now := time.Now()
	return now.Add(-time.Hour), now.Add(24 * time.Hour)
}

// randomSerial returns a random positive 128-bit serial number (RFC 5280:
// at most 20 bytes).
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil // never 0
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return err
	}
	// WriteFile keeps the mode of an existing file
	return os.Chmod(path, mode)
}
