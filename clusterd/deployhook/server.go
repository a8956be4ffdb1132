package deployhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/clusterd/settings"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// SettingsKey is where provision writes the file's deploy_hook block.
// Every clusterd watches it: a changed secret or key applies at once, a
// changed port moves the listener, and no key turns the hook off.
const SettingsKey = "/corral/config/deploy_hook"

// Defaults of the deploy_hook block.
const (
	DefaultKey  = "/coreos.com/deploy"
	DefaultPort = 9443
	// MinSecret is the shortest secret accepted: an HMAC key is only as
	// strong as it is long.
	MinSecret = 16
)

// Settings are the deploy_hook block, as JSON at SettingsKey.
type Settings struct {
	Key    string `json:"key"`
	Port   int    `json:"port"`
	Secret string `json:"secret"`
}

// Validate checks settings as provision and clusterd both need them.
func (s *Settings) Validate() error {
	if err := CheckKey(s.Key); err != nil {
		return err
	}
	if err := CheckPort(s.Port); err != nil {
		return err
	}
	return CheckSecret(s.Secret)
}

// CheckKey checks the key deploys are written to.
func CheckKey(key string) error {
	switch {
	case !strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") || strings.Contains(key, "//"):
		return fmt.Errorf("key %q: want an absolute key such as %q", key, DefaultKey)
	case key == "/corral" || strings.HasPrefix(key, "/corral/"):
		return fmt.Errorf("key %q: keys under /corral/ are the cluster's own; choose another, such as %q", key, DefaultKey)
	}
	return nil
}

// CheckPort checks the hook's port.
func CheckPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d: want 1 to 65535", port)
	}
	return nil
}

// CheckSecret checks the shared secret.
func CheckSecret(secret string) error {
	if len(secret) < MinSecret {
		return fmt.Errorf("secret: %d characters is too short to sign with; give at least %d (or leave it out for a generated one)", len(secret), MinSecret)
	}
	return nil
}

// Server runs the hook on one machine: HTTPS on IP and the settings' port,
// following the settings in etcd.
type Server struct {
	Client *clientv3.Client
	IP     net.IP
	// TLS is the server's configuration: the machine's certificate from
	// the cluster CA. Callers need no client certificate: the signature is
	// their credential.
	TLS *tls.Config
	Log *slog.Logger

	cur atomic.Pointer[Settings]
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	h := &Handler{Client: s.Client, Settings: s.cur.Load}
	var srv *http.Server
	port := 0
	stop := func() {
		if srv != nil {
			srv.Close()
			srv, port = nil, 0
		}
	}
	defer stop()
	apply := func(val []byte) {
		var set *Settings
		if val != nil {
			set = &Settings{}
			err := json.Unmarshal(val, set)
			if err == nil {
				err = set.Validate()
			}
			if err != nil {
				s.Log.Error("deploy hook off: bad settings at "+SettingsKey, "err", err)
				set = nil
			}
		}
		s.cur.Store(set)
		if set == nil {
			stop()
			return
		}
		if set.Port == port {
			return
		}
		stop()
		var err error
		if srv, err = s.listen(h, set.Port); err != nil {
			s.Log.Error("deploy hook not served", "err", err)
			return
		}
		port = set.Port
	}
	settings.Watch(ctx, s.Client, SettingsKey, s.Log, apply)
}

// listen starts serving h at Path on the port.
func (s *Server) listen(h http.Handler, port int) (*http.Server, error) {
	addr := net.JoinHostPort(s.IP.String(), strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("deploy hook: %w (change port in the deploy_hook block)", err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	srv := &http.Server{Handler: mux, TLSConfig: s.TLS, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug)}
	go srv.ServeTLS(ln, "", "")
	s.Log.Info("serving the deploy hook", "url", "https://"+addr+Path)
	return srv, nil
}
