// Package state keeps what provision knows about a cluster between runs, in
// .corral/<cluster>/ beside the HCL file: the state file, the cluster's PKI,
// the join token, and one directory per node. Files are 0600, directories
// 0700. A lock file keeps two runs from converging the same cluster at once.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"golang.org/x/sys/unix"
)

// Role is a node's part in etcd.
type Role string

// The two roles.
const (
	Member Role = "member" // runs an etcd voting member
	Client Role = "client" // uses the members
)

// Node is one machine provision made.
type Node struct {
	Name    string     `json:"name"`
	Group   string     `json:"group"`
	Index   int        `json:"index"`
	IP      netip.Addr `json:"ip"`
	Role    Role       `json:"role"`
	Created time.Time  `json:"created"`
	// Boot is the node's boot config when it was made, field by field
	// (see plan.Fingerprint): a field that differs from the file's later
	// means the node is replaced, or updated in place where the provider
	// can. Absent in state written before it was recorded.
	Boot map[string]string `json:"boot,omitempty"`
	// Host is the machine an ssh node was installed on, from the
	// provider's hosts.
	Host string `json:"host,omitempty"`
	// MAC is a bare-metal node's machine (pxe): from its machine block,
	// or the first machine of the group's mac_range that booted.
	MAC string `json:"mac,omitempty"`
	// Instance is an aws node's EC2 instance: the one of its group tagged
	// corral:node=<name>.
	Instance string `json:"instance,omitempty"`
	// Installed is when a bare-metal node installed itself to disk; it
	// boots from the disk from then on (`provision reprovision` clears it).
	Installed *time.Time `json:"installed,omitempty"`
}

// State is the state file's content.
type State struct {
	Cluster  string `json:"cluster"`
	Provider string `json:"provider"`
	// Isolation is how the local provider separates nodes: "netns" or "loopback".
	Isolation string `json:"isolation,omitempty"`
	Nodes     []Node `json:"nodes"`
	// Units are the units provision submitted for the file's service
	// blocks, in the order it submitted them. up destroys only these, so
	// a unit a user started by hand with clusterctl is never touched.
	Units []Unit `json:"units,omitempty"`
	// Network is a digest of the overlay configuration last written to
	// the cluster, so that plan can tell a changed network block.
	Network string `json:"network,omitempty"`
	// HostKeys are the SSH host keys seen on first use (ssh provider):
	// host to "type SHA256:…". A different key later is refused.
	HostKeys map[string]string `json:"host_keys,omitempty"`
}

// Unit is one unit provision submitted, with the hash of its content: a
// different hash in the file later means a replace.
type Unit struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// Unit returns the named unit, or nil.
func (s *State) Unit(name string) *Unit {
	for i := range s.Units {
		if s.Units[i].Name == name {
			return &s.Units[i]
		}
	}
	return nil
}

// Node returns the named node, or nil.
func (s *State) Node(name string) *Node {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}

// Remove drops the named node from the state.
func (s *State) Remove(name string) {
	s.Nodes = slices.DeleteFunc(s.Nodes, func(n Node) bool { return n.Name == name })
}

// Members returns the nodes that run etcd members, oldest first.
func (s *State) Members() []Node {
	var out []Node
	for _, n := range s.Nodes {
		if n.Role == Member {
			out = append(out, n)
		}
	}
	return out
}

// Dir is one cluster's state directory.
type Dir struct{ Path string }

// For returns the state directory of cluster for the HCL file at hclPath.
func For(hclPath, cluster string) Dir {
	return Dir{Path: filepath.Join(filepath.Dir(hclPath), ".corral", cluster)}
}

// Paths inside the directory.
func (d Dir) file() string               { return filepath.Join(d.Path, "state.json") }
func (d Dir) PKI(name string) string     { return filepath.Join(d.Path, "pki", name) }
func (d Dir) NodeDir(node string) string { return filepath.Join(d.Path, "nodes", node) }

// AdminFiles are the CA and the admin client certificate that provision,
// clusterctl and etcdctl use to reach the cluster.
func (d Dir) AdminFiles() pki.Files {
	return pki.Files{CA: d.PKI("ca.crt"), Cert: d.PKI("admin.crt"), Key: d.PKI("admin.key")}
}

// Exists reports whether the directory holds a state file.
func (d Dir) Exists() bool {
	_, err := os.Stat(d.file())
	return err == nil
}

// Load reads the state; a missing file is an empty state.
func (d Dir) Load() (*State, error) {
	b, err := os.ReadFile(d.file())
	if errors.Is(err, os.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w (the file is corrupt; `provision down` still finds resources by name)", d.file(), err)
	}
	return &s, nil
}

// Save writes the state atomically, so a crash leaves the old or the new
// file, never half of one.
func (d Dir) Save(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(d.file(), append(b, '\n'))
}

// WriteFile writes a 0600 file atomically, making its directory 0700.
func WriteFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Lock is held for the length of one provision run.
type Lock struct {
	f *os.File
	// Abandoned describes the run that held the lock last and died
	// without releasing it ("pid 4242, up since 10:31:02"), or is "". The
	// kernel freed its lock; the run that takes it over says so rather
	// than carrying on silently.
	Abandoned string
}

// ErrLocked says another run holds the lock.
var ErrLocked = errors.New("locked")

// Lock takes the cluster's lock without waiting. The lock is an flock, so
// it is released by the kernel if the holder dies: no stale locks.
func (d Dir) Lock(what string) (*Lock, error) {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(d.Path, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := flockOrphaned(f, path); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("%w: another provision is working on this cluster (%s); wait for it or stop it",
			ErrLocked, strings.TrimSpace(string(holder)))
	}
	// A clean Unlock empties the file: whatever is in it now was left by
	// a run that died holding the lock.
	prev, _ := os.ReadFile(path)
	f.Truncate(0)
	f.WriteString("pid " + strconv.Itoa(os.Getpid()) + ", " + what + " since " + time.Now().Format(time.TimeOnly) + "\n")
	return &Lock{f: f, Abandoned: strings.TrimSpace(string(prev))}, nil
}

// orphanWait bounds the wait for a lock whose holder has died;
// orphanRetry is called before each retry (tests release the lock there).
var (
	orphanWait  = 10 * time.Second
	orphanRetry = func() {}
)

// flockOrphaned takes the flock without waiting, unless the run recorded
// as its holder is dead: a run killed while it was starting a node leaves
// the lock shared with the child it had forked but not yet exec'd (the
// descriptor closes on exec), which releases it within moments. That is
// waited out rather than reported as a live run.
func flockOrphaned(f *os.File, path string) error {
	err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil || holderAlive(path) {
		return err
	}
	for deadline := time.Now().Add(orphanWait); time.Now().Before(deadline); {
		orphanRetry()
		time.Sleep(20 * time.Millisecond) // flock has no timed wait
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			return nil
		}
	}
	return err
}

// holderAlive says whether the process recorded in the lock file ("pid N,
// ...") still exists; an unreadable record counts as alive.
func holderAlive(path string) bool {
	b, _ := os.ReadFile(path)
	var pid int
	if _, err := fmt.Sscanf(string(b), "pid %d,", &pid); err != nil || pid <= 0 {
		return true
	}
	return unix.Kill(pid, 0) != unix.ESRCH
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	l.f.Truncate(0)
	return l.f.Close()
}

// Remove deletes the whole directory (after `down`).
func (d Dir) Remove() error {
	if err := os.RemoveAll(d.Path); err != nil {
		return err
	}
	// Drop .corral too if this was its last cluster.
	os.Remove(filepath.Dir(d.Path))
	return nil
}
