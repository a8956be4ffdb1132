package templates

import (
	"net/netip"
	"os"
	"time"
)

// Node is everything one machine's boot config needs. provision fills it in
// at plan time from the cluster's HCL, its state (the CA, the token) and the
// provider (where the clusterd binary is served); the same Node always
// renders the same bytes.
type Node struct {
	// Hostname is set as the machine's host name; it is also clusterd's
	// node name unless Clusterd.Name says otherwise.
	Hostname string
	// Cluster names the cluster. clusterd has no flag for it, so it is
	// written to /etc/corral/clusterd.env for people and scripts.
	Cluster string
	// SSHAuthorizedKeys are authorized_keys lines for the login user: core
	// under Ignition, the image's default user under cloud-init.
	SSHAuthorizedKeys []string
	Clusterd          Clusterd
	Binary            Binary
	// Files and Units are the node group's own, installed after Corral's.
	Files []File
	Units []Unit
}

// Mode is the part a node's clusterd plays in the cluster's etcd (clusterd's
// --mode).
type Mode string

// The modes clusterd accepts.
const (
	ModeInit   Mode = "init"   // the first member: starts etcd with the CA
	ModeJoin   Mode = "join"   // a further voting member
	ModeClient Mode = "client" // uses the members' etcd without running one
)

// Clusterd is how the node's clusterd runs: each field is one of its flags
// (see clusterd/daemon.Command); a zero value leaves clusterd's default.
type Clusterd struct {
	Name    string // --name; "" means the Hostname
	Mode    Mode   // --mode
	DataDir string // --data-dir
	// Servers are the etcd members to join through (--servers): IP
	// addresses, or IP:port for a non-default API port. clusterd uses only
	// IP literals as etcd endpoints, so host names are refused.
	Servers []string
	// Token is the join token, "CRL1::sha256:<CA hash>::<secret>". It is a
	// secret: it goes to a 0600 file named by --token-file, never on the
	// command line.
	Token string
	// CACert is the cluster CA in PEM (--ca-cert). The token pins the CA's
	// hash, so joining nodes don't need it; the init node does.
	CACert []byte
	// CAKey is the CA's private key in PEM (--ca-key), for the init node
	// only: it is then as exposed as the user data that carries it.
	CAKey []byte
	// IP is the node's address on the cluster network (--ip). The zero
	// Addr means "find out at boot": a script run before clusterd takes the
	// source address of the route towards the first server (or of the
	// default route), because clusterd itself requires --ip.
	IP              netip.Addr
	Metadata        map[string]string // --metadata, key=value pairs
	MachineTTL      time.Duration     // --machine-ttl
	QuotaBytes      int64             // --quota-bytes
	APIPort         int               // --api-port
	Driver          string            // --driver: exec, systemd or auto
	RescheduleGrace time.Duration     // --reschedule-grace
	Network         Network
}

// Network is how the node takes part in the overlay network. The network
// itself (CIDR, backend) lives in etcd, written by provision; these are the
// node's own flags.
type Network struct {
	Disabled   bool   // --no-overlay
	Bridge     string // --bridge
	SubnetFile string // --subnet-file
	NoIPMasq   bool   // --ip-masq=false
}

// Binary is where the node fetches clusterd from at boot, and the SHA-512
// (hex) it must have: both formats refuse to install anything else.
type Binary struct {
	URL    string
	SHA512 string
}

// File is a file the node group wants on its machines.
type File struct {
	Path    string
	Content []byte
	// Mode is the Unix permission bits, at most 0777 (0 means 0644):
	// Ignition 3.4 warns that it cannot set setuid, setgid or sticky bits.
	Mode os.FileMode
	// Owner is "user" or "user:group"; "" is root. The user must exist
	// when the file is written.
	Owner string
}

// Unit is a systemd unit the node group wants on its machines. A unit with
// no Content is one the image already has, to enable.
type Unit struct {
	Name    string
	Content string
	// Enabled units are enabled (through their [Install] section, which they
	// must have) and started at first boot.
	Enabled bool
}

func (n Node) clusterdName() string {
	if n.Clusterd.Name != "" {
		return n.Clusterd.Name
	}
	return n.Hostname
}

// fileMode is the mode File.Mode stands for.
func (f File) fileMode() int {
	if f.Mode == 0 {
		return 0o644
	}
	return int(f.Mode)
}
