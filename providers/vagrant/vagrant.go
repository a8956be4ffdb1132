// Package vagrant runs Corral nodes on Vagrant machines, as coreos-vagrant
// did: one machine per node, from one box, on a private network, with any
// Vagrant provider that honours private_network addresses (Providers).
//
// Node "core-4" (group core, index 4) is machine "core-04" (%s-%02d). The
// machines live in Provider.Dir, which holds the Vagrantfile (written by
// Vagrantfile), Vagrant's .vagrant directory and machines.json, the list
// of machines this provider made, so that Inventory and Terminate know
// them without provision's state. Each machine gets its node's address
// (NodeSpec.IP) on the private network.
//
// Prepare writes the Vagrantfile and brings up, with one `vagrant up`,
// every machine that is not running. Launch then installs clusterd on its
// machine the same way whatever the box and the Vagrant provider: over
// SSH, with the parameters `vagrant ssh-config` gives (host, port, user,
// key), by the ssh provider (providers/ssh), which converges and waits
// until the node has joined. Not by a Vagrant provisioner: cloud_init is
// experimental and VirtualBox-only in Vagrant 2.3, and Ignition needs a
// plugin per provider. For the same reason the Vagrantfile disables the
// default /vagrant synced folder: nothing goes through it.
//
// Vagrant's output is streamed to Provider.Out, line by line; when it
// fails, the error carries Vagrant's own message.
package vagrant

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/corral-dev/corral/internal/lines"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/providers/ssh"
)

// Provider makes the nodes' machines with Vagrant.
type Provider struct {
	// Dir is where the Vagrantfile, machines.json and Vagrant's .vagrant
	// directory live, e.g. .corral/<cluster>/vagrant; made if missing.
	Dir      string
	Settings Settings
	// Vagrant is the vagrant executable; "vagrant" from PATH by default.
	Vagrant string
	// Out gets Vagrant's output, line by line, each prefixed "vagrant: ".
	// Nil discards it.
	Out io.Writer
	// SSH are the settings of the installation over SSH that do not come
	// from `vagrant ssh-config`.
	SSH SSHOptions

	// install installs clusterd on the node's machine; the ssh provider
	// by default (tests replace it).
	install func(ctx context.Context, spec providers.NodeSpec, c sshConfig) error

	mu      sync.Mutex // guards the files in Dir, checked, HostKeys
	checked bool
	outMu   sync.Mutex
}

// SSHOptions are passed on to the ssh provider (see ssh.Provider) for the
// installation on each machine. The host, user and identity files come
// from `vagrant ssh-config`.
type SSHOptions struct {
	// HostKeys are the host keys seen so far, by host as known_hosts
	// writes it ("[127.0.0.1]:2222"); a new one is recorded here after
	// OnNewHostKey accepts it.
	HostKeys map[string]string
	// OnNewHostKey persists a host's first key; calls are serialized.
	OnNewHostKey func(host, fingerprint string) error
	// Binary is the clusterd binary to install; default: this program.
	Binary      string
	DialTimeout time.Duration
	JoinTimeout time.Duration
	Grace       time.Duration
}

var (
	_ providers.Provider = (*Provider)(nil)
	_ providers.Preparer = (*Provider)(nil)
)

// Error is a vagrant command that failed, with Vagrant's message.
type Error struct {
	Args    []string // the command's arguments, without the program
	Message string   // Vagrant's error-exit message, or its stderr
}

func (e *Error) Error() string {
	return fmt.Sprintf("vagrant %s: %s", strings.Join(e.Args, " "), e.Message)
}

// MachineName is the Vagrant machine of a node: "core-4" is "core-04".
// A name that does not end in -<index> is its own machine name.
func MachineName(node string) string {
	i := strings.LastIndexByte(node, '-')
	if i < 0 {
		return node
	}
	n, err := strconv.Atoi(node[i+1:])
	if err != nil || n < 0 || strconv.Itoa(n) != node[i+1:] {
		return node
	}
	return fmt.Sprintf("%s-%02d", node[:i], n)
}

