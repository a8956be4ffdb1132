package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerTLS returns a TLS 1.3 server configuration presenting certPEM/keyPEM
// and verifying client certificates against caPEM. With requireClientCert,
// every client must present a certificate from the CA (etcd peer and client
// ports). Without it, a client certificate is verified if one is given; the
// join endpoint uses this, because a joining node has no certificate yet.
func ServerTLS(caPEM, certPEM, keyPEM []byte, requireClientCert bool) (*tls.Config, error) {
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: server TLS: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: server TLS: certificate and key: %w", err)
	}
	auth := tls.VerifyClientCertIfGiven
	if requireClientCert {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   auth,
	}, nil
}

// ClientTLS returns a TLS 1.3 client configuration that trusts only caPEM
// and presents certPEM/keyPEM. Both may be nil for an anonymous client.
func ClientTLS(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: client TLS: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certPEM == nil && keyPEM == nil {
		return cfg, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: client TLS: certificate and key: %w", err)
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}

func certPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate found in the CA PEM; pass the cluster CA certificate (ca.pem)")
	}
	return pool, nil
}
