// Package ssh installs Corral nodes on machines that already exist, over
// SSH: for each node it connects to the node's host, uploads clusterd (the
// multi-call binary) unless the machine has that very binary, writes the
// files and units of the node's boot description, the same ones its
// Ignition config or cloud-config would (templates.Node.Install), then
// starts clusterd and waits until the machine is in the cluster's registry.
//
// clusterd runs under systemd when the machine's PID 1 is systemd
// (/run/systemd/system exists, as sd_booted(3) decides): clusterd.service
// is enabled and started, and starts again at boot. Otherwise, in a
// container or on a minimal machine, a small supervisor script, started in
// a session of its own, runs clusterd as the unit would and restarts it
// when it ends; that is a fallback: nothing starts it at boot (Launch
// does, when it finds clusterd not running) and it does not survive being
// killed.
//
// Host keys are checked before anything is sent: against known_hosts files
// when Provider.KnownHosts names any, else by trust on first use against
// the fingerprints in Provider.HostKeys, which the caller persists (via
// Provider.OnNewHostKey). A key other than the recorded one is refused
// with a *HostKeyError that names the host and both fingerprints.
//
// The machine needs a POSIX sh and GNU coreutils (sha512sum, stat,
// mktemp), setsid, and, as any user but root, sudo without a password.
package ssh

import (
	"cmp"
	"context"
	"crypto/sha512"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/templates"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Provider installs nodes on existing machines over SSH.
type Provider struct {
	// Hosts maps each node's name to its machine's address: host or
	// host:port (port 22 by default).
	Hosts map[string]string
	// User is the login user, "core" by default (CoreOS's). Users other
	// than root run every command through sudo -n.
	User string
	// IdentityFiles are private key files (unencrypted: an encrypted key
	// belongs in ssh-agent). The agent at $SSH_AUTH_SOCK is asked too,
	// unless NoAgent.
	IdentityFiles []string
	NoAgent       bool
	// KnownHosts are known_hosts files. When given, a host must be in them
	// with the key it offers; HostKeys and OnNewHostKey are not used.
	KnownHosts []string
	// HostKeys are the host keys seen so far, for trust on first use: the
	// host, as known_hosts writes it ("10.0.0.11", or "[10.0.0.11]:2222"
	// for another port) to the key's type and SHA-256 fingerprint
	// ("ssh-ed25519 SHA256:…"; a bare "SHA256:…" matches a key of any
	// type). A host not in it has its key recorded here, after
	// OnNewHostKey accepts it.
	HostKeys map[string]string
	// OnNewHostKey, if set, is called with a host's first key before
	// anything is sent to the host, to persist it (provision's state);
	// an error refuses the connection. It is called with the provider's
	// lock held, so it must not call the provider.
	OnNewHostKey func(host, fingerprint string) error
	// Binary is the clusterd binary to install: the multi-call binary,
	// which runs as clusterd under that name. Default: this program.
	Binary string
	// DialTimeout bounds connecting and the SSH handshake; default 30 s.
	DialTimeout time.Duration
	// JoinTimeout bounds Launch's wait for the node to appear in the
	// cluster's registry; default 2 min; negative skips the wait. A node
	// that can't join until other nodes are up (a member of a cluster that
	// lost quorum) needs those launched concurrently, or no wait.
	JoinTimeout time.Duration
	// Grace is how long Terminate lets clusterd shut down cleanly (leave
	// etcd leadership, revoke its registration) before killing it;
	// default 10 s.
	Grace time.Duration

	mu  sync.Mutex // guards HostKeys and bin
	bin *localBinary
}

var _ providers.Provider = (*Provider)(nil)

func (p *Provider) user() string { return cmp.Or(p.User, "core") }

// address is the node's machine as host:port.
func (p *Provider) address(node string) (string, error) {
	h, ok := p.Hosts[node]
	if !ok || h == "" {
		return "", fmt.Errorf("ssh: no host for node %q: hosts has %s", node, strings.Join(slices.Sorted(mapKeys(p.Hosts)), ", "))
	}
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h, nil
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), "22"), nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// dial connects to the node's machine and checks its host key.
func (p *Provider) dial(ctx context.Context, node string) (*conn, error) {
	addr, err := p.address(node)
	if err != nil {
		return nil, err
	}
	check, algos, err := p.hostKeyCheck(node, addr)
	if err != nil {
		return nil, err
	}
	auth, closeAgent, err := p.auth()
	if err != nil {
		return nil, err
	}
	defer closeAgent()
	timeout := cmp.Or(p.DialTimeout, 30*time.Second)
	cfg := &ssh.ClientConfig{
		User: p.user(), Auth: auth, HostKeyCallback: check, HostKeyAlgorithms: algos, Timeout: timeout,
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh: %s: %w", node, err)
	}
	// The handshake has no context of its own: a deadline bounds it, and
	// closing the connection ends it when ctx does.
	nc.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	stop()
	if err != nil {
		nc.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		return nil, fmt.Errorf("ssh: %s (%s) as %s: %w", node, addr, p.user(), cmp.Or(ctx.Err(), err))
	}
	nc.SetDeadline(time.Time{})
	return &conn{client: ssh.NewClient(cc, chans, reqs), node: node, addr: addr, sudo: p.user() != "root"}, nil
}

