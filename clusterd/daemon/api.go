package daemon

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
)

// requireClientCert admits only requests that presented a certificate from
// the cluster CA (the TLS layer verified it; here we insist it was given).
func requireClientCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, `{"error":"a client certificate from the cluster CA is required"}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// netCheck probes every other machine's overlay address from this one.
func (n *Node) netCheck(w http.ResponseWriter, r *http.Request) {
	results, err := n.Overlay.Check(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(results)
}

func ipAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}
