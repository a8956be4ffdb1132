// Package registry keeps the cluster's list of live machines.
//
// Each clusterd writes one record under /corral/machines/<machine-id>, bound
// to an etcd lease that it keeps alive. A machine that stops heartbeating
// disappears when its lease expires; one that shuts down cleanly revokes its
// lease and disappears at once. The record is all the scheduler and the CLI
// know about a machine: its id, address, hostname and metadata.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefix is where machine records live.
const Prefix = "/corral/machines/"

// DefaultTTL is how long a machine outlives its last heartbeat. fleet used
// 30 s; etcd's lease keepalive (every TTL/3) makes 10 s safe and faster.
const DefaultTTL = 10 * time.Second

// Machine is one clusterd's record.
type Machine struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	IP       string            `json:"ip"`
	Hostname string            `json:"hostname"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Member   bool              `json:"member"` // runs an etcd member
	Version  string            `json:"version,omitempty"`
	Started  time.Time         `json:"started"`
}

var machineIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// MachineID returns the stable 32-hex id kept in dir/machine-id, creating
// it on first use, as systemd does for /etc/machine-id.
func MachineID(dir string) (string, error) {
	id, err := ReadMachineID(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	path := filepath.Join(dir, "machine-id")
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id = hex.EncodeToString(raw[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	return id, os.WriteFile(path, []byte(id+"\n"), 0o600)
}

// ReadMachineID returns the id kept in dir/machine-id without creating one.
func ReadMachineID(dir string) (string, error) {
	path := filepath.Join(dir, "machine-id")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if !machineIDPattern.MatchString(id) {
		return "", fmt.Errorf("%s: not a 32-hex machine id: %q", path, id)
	}
	return id, nil
}

// Heartbeat keeps one machine's record alive.
type Heartbeat struct {
	Client  *clientv3.Client
	Machine Machine
	TTL     time.Duration
	Log     *slog.Logger
}

// Run registers the machine and keeps its lease alive until ctx ends, then
// revokes the lease so the machine leaves the list at once. If the lease is
// lost (etcd unreachable for longer than the TTL) it registers again as soon
// as etcd answers: the machine is alive, it was only unheard.
func (h *Heartbeat) Run(ctx context.Context) error {
	ttl := h.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	log := h.Log
	if log == nil {
		log = slog.Default()
	}
	value, err := json.Marshal(h.Machine)
	if err != nil {
		return err
	}
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		lease, err := h.register(ctx, value, ttl)
		if err != nil {
			log.Warn("machine registration failed; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			wait = min(2*wait, ttl/2)
			continue
		}
		wait = 100 * time.Millisecond
		keep, err := h.Client.KeepAlive(ctx, lease)
		if err != nil {
			continue
		}
		for range keep {
		}
		if ctx.Err() == nil {
			log.Warn("machine lease lost; registering again", "lease", fmt.Sprintf("%x", lease))
			continue
		}
		// Leaving cleanly: drop the record now rather than after the TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_, _ = h.Client.Revoke(rctx, lease)
		cancel()
	}
	return nil
}

func (h *Heartbeat) register(ctx context.Context, value []byte, ttl time.Duration) (clientv3.LeaseID, error) {
	rctx, cancel := context.WithTimeout(ctx, ttl)
	defer cancel()
	g, err := h.Client.Grant(rctx, int64(ttl/time.Second))
	if err != nil {
		return 0, err
	}
	if _, err := h.Client.Put(rctx, Prefix+h.Machine.ID, string(value), clientv3.WithLease(g.ID)); err != nil {
		// The put may have landed even though its answer was lost (ctx
		// ended in flight): revoke the lease so no record outlives us.
		vctx, vcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_, _ = h.Client.Revoke(vctx, g.ID)
		vcancel()
		return 0, err
	}
	return g.ID, nil
}

// List returns the live machines, ordered by id.
func List(ctx context.Context, c *clientv3.Client) ([]Machine, int64, error) {
	resp, err := c.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := make([]Machine, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m Machine
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return nil, 0, fmt.Errorf("registry: bad record at %s: %w", kv.Key, err)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Machine) int { return strings.Compare(a.ID, b.ID) })
	return out, resp.Header.Revision, nil
}

// WaitFor blocks until cond holds for the list of live machines, watching
// the registry rather than polling, and returns that list.
func WaitFor(ctx context.Context, c *clientv3.Client, cond func([]Machine) bool) ([]Machine, error) {
	for {
		ms, rev, err := List(ctx, c)
		if err != nil {
			return nil, err
		}
		if cond(ms) {
			return ms, nil
		}
		wctx, cancel := context.WithCancel(ctx)
		w := c.Watch(wctx, Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		_, ok := <-w
		cancel()
		if !ok && ctx.Err() != nil {
			return ms, ctx.Err()
		}
	}
}