// nodeName is the node of a machine, the inverse of MachineName.
func nodeName(machine string) string {
	i := strings.LastIndexByte(machine, '-')
	if i < 0 {
		return machine
	}
	n, err := strconv.Atoi(machine[i+1:])
	if err != nil || n < 0 || fmt.Sprintf("%02d", n) != machine[i+1:] {
		return machine
	}
	return machine[:i] + "-" + strconv.Itoa(n)
}

func (p *Provider) vagrant() string { return cmp.Or(p.Vagrant, "vagrant") }

// Check reports, before anything is written, whether Vagrant and the
// Vagrant provider can be used: the vagrant executable runs, and the
// provider's plugin is installed and its tool on PATH.
func (p *Provider) Check(ctx context.Context) error {
	prov, ok := vagrantProviders[p.Settings.Provider]
	if !ok {
		return fmt.Errorf("vagrant: unsupported Vagrant provider %q; supported: %s",
			p.Settings.Provider, strings.Join(Providers(), ", "))
	}
	if _, err := exec.LookPath(p.vagrant()); err != nil {
		return fmt.Errorf("vagrant: %s not found: install Vagrant (Debian: apt install vagrant): %w", p.vagrant(), err)
	}
	out, err := p.run(ctx, false, "--version")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(strings.TrimSpace(string(out)), "Vagrant ") {
		return fmt.Errorf("vagrant: %s --version says %q, not a Vagrant version", p.vagrant(), strings.TrimSpace(string(out)))
	}
	if prov.plugin != "" {
		out, err := p.run(ctx, false, "plugin", "list", "--machine-readable")
		if err != nil {
			return err
		}
		found := false
		for _, r := range parseMachineReadable(out) {
			found = found || r.Type == "plugin-name" && len(r.Data) > 0 && r.Data[0] == prov.plugin
		}
		if !found {
			return fmt.Errorf("vagrant: provider %q needs the %s plugin: vagrant plugin install %s",
				p.Settings.Provider, prov.plugin, prov.plugin)
		}
	}
	if prov.tool != "" {
		if _, err := exec.LookPath(prov.tool); err != nil {
			return fmt.Errorf("vagrant: provider %q needs %s on PATH (%s): %w", p.Settings.Provider, prov.tool, prov.hint, err)
		}
	}
	return nil
}

// entry is one machine of machines.json.
type entry struct {
	Node    string `json:"node"`
	Machine string `json:"machine"`
	IP      string `json:"ip"`
}

func (p *Provider) listPath() string { return filepath.Join(p.Dir, "machines.json") }

// load reads machines.json; none is an empty list.
func (p *Provider) load() ([]entry, error) {
	b, err := os.ReadFile(p.listPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vagrant: %w", err)
	}
	var list struct{ Machines []entry }
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("vagrant: %s: %w", p.listPath(), err)
	}
	return list.Machines, nil
}

// save writes the Vagrantfile and machines.json for list; an empty list
// removes both.
func (p *Provider) save(list []entry) error {
	vf := filepath.Join(p.Dir, "Vagrantfile")
	if len(list) == 0 {
		for _, f := range []string{vf, p.listPath()} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("vagrant: %w", err)
			}
		}
		return nil
	}
	machines := make([]Machine, len(list))
	for i, e := range list {
		ip, err := netip.ParseAddr(e.IP)
		if err != nil {
			return fmt.Errorf("vagrant: machine %s: %w", e.Machine, err)
		}
		machines[i] = Machine{Name: e.Machine, IP: ip}
	}
	b, err := json.MarshalIndent(struct {
		Machines []entry `json:"machines"`
	}{list}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return fmt.Errorf("vagrant: %w", err)
	}
	if err := writeFile(vf, Vagrantfile(p.Settings, machines)); err != nil {
		return err
	}
	return writeFile(p.listPath(), append(b, '\n'))
}

// writeFile replaces path's content at once.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("vagrant: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("vagrant: %w", err)
	}
	return nil
}

