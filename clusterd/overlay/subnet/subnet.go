// Package subnet keeps the overlay network's config and its subnet leases in
// etcd, in flannel's layout, so that flannel-aware tools read them as they
// always have:
//
//	/coreos.com/network/config                  the network config (Config, as JSON)
//	/coreos.com/network/subnets/10.1.42.0-24    one machine's lease (its PublicIP, BackendType, BackendData)
//
// It does what flannel did, better in three ways. A lease belongs to a
// machine id, not to a TTL: a machine gets the same subnet back however long
// it was away, and a subnet is freed only by Release (flannel re-numbered a
// machine that was down for a day). Every allocation is one etcd transaction
// that also writes a per-machine index key, /corral/overlay/machines/<id>,
// so neither two machines can share a subnet nor one machine hold two, even
// when many start at once. And the network config cannot be changed under
// existing leases: PutConfig refuses a config that some lease would not fit.
package subnet

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys, as flannel lays them out, plus the index this package adds.
const (
	// ConfigKey holds the network config.
	ConfigKey = "/coreos.com/network/config"
	// SubnetPrefix is followed by one key per lease: see KeyFor.
	SubnetPrefix = "/coreos.com/network/subnets/"
	// MachinePrefix is followed by one key per machine holding a lease,
	// whose value is the key of that lease. It is what lets a transaction
	// check that a machine holds no lease yet: etcd compares keys, and a
	// lease's owner is inside its value.
	MachinePrefix = "/corral/overlay/machines/"
)

// Errors that callers may want to tell apart, with errors.Is. The errors
// returned wrap them with the specifics.
var (
	// ErrInvalidConfig means a network config is malformed or unusable.
	ErrInvalidConfig = errors.New("invalid network config")
	// ErrNoConfig means no network config has been written yet.
	ErrNoConfig = errors.New("no network config at " + ConfigKey)
	// ErrIncompatibleConfig means PutConfig refused a config that existing
	// leases do not fit.
	ErrIncompatibleConfig = errors.New("network config is incompatible with existing leases")
	// ErrConfigChanged means Acquire was given a config that divides the
	// network differently from the one in etcd: it must be read again.
	ErrConfigChanged = errors.New("network config in etcd has changed")
	// ErrExhausted means every subnet of the network is leased.
	ErrExhausted = errors.New("network is exhausted")
)

// detailed is an error whose message says everything, and which unwraps to
// one of the sentinel errors above without repeating its text.
type detailed struct {
	msg  string
	kind error
}

func (e *detailed) Error() string { return e.msg }
func (e *detailed) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &detailed{msg: fmt.Sprintf(format, args...), kind: kind}
}

// Lease is one machine's subnet. In etcd the subnet is the key (KeyFor) and
// the rest is the value, a JSON object with flannel's field names
// ("PublicIP", "BackendType", "BackendData") plus "MachineID"; encoding/json
// turns a Lease into that value and back, leaving Subnet out. Leases that
// flannel wrote have no MachineID.
type Lease struct {
	Subnet      netip.Prefix    `json:"-"`
	PublicIP    netip.Addr      `json:"PublicIP"`
	BackendType string          `json:"BackendType"`
	BackendData json.RawMessage `json:"BackendData,omitempty"`
	MachineID   string          `json:"MachineID,omitempty"`
}

// equal reports whether two leases say the same thing.
func (l *Lease) equal(o *Lease) bool {
	return l.Subnet == o.Subnet && l.PublicIP == o.PublicIP && l.BackendType == o.BackendType &&
		bytes.Equal(l.BackendData, o.BackendData) && l.MachineID == o.MachineID
}

// KeyFor returns the etcd key of the lease on p, in flannel's form:
// 10.1.42.0/24 is /coreos.com/network/subnets/10.1.42.0-24.
func KeyFor(p netip.Prefix) string {
	return SubnetPrefix + p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// ParseKey returns the subnet whose lease is at key. It accepts only what
// KeyFor produces: an IPv4 subnet address (no host bits set) and length.
func ParseKey(key string) (netip.Prefix, error) {
	name, ok := strings.CutPrefix(key, SubnetPrefix)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("subnet key %q is not under %s", key, SubnetPrefix)
	}
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("subnet key %q is not of the form %sADDRESS-LENGTH", key, SubnetPrefix)
	}
	addr, err := netip.ParseAddr(name[:i])
	if err != nil || !addr.Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not an IPv4 address", key, name[:i])
	}
	bits, err := strconv.Atoi(name[i+1:])
	if err != nil || bits < 0 || bits > 32 || strconv.Itoa(bits) != name[i+1:] {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %q is not a prefix length", key, name[i+1:])
	}
	p := netip.PrefixFrom(addr, bits)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %s is not a subnet address (did you mean %s?)", key, p, p.Masked())
	}
	return p, nil
}

