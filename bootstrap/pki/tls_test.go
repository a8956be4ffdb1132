package pki

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs one TLS handshake over loopback between a server using
// srvCfg and a client using cliCfg, and returns each side's error.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config) (srvErr, cliErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		if err = c.(*tls.Conn).Handshake(); err == nil {
			_, err = c.Write([]byte{1})
		}
		srvDone <- err
	}()

	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), cliCfg)
	if err == nil {
		// In TLS 1.3 the client's handshake completes before the server has
		// checked the client's certificate; reading waits for its verdict.
		_, err = io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	return <-srvDone, err
}

func TestMutualTLS(t *testing.T) {
	ca, other := newCA(t, "prod"), newCA(t, "other")
	loopback := CertRequest{CommonName: "core-1"} // SignCSR adds 127.0.0.1
	srvCert, srvKey, err := ca.Issue(loopback, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := ca.Issue(CertRequest{CommonName: "core-2"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey, err := other.Issue(CertRequest{CommonName: "core-2"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	server := func(requireClientCert bool) *tls.Config {
		cfg, err := ServerTLS(ca.CertPEM(), srvCert, srvKey, requireClientCert)
		if err != nil {
			t.Fatalf("ServerTLS: %v", err)
		}
		return cfg
	}
	client := func(caPEM, certPEM, keyPEM []byte) *tls.Config {
		cfg, err := ClientTLS(caPEM, certPEM, keyPEM)
		if err != nil {
			t.Fatalf("ClientTLS: %v", err)
		}
		return cfg
	}

	// A Go client withholds a certificate whose issuer the server did not
	// ask for, which would make a foreign certificate look like no
	// certificate at all; insist, so that the server's verification is what
	// is tested.
	insist := func(cfg *tls.Config) *tls.Config {
		cert := cfg.Certificates[0]
		cfg.Certificates = nil
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		return cfg
	}

	for _, tc := range []struct {
		name   string
		server *tls.Config
		client *tls.Config
		want   string // in the failing side's error; "" for success
	}{
		{"CA-signed client", server(true), client(ca.CertPEM(), cliCert, cliKey), ""},
		{"no client certificate", server(true), client(ca.CertPEM(), nil, nil), "didn't provide a certificate"},
		{"client certificate from another CA", server(true), insist(client(ca.CertPEM(), foreignCert, foreignKey)), "unknown authority"},
		{"client trusts another CA", server(true), client(other.CertPEM(), cliCert, cliKey), "unknown authority"},
		{"anonymous client, certificate optional", server(false), client(ca.CertPEM(), nil, nil), ""},
		{"client certificate from another CA, certificate optional", server(false), insist(client(ca.CertPEM(), foreignCert, foreignKey)), "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvErr, cliErr := handshake(t, tc.server, tc.client)
			if tc.want == "" {
				if srvErr != nil || cliErr != nil {
					t.Errorf("handshake failed: server: %v; client: %v", srvErr, cliErr)
				}
				return
			}
			if srvErr == nil || cliErr == nil {
				t.Fatalf("handshake succeeded (server error %v, client error %v), want both sides to fail", srvErr, cliErr)
			}
			if !strings.Contains(srvErr.Error(), tc.want) && !strings.Contains(cliErr.Error(), tc.want) {
				t.Errorf("handshake failed for another reason: server: %v; client: %v; want %q", srvErr, cliErr, tc.want)
			}
		})
	}
}

func TestTLSConfigsRequireTLS13(t *testing.T) {
	ca := newCA(t, "prod")
	certPEM, keyPEM, err := ca.Issue(CertRequest{CommonName: "core-1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServerTLS(ca.CertPEM(), certPEM, keyPEM, true)
	if err != nil {
		t.Fatal(err)
	}
	cli := &tls.Config{RootCAs: srv.ClientCAs, MaxVersion: tls.VersionTLS12, Certificates: srv.Certificates}
	if srvErr, cliErr := handshake(t, srv, cli); srvErr == nil || cliErr == nil {
		t.Errorf("TLS 1.2 client connected (server error %v, client error %v)", srvErr, cliErr)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := newCA(t, "prod")
	certPEM, keyPEM, err := ca.Issue(CertRequest{CommonName: "core-1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ServerTLS(nil, certPEM, keyPEM, true); err == nil {
		t.Error("ServerTLS without a CA succeeded")
	}
	if _, err := ServerTLS(ca.CertPEM(), certPEM, nil, true); err == nil {
		t.Error("ServerTLS without a key succeeded")
	}
	if _, err := ClientTLS(ca.CertPEM(), certPEM, nil); err == nil {
		t.Error("ClientTLS with a certificate but no key succeeded")
	}
	otherKey, _ := ca.KeyPEM()
	if _, err := ClientTLS(ca.CertPEM(), certPEM, otherKey); err == nil {
		t.Error("ClientTLS with a key that does not match the certificate succeeded")
	}
}