// Prepare writes the Vagrantfile with the specs' machines (and the
// machines made before that are still there, until Terminate removes
// them), then brings up, with one `vagrant up`, those of the specs'
// machines that are not running.
func (p *Provider) Prepare(ctx context.Context, specs []providers.NodeSpec) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.checked {
		if err := p.Check(ctx); err != nil {
			return err
		}
		p.checked = true
	}
	list, err := p.load()
	if err != nil {
		return err
	}
	var want []string
	for _, s := range specs {
		if !s.IP.Is4() {
			return fmt.Errorf("vagrant: node %s has no IPv4 address (%v)", s.Name, s.IP)
		}
		e := entry{Node: s.Name, Machine: MachineName(s.Name), IP: s.IP.String()}
		if slices.Contains(want, e.Machine) {
			return fmt.Errorf("vagrant: nodes %s and another are both machine %s", s.Name, e.Machine)
		}
		want = append(want, e.Machine)
		if i := slices.IndexFunc(list, func(o entry) bool { return o.Machine == e.Machine }); i >= 0 {
			list[i] = e
		} else {
			list = append(list, e)
		}
	}
	if err := p.save(list); err != nil {
		return err
	}
	if len(want) == 0 {
		return nil
	}
	st, err := p.status(ctx)
	if err != nil {
		return err
	}
	var up []string
	for _, m := range want {
		if st[m].State != "running" {
			up = append(up, m)
		}
	}
	if len(up) == 0 {
		return nil
	}
	_, err = p.run(ctx, true, append([]string{"up", "--provider=" + p.Settings.Provider}, up...)...)
	return err
}

func (p *Provider) status(ctx context.Context) (map[string]machineState, error) {
	out, err := p.run(ctx, false, "status", "--machine-readable")
	if err != nil {
		return nil, err
	}
	return parseStatus(out), nil
}

// Launch installs clusterd on the node's machine over SSH, with the
// parameters of `vagrant ssh-config`, and waits until the node has
// joined (see ssh.Provider.Launch). Prepare has brought the machine up.
func (p *Provider) Launch(ctx context.Context, spec providers.NodeSpec) error {
	m := MachineName(spec.Name)
	out, err := p.run(ctx, false, "ssh-config", m)
	if err != nil {
		return err
	}
	c := parseSSHConfig(out)
	if c.HostName == "" {
		return fmt.Errorf("vagrant: ssh-config %s has no HostName:\n%s", m, out)
	}
	install := p.install
	if install == nil {
		install = p.installSSH
	}
	return install(ctx, spec, c)
}

// installSSH is the ssh provider's Launch on the machine.
func (p *Provider) installSSH(ctx context.Context, spec providers.NodeSpec, c sshConfig) error {
	return p.sshTo(spec.Name, c).Launch(ctx, spec)
}

var _ providers.Sheller = (*Provider)(nil)

// Shell runs command (a shell when "") on the node's machine over SSH,
// with the parameters of `vagrant ssh-config` and the pinned host key.
func (p *Provider) Shell(ctx context.Context, node, command string, in io.Reader, out, errOut io.Writer) (int, error) {
	m := MachineName(node)
	b, err := p.run(ctx, false, "ssh-config", m)
	if err != nil {
		return 0, err
	}
	c := parseSSHConfig(b)
	if c.HostName == "" {
		return 0, fmt.Errorf("vagrant: ssh-config %s has no HostName:\n%s", m, b)
	}
	return p.sshTo(node, c).Shell(ctx, node, command, in, out, errOut)
}