// machineKey is the index key of machineID.
func machineKey(machineID string) string { return MachinePrefix + machineID }

// checkMachineID refuses ids that would not make a single index key.
func checkMachineID(id string) error {
	if id == "" || strings.ContainsAny(id, "/ \t\r\n") {
		return fmt.Errorf("machine id %q is not valid: it must be non-empty, without slashes or spaces", id)
	}
	return nil
}

// decodeLease decodes the lease stored in kv.
func decodeLease(kv *mvccpb.KeyValue) (Lease, error) {
	p, err := ParseKey(string(kv.Key))
	if err != nil {
		return Lease{}, err
	}
	var l Lease
	if err := json.Unmarshal(kv.Value, &l); err != nil {
		return Lease{}, fmt.Errorf("lease %s: %v", kv.Key, err)
	}
	l.Subnet = p
	return l, nil
}

// sortLeases orders leases by subnet, the order List promises: address
// order, which etcd's byte order of keys is not (10.1.10.0 < 10.1.2.0).
func sortLeases(ls []Lease) {
	slices.SortFunc(ls, func(a, b Lease) int { return comparePrefix(a.Subnet, b.Subnet) })
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// PutConfig writes cfg, with its defaults filled in, as the network config.
// It refuses a config that does not validate, and one that some existing
// lease would not fit (a different Network or SubnetLen, or SubnetMin/Max
// that exclude a leased subnet): machines cannot be re-numbered under their
// running workloads, so those leases must be released first. Nothing is
// written in either case. Writing the config that is already there is a
// no-op.
//
// The check and the write are one transaction, so a lease acquired
// concurrently cannot slip in between (and Acquire, for its part, refuses to
// allocate from a config that has changed).
func PutConfig(ctx context.Context, c *clientv3.Client, cfg *Config) error {
	want := cfg.withDefaults()
	if err := want.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(want)
	if err != nil {
		return err
	}
	for {
		resp, err := c.Txn(ctx).Then(
			clientv3.OpGet(ConfigKey),
			clientv3.OpGet(SubnetPrefix, clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return err
		}
		rev := resp.Header.Revision
		var cfgMod int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			cfgMod = kvs[0].ModRevision
			// A stored config that does not parse is simply replaced:
			// nothing can be using it.
			if old, err := ParseConfig(kvs[0].Value); err == nil && *old == want {
				return nil
			}
		}
		// Every key under the prefix holds its subnet, even one whose value
		// does not decode, so only the key is looked at.
		var misfits []netip.Prefix
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			if p, err := ParseKey(string(kv.Key)); err == nil && !want.fits(p) {
				misfits = append(misfits, p)
			}
		}
		if len(misfits) > 0 {
			slices.SortFunc(misfits, comparePrefix)
			return errorf(ErrIncompatibleConfig, "%s lie outside %s; release them first (clusterctl net release MACHINE)",
				countLeases(misfits), want.describe())
		}
		// The write stands only if the config is the one read and no lease
		// was written since the read: a lease written after rev could be
		// one that does not fit. (Releases do not matter; they only help.)
		txn, err := c.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(ConfigKey), "=", cfgMod),
			clientv3.Compare(clientv3.ModRevision(SubnetPrefix), "<", rev+1).WithPrefix(),
		).Then(clientv3.OpPut(ConfigKey, string(data))).Commit()
		if err != nil {
			return err
		}
		if txn.Succeeded {
			return nil
		}
	}
}

// countLeases says "3 leases (10.1.42.0/24, 10.1.43.0/24, 10.1.44.0/24)",
// naming no more than a handful.
func countLeases(ps []netip.Prefix) string {
	const named = 5
	var names []string
	for _, p := range ps[:min(len(ps), named)] {
		names = append(names, p.String())
	}
	if len(ps) > named {
		names = append(names, "…")
	}
	noun := "leases"
	if len(ps) == 1 {
		noun = "lease"
	}
	return fmt.Sprintf("%d %s (%s)", len(ps), noun, strings.Join(names, ", "))
}

// GetConfig reads the network config. rev is the etcd revision of the read,
// returned also with ErrNoConfig, so that a caller can wait for the config
// by watching ConfigKey from rev+1.
func GetConfig(ctx context.Context, c *clientv3.Client) (*Config, int64, error) {
	resp, err := c.Get(ctx, ConfigKey)
	if err != nil {
		return nil, 0, err
	}
	rev := resp.Header.Revision
	if len(resp.Kvs) == 0 {
		return nil, rev, ErrNoConfig
	}
	cfg, err := ParseConfig(resp.Kvs[0].Value)
	if err != nil {
		return nil, rev, fmt.Errorf("network config at %s: %w", ConfigKey, err)
	}
	return cfg, rev, nil
}

