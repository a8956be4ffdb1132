package clusterctl_test

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterctl"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/providers/local"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"
)

// sshPort is where the test's SSH servers listen, on every node's address
// inside the node's namespace (so no port on the host is taken).
const sshPort = "2222"

// clusterctl ssh against real machines: each node of the cluster gets an
// SSH server in its network namespace, on its address, that runs commands
// with the node's name in $CORRAL_TEST_NODE, so the output shows which
// machine clusterctl reached.
func TestSSH(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, TTL: 4 * time.Second})
	if out, errOut, code := c.Ctl(append([]string{"start"}, examples("hello@1.service")...)...); code != 0 {
		t.Fatalf("start hello@1 (exit %d): %s%s", code, out, errOut)
	}
	s := c.WaitUnits("hello@1 active", func(s *unitstore.Snapshot) bool { return len(activeOn(s, "hello@1.service")) == 1 })
	ms := c.WaitMachines(time.Minute, "2 machines", func(ms []machine) bool { return len(ms) == 2 })
	byID := machinesByID(ms)
	helloM := byID[activeOn(s, "hello@1.service")[0]]
	var other registry.Machine
	for _, m := range ms {
		if m.ID != helloM.ID {
			other = m
		}
	}

	dir := t.TempDir()
	userKey, userPub := newKey(t)
	keyFile := writeKey(t, filepath.Join(dir, "key"), userKey)
	var knownLines []string
	for _, m := range ms {
		hostKey, hostPub := newKey(t)
		startSSHServer(t, c, m, hostKey, userPub)
		knownLines = append(knownLines, knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort(m.IP, sshPort))}, hostPub))
	}
	known := writeFile(t, filepath.Join(dir, "known_hosts"), strings.Join(knownLines, "\n")+"\n")
	// The defaults: ~/.ssh/id_ed25519 and ~/.ssh/known_hosts of a home of
	// the test's own; the other cases get an empty home, so that only what
	// their flags say is used.
	home := filepath.Join(dir, "home")
	writeKey(t, filepath.Join(home, ".ssh", "id_ed25519"), userKey)
	writeFile(t, filepath.Join(home, ".ssh", "known_hosts"), strings.Join(knownLines, "\n")+"\n")
	empty := t.TempDir()

	run := func(env []string, stdin string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(c.Binary, append([]string{"ctl", "ssh"}, args...)...)
		cmd.Env = append(c.Env(), append([]string{"HOME=" + empty, "SSH_AUTH_SOCK="}, env...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	}
	flags := []string{"--port", sshPort, "-i", keyFile, "--known-hosts-file", known}
	with := func(args ...string) []string { return append(append([]string{}, flags...), args...) }

	t.Run("UnitCommand", func(t *testing.T) {
		out, errOut, code := run(nil, "", with("hello@1", "--", "echo ok; echo $CORRAL_TEST_NODE")...)
		if code != 0 || out != "ok\n"+helloM.Name+"\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want ok and %s", code, out, errOut, helloM.Name)
		}
	})
	t.Run("ExitStatus", func(t *testing.T) {
		// The remote status is clusterctl's, and nothing is added to the
		// command's own stderr.
		out, errOut, code := run(nil, "", with("hello@1", "echo out; echo err >&2; exit 7")...)
		if code != 7 || out != "out\n" || errOut != "err\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 7, out, err", code, out, errOut)
		}
	})
	t.Run("MachinePrefixAndDefaults", func(t *testing.T) {
		out, errOut, code := run([]string{"HOME=" + home}, "", "--port", sshPort, other.ID[:12], "--", "echo $CORRAL_TEST_NODE")
		if code != 0 || out != other.Name+"\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want %s", code, out, errOut, other.Name)
		}
	})
	t.Run("ShellReadsStdin", func(t *testing.T) {
		// Without a command and without a terminal, the remote shell reads
		// its commands from stdin.
		out, errOut, code := run(nil, "echo from-shell $CORRAL_TEST_NODE\nexit 4\n", with("hello@1")...)
		if code != 4 || out != "from-shell "+helloM.Name+"\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("Terminal", func(t *testing.T) {
		// With a terminal on stdin: a remote terminal of its type and size,
		// and the local one back as it was afterwards (it was raw between).
		master, tty := openPty(t)
		defer master.Close()
		defer tty.Close()
		if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: 100, Row: 30}); err != nil {
			t.Fatal(err)
		}
		before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(c.Binary, append([]string{"ctl", "ssh"}, with("hello@1")...)...)
		cmd.Env = append(c.Env(), "HOME="+empty, "SSH_AUTH_SOCK=", "TERM=xterm-test")
		var stderr bytes.Buffer
		cmd.Stdin, cmd.Stderr = tty, &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A session that hangs is killed after a minute, which ends stdout.
		watchdog := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
		defer watchdog.Stop()
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		fail := func(format string, args ...any) {
			t.Helper()
			cmd.Process.Kill()
			for range lines {
			}
			cmd.Wait()
			t.Fatalf(format+" (exit %d, stderr %q)", append(args, cmd.ProcessState.ExitCode(), stderr.String())...)
		}
		if _, err := master.Write([]byte("echo pty: $TEST_PTY\n")); err != nil {
			fail("%v", err)
		}
		// The answer means the session is up: the terminal is raw now.
		if line := <-lines; line != "pty: xterm-test 100x30" {
			fail("remote terminal: %q, want xterm-test 100x30", line)
		}
		during, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			fail("%v", err)
		}
		if during.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
			fail("the terminal is not raw during the session: lflag %#x", during.Lflag)
		}
		if _, err := master.Write([]byte("exit 5\n")); err != nil {
			fail("%v", err)
		}
		for range lines {
		}
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 5 {
			t.Fatalf("exit %d, want 5 (stderr %q)", code, stderr.String())
		}
		after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if *after != *before {
			t.Fatalf("the terminal was not restored: %+v, was %+v", *after, *before)
		}
	})
	t.Run("Agent", func(t *testing.T) {
		sock := startAgent(t, userKey)
		out, errOut, code := run([]string{"SSH_AUTH_SOCK=" + sock}, "", "--port", sshPort, "--known-hosts-file", known, "hello@1", "echo agent-ok")
		if code != 0 || out != "agent-ok\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("WrongHostKey", func(t *testing.T) {
		_, impostor := newKey(t)
		bad := writeFile(t, filepath.Join(t.TempDir(), "known_hosts"),
			knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort(helloM.IP, sshPort))}, impostor)+"\n")
		marker := filepath.Join(t.TempDir(), "ran")
		_, errOut, code := run(nil, "", "--port", sshPort, "-i", keyFile, "--known-hosts-file", bad, "hello@1", "touch "+marker)
		if code != 255 || !strings.Contains(errOut, "HOST KEY MISMATCH") {
			t.Fatalf("exit %d, stderr %q; want 255 and a host key mismatch", code, errOut)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("the command ran on a machine whose host key was refused")
		}
		// A known key of another kind than the machine's is a mismatch too
		// (not a failure to agree on an algorithm).
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaPub, err := ssh.NewPublicKey(&rsaKey.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, bad, knownhosts.Line([]string{knownhosts.Normalize(net.JoinHostPort(helloM.IP, sshPort))}, rsaPub)+"\n")
		_, errOut, code = run(nil, "", "--port", sshPort, "-i", keyFile, "--known-hosts-file", bad, "hello@1", "touch "+marker)
		if code != 255 || !strings.Contains(errOut, "HOST KEY MISMATCH") || !strings.Contains(errOut, "knows it as ssh-rsa") {
			t.Fatalf("with an RSA key known: exit %d, stderr %q; want 255 and a host key mismatch", code, errOut)
		}
	})
	t.Run("UnknownHost", func(t *testing.T) {
		none := writeFile(t, filepath.Join(t.TempDir(), "known_hosts"), "")
		_, errOut, code := run(nil, "", "--port", sshPort, "-i", keyFile, "--known-hosts-file", none, "hello@1", "true")
		if code != 255 || !strings.Contains(errOut, "is not in "+none) || !strings.Contains(errOut, "ssh-keyscan -p "+sshPort+" "+helloM.IP) {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		out, errOut, code := run(nil, "", "--port", sshPort, "-i", keyFile, "--known-hosts-file", none, "--strict-host-key-checking=false", "hello@1", "echo unchecked")
		if code != 0 || out != "unchecked\n" {
			t.Fatalf("with --strict-host-key-checking=false: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("WrongUserKey", func(t *testing.T) {
		stranger, _ := newKey(t)
		k := writeKey(t, filepath.Join(t.TempDir(), "key"), stranger)
		_, errOut, code := run(nil, "", "--port", sshPort, "-i", k, "--known-hosts-file", known, "hello@1", "true")
		if code != 255 || !strings.Contains(errOut, "accepted none of the keys") || !strings.Contains(errOut, k) {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("ConnectionRefused", func(t *testing.T) {
		_, errOut, code := run(nil, "", "--port", "2223", "-i", keyFile, "--known-hosts-file", known, "hello@1", "true")
		if code != 255 || !strings.Contains(errOut, net.JoinHostPort(helloM.IP, "2223")) || !strings.Contains(errOut, "connection refused") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("NoSuchUnit", func(t *testing.T) {
		_, errOut, code := run(nil, "", with("nosuch", "true")...)
		if code != 255 || !strings.Contains(errOut, "unit nosuch.service does not exist") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
	t.Run("UnitNotRunning", func(t *testing.T) {
		if out, errOut, code := c.Ctl(append([]string{"submit"}, examples("hello@2.service")...)...); code != 0 {
			t.Fatalf("submit (exit %d): %s%s", code, out, errOut)
		}
		_, errOut, code := run(nil, "", with("hello@2", "true")...)
		if code != 255 || !strings.Contains(errOut, "hello@2.service is not running on any machine") {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
	})
}

// How clusterctl ssh picks the machine, without a cluster.
func TestSSHTarget(t *testing.T) {
	ms := []registry.Machine{
		{ID: "aa11" + strings.Repeat("0", 28), IP: "10.0.0.1"},
		{ID: "aa22" + strings.Repeat("0", 28), IP: "10.0.0.2"},
		{ID: "bb33" + strings.Repeat("0", 28), IP: "10.0.0.3"},
	}
	unit := func(desired string, placement *unitstore.Placement, states ...unitstore.UnitState) *unitstore.Unit {
		return &unitstore.Unit{File: unitstore.UnitFile{Hash: "h"}, Desired: desired, Placement: placement, States: states}
	}
	active := func(name, machine string) unitstore.UnitState {
		return unitstore.UnitState{Name: name, Machine: machine, Active: "active", Sub: "running"}
	}
	snap := &unitstore.Snapshot{
		Units: map[string]*unitstore.Unit{
			"web.service":    unit("launched", nil, active("web.service", ms[2].ID)),
			"loaded.service": unit("loaded", nil, unitstore.UnitState{Name: "loaded.service", Machine: ms[1].ID, Active: "inactive"}),
			"global.service": unit("launched", nil, active("global.service", ms[0].ID), active("global.service", ms[1].ID)),
			"stuck.service":  unit("launched", &unitstore.Placement{Reason: "no machine fits: Conflicts=stuck*"}),
			"idle.service":   unit("inactive", nil),
			"orphan.service": unit("launched", nil, active("orphan.service", "cc"+strings.Repeat("0", 30))),
			"cafe.service":   unit("launched", nil, active("cafe.service", ms[0].ID)),
		},
		Assigned: map[string]map[string]unitstore.Assignment{
			ms[1].ID: {"loaded.service": {Name: "loaded.service", Desired: "loaded"}},
		},
	}
	for _, tc := range []struct {
		arg, ip, err string
	}{
		{"web", "10.0.0.3", ""},
		{"web.service", "10.0.0.3", ""},
		{"loaded", "10.0.0.2", ""}, // stopped, but on its machine
		{"bb", "10.0.0.3", ""},
		{"aa2", "10.0.0.2", ""},
		{"aa", "", `machine id prefix "aa" is ambiguous: it starts ` + ms[0].ID + ", " + ms[1].ID},
		{"cafe", "10.0.0.1", ""}, // hex, but no machine id starts so: a unit
		{"dd", "", `no machine id starts with "dd", and unit dd.service does not exist`},
		{"nosuch", "", "unit nosuch.service does not exist"},
		{"idle", "", "idle.service is not running on any machine"},
		{"stuck", "", "stuck.service is not running on any machine (unscheduled: no machine fits: Conflicts=stuck*)"},
		{"global", "", "global.service runs on 2 machines (aa110000.../10.0.0.1, aa220000.../10.0.0.2); name one by its machine id prefix instead"},
		{"orphan", "", "orphan.service is on machine cc000000..., which is not in the cluster now"},
		{"a b", "", "invalid"},
	} {
		m, _, err := clusterctl.SSHTarget(tc.arg, ms, snap)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.arg, err)
		case tc.err == "" && m.IP != tc.ip:
			t.Errorf("%s: got %s, want %s", tc.arg, m.IP, tc.ip)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.arg, err, tc.err)
		}
	}
}

// openPty opens a pseudo-terminal pair, as posix_openpt(3), unlockpt(3)
// and ptsname(3) do.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, tty
}

func newKey(t *testing.T) (ed25519.PrivateKey, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return priv, sp
}

// writeKey writes key as OpenSSH writes private keys, unencrypted.
func writeKey(t *testing.T, path string, key ed25519.PrivateKey) string {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "test")
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, path, string(pem.EncodeToMemory(block)))
}

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAgent serves an ssh-agent holding key on a socket, as ssh-agent
// does, and returns the socket's path.
func startAgent(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				agent.ServeAgent(keyring, conn)
			}()
		}
	}()
	return sock
}

// startSSHServer listens on m's address in m's network namespace (the
// socket stays in the namespace it was made in) and serves SSH: user
// "core" with the one key user, "exec" and "shell" requests run by
// /bin/sh, with the exit status sent back. No terminals.
func startSSHServer(t *testing.T, c *clustertest.Cluster, m registry.Machine, hostKey ed25519.PrivateKey, user ssh.PublicKey) {
	t.Helper()
	signer, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if meta.User() == "core" && bytes.Equal(key.Marshal(), user.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("not this key")
		},
	}
	cfg.AddHostKey(signer)
	var ln net.Listener
	err = hostnet.Do((&local.Provider{Cluster: c.Name}).Namespace(m.Name), func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(m.IP, sshPort))
		return err
	})
	if err != nil {
		t.Fatalf("SSH server on %s: %v", m.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go serveSSH(nc, cfg, m.Name)
		}
	}()
}

