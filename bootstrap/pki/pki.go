// Package pki holds Corral's cluster public-key infrastructure: the cluster
// CA that `provision` creates, the node certificates it signs, the join token
// that lets a new node obtain one, and the TLS configurations every etcd peer
// and client connection is built from.
//
// All keys are ECDSA P-256 and every leaf certificate is valid for both server
// and client authentication, because etcd peers dial each other and accept
// each other's connections with the same certificate.
package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

const (
	caValidity = 10 * 365 * 24 * time.Hour

	// clockSkew backdates every certificate so that a node whose clock runs
	// behind the signer's (common right after boot, before NTP has synced)
	// does not reject a certificate as not yet valid.
	clockSkew = time.Hour
)

// CA is the cluster's certificate authority. Every certificate in a cluster
// chains to its CA, and the token pins the CA by hash.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed ECDSA P-256 CA for clusterName, valid for ten
// years.
func NewCA(clusterName string) (*CA, error) {
	if clusterName == "" {
		return nil, errors.New("pki: cluster name is empty; the CA's common name is derived from it")
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "corral " + clusterName + " CA", Organization: []string{"corral"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaves directly; forbidding intermediates means a
		// leaked node key can never be used to mint a sub-CA.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and PEM private key (either
// "EC PRIVATE KEY" or PKCS #8 "PRIVATE KEY"). It fails if the certificate is
// not a CA or the key does not belong to it.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: certificate %q is not a CA (basic constraints CA=false); pass the cluster CA's certificate", cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: CA key does not match CA certificate %q; the two files come from different CAs", cert.Subject.CommonName)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM returns the CA private key in PEM form (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) {
	return EncodeKey(ca.Key)
}

// Hash returns the CA's fingerprint, "sha256:" followed by the hex SHA-256 of
// the certificate's DER encoding. Join tokens carry it so that a joining node
// can recognise the genuine CA.
func (ca *CA) Hash() string {
	return hashDER(ca.Cert.Raw)
}

// HashPEM returns the same fingerprint as [CA.Hash] for the first certificate
// in certPEM.
func HashPEM(certPEM []byte) (string, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return "", fmt.Errorf("pki: hash: %w", err)
	}
	return hashDER(cert.Raw), nil
}

func hashDER(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseCert parses the first PEM block of certPEM, which must be a
// certificate.
func ParseCert(certPEM []byte) (*x509.Certificate, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate: %w", err)
	}
	return cert, nil
}

// ParseKey reads an ECDSA private key from PEM, either SEC 1
// ("EC PRIVATE KEY") or PKCS #8 ("PRIVATE KEY").
func ParseKey(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: key: %w", err)
	}
	return key, nil
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	der, err := decodePEM(certPEM, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func parseKey(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM data found; expected an \"EC PRIVATE KEY\" or \"PRIVATE KEY\" block")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is a %T; Corral uses ECDSA keys only", k)
		}
		return ec, nil
	default:
		return nil, fmt.Errorf("PEM block is %q; expected \"EC PRIVATE KEY\" or \"PRIVATE KEY\"", block.Type)
	}
}

// decodePEM returns the bytes of the first PEM block, which must be of type
// typ.
func decodePEM(data []byte, typ string) ([]byte, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM data found; expected a %q block", typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("PEM block is %q; expected %q", block.Type, typ)
	}
	return block.Bytes, nil
}
