package templates

import (
	"os"
	"time"
)

// Install is a node's boot description as what goes where on the machine,
// for installers that write to a running machine themselves instead of
// handing it user data (the ssh provider). It is made from the same lists
// that both renderers walk, so a node installed this way ends up with the
// same files and units as one booted with Ignition or cloud-config.
type Install struct {
	// Name is clusterd's node name (--name).
	Name string
	// Hostname and SSHAuthorizedKeys are what the user data would set. An
	// installer working on a machine that already exists may leave them
	// alone: the machine has a name and its logins already.
	Hostname          string
	SSHAuthorizedKeys []string
	// Binary is where clusterd comes from and its SHA-512; BinaryPath is
	// where it goes, mode 0755, owned by root.
	Binary     Binary
	BinaryPath string
	// Files are Corral's files, then the group's, each with its mode
	// resolved (never 0). Neither the binary nor /etc/hostname is among
	// them.
	Files []File
	// Units are clusterd.service, then the group's. Those with Content are
	// written to UnitDir/<Name>, mode 0644; the Enabled ones are enabled
	// and started.
	UnitDir string
	Units   []Unit
	// Clusterd is how clusterd.service runs clusterd, for an installer on
	// a machine whose PID 1 is not systemd, which must run it some other
	// way.
	Clusterd Service
}

// Service is what a service unit says about running its process, as data
// rather than unit-file text.
type Service struct {
	// EnvironmentFiles are read, in order, before each start; a path that
	// starts with "-" may be missing.
	EnvironmentFiles []string
	// ExecStartPre are the commands run before each start, in order, each
	// of which must succeed; ExecStart is the command itself. Words are
	// unquoted. The only variable reference a word can hold is
	// ${CLUSTERD_IP}, set by the environment files (the IP detection
	// command writes it); every other '$' is a literal.
	ExecStartPre [][]string
	ExecStart    []string
	// RestartSec is the pause before a process that ended is started again
	// (the unit restarts it always).
	RestartSec time.Duration
	// LimitNOFILE is the limit on open files.
	LimitNOFILE int
}

// Install lists what n puts on its machine: the files and units that its
// Ignition config and cloud-config write, where clusterd goes, and how
// clusterd.service runs it. n is validated first, as for rendering.
func (n Node) Install() (Install, error) {
	b, err := n.boot()
	if err != nil {
		return Install{}, err
	}
	in := Install{
		Name: n.clusterdName(), Hostname: b.hostname, SSHAuthorizedKeys: b.keys,
		Binary: b.binary, BinaryPath: binaryPath, UnitDir: unitDir, Units: b.units,
		Clusterd: n.service(),
	}
	for _, f := range b.files {
		f.Mode = os.FileMode(f.fileMode())
		in.Files = append(in.Files, f)
	}
	return in, nil
}