// sshTo is an ssh provider for one node's machine, as ssh-config describes
// it.
func (p *Provider) sshTo(node string, c sshConfig) *ssh.Provider {
	p.mu.Lock()
	keys := maps.Clone(p.SSH.HostKeys)
	p.mu.Unlock()
	return &ssh.Provider{
		Hosts:         map[string]string{node: net.JoinHostPort(c.HostName, cmp.Or(c.Port, "22"))},
		User:          c.User,
		IdentityFiles: c.IdentityFiles,
		// As ssh-config's IdentitiesOnly: an agent's many keys could
		// exhaust the server's MaxAuthTries before Vagrant's is tried.
		NoAgent:  len(c.IdentityFiles) > 0,
		HostKeys: keys,
		// Each Launch has its own ssh.Provider: new keys go to the shared
		// map, and to the caller, one at a time.
		OnNewHostKey: func(host, fp string) error {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.SSH.OnNewHostKey != nil {
				if err := p.SSH.OnNewHostKey(host, fp); err != nil {
					return err
				}
			}
			if p.SSH.HostKeys == nil {
				p.SSH.HostKeys = map[string]string{}
			}
			p.SSH.HostKeys[host] = fp
			return nil
		},
		Binary:      p.SSH.Binary,
		DialTimeout: p.SSH.DialTimeout,
		JoinTimeout: p.SSH.JoinTimeout,
		Grace:       p.SSH.Grace,
	}
}

// Inventory lists the machines of the Vagrantfile that exist, by node
// name, running or not; machines not created are not listed.
func (p *Provider) Inventory(ctx context.Context) ([]providers.Instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list, err := p.load()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(p.Dir, "Vagrantfile")); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	st, err := p.status(ctx)
	if err != nil {
		return nil, err
	}
	var out []providers.Instance
	for _, m := range slices.Sorted(maps.Keys(st)) {
		s := st[m]
		if s.State == "not_created" || s.State == "" {
			continue
		}
		node := nodeName(m)
		if i := slices.IndexFunc(list, func(e entry) bool { return e.Machine == m }); i >= 0 {
			node = list[i].Node
		}
		detail := fmt.Sprintf("vagrant machine %s %s", m, cmp.Or(s.Human, s.State))
		if s.Provider != "" {
			detail += " (" + s.Provider + ")"
		}
		out = append(out, providers.Instance{Name: node, Running: s.State == "running", Detail: detail})
	}
	return out, nil
}

// Terminate destroys the node's machine and rewrites the Vagrantfile
// without it. A machine this provider does not know is left alone.
func (p *Provider) Terminate(ctx context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	list, err := p.load()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(list, func(e entry) bool { return e.Node == name })
	if i < 0 {
		return nil // not in the Vagrantfile: Vagrant cannot have made it
	}
	if _, err := p.run(ctx, true, "destroy", "-f", list[i].Machine); err != nil {
		return err
	}
	return p.save(slices.Delete(list, i, i+1))
}

// run runs vagrant in Dir. With stream, its output goes to Out as it
// comes; else stdout is returned. A failure is an *Error with Vagrant's
// message: its error-exit record, else its stderr.
func (p *Provider) run(ctx context.Context, stream bool, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, p.vagrant(), args...)
	cmd.Dir = p.Dir
	if _, err := os.Stat(p.Dir); err != nil {
		cmd.Dir = "" // --version and plugin list, before Dir is made
	}
	cmd.Env = append(os.Environ(),
		"VAGRANT_CHECKPOINT_DISABLE=1", // no version check over the network
		"VAGRANT_DEFAULT_PROVIDER="+p.Settings.Provider,
		"VAGRANT_NO_COLOR=1",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stream {
		// One lineWriter per stream, so that their lines do not mix.
		out := cmp.Or[io.Writer](p.Out, io.Discard)
		lo, le := p.prefixed(out), p.prefixed(out)
		defer lo.Flush()
		defer le.Flush()
		cmd.Stdout = io.MultiWriter(&stdout, lo)
		cmd.Stderr = io.MultiWriter(&stderr, le)
	}
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("vagrant %s: %w", strings.Join(args, " "), ctx.Err())
	}
	msg, ok := errorExit(stdout.Bytes())
	if !ok {
		msg = strings.TrimSpace(stderr.String())
	}
	if msg == "" {
		msg = err.Error()
	}
	return nil, &Error{Args: args, Message: msg}
}

// prefixed passes each line to out as "vagrant: line", one line at a time
// across streams.
func (p *Provider) prefixed(out io.Writer) *lines.Writer {
	return &lines.Writer{Line: func(l string) {
		p.outMu.Lock()
		defer p.outMu.Unlock()
		fmt.Fprintf(out, "vagrant: %s\n", l)
	}}
}
