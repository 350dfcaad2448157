package testsupport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// SelfSignedCert returns a certificate for hosts (DNS names or IP
// literals; the first is also the subject) and its PKCS #8 key, in PEM.
// It is valid from an hour ago for a day, and it is its own CA, so a pool
// holding only it verifies it.
func SelfSignedCert(t testing.TB, hosts ...string) (certPEM, keyPEM string) {
	t.Helper()
	key := newKey(t)
	tmpl := leafTemplate(hosts)
	tmpl.KeyUsage |= x509.KeyUsageCertSign
	tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	return issue(t, tmpl, tmpl, key, key), encodeKey(t, key)
}

// CA is a throwaway certificate authority for tests that need a real
// chain: a server certificate issued by it verifies against a pool holding
// only CA.PEM, the way a public one verifies against the system roots.
type CA struct {
	PEM  string // the CA certificate
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	certPEM := issue(t, tmpl, tmpl, key, key)
	block, _ := pem.Decode([]byte(certPEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("CA certificate: %v", err)
	}
	return &CA{PEM: certPEM, cert: cert, key: key}
}

// Issue returns a server certificate for hosts signed by the CA, as the
// chain a server sends (the leaf, then the CA certificate), and its
// PKCS #8 key, in PEM.
func (ca *CA) Issue(t testing.TB, hosts ...string) (chainPEM, keyPEM string) {
	t.Helper()
	key := newKey(t)
	return issue(t, leafTemplate(hosts), ca.cert, key, ca.key) + ca.PEM, encodeKey(t, key)
}

// IssueExpired is Issue for a certificate whose validity ended a day
// ago (it began two days ago): what a server shows when nobody renewed it.
func (ca *CA) IssueExpired(t testing.TB, hosts ...string) (chainPEM, keyPEM string) {
	t.Helper()
	key := newKey(t)
	tmpl := leafTemplate(hosts)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	return issue(t, tmpl, ca.cert, key, ca.key) + ca.PEM, encodeKey(t, key)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("certificate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("serial number: %v", err)
	}
	return n
}

// leafTemplate is a server certificate for hosts (DNS names or IP
// literals; the first is also the subject), valid from an hour ago for a day.
func leafTemplate(hosts []string) *x509.Certificate {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

func issue(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("certificate: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func encodeKey(t testing.TB, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("certificate key: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
