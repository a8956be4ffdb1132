// Package join gets a new node its certificate with nothing but the join
// token, the way k3s agents join: the node fetches the cluster CA from any
// member over TLS without verification, accepts it only if its hash is the one
// the token pins, and then, over a connection verified against that CA, sends
// a certificate signing request authorised by the token's secret. The node's
// private key never leaves the node.
//
// The join endpoint is HTTPS only; a member serves [Handler] with
// pki.ServerTLS(..., false), since a joining node has no certificate yet.
package join

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	"github.com/corral-dev/corral/bootstrap/pki"
)

const (
	caPath   = "/v1/join/ca"
	signPath = "/v1/join/sign"

	// maxBody bounds what a client without credentials can make a member
	// read; a P-256 CSR is well under 1 KiB.
	maxBody = 64 << 10
)

type signRequest struct {
	CSR string `json:"csr"`
}

type signResponse struct {
	Cert string `json:"cert"`
	CA   string `json:"ca"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// Handler serves the join API of a member holding the cluster CA:
//
//	GET  /v1/join/ca    the CA certificate (PEM), unauthenticated: the client pins it by hash
//	POST /v1/join/sign  {"csr": "<PEM>"} with "Authorization: Bearer <secret>" → {"cert": "<PEM>", "ca": "<PEM>"}
//
// A wrong or missing secret is refused with 401, a malformed request or CSR
// with 400, anything else with 404, each with a JSON {"error": "..."} body.
// Every refusal is logged with the remote address, and every certificate
// issued is logged with its identity. A nil log means slog.Default().
func Handler(ca *pki.CA, token pki.Token, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	caPEM := ca.CertPEM()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+caPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(caPEM)
	})
	mux.HandleFunc("POST "+signPath, func(w http.ResponseWriter, r *http.Request) {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			w.Header().Set("WWW-Authenticate", "Bearer")
			refuse(w, r, log, http.StatusUnauthorized, "missing \"Authorization: Bearer <secret>\" header; send the join token's secret")
			return
		}
		if !token.SecretMatches(secret) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			refuse(w, r, log, http.StatusUnauthorized, "wrong join token secret")
			return
		}
		var req signRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&req); err != nil {
			refuse(w, r, log, http.StatusBadRequest, "request body is not JSON {\"csr\": \"<PEM>\"}: "+err.Error())
			return
		}
		certPEM, err := ca.SignCSR([]byte(req.CSR), pki.DefaultValidity)
		if err != nil {
			refuse(w, r, log, http.StatusBadRequest, err.Error())
			return
		}
		if cert, err := pki.ParseCert(certPEM); err == nil {
			log.Info("join: issued certificate", "remote", r.RemoteAddr, "cn", cert.Subject.CommonName,
				"ips", cert.IPAddresses, "dns", cert.DNSNames, "serial", cert.SerialNumber)
		}
		writeJSON(w, http.StatusOK, signResponse{Cert: string(certPEM), CA: string(caPEM)})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		refuse(w, r, log, http.StatusNotFound, "no such endpoint; the join API is GET "+caPath+" and POST "+signPath)
	})
	return mux
}

// refuse logs a refused request and answers it with status and a JSON error.
func refuse(w http.ResponseWriter, r *http.Request, log *slog.Logger, status int, msg string) {
	log.Warn("join: refused request", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"status", status, "reason", msg)
	writeJSON(w, status, errorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