// auth is the identity files' keys, then the agent's; the returned func
// closes the agent connection, needed only during the handshake.
func (p *Provider) auth() ([]ssh.AuthMethod, func(), error) {
	var signers []ssh.Signer
	for _, f := range p.IdentityFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("ssh: identity: %w", err)
		}
		s, err := ssh.ParsePrivateKey(b)
		var pass *ssh.PassphraseMissingError
		if errors.As(err, &pass) {
			return nil, nil, fmt.Errorf("ssh: identity %s is encrypted: add it to ssh-agent (ssh-add %s) instead", f, f)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("ssh: identity %s: %w", f, err)
		}
		signers = append(signers, s)
	}
	var methods []ssh.AuthMethod
	if len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	closeAgent := func() {}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" && !p.NoAgent {
		if c, err := net.Dial("unix", sock); err == nil {
			methods = append(methods, ssh.PublicKeysCallback(agent.NewClient(c).Signers))
			closeAgent = func() { c.Close() }
		} else if len(signers) == 0 {
			return nil, nil, fmt.Errorf("ssh: no identity: identity files are not set and the agent at SSH_AUTH_SOCK=%s does not answer: %w", sock, err)
		}
	}
	if len(methods) == 0 {
		return nil, nil, errors.New("ssh: no identity: set identity files, or run ssh-agent (SSH_AUTH_SOCK) with the key")
	}
	return methods, closeAgent, nil
}

// localBinary is the binary to install, with its SHA-512 and architecture.
type localBinary struct {
	path string
	size int64
	mod  time.Time
	sum  string
	arch string // as uname -m names it; "" if unknown
}

// binary finds and hashes the binary to install, once for as long as the
// file is unchanged.
func (p *Provider) binary() (*localBinary, error) {
	bin := p.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("ssh: finding this program to install as clusterd: %w", err)
		}
	}
	st, err := os.Stat(bin)
	if err != nil {
		return nil, fmt.Errorf("ssh: clusterd binary: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.bin; b != nil && b.path == bin && b.size == st.Size() && b.mod.Equal(st.ModTime()) {
		return b, nil
	}
	f, err := os.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("ssh: clusterd binary: %w", err)
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("ssh: clusterd binary: %w", err)
	}
	b := &localBinary{path: bin, size: st.Size(), mod: st.ModTime(), sum: hex.EncodeToString(h.Sum(nil))}
	if e, err := elf.Open(bin); err == nil {
		b.arch = unameMachine[e.Machine]
		e.Close()
	}
	p.bin = b
	return b, nil
}

// unameMachine is what uname -m says on a machine that runs binaries of
// each ELF machine type (Linux's names).
var unameMachine = map[elf.Machine]string{
	elf.EM_X86_64:  "x86_64",
	elf.EM_AARCH64: "aarch64",
	elf.EM_RISCV:   "riscv64",
	elf.EM_S390:    "s390x",
}