func serveSSH(nc net.Conn, cfg *ssh.ServerConfig, node string) {
	defer nc.Close()
	_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "sessions only")
			continue
		}
		ch, reqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go serveSession(ch, reqs, node)
	}
}

// serveSession runs the session's one command (or shell) and reports its
// exit status, as sshd does.
// A terminal request is granted but only recorded, in $TEST_PTY ("TERM
// COLSxROWS"): the shell still runs on the channel itself.
func serveSession(ch ssh.Channel, reqs <-chan *ssh.Request, node string) {
	defer ch.Close()
	var pty string
	for req := range reqs {
		argv := []string{"/bin/sh"}
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				continue
			}
			argv = append(argv, "-c", p.Command)
		case "shell":
		case "pty-req":
			var p struct {
				Term                         string
				Columns, Rows, Width, Height uint32
				Modes                        string
			}
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				req.Reply(false, nil)
				continue
			}
			pty = fmt.Sprintf("%s %dx%d", p.Term, p.Columns, p.Rows)
			req.Reply(true, nil)
			continue
		default: // env, …: not offered
			req.Reply(false, nil)
			continue
		}
		req.Reply(true, nil)
		go ssh.DiscardRequests(reqs) // window-change and the like, from now on
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "CORRAL_TEST_NODE="+node, "TEST_PTY="+pty)
		cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
		// stdin is copied by a goroutine of our own, which Wait does not
		// wait for: a client whose stdin is a terminal never ends it, and
		// the command's exit must still end the session.
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return
		}
		go func() {
			io.Copy(stdin, ch)
			stdin.Close()
		}()
		// Bounds the wait for output after the command exits, should
		// something it started keep its stdout open.
		cmd.WaitDelay = 5 * time.Second
		cmd.Run()
		status := 255
		if cmd.ProcessState != nil {
			status = cmd.ProcessState.ExitCode()
		}
		ch.CloseWrite()
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
		return
	}
}
