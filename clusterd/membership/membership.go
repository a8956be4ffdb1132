// Package membership keeps the cluster's etcd voters at the size the
// cluster file asks for, and takes machines out of the cluster safely.
//
// Removing a machine (provision scaling in, or `clusterctl machine remove`
// for one that died for good) goes in a fixed order: refuse if the removal
// would cost the quorum; take its etcd membership away if it was a voter;
// let a client machine be promoted to voter when the voters fell below the
// configured count; give its overlay subnet back; drop its registration, so
// the scheduler moves its units; and only then may the machine itself be
// terminated.
//
// Promotion is driven by the client machines themselves, since the one
// promoted has to start an embedded etcd member in its own clusterd: every
// client watches the voter count, and the one that wins a create-only
// transaction on a claim key (bound to its session lease, so a promoter that
// dies frees it) joins as a learner, catches up, and is promoted. Two
// promotions never run at once.
package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys this package owns.
const (
	// ConfigKey holds the cluster-wide Settings that provision writes.
	ConfigKey = "/corral/config/membership"
	// KnownPrefix indexes every machine that has joined, alive or not, by
	// id: the registry forgets a dead machine after its TTL, but removing
	// it for good needs its name and address.
	KnownPrefix = "/corral/membership/machines/"
	// RemovedPrefix holds a tombstone per removed machine id; a clusterd
	// that finds its own stops, and promoters take it as a nudge.
	RemovedPrefix = "/corral/membership/removed/"
	// claimKey is held by the one client that is being promoted.
	claimKey = "/corral/membership/promotion"
)

// Settings are the cluster-wide membership settings.
type Settings struct {
	// Voters is how many voting etcd members the cluster keeps: the
	// cluster block's etcd_members.
	Voters int `json:"voters"`
}

// PutSettings writes the cluster's settings; clusterd picks them up by
// watching, so a change needs no restart.
func PutSettings(ctx context.Context, c *clientv3.Client, s Settings) error {
	if s.Voters < 1 {
		return fmt.Errorf("membership: voters must be at least 1, got %d", s.Voters)
	}
	b, _ := json.Marshal(s)
	_, err := c.Put(ctx, ConfigKey, string(b))
	return err
}

// GetSettings reads the cluster's settings; ok is false when provision has
// not written any (then no promotion happens).
func GetSettings(ctx context.Context, c *clientv3.Client) (s Settings, ok bool, err error) {
	resp, err := c.Get(ctx, ConfigKey)
	if err != nil || len(resp.Kvs) == 0 {
		return s, false, err
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &s); err != nil {
		return s, false, fmt.Errorf("membership: bad settings at %s: %w (rewrite them with `provision up`)", ConfigKey, err)
	}
	return s, true, nil
}

// Machine is what the index keeps of a machine.
type Machine struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	IP   string `json:"ip"`
}

// Short is the id as list-machines shows it.
func (m Machine) Short() string { return m.ID[:min(8, len(m.ID))] }

// Record adds a machine to the index (clusterd does it at every start).
func Record(ctx context.Context, c *clientv3.Client, m Machine) error {
	b, _ := json.Marshal(m)
	_, err := c.Put(ctx, KnownPrefix+m.ID, string(b))
	return err
}

// Known lists every indexed machine, ordered by id.
func Known(ctx context.Context, c *clientv3.Client) ([]Machine, error) {
	resp, err := c.Get(ctx, KnownPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []Machine
	for _, kv := range resp.Kvs {
		var m Machine
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return nil, fmt.Errorf("membership: bad record at %s: %w", kv.Key, err)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ErrNoMachine is returned by Find when nothing matches.
var ErrNoMachine = errors.New("no such machine")

// Find resolves what a user typed: a machine id or a prefix of one (as
// list-machines prints it, with or without its "..."), or a node name.
func Find(ctx context.Context, c *clientv3.Client, arg string) (Machine, error) {
	ms, err := Known(ctx, c)
	if err != nil {
		return Machine{}, err
	}
	key := strings.TrimSuffix(arg, "...")
	var hits []Machine
	for _, m := range ms {
		if m.Name == key || m.ID == key {
			return m, nil
		}
		if key != "" && strings.HasPrefix(m.ID, key) {
			hits = append(hits, m)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		var have []string
		for _, m := range ms {
			have = append(have, m.Short()+" ("+m.Name+")")
		}
		return Machine{}, fmt.Errorf("%w %q: the cluster has known %s; give a machine id (or its first characters) or a node name",
			ErrNoMachine, arg, strings.Join(have, ", "))
	}
	var names []string
	for _, m := range hits {
		names = append(names, m.ID+" ("+m.Name+")")
	}
	return Machine{}, fmt.Errorf("%q matches %d machines: %s; give more of the id", arg, len(hits), strings.Join(names, ", "))
}

// Tombstone marks a machine removed for good.
type Tombstone struct {
	Machine
	Removed time.Time `json:"removed"`
	// VoterRemoved is set, rewriting the tombstone, once its etcd member
	// is gone: the write wakes the clients that may be promoted (etcd
	// can't be watched for membership changes).
	VoterRemoved bool `json:"voter_removed,omitempty"`
}

// Removed reports whether machineID has a tombstone.
func Removed(ctx context.Context, c *clientv3.Client, machineID string) (bool, error) {
	resp, err := c.Get(ctx, RemovedPrefix+machineID, clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

// Quorum is how many of n voters must agree.
func Quorum(n int) int { return n/2 + 1 }