// Launch installs the node on its machine and starts clusterd, then waits
// until the node is in the cluster's registry. It converges: what the
// machine already has as it should be is left alone, and clusterd is
// restarted only if its binary or settings changed, so launching a running
// node again changes nothing.
func (p *Provider) Launch(ctx context.Context, spec providers.NodeSpec) error {
	if spec.Boot == nil {
		return fmt.Errorf("ssh: node %s has no boot description to install", spec.Name)
	}
	inst, err := spec.Boot.Install()
	if err != nil {
		return fmt.Errorf("ssh: node %s: %w", spec.Name, err)
	}
	bin, err := p.binary()
	if err != nil {
		return err
	}
	if inst.Binary.SHA512 != "" && !strings.EqualFold(inst.Binary.SHA512, bin.sum) {
		return fmt.Errorf("ssh: node %s: the boot description wants clusterd with SHA-512 %s, but %s has %s",
			spec.Name, inst.Binary.SHA512, bin.path, bin.sum)
	}
	c, err := p.dial(ctx, spec.Name)
	if err != nil {
		return err
	}
	defer c.Close()
	return p.launch(ctx, c, spec, inst, bin)
}

// Inventory lists the nodes of Hosts whose machines have an installation
// of this provider's (its manifest), running or not. A machine that can't
// be reached is listed, not running, with the reason: it may well hold a
// node. A changed host key is an error.
func (p *Provider) Inventory(ctx context.Context) ([]providers.Instance, error) {
	names := slices.Sorted(mapKeys(p.Hosts))
	out := make([]*providers.Instance, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { out[i], errs[i] = p.inventory(ctx, name) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var list []providers.Instance
	for _, in := range out {
		if in != nil {
			list = append(list, *in)
		}
	}
	return list, nil
}

func (p *Provider) inventory(ctx context.Context, name string) (*providers.Instance, error) {
	c, err := p.dial(ctx, name)
	var hk *HostKeyError
	if errors.As(err, &hk) {
		return nil, err
	}
	if err != nil {
		return &providers.Instance{Name: name, Detail: "unreachable: " + err.Error()}, nil
	}
	defer c.Close()
	st, err := status(ctx, c)
	if err != nil {
		return nil, err
	}
	if !st.installed {
		return nil, nil // nothing of this provider's (see terminate)
	}
	return &providers.Instance{Name: name, Running: st.running(), Detail: st.String() + " on " + c.addr}, nil
}

// Terminate stops clusterd (and the processes of the units it ran) and
// removes everything Launch installed: units, files, the binary, the
// supervisor's files and clusterd's data directory. Units the boot
// description only enabled (the image's own) stay as they are. A machine
// with nothing installed is left alone.
func (p *Provider) Terminate(ctx context.Context, name string) error {
	c, err := p.dial(ctx, name)
	if err != nil {
		return err
	}
	defer c.Close()
	return p.terminate(ctx, c)
}

// machineStatus is what statusScript reports.
type machineStatus struct {
	systemd    bool
	installed  bool
	unitState  string // systemd: clusterd.service's ActiveState
	supervisor string // supervised: pids, "-" for none
	clusterd   string
}

func (s machineStatus) running() bool {
	if s.systemd {
		return s.unitState == "active" || s.unitState == "reloading"
	}
	return s.clusterd != "-"
}

func (s machineStatus) String() string {
	switch {
	case s.systemd:
		return "clusterd.service " + s.unitState
	case s.clusterd != "-":
		return "clusterd pid " + s.clusterd + " (supervised, no systemd)"
	case s.supervisor != "-":
		return "clusterd restarting (supervisor pid " + s.supervisor + ")"
	}
	return "clusterd stopped (no systemd)"
}

func status(ctx context.Context, r remote) (machineStatus, error) {
	out, err := r.run(ctx, statusScript.with(), nil)
	if err != nil {
		return machineStatus{}, err
	}
	f := strings.Fields(out)
	switch {
	case len(f) == 3 && f[0] == "systemd":
		return machineStatus{systemd: true, installed: f[1] == "yes", unitState: f[2]}, nil
	case len(f) == 4 && f[0] == "supervised":
		return machineStatus{installed: f[1] == "yes", supervisor: f[2], clusterd: f[3]}, nil
	}
	return machineStatus{}, fmt.Errorf("ssh: status: unexpected output %q", out)
}

// wanted is one file Launch installs.
type wanted struct {
	path    string
	mode    os.FileMode
	owner   string // "" for root
	content []byte // nil for the binary, which comes from its file
	sum     string // SHA-512, hex
	// restart: a change means restarting clusterd (Corral's files, the
	// binary, clusterd.service, the supervisor); unit: the unit whose
	// file this is, restarted when it changes.
	restart bool
	unit    string
}

func newWanted(p string, mode os.FileMode, owner string, content []byte) wanted {
	sum := sha512.Sum512(content)
	if content == nil {
		content = []byte{}
	}
	return wanted{path: p, mode: mode, owner: owner, content: content, sum: hex.EncodeToString(sum[:])}
}

// fileState is a path as probeScript found it.
type fileState struct {
	missing           bool
	mode, user, group string
	sum               string
}

// matches reports whether the machine's file is w already.
func (f fileState) matches(w wanted) bool {
	if f.missing || f.sum != w.sum || f.mode != strconv.FormatUint(uint64(w.mode.Perm()), 8) {
		return false
	}
	user, group, _ := strings.Cut(cmp.Or(w.owner, "root:root"), ":")
	return f.user == user && (group == "" || f.group == group)
}

// manifest is what Launch installed on a machine, kept there for
// Terminate (which may run from another provision run, or after the node
// was dropped from the state).
type manifest struct {
	node    string
	mode    string   // "systemd" or "supervised"
	binary  string   // clusterd's path
	dataDir string   // clusterd's data directory
	files   []string // every file installed, the binary and unit files included
	units   []string // units installed and enabled, to disable
	runtime []string // files clusterd's start writes (the detected address)
	// pending are the restarts (units, clusterd.service for clusterd in
	// either mode) and the systemd reload (pendingReload) that an earlier
	// Launch wrote files for but may not have done.
	pending []string
}

// pendingReload in a manifest's pending list is systemctl daemon-reload.
const pendingReload = "daemon-reload"

func (m manifest) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by Corral's ssh provider: what it installed for node %s, for its removal.\n", m.node)
	fmt.Fprintf(&b, "node %s\nmode %s\nbinary %s\ndatadir %s\n", m.node, m.mode, m.binary, m.dataDir)
	for _, f := range m.files {
		fmt.Fprintf(&b, "file %s\n", f)
	}
	for _, u := range m.units {
		fmt.Fprintf(&b, "unit %s\n", u)
	}
	for _, f := range m.runtime {
		fmt.Fprintf(&b, "runtime %s\n", f)
	}
	for _, x := range m.pending {
		fmt.Fprintf(&b, "pending %s\n", x)
	}
	return b.String()
}

func parseManifest(s string) manifest {
	var m manifest
	for line := range strings.SplitSeq(s, "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "node":
			m.node = v
		case "mode":
			m.mode = v
		case "binary":
			m.binary = v
		case "datadir":
			m.dataDir = v
		case "file":
			m.files = append(m.files, v)
		case "unit":
			m.units = append(m.units, v)
		case "runtime":
			m.runtime = append(m.runtime, v)
		case "pending":
			m.pending = append(m.pending, v)
		}
	}
	return m
}

