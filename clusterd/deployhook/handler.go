package deployhook

import (
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/corral-dev/corral/clusterd/keys"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// NoncePrefix is where accepted nonces are kept, each under a lease of
// twice the Window: a request stamped up to Window ahead stays valid until
// Window after its stamp.
const NoncePrefix = "/corral/deploy/nonces/"

// MaxBody bounds a request's body: a deploy names an image or a version,
// not a payload.
const MaxBody = 1 << 20

var nonceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{8,128}$`)

// Handler serves POST /deploy with the settings it is given.
type Handler struct {
	Client   *clientv3.Client
	Settings func() *Settings // the current settings; nil: the hook is off
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// refusal is a request refused with a status and a reason.
type refusal struct {
	status int
	reason string
}

func (r *refusal) Error() string { return r.reason }

func refuse(status int, format string, args ...any) *refusal {
	return &refusal{status: status, reason: fmt.Sprintf(format, args...)}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	res, err := h.deploy(r)
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		var rf *refusal
		if !errors.As(err, &rf) {
			rf = refuse(http.StatusInternalServerError, "writing the deploy: %v", err)
		}
		w.WriteHeader(rf.status)
		json.NewEncoder(w).Encode(errorBody{Error: rf.reason})
		return
	}
	json.NewEncoder(w).Encode(res)
}

// deploy checks the request and, if it holds, records its nonce and writes
// its body. Every check that can refuse it runs before anything is written.
func (h *Handler) deploy(r *http.Request) (Result, error) {
	s := h.Settings()
	if s == nil {
		return Result{}, refuse(http.StatusServiceUnavailable, "the deploy hook is off (no deploy_hook block in the cluster's file)")
	}
	if r.Method != http.MethodPost {
		return Result{}, refuse(http.StatusMethodNotAllowed, "use POST")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBody))
	if err != nil {
		return Result{}, refuse(http.StatusRequestEntityTooLarge, "the body is over %d bytes", MaxBody)
	}
	ts, nonce, sig := r.Header.Get(TimestampHeader), r.Header.Get(NonceHeader), r.Header.Get(SignatureHeader)
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	stamp, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Result{}, refuse(http.StatusUnauthorized, "%s %q is not unix seconds", TimestampHeader, ts)
	}
	if skew := now().Sub(time.Unix(stamp, 0)); skew > Window || skew < -Window {
		return Result{}, refuse(http.StatusUnauthorized, "%s is %s from this machine's clock; the limit is %s either way (sign requests when sending them)",
			TimestampHeader, skew.Round(time.Second), Window)
	}
	if !nonceRE.MatchString(nonce) {
		return Result{}, refuse(http.StatusUnauthorized, "%s must be 8 to 128 letters, digits, - or _", NonceHeader)
	}
	// hmac.Equal takes the same time wherever the strings differ.
	if !hmac.Equal([]byte(sig), []byte(Sign(s.Secret, ts, nonce, body))) {
		return Result{}, refuse(http.StatusUnauthorized, "%s does not match: sign timestamp.nonce.body with the cluster's deploy secret", SignatureHeader)
	}
	if !json.Valid(body) {
		return Result{}, refuse(http.StatusBadRequest, "the body is not JSON")
	}
	if err := h.recordNonce(r, nonce, ts); err != nil {
		return Result{}, err
	}
	n, err := keys.New(h.Client).Set(r.Context(), s.Key, string(body), 0)
	if err != nil {
		return Result{}, err
	}
	return Result{Key: n.Key, Revision: n.ModifiedIndex}, nil
}

// recordNonce keeps the nonce for the window, refusing one kept already.
func (h *Handler) recordNonce(r *http.Request, nonce, ts string) error {
	ctx := r.Context()
	lease, err := h.Client.Grant(ctx, int64(2*Window/time.Second))
	if err != nil {
		return err
	}
	key := NoncePrefix + nonce
	resp, err := h.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, ts, clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		h.Client.Revoke(ctx, lease.ID)
		return refuse(http.StatusUnauthorized, "%s %s was used before: every request needs a fresh one", NonceHeader, nonce)
	}
	return nil
}
