package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"time"
)

// DefaultValidity is how long node certificates are valid.
const DefaultValidity = 5 * 365 * 24 * time.Hour

// CertRequest names the identity a certificate is issued for.
type CertRequest struct {
	CommonName string   // the node or client name; etcd uses it as the user name
	IPs        []net.IP // addresses peers and clients dial
	DNSNames   []string
}

// NewKey generates an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	return key, nil
}

// EncodeKey returns k as a PKCS #8 "PRIVATE KEY" PEM block.
func EncodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// NewCSR returns a PEM "CERTIFICATE REQUEST" for req, signed by key.
func NewCSR(key *ecdsa.PrivateKey, req CertRequest) ([]byte, error) {
	tmpl := &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: req.CommonName},
		IPAddresses: req.IPs,
		DNSNames:    req.DNSNames,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// SignCSR issues a certificate for the CSR in csrPEM and returns it as PEM.
// It checks the CSR's self-signature, so the requester has proved it holds
// the private key, and copies only the common name, IP addresses and DNS
// names from it. Every certificate is valid for server and client auth and
// for 127.0.0.1 and "localhost", where a node's own etcd client dials its
// local member. The certificate never outlives the CA.
func (ca *CA) SignCSR(csrPEM []byte, validity time.Duration) ([]byte, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("pki: sign: validity %v is not positive; use pki.DefaultValidity", validity)
	}
	der, err := decodePEM(csrPEM, "CERTIFICATE REQUEST")
	if err != nil {
		return nil, fmt.Errorf("pki: sign: CSR: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: sign: CSR signature is invalid (the request was altered or not signed by its key): %w", err)
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("pki: sign: CSR key is a %T; Corral issues certificates for ECDSA keys only (use pki.NewKey)", csr.PublicKey)
	}

	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter // a certificate is worthless once its CA expires
	}
	tmpl := &x509.Certificate{
		// SerialNumber is left nil: CreateCertificate then picks a random,
		// RFC 5280-conformant one.
		Subject:               pkix.Name{CommonName: csr.Subject.CommonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IPAddresses:           withLoopbackIP(csr.IPAddresses),
		DNSNames:              withName(csr.DNSNames, "localhost"),
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), nil
}

// Issue generates a key and a certificate for req, signed by the CA. It is
// for whoever holds the CA, such as provision; a node asks for its
// certificate with a CSR instead, so that its key never leaves it.
func (ca *CA) Issue(req CertRequest, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := NewCSR(key, req)
	if err != nil {
		return nil, nil, err
	}
	if certPEM, err = ca.SignCSR(csr, validity); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = EncodeKey(key); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

func withLoopbackIP(ips []net.IP) []net.IP {
	loopback := net.IPv4(127, 0, 0, 1)
	if slices.ContainsFunc(ips, loopback.Equal) {
		return ips
	}
	return append(slices.Clip(ips), loopback)
}

func withName(names []string, name string) []string {
	if slices.Contains(names, name) {
		return names
	}
	return append(slices.Clip(names), name)
}