// launch is Launch on a connected machine.
func (p *Provider) launch(ctx context.Context, r remote, spec providers.NodeSpec, inst templates.Install, bin *localBinary) error {
	node := spec.Name
	dataDir := cmp.Or(spec.Boot.Clusterd.DataDir, defaultDataDir)
	corralFiles := len(inst.Files) - len(spec.Boot.Files) // Corral's come first

	var want []wanted
	binFile := wanted{path: inst.BinaryPath, mode: 0o755, sum: bin.sum, restart: true}
	want = append(want, binFile)
	for i, f := range inst.Files {
		w := newWanted(f.Path, f.Mode, f.Owner, f.Content)
		w.restart = i < corralFiles
		want = append(want, w)
	}
	for _, u := range inst.Units {
		if u.Content == "" {
			continue
		}
		w := newWanted(path.Join(inst.UnitDir, u.Name), 0o644, "", []byte(u.Content))
		w.unit = u.Name
		w.restart = u.Name == clusterdUnit
		want = append(want, w)
	}
	sup := newWanted(supervisorPath, 0o755, "", []byte(supervisor(inst.Name, inst.Clusterd)))
	sup.restart = true

	// The manifest is probed as a file too, and printed at the end.
	probed := []string{manifestPath}
	for _, w := range append(want, sup) {
		probed = append(probed, w.path)
	}
	out, err := r.run(ctx, probeScript.with(append([]string{manifestPath}, probed...)...), nil)
	if err != nil {
		return err
	}
	lines := strings.Split(out, "\n")
	if len(lines) < len(probed)+2 {
		return fmt.Errorf("ssh: %s: probe: unexpected output %q", node, out)
	}
	systemd := lines[0] == "systemd"
	if arch := lines[1]; bin.arch != "" && arch != bin.arch {
		return fmt.Errorf("ssh: %s: the machine is %s but %s is built for %s", node, arch, bin.path, bin.arch)
	}
	states := map[string]fileState{}
	for i, f := range probed {
		states[f] = parseFileState(lines[2+i])
	}
	old := parseManifest(strings.Join(lines[2+len(probed):], "\n"))
	if !systemd {
		// Without systemd, only clusterd can be run (by the supervisor);
		// units the group wants enabled would silently not run.
		var cant []string
		for _, u := range inst.Units {
			if u.Enabled && u.Name != clusterdUnit {
				cant = append(cant, u.Name)
			}
		}
		if len(cant) > 0 {
			return fmt.Errorf("ssh: %s: PID 1 is not systemd on this machine, so units %s can't be enabled; only clusterd runs there (supervised)",
				node, strings.Join(cant, ", "))
		}
		want = append(want, sup)
	}

	m := manifest{node: inst.Name, mode: "supervised", binary: inst.BinaryPath, dataDir: dataDir}
	if systemd {
		m.mode = "systemd"
	}
	for _, w := range want {
		m.files = append(m.files, w.path)
	}
	for _, u := range inst.Units {
		if u.Content != "" && u.Enabled {
			m.units = append(m.units, u.Name)
		}
	}
	for _, f := range inst.Clusterd.EnvironmentFiles {
		if opt, ok := strings.CutPrefix(f, "-"); ok {
			m.runtime = append(m.runtime, opt)
		}
	}
	// Files an earlier Launch installed that this one doesn't: kept in
	// the manifest until they are gone, so that an interrupted Launch
	// never loses track of a file.
	var stale []string
	for _, f := range old.files {
		if !slices.Contains(m.files, f) {
			stale = append(stale, f)
		}
	}
	var staleUnits []string
	for _, u := range old.units {
		if !slices.Contains(m.units, u) {
			staleUnits = append(staleUnits, u)
		}
	}
	// What this Launch must write, and so restart. The restarts (and a
	// reload of systemd) are recorded in the manifest, with the files,
	// before anything is written, and forgotten only once done: a Launch
	// interrupted after writing is then finished by the next, which finds
	// the files right but the restarts still pending.
	var toWrite []wanted
	pending := slices.Clone(old.pending)
	addPending := func(x string) {
		if !slices.Contains(pending, x) {
			pending = append(pending, x)
		}
	}
	for _, w := range want {
		if states[w.path].matches(w) {
			continue
		}
		toWrite = append(toWrite, w)
		if w.restart {
			addPending(clusterdUnit)
		}
		if w.unit != "" {
			addPending(pendingReload)
			addPending(w.unit)
		}
	}
	for _, f := range stale {
		if path.Dir(f) == inst.UnitDir {
			addPending(pendingReload)
		}
	}
	interim := m
	interim.files = append(slices.Clone(m.files), stale...)
	interim.units = append(slices.Clone(m.units), staleUnits...)
	interim.pending = pending
	if err := p.writeIfChanged(ctx, r, newWanted(manifestPath, 0o644, "", []byte(interim.String())), states[manifestPath]); err != nil {
		return err
	}
	for _, w := range toWrite {
		if err := p.write(ctx, r, w, bin); err != nil {
			return err
		}
	}
	if len(staleUnits) > 0 && systemd {
		if _, err := r.run(ctx, disableScript.with(append([]string{inst.UnitDir}, staleUnits...)...), nil); err != nil {
			return err
		}
	}
	if len(stale) > 0 {
		if _, err := r.run(ctx, argv(append([]string{"rm", "-f", "--"}, stale...)...), nil); err != nil {
			return err
		}
	}

	restartClusterd := slices.Contains(pending, clusterdUnit)
	if systemd {
		var units []string
		for _, u := range pending {
			if u != clusterdUnit && u != pendingReload {
				units = append(units, u)
			}
		}
		err = p.startSystemd(ctx, r, inst, restartClusterd, slices.Contains(pending, pendingReload), units)
	} else {
		err = p.startSupervised(ctx, r, restartClusterd)
	}
	if err != nil {
		return err
	}
	if final := m.String(); final != interim.String() {
		if err := p.write(ctx, r, newWanted(manifestPath, 0o644, "", []byte(final)), nil); err != nil {
			return err
		}
	}
	return p.waitJoined(ctx, r, node, inst.Name, dataDir, systemd)
}

