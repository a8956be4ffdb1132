package pki

import (
	"bytes"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func parseCertPEM(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	cert, err := ParseCert(certPEM)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return cert
}

// verify checks cert against ca for both server and client use.
func verify(cert *x509.Certificate, ca *CA) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
	}
	return nil
}

func TestNewCA(t *testing.T) {
	ca := newCA(t, "prod")
	c := ca.Cert
	if got, want := c.Subject.CommonName, "corral prod CA"; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a usable CA: IsCA=%v BasicConstraintsValid=%v KeyUsage=%v", c.IsCA, c.BasicConstraintsValid, c.KeyUsage)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if ca.Key.Curve != elliptic.P256() {
		t.Errorf("curve = %v, want P-256", ca.Key.Curve.Params().Name)
	}
	if life := c.NotAfter.Sub(time.Now()); life < 9*365*24*time.Hour || life > 10*365*24*time.Hour {
		t.Errorf("CA valid for another %v, want about ten years", life)
	}
	if _, err := NewCA(""); err == nil {
		t.Error("NewCA(\"\") succeeded, want an error")
	}
}

func TestCARoundTrip(t *testing.T) {
	ca := newCA(t, "prod")
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	if !got.Cert.Equal(ca.Cert) || !got.Key.Equal(ca.Key) {
		t.Error("ParseCA returned a different CA than was encoded")
	}
	if got.Hash() != ca.Hash() {
		t.Errorf("hash after round trip = %s, want %s", got.Hash(), ca.Hash())
	}

	// A CA key written by other tools (openssl, cfssl) in SEC 1 form.
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if _, err := ParseCA(ca.CertPEM(), sec1); err != nil {
		t.Errorf("ParseCA with an EC PRIVATE KEY: %v", err)
	}
}

func TestParseCARejects(t *testing.T) {
	ca, other := newCA(t, "a"), newCA(t, "b")
	caKey, _ := ca.KeyPEM()
	otherKey, _ := other.KeyPEM()
	leaf, leafKey, err := ca.Issue(CertRequest{CommonName: "node-1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		cert, key     []byte
		wantSubstring string
	}{
		{"key of another CA", ca.CertPEM(), otherKey, "does not match"},
		{"leaf certificate", leaf, leafKey, "not a CA"},
		{"key in the cert slot", caKey, caKey, `expected "CERTIFICATE"`},
		{"garbage key", ca.CertPEM(), []byte("nope"), "no PEM data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCA(tc.cert, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.wantSubstring) {
				t.Errorf("ParseCA error = %v, want one containing %q", err, tc.wantSubstring)
			}
		})
	}
}

func TestHashPEM(t *testing.T) {
	ca := newCA(t, "prod")
	got, err := HashPEM(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if got != ca.Hash() {
		t.Errorf("HashPEM = %s, want %s", got, ca.Hash())
	}
	if !strings.HasPrefix(got, "sha256:") || len(got) != len("sha256:")+64 {
		t.Errorf("hash %q is not sha256:<64 hex>", got)
	}
	if other := newCA(t, "prod"); other.Hash() == ca.Hash() {
		t.Error("two CAs have the same hash")
	}
	if _, err := HashPEM([]byte("not pem")); err == nil {
		t.Error("HashPEM of garbage succeeded")
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t, "prod")
	req := CertRequest{
		CommonName: "core-1",
		IPs:        []net.IP{net.ParseIP("10.77.0.11"), net.ParseIP("127.0.0.1")},
		DNSNames:   []string{"core-1.prod.internal"},
	}
	certPEM, keyPEM, err := ca.Issue(req, DefaultValidity)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	cert := parseCertPEM(t, certPEM)
	if err := verify(cert, ca); err != nil {
		t.Errorf("issued certificate does not verify against its CA: %v", err)
	}
	if cert.Subject.CommonName != "core-1" {
		t.Errorf("CN = %q, want core-1", cert.Subject.CommonName)
	}
	wantIPs := []string{"10.77.0.11", "127.0.0.1"} // 127.0.0.1 once, though both the request and SignCSR add it
	if got := ipStrings(cert.IPAddresses); !slices.Equal(got, wantIPs) {
		t.Errorf("IPs = %v, want %v", got, wantIPs)
	}
	if want := []string{"core-1.prod.internal", "localhost"}; !slices.Equal(cert.DNSNames, want) {
		t.Errorf("DNS names = %v, want %v", cert.DNSNames, want)
	}
	if cert.IsCA {
		t.Error("leaf certificate is a CA")
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("issued key does not match the certificate")
	}

	if err := verify(cert, newCA(t, "prod")); err == nil {
		t.Error("certificate verified against another CA")
	}
}

func TestSignCSRCapsValidityAtCA(t *testing.T) {
	ca := newCA(t, "prod")
	certPEM, _, err := ca.Issue(CertRequest{CommonName: "core-1"}, 50*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseCertPEM(t, certPEM).NotAfter; !got.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", got, ca.Cert.NotAfter)
	}
	if _, _, err := ca.Issue(CertRequest{CommonName: "core-1"}, 0); err == nil {
		t.Error("Issue with zero validity succeeded")
	}
}

func TestSignCSRRejectsTamperedCSR(t *testing.T) {
	ca := newCA(t, "prod")
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := NewCSR(key, CertRequest{CommonName: "worker-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.SignCSR(csrPEM, time.Hour); err != nil {
		t.Fatalf("SignCSR of the untouched CSR: %v", err)
	}

	// Rename the subject after signing, as someone escalating a worker's
	// request to another node's identity would.
	block, _ := pem.Decode(csrPEM)
	der := bytes.Clone(block.Bytes)
	i := bytes.Index(der, []byte("worker-1"))
	if i < 0 {
		t.Fatal("CN not found in CSR DER")
	}
	copy(der[i:], "master-1")
	tampered := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if _, err := x509.ParseCertificateRequest(der); err != nil {
		t.Fatalf("tampered CSR no longer parses, so the test would not reach the signature check: %v", err)
	}
	if _, err := ca.SignCSR(tampered, time.Hour); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("SignCSR of a tampered CSR: err = %v, want a signature error", err)
	}
}

func TestSignCSRRejectsMalformed(t *testing.T) {
	ca := newCA(t, "prod")
	for name, in := range map[string][]byte{
		"empty":       nil,
		"certificate": ca.CertPEM(),
		"bad DER":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ca.SignCSR(in, time.Hour); err == nil {
			t.Errorf("SignCSR(%s) succeeded", name)
		}
	}
}

func TestEncodeKeyRoundTrip(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseKey(keyPEM)
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	if !got.Equal(key) {
		t.Error("key changed in round trip")
	}
}

func ipStrings(ips []net.IP) []string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return s
}
