package ssh

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/internal/syncbuf"
	"golang.org/x/crypto/ssh"
)

// This file makes the test's machines: each is a network namespace on a
// bridge, with a mount namespace of its own in which tmpfs covers every
// directory an installation writes (the machines share the host's root
// file system otherwise), and Debian's OpenSSH server listening on its
// address with a host key of its own.

// sshd is Debian's OpenSSH server (package openssh-server).
const sshd = "/usr/sbin/sshd"

// privateDirs are the directories each machine gets a tmpfs of its own
// for: where an installation writes (the binary, /etc/corral, units, the
// supervisor's files, clusterd's data and runtime files).
var privateDirs = []string{"/opt", "/etc/corral", "/etc/systemd/system", "/var/lib/corral", "/var/lib/clusterd", "/run/corral"}

// holderScript runs as the first process of a machine's mount namespace
// (made by unshare, private propagation, so that nothing mounted here
// reaches the host): it mounts the private directories, hides the host's
// systemd (so that the machine is one whose PID 1 is not systemd even on a
// CI host that boots with systemd), lets root log in with a key when the
// host's root account is locked, says so, then holds the namespace.
const holderScript = `set -e
for d do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
if [ -d /run/systemd ]; then mount -t tmpfs -o mode=0755 tmpfs /run/systemd; fi
if [ -n "$SHADOW" ]; then mount --bind "$SHADOW" /etc/shadow; fi
mkdir -p /run/sshd
echo ready
exec sleep infinity
`

// machine is one test machine.
type machine struct {
	t      *testing.T
	name   string
	ns     string
	ip     netip.Addr
	dir    string
	holder *exec.Cmd
	sshd   *exec.Cmd
	sshdWG sync.WaitGroup
	log    syncbuf.Buffer // sshd's log
	key    ssh.PublicKey
}

// testNet is the bridge the machines hang off.
type testNet struct {
	id     string
	bridge string
	prefix netip.Prefix
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if err := hostnet.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v (run the suite as root, as CI does)", err)
	}
	if _, err := os.Stat(sshd); err != nil {
		t.Fatalf("%v: install Debian's OpenSSH server (apt-get install -y openssh-server)", err)
	}
	var raw [3]byte
	rand.Read(raw[:])
	n := &testNet{id: fmt.Sprintf("%x", raw), prefix: freeSubnet(t)}
	n.bridge = "crs" + n.id
	t.Cleanup(func() { hostnet.DeleteLink(n.bridge) })
	if err := hostnet.EnsureBridge(n.bridge, netip.PrefixFrom(n.prefix.Addr().Next(), 24)); err != nil {
		t.Fatal(err)
	}
	return n
}

// freeSubnet picks a /24 no route here uses, from 198.18.0.0/15 (set
// aside for benchmarking), as internal/clustertest does.
func freeSubnet(t *testing.T) netip.Prefix {
	for range 50 {
		var raw [2]byte
		rand.Read(raw[:])
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + raw[0]%2, raw[1], 0}), 24)
		if clash, err := hostnet.RoutesOverlapping(p, ""); err == nil && len(clash) == 0 {
			return p
		}
	}
	t.Fatal("no free /24 in 198.18.0.0/15")
	return netip.Prefix{}
}

// makeMountpoints makes the private directories that the host lacks, and
// removes them (if still empty) when the test ends.
func makeMountpoints(t *testing.T) {
	for _, d := range privateDirs {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(d) })
	}
}

// unlockedShadow returns a copy of /etc/shadow in which root's account is
// not locked, if it is: sshd without PAM refuses a locked account even a
// key login. "" when root is not locked.
func unlockedShadow(t *testing.T, dir string) string {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, "root:!"); ok {
			lines[i] = "root:*:" + rest[strings.Index(rest, ":")+1:]
			p := filepath.Join(dir, "shadow")
			if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o640); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	return ""
}