func parseFileState(line string) fileState {
	f := strings.Fields(line)
	if len(f) != 4 {
		return fileState{missing: true}
	}
	return fileState{mode: f[0], user: f[1], group: f[2], sum: f[3]}
}

func (p *Provider) writeIfChanged(ctx context.Context, r remote, w wanted, st fileState) error {
	if st.matches(w) {
		return nil
	}
	return p.write(ctx, r, w, nil)
}

// write sends one file: its content, or the binary's file.
func (p *Provider) write(ctx context.Context, r remote, w wanted, bin *localBinary) error {
	var in io.Reader
	if w.content != nil {
		in = strings.NewReader(string(w.content))
	} else {
		f, err := os.Open(bin.path)
		if err != nil {
			return fmt.Errorf("ssh: clusterd binary: %w", err)
		}
		defer f.Close()
		in = f
	}
	mode := strconv.FormatUint(uint64(w.mode.Perm()), 8)
	_, err := r.run(ctx, writeScript.with(w.path, "0"+mode, w.owner, w.sum), in)
	return err
}

// startSystemd reloads systemd if unit files changed, enables the enabled
// units, restarts those whose files (or, for clusterd, whose binary or
// settings) changed, and starts the rest, which does nothing to running
// units.
func (p *Provider) startSystemd(ctx context.Context, r remote, inst templates.Install, restartClusterd, reload bool, changed []string) error {
	var enabled []string
	for _, u := range inst.Units {
		if u.Enabled {
			enabled = append(enabled, u.Name)
		}
	}
	var restart []string
	if restartClusterd {
		restart = append(restart, clusterdUnit)
	}
	for _, u := range changed {
		if slices.Contains(enabled, u) {
			restart = append(restart, u)
		}
	}
	cmds := []command{}
	if reload {
		cmds = append(cmds, argv("systemctl", "daemon-reload"))
	}
	cmds = append(cmds, argv(append([]string{"systemctl", "enable", "--"}, enabled...)...))
	if len(restart) > 0 {
		cmds = append(cmds, argv(append([]string{"systemctl", "restart", "--"}, restart...)...))
	}
	cmds = append(cmds, argv(append([]string{"systemctl", "start", "--"}, enabled...)...))
	for _, c := range cmds {
		if _, err := r.run(ctx, c, nil); err != nil {
			return err
		}
	}
	return nil
}