// snapshot is what Acquire and Release read, all at one revision.
type snapshot struct {
	config *mvccpb.KeyValue   // nil if there is no config
	leases []*mvccpb.KeyValue // every key under SubnetPrefix
	index  *mvccpb.KeyValue   // the machine's index key, nil if none
}

func (s *snapshot) configMod() int64 {
	if s.config == nil {
		return 0
	}
	return s.config.ModRevision
}

func (s *snapshot) indexMod() int64 {
	if s.index == nil {
		return 0
	}
	return s.index.ModRevision
}

// read takes a snapshot for machineID.
func read(ctx context.Context, c *clientv3.Client, machineID string) (*snapshot, error) {
	resp, err := c.Txn(ctx).Then(
		clientv3.OpGet(ConfigKey),
		clientv3.OpGet(SubnetPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(machineKey(machineID)),
	).Commit()
	if err != nil {
		return nil, err
	}
	first := func(i int) *mvccpb.KeyValue {
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
			return kvs[0]
		}
		return nil
	}
	return &snapshot{
		config: first(0),
		leases: resp.Responses[1].GetResponseRange().Kvs,
		index:  first(2),
	}, nil
}

// held returns the lease machineID holds and its key-value, or nil: the one
// the index names if it carries the machine's id, otherwise the first that
// carries it. The second case is a lease without an index (written by hand,
// or the index deleted), which the machine adopts rather than leaving it
// orphaned while it takes another subnet.
func (s *snapshot) held(machineID string) (*Lease, *mvccpb.KeyValue) {
	var found *Lease
	var foundKV *mvccpb.KeyValue
	for _, kv := range s.leases {
		l, err := decodeLease(kv)
		if err != nil || l.MachineID != machineID {
			continue
		}
		if s.index != nil && bytes.Equal(s.index.Value, kv.Key) {
			return &l, kv
		}
		if found == nil {
			found, foundKV = &l, kv
		}
	}
	return found, foundKV
}

// Acquire gives machineID its subnet and records publicIP, backendType (""
// means cfg.Backend.Type) and data in its lease.
//
// A machine that holds a lease gets the same subnet back, however long it
// has been away; its lease is updated in place if publicIP, backendType or
// data changed. Otherwise Acquire allocates a free subnet of cfg, chosen at
// random so that machines starting together seldom reach for the same one;
// when they do, the transaction of all but one fails and the others choose
// again. If every subnet is leased the error wraps ErrExhausted.
//
// cfg is normally what GetConfig returned. If etcd holds a config that
// divides the network differently, Acquire fails with ErrConfigChanged
// rather than allocate from a stale one; with no config in etcd, cfg is used
// as it is.
func Acquire(ctx context.Context, c *clientv3.Client, cfg *Config, machineID string, publicIP netip.Addr,
	backendType string, data json.RawMessage) (*Lease, error) {
	if err := checkMachineID(machineID); err != nil {
		return nil, err
	}
	publicIP = publicIP.Unmap()
	if !publicIP.Is4() {
		return nil, fmt.Errorf("machine %s: public IP %v is not an IPv4 address", machineID, publicIP)
	}
	want := cfg.withDefaults()
	if err := want.Validate(); err != nil {
		return nil, err
	}
	if backendType == "" {
		backendType = want.Backend.Type
	}
	lease := Lease{PublicIP: publicIP, BackendType: backendType, BackendData: data, MachineID: machineID}
	value, err := json.Marshal(&lease)
	if err != nil {
		return nil, fmt.Errorf("machine %s: backend data: %v", machineID, err)
	}
	// Return what was stored (Marshal compacts BackendData), not what was
	// given.
	if err := json.Unmarshal(value, &lease); err != nil {
		return nil, err
	}
	ikey := machineKey(machineID)

	for {
		s, err := read(ctx, c, machineID)
		if err != nil {
			return nil, err
		}
		if s.config != nil {
			stored, err := ParseConfig(s.config.Value)
			if err != nil {
				return nil, fmt.Errorf("network config at %s: %w", ConfigKey, err)
			}
			if !sameSubnets(*stored, want) {
				return nil, errorf(ErrConfigChanged, "the network config in etcd, %s, is not the one given, %s; read it again",
					stored.describe(), want.describe())
			}
		}

		if old, kv := s.held(machineID); old != nil {
			if !want.fits(old.Subnet) {
				return nil, errorf(ErrConfigChanged, "machine %s holds %s, which lies outside %s; release it (clusterctl net release %s)",
					machineID, old.Subnet, want.describe(), machineID)
			}
			lease.Subnet = old.Subnet
			var ops []clientv3.Op
			if !bytes.Equal(kv.Value, value) {
				ops = append(ops, clientv3.OpPut(string(kv.Key), string(value)))
			}
			if s.index == nil || !bytes.Equal(s.index.Value, kv.Key) {
				ops = append(ops, clientv3.OpPut(ikey, string(kv.Key)))
			}
			if len(ops) == 0 {
				return &lease, nil
			}
			txn, err := c.Txn(ctx).If(
				clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision),
				clientv3.Compare(clientv3.ModRevision(ikey), "=", s.indexMod()),
			).Then(ops...).Commit()
			if err != nil {
				return nil, err
			}
			if txn.Succeeded {
				return &lease, nil
			}
			continue
		}

		p, err := pickFree(want, s.leases)
		if err != nil {
			return nil, err
		}
		lease.Subnet = p
		key := KeyFor(p)
		// The subnet must still be free, the machine must still hold
		// nothing (its index unchanged: a concurrent Acquire for the same
		// machine writes it), and the config must be the one checked.
		txn, err := c.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(ikey), "=", s.indexMod()),
			clientv3.Compare(clientv3.ModRevision(ConfigKey), "=", s.configMod()),
		).Then(
			clientv3.OpPut(key, string(value)),
			clientv3.OpPut(ikey, key),
		).Commit()
		if err != nil {
			return nil, err
		}
		if txn.Succeeded {
			return &lease, nil
		}
	}
}