// newKey makes an ed25519 key and writes it, OpenSSH-style, to path.
func newKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "corral-test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newMachine starts machine i (address .11+i) with root allowed in with
// the keys in authorizedKeys.
func (n *testNet) newMachine(t *testing.T, i int, authorizedKeys, shadow string) *machine {
	t.Helper()
	ip := n.prefix.Addr()
	for range 11 + i {
		ip = ip.Next()
	}
	m := &machine{t: t, name: fmt.Sprintf("core-%d", i+1), ns: fmt.Sprintf("corral-ssh-%s-%d", n.id, i+1), ip: ip, dir: t.TempDir()}
	veth := fmt.Sprintf("vs%s%d", n.id, i+1)
	t.Cleanup(func() { m.remove(veth) })
	err := hostnet.EnsureNode(hostnet.Node{
		Namespace: m.ns, HostVeth: veth, Bridge: n.bridge,
		Addr: netip.PrefixFrom(ip, 24), Gateway: n.prefix.Addr().Next(),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.holder = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", holderScript, "holder"}, privateDirs...)...)
	m.holder.Env = append(os.Environ(), "SHADOW="+shadow)
	m.holder.Stderr = &m.log
	out, err := m.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hostnet.Start(m.ns, m.holder); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("%s: setting up its mount namespace failed: %s", m.name, m.log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: mount namespace not set up after 30s: %s", m.name, m.log.String())
	}
	m.key = newKey(t, filepath.Join(m.dir, "host_key"))
	config := fmt.Sprintf(`ListenAddress %s:22
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
LogLevel VERBOSE
`, ip, filepath.Join(m.dir, "host_key"), filepath.Join(m.dir, "sshd.pid"), authorizedKeys)
	if err := os.WriteFile(filepath.Join(m.dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	m.startSSHD()
	return m
}

// startSSHD runs sshd in the machine's namespaces and waits until it
// accepts connections.
func (m *machine) startSSHD() {
	t := m.t
	t.Helper()
	pid := m.holder.Process.Pid
	m.sshd = exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), fmt.Sprintf("--net=/proc/%d/ns/net", pid),
		sshd, "-D", "-e", "-f", filepath.Join(m.dir, "sshd_config"))
	m.sshd.Stdout, m.sshd.Stderr = &m.log, &m.log
	if err := m.sshd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	m.sshdWG.Add(1)
	go func() {
		defer m.sshdWG.Done()
		m.sshd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s: sshd exited: %s", m.name, m.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: sshd not listening after 30s: %v\n%s", m.name, err, m.log.String())
		}
	}
}

// stopSSHD stops sshd (and nothing it started: the installation runs on).
func (m *machine) stopSSHD() {
	if m.sshd != nil && m.sshd.Process != nil {
		m.sshd.Process.Kill()
		m.sshdWG.Wait()
	}
}

// newHostKey restarts sshd with a new host key: the machine reinstalled,
// or another machine answering at its address.
func (m *machine) newHostKey() ssh.PublicKey {
	m.stopSSHD()
	m.key = newKey(m.t, filepath.Join(m.dir, "host_key"))
	m.startSSHD()
	return m.key
}

func (m *machine) addr() string { return net.JoinHostPort(m.ip.String(), "22") }

// path is a path on the machine as the test sees it: through the holder's
// root, which resolves in its mount namespace.
func (m *machine) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", m.holder.Process.Pid, p)
}

// read reads a file on the machine.
func (m *machine) read(p string) (string, error) {
	b, err := os.ReadFile(m.path(p))
	return string(b), err
}

// start runs a command in the machine's namespaces, with extra
// environment, without waiting for it.
func (m *machine) start(env []string, argv ...string) *exec.Cmd {
	m.t.Helper()
	pid := m.holder.Process.Pid
	cmd := exec.Command("nsenter", append([]string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), fmt.Sprintf("--net=/proc/%d/ns/net", pid), "--"}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	go cmd.Wait()
	return cmd
}

// remove kills everything in the machine's network namespace (sshd, the
// holder, and whatever the installation left running) and deletes it.
func (m *machine) remove(veth string) {
	if m.t.Failed() {
		m.t.Logf("%s: sshd's log:\n%s", m.name, m.log.String())
		if m.holder != nil && m.holder.Process != nil {
			if log, err := m.read(logPath); err == nil {
				lines := strings.Split(strings.TrimSpace(log), "\n")
				m.t.Logf("%s: %s (last 40 lines):\n%s", m.name, logPath, strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids, _ := hostnet.PIDs(m.ns)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			m.t.Errorf("%s: processes %v survive SIGKILL", m.name, pids)
			break
		}
		time.Sleep(20 * time.Millisecond) // polling: these are not our children to wait for
	}
	m.stopSSHD()
	if m.holder != nil && m.holder.Process != nil {
		m.holder.Wait()
	}
	if err := hostnet.DeleteNamespace(m.ns); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.t.Errorf("%s: %v", m.name, err)
	}
	hostnet.DeleteLink(veth)
}