// startSupervised (re)starts the supervisor unless it runs clusterd and
// nothing changed, then waits for it to be up.
func (p *Provider) startSupervised(ctx context.Context, r remote, changed bool) error {
	st, err := status(ctx, r)
	if err != nil {
		return err
	}
	if st.supervisor != "-" && !changed {
		return nil
	}
	if st.supervisor != "-" || st.clusterd != "-" {
		if err := p.stopSupervised(ctx, r); err != nil {
			return err
		}
	}
	if _, err := r.run(ctx, startScript.with(), nil); err != nil {
		return err
	}
	return poll(ctx, 10*time.Second, "the supervisor to start", func() (bool, error) {
		st, err := status(ctx, r)
		return err == nil && st.supervisor != "-", err
	})
}

func (p *Provider) stopSupervised(ctx context.Context, r remote) error {
	_, err := r.run(ctx, stopScript.with(p.graceSeconds()), nil)
	return err
}

func (p *Provider) graceSeconds() string {
	return strconv.Itoa(max(int(cmp.Or(p.Grace, 10*time.Second)/time.Second), 1))
}

// waitJoined waits until the node is in the cluster's registry, as the
// node itself sees it; on timeout the error carries clusterd's last log
// lines.
func (p *Provider) waitJoined(ctx context.Context, r remote, node, name, dataDir string, systemd bool) error {
	timeout := cmp.Or(p.JoinTimeout, 2*time.Minute)
	if timeout < 0 {
		return nil
	}
	var last error
	err := poll(ctx, timeout, "node "+name+" to join", func() (bool, error) {
		out, err := r.run(ctx, joinedScript.with(dataDir), nil)
		if err != nil {
			last = err
			return false, nil
		}
		var ms []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			last = fmt.Errorf("list-machines: %w", err)
			return false, nil
		}
		last = fmt.Errorf("the registry has %d machines, not %s", len(ms), name)
		return slices.ContainsFunc(ms, func(m struct {
			Name string `json:"name"`
		}) bool {
			return m.Name == name
		}), nil
	})
	if err == nil {
		return nil
	}
	logCmd := argv("tail", "-n", "30", "--", logPath)
	if systemd {
		logCmd = argv("journalctl", "-u", clusterdUnit, "-n", "30", "--no-pager")
	}
	log, lerr := r.run(context.WithoutCancel(ctx), logCmd, nil)
	if lerr != nil {
		log = lerr.Error()
	}
	return fmt.Errorf("ssh: %s: %w (last: %v); clusterd's log ends:\n%s", node, err, last, log)
}