// pickFree chooses a subnet of cfg uniformly at random among those no key
// in leases holds. It draws a number k below the count of free subnets and
// steps over the taken ones below it, so the cost follows the number of
// leases, not the size of the network (a /8 of /30s has 4 million subnets).
func pickFree(cfg Config, leases []*mvccpb.KeyValue) (netip.Prefix, error) {
	var taken []uint64
	for _, kv := range leases {
		// A key whose value does not decode still occupies its subnet.
		if p, err := ParseKey(string(kv.Key)); err == nil {
			if i, ok := cfg.index(p); ok {
				taken = append(taken, i)
			}
		}
	}
	slices.Sort(taken)
	taken = slices.Compact(taken)
	n := cfg.count()
	if uint64(len(taken)) >= n {
		return netip.Prefix{}, errorf(ErrExhausted,
			"network %s is exhausted: all %d /%d subnets are leased; release some (clusterctl net release MACHINE) or widen the network",
			cfg.Network, n, cfg.SubnetLen)
	}
	k := rand.Uint64N(n - uint64(len(taken)))
	for _, t := range taken {
		if t > k {
			break
		}
		k++
	}
	return cfg.subnet(k), nil
}

// Release deletes machineID's lease and its index key, atomically, and
// returns the lease it deleted. A machine with no lease is not an error:
// the lease is then nil.
func Release(ctx context.Context, c *clientv3.Client, machineID string) (*Lease, error) {
	if err := checkMachineID(machineID); err != nil {
		return nil, err
	}
	ikey := machineKey(machineID)
	for {
		s, err := read(ctx, c, machineID)
		if err != nil {
			return nil, err
		}
		released, _ := s.held(machineID)
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(ikey), "=", s.indexMod())}
		var ops []clientv3.Op
		if s.index != nil {
			ops = append(ops, clientv3.OpDelete(ikey))
		}
		// A machine holds one lease, but one made by hand could give it
		// more; after a release it must hold none.
		for _, kv := range s.leases {
			if l, err := decodeLease(kv); err == nil && l.MachineID == machineID {
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
				ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			}
		}
		if len(ops) == 0 {
			return nil, nil
		}
		txn, err := c.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, err
		}
		if txn.Succeeded {
			return released, nil
		}
	}
}

// List returns every lease, sorted by subnet, and the etcd revision it was
// read at (to watch from rev+1). A key under SubnetPrefix that is not a
// lease (a malformed key or value) is left out; its subnet still counts as
// taken when allocating.
func List(ctx context.Context, c *clientv3.Client) ([]Lease, int64, error) {
	resp, err := c.Get(ctx, SubnetPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	leases := make([]Lease, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if l, err := decodeLease(kv); err == nil {
			leases = append(leases, l)
		}
	}
	sortLeases(leases)
	return leases, resp.Header.Revision, nil
}
