package clusterctl

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/sshsession"
	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// exitSSHFailure is the status when clusterctl ssh itself fails (no such
// unit, no connection, a refused key), as ssh(1) uses it: a script can then
// tell that from the remote command's own failure.
const exitSSHFailure = 255

// errRemoteStatus marks the error that carries a remote command's nonzero
// exit status: the status speaks for itself, so Main prints nothing, as
// ssh(1) prints nothing.
var errRemoteStatus = errors.New("remote command failed")

// sshOptions are clusterctl ssh's flags.
type sshOptions struct {
	user       string
	port       int
	identities []string
	knownHosts string
	strict     bool
}

func sshCommand(conn *connection) *cobra.Command {
	o := &sshOptions{}
	cmd := &cobra.Command{
		Use:   "ssh [flags] UNIT|MACHINE [-- COMMAND...]",
		Short: "Open a shell, or run a command, on a unit's machine or a machine",
		Long: `Connect with SSH to the machine that runs UNIT (a name without a suffix
means .service), or to the machine whose id starts with MACHINE (an id
prefix as list-machines prints it; an argument made only of hex digits is
taken as a machine first), at the address list-machines shows.

With COMMAND, run it there (its words joined by spaces, for the remote
shell to split) and exit with its exit status; without, open a shell, with
a terminal if standard input is one. Flags go before UNIT|MACHINE:
everything after it is the command. clusterctl ssh exits 255 when it fails
itself, as ssh does.

Keys come from ssh-agent ($SSH_AUTH_SOCK) and from -i files (by default
~/.ssh/id_ed25519 and ~/.ssh/id_rsa, where present and not encrypted). The
machine's host key must be in --known-hosts-file unless
--strict-host-key-checking=false.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := o.run(cmd, conn, args[0], remoteCommand(args[1:]))
			var exit *ExitError
			if err != nil && !errors.As(err, &exit) {
				err = &ExitError{Code: exitSSHFailure, Err: err}
			}
			return err
		},
	}
	// Everything after the target is the remote command, flags included
	// ("clusterctl ssh hello@1 ls -l"), as for ssh(1).
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringVar(&o.user, "user", "core", "remote user (CoreOS's is core)")
	f.IntVar(&o.port, "port", 22, "remote SSH port")
	f.StringArrayVarP(&o.identities, "identity", "i", nil, "private key file, may be repeated (default ~/.ssh/id_ed25519 and ~/.ssh/id_rsa, where present)")
	f.StringVar(&o.knownHosts, "known-hosts-file", "", "known hosts file to check the host key against (default ~/.ssh/known_hosts)")
	f.BoolVar(&o.strict, "strict-host-key-checking", true, "refuse a machine whose host key is not in the known hosts file; false skips the check")
	return cmd
}

// remoteCommand joins the words after the target into the command line
// the remote shell runs. A leading "--" (which pflag keeps once the target
// has ended the flags) only separates.
func remoteCommand(words []string) string {
	if len(words) > 0 && words[0] == "--" {
		words = words[1:]
	}
	return strings.Join(words, " ")
}

func (o *sshOptions) run(cmd *cobra.Command, conn *connection, arg, command string) error {
	ctx := cmd.Context()
	m, what, err := o.resolve(ctx, conn, arg)
	if err != nil {
		return err
	}
	client, err := o.dial(ctx, m.IP, what, conn.timeout)
	if err != nil {
		return err
	}
	defer client.Close()
	stdin, _ := cmd.InOrStdin().(*os.File)
	var status int
	if command != "" {
		status, err = sshsession.Run(client, command, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
	} else {
		status, err = sshsession.Shell(client, stdin, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	var killed *sshsession.Killed
	if errors.As(err, &killed) {
		return &ExitError{Code: killed.Code, Err: killed}
	}
	if err != nil {
		return err
	}
	if status != 0 {
		return &ExitError{Code: status, Err: fmt.Errorf("%w with status %d", errRemoteStatus, status)}
	}
	return nil
}

// resolve reads the machines and the units (bounded like the other
// one-shot commands; the session itself is not) and picks the machine.
func (o *sshOptions) resolve(ctx context.Context, conn *connection, arg string) (registry.Machine, string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	cli, err := conn.connect(ctx)
	if err != nil {
		return registry.Machine{}, "", err
	}
	defer cli.Close()
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		return registry.Machine{}, "", err
	}
	snap, err := unitstore.Read(ctx, cli)
	if err != nil {
		return registry.Machine{}, "", err
	}
	return sshTarget(arg, ms, snap)
}

var hexDigits = regexp.MustCompile(`^[0-9a-f]+$`)

// sshTarget picks the machine for arg among the live machines ms: the one
// whose id starts with arg, if arg is hex and some id does; otherwise the
// machine of the unit arg names. A unit running on several machines (a
// Global unit) needs a machine named instead. It also returns how to name
// the destination in messages ("hello@1.service on 3f2a91c0.../10.77.0.11").
func sshTarget(arg string, ms []registry.Machine, snap *unitstore.Snapshot) (registry.Machine, string, error) {
	byID := map[string]registry.Machine{}
	for _, m := range ms {
		byID[m.ID] = m
	}
	isHex := hexDigits.MatchString(arg)
	if isHex {
		var found []registry.Machine
		for _, m := range ms {
			if strings.HasPrefix(m.ID, arg) {
				found = append(found, m)
			}
		}
		switch {
		case len(found) == 1:
			return found[0], "machine " + target(found[0].ID, byID), nil
		case len(found) > 1:
			var ids []string
			for _, m := range found {
				ids = append(ids, m.ID)
			}
			slices.Sort(ids)
			return registry.Machine{}, "", fmt.Errorf("machine id prefix %q is ambiguous: it starts %s; give more of the id", arg, strings.Join(ids, ", "))
		}
	}
	name, err := unitName(arg)
	if err != nil {
		if isHex {
			return registry.Machine{}, "", fmt.Errorf("no machine id starts with %q", arg)
		}
		return registry.Machine{}, "", err
	}
	u := snap.Units[name]
	if u == nil || u.File.Hash == "" {
		if isHex {
			return registry.Machine{}, "", fmt.Errorf("no machine id starts with %q, and unit %s does not exist", arg, name)
		}
		return registry.Machine{}, "", fmt.Errorf("unit %s does not exist", name)
	}
	// Where it runs; failing that, where it is loaded (a unit that failed
	// or was stopped is still worth a look on its machine), as fleetctl
	// went by the unit's machine, not its state.
	var on []string
	for _, st := range u.States {
		if st.Active == "active" && !slices.Contains(on, st.Machine) {
			on = append(on, st.Machine)
		}
	}
	if len(on) == 0 {
		for m, units := range snap.Assigned {
			if _, ok := units[name]; ok {
				on = append(on, m)
			}
		}
	}
	slices.Sort(on)
	switch {
	case len(on) == 0:
		msg := name + " is not running on any machine"
		if u.Placement != nil && u.Placement.Reason != "" {
			msg += " (unscheduled: " + u.Placement.Reason + ")"
		}
		return registry.Machine{}, "", errors.New(msg)
	case len(on) > 1:
		var where []string
		for _, id := range on {
			where = append(where, target(id, byID))
		}
		return registry.Machine{}, "", fmt.Errorf("%s runs on %d machines (%s); name one by its machine id prefix instead", name, len(on), strings.Join(where, ", "))
	}
	m, ok := byID[on[0]]
	if !ok || m.IP == "" {
		return registry.Machine{}, "", fmt.Errorf("%s is on machine %s, which is not in the cluster now", name, target(on[0], byID))
	}
	return m, name + " on " + target(m.ID, byID), nil
}

// dial connects and authenticates to ip, which is what for messages. The
// connection and handshake are bounded by timeout.
func (o *sshOptions) dial(ctx context.Context, ip, what string, timeout time.Duration) (*ssh.Client, error) {
	addr := net.JoinHostPort(ip, strconv.Itoa(o.port))
	signers, tried, err := o.signers()
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{
		User: o.user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
	}
	if err := o.hostKeyCheck(cfg, addr); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err // "connect: connection refused", without the address again
		}
		return nil, fmt.Errorf("connecting to %s (%s): %w", addr, what, err)
	}
	nc.SetDeadline(time.Now().Add(timeout))
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		var hk *hostKeyError
		switch {
		case errors.As(err, &hk):
			return nil, hk
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%s (%s) accepted none of the keys offered for user %q (%s)", addr, what, o.user, strings.Join(tried, "; "))
		}
		return nil, fmt.Errorf("ssh to %s (%s): %w", addr, what, err)
	}
	nc.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// signers gathers the keys to offer, in order: -i files, the agent's,
// then the default files. It also says what it found, for the message
// when the machine accepts none of them.
func (o *sshOptions) signers() ([]ssh.Signer, []string, error) {
	var out []ssh.Signer
	var tried []string
	for _, path := range o.identities {
		s, err := loadKey(path)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
		tried = append(tried, path)
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			tried = append(tried, fmt.Sprintf("ssh-agent at %s: %v", sock, err))
		} else {
			// The connection stays open: the agent signs during the
			// handshake. It ends with the process.
			keys, err := agent.NewClient(c).Signers()
			if err != nil {
				tried = append(tried, fmt.Sprintf("ssh-agent: %v", err))
			} else {
				out = append(out, keys...)
				tried = append(tried, fmt.Sprintf("ssh-agent (%d keys)", len(keys)))
			}
		}
	}
	if len(o.identities) == 0 {
		home, _ := os.UserHomeDir()
		for _, name := range []string{"id_ed25519", "id_rsa"} {
			path := filepath.Join(home, ".ssh", name)
			if _, err := os.Stat(path); err != nil {
				continue
			}
			s, err := loadKey(path)
			if err != nil {
				// Not fatal: the agent may hold the same key, unlocked.
				tried = append(tried, err.Error())
				continue
			}
			out = append(out, s)
			tried = append(tried, path)
		}
	}
	if len(out) == 0 {
		why := "$SSH_AUTH_SOCK is not set, and there is no ~/.ssh/id_ed25519 or ~/.ssh/id_rsa"
		if len(tried) > 0 {
			why = strings.Join(tried, "; ")
		}
		return nil, nil, fmt.Errorf("no SSH key to offer (%s): run ssh-agent and ssh-add, or pass -i FILE", why)
	}
	return out, tried, nil
}

// loadKey reads an unencrypted private key. There is no passphrase prompt:
// an encrypted key belongs in ssh-agent.
func loadKey(path string) (ssh.Signer, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(pem)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, fmt.Errorf("%s is encrypted: add it to ssh-agent with ssh-add %s", path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// hostKeyError is a host key refused by the known hosts file; its message
// is complete, so dial returns it as it is.
type hostKeyError struct{ msg string }

func (e *hostKeyError) Error() string { return e.msg }

// hostKeyCheck sets cfg's host key callback (and the algorithms to ask
// for) from the known hosts file, unless checking is off.
func (o *sshOptions) hostKeyCheck(cfg *ssh.ClientConfig, addr string) error {
	if !o.strict {
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey()
		return nil
	}
	file := o.knownHosts
	if file == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return fmt.Errorf("finding ~/.ssh/known_hosts: %w", err)
		}
		file = filepath.Join(home, ".ssh", "known_hosts")
	}
	var files []string
	if _, err := os.Stat(file); err == nil {
		files = append(files, file)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	} // a missing file knows no hosts: the check below says what to do
	check, err := knownhosts.New(files...)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	scan := fmt.Sprintf("ssh-keyscan -p %s %s >> %s", port, host, file)
	cfg.HostKeyCallback = func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := check(hostname, remote, key)
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case errors.As(err, &re):
			return &hostKeyError{fmt.Sprintf("the host key of %s (%s %s) is revoked in %s", hostname, key.Type(), ssh.FingerprintSHA256(key), file)}
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return &hostKeyError{fmt.Sprintf("the host key of %s (%s %s) is not in %s; if it is the machine's key, add it (%s), or pass --strict-host-key-checking=false",
				hostname, key.Type(), ssh.FingerprintSHA256(key), file, scan)}
		case errors.As(err, &ke):
			var known []string
			for _, k := range ke.Want {
				known = append(known, fmt.Sprintf("%s %s (%s:%d)", k.Key.Type(), ssh.FingerprintSHA256(k.Key), k.Filename, k.Line))
			}
			return &hostKeyError{fmt.Sprintf("HOST KEY MISMATCH: %s offered %s %s, but %s knows it as %s; someone may be intercepting the connection, or the machine was rebuilt (then remove the old entry with ssh-keygen -R %q -f %s)",
				hostname, key.Type(), ssh.FingerprintSHA256(key), file, strings.Join(known, ", "), knownhosts.Normalize(hostname), file)}
		}
		return err
	}
	cfg.HostKeyAlgorithms = knownAlgorithms(check, addr)
	return nil
}

// knownAlgorithms lists the host key algorithms of the keys the known hosts
// file holds for addr first, then the others, so that the machine is asked
// for a key that can be checked (OpenSSH orders them so too): otherwise a
// machine with both an RSA and an Ed25519 key could present the one the
// file does not hold and be refused as a mismatch. The others stay in the
// list so that a machine with none of the known kinds of key is still
// reported as a mismatch, not as a failed negotiation. Nil (the default
// list) when no key is known.
func knownAlgorithms(check ssh.HostKeyCallback, addr string) []string {
	// The file is asked about a key it cannot hold; its answer lists the
	// keys it does hold for addr.
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(check(addr, &net.TCPAddr{}, probe), &ke) {
		return nil
	}
	var algos []string
	for _, k := range ke.Want {
		more := []string{k.Key.Type()}
		if k.Key.Type() == ssh.KeyAlgoRSA {
			more = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, a := range more {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	if len(algos) == 0 {
		return nil
	}
	for _, a := range ssh.SupportedAlgorithms().HostKeys {
		if !slices.Contains(algos, a) {
			algos = append(algos, a)
		}
	}
	return algos
}