// poll calls cond until it holds, fails, or timeout or ctx ends.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// terminate is Terminate on a connected machine.
func (p *Provider) terminate(ctx context.Context, r remote) error {
	st, err := status(ctx, r)
	if err != nil {
		return err
	}
	if !st.installed {
		// Launch writes the manifest before anything else, so a machine
		// without one has nothing of this provider's, even if a clusterd
		// installed some other way runs there.
		return nil
	}
	out, err := r.run(ctx, argv("cat", "--", manifestPath), nil)
	if err != nil {
		return err
	}
	m := parseManifest(out)
	if st.systemd {
		units := m.units
		if !slices.Contains(units, clusterdUnit) {
			units = append(units, clusterdUnit)
		}
		unitDir := "/etc/systemd/system"
		for _, f := range m.files {
			if strings.HasSuffix(f, "/"+clusterdUnit) {
				unitDir = path.Dir(f)
			}
		}
		if _, err := r.run(ctx, disableScript.with(append([]string{unitDir}, units...)...), nil); err != nil {
			return err
		}
	} else if err := p.stopSupervised(ctx, r); err != nil {
		return err
	}
	dataDir := cmp.Or(m.dataDir, defaultDataDir)
	if err := checkRemovable(dataDir); err != nil {
		return fmt.Errorf("ssh: %s: %w", m.node, err)
	}
	if _, err := r.run(ctx, stopUnitsScript.with(dataDir, p.graceSeconds()), nil); err != nil {
		return err
	}
	files := append(slices.Clone(m.files), m.runtime...)
	files = append(files, supervisorPath, supervisorPID, clusterdPID, logPath, logPath+".1", manifestPath)
	if _, err := r.run(ctx, removeScript.with(append([]string{dataDir}, files...)...), nil); err != nil {
		return err
	}
	if st.systemd {
		if _, err := r.run(ctx, argv("systemctl", "daemon-reload"), nil); err != nil {
			return err
		}
	}
	return nil
}

// checkRemovable refuses to rm -rf a data directory that could be a
// system's: the manifest comes from the machine, so it is checked again.
func checkRemovable(dir string) error {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || strings.Count(dir, "/") < 2 {
		return fmt.Errorf("refusing to remove data directory %q: not a clean path at least two levels deep", dir)
	}
	switch dir {
	case "/var/lib", "/var/log", "/usr/lib", "/usr/local", "/usr/share", "/opt/bin", "/etc/systemd", "/home/core":
		return fmt.Errorf("refusing to remove data directory %q: a system directory", dir)
	}
	return nil
}
