// Package sshtest gives tests machines to install Corral on over SSH: each
// is a network namespace on a bridge of its own test's, with a mount
// namespace of its own in which /etc is an overlay of the host's (writes
// stay in the machine) and tmpfs covers every other directory an
// installation writes (the machines share the host's root file system
// otherwise), and Debian's OpenSSH server listening on its address with a
// host key of its own. PID 1 is not systemd there, even on a host that
// boots with systemd.
//
// Typical use:
//
//	n := sshtest.NewNet(t)
//	ms, identity := n.Machines(t, 3) // root logs in with the key in identity
//	... ms[i].IP, ms[i].Read("/etc/motd"), ms[i].NewHostKey() ...
//
// Everything a machine is (its namespaces, veth, sshd and whatever was
// started in it) is removed by t.Cleanup, whether or not the test failed;
// when it failed, sshd's log and the files in Net.Logs are logged first.
// The tests need root (network namespaces) and /usr/sbin/sshd.
package sshtest

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
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

// SSHD is Debian's OpenSSH server (package openssh-server).
const SSHD = "/usr/sbin/sshd"

// PrivateDirs are the directories each machine gets a tmpfs of its own
// for: where an installation writes (the binary, /etc/corral, units, the
// supervisor's files, clusterd's data and runtime files). The rest of /etc
// is an overlay of the host's.
var PrivateDirs = []string{"/opt", "/etc/corral", "/etc/systemd/system", "/var/lib/corral", "/var/lib/clusterd", "/run/corral"}

// holderScript runs as the first process of a machine's mount namespace
// (made by unshare, private propagation, so that nothing mounted here
// reaches the host): it makes /etc an overlay of the host's whose upper
// layer is a tmpfs ($ETC_RW), mounts the private directories, hides the
// host's systemd (so that the machine is one whose PID 1 is not systemd
// even on a CI host that boots with systemd), lets root log in with a key
// when the host's root account is locked, says so, then holds the
// namespace.
const holderScript = `set -e
mount -t tmpfs -o mode=0755 tmpfs "$ETC_RW"
mkdir "$ETC_RW/upper" "$ETC_RW/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$ETC_RW/upper,workdir=$ETC_RW/work" /etc
for d do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
if [ -d /run/systemd ]; then mount -t tmpfs -o mode=0755 tmpfs /run/systemd; fi
if [ -n "$SHADOW" ]; then mount --bind "$SHADOW" /etc/shadow; fi
mkdir -p /run/sshd
echo ready
exec sleep infinity
`

// Net is the bridge a test's machines hang off.
type Net struct {
	ID     string       // random, 6 hex digits: names the bridge, namespaces and veths
	Bridge string       // the bridge's name
	Prefix netip.Prefix // the machines' /24; the bridge has .1, machine i .11+i (or its host number, MachineAt)
	// Logs are files on each machine logged (their last 40 lines) when
	// the test fails: by default the ssh provider's supervised log.
	Logs []string
}

// NewNet makes the bridge, removed when the test ends. It fails the test
// when network namespaces or sshd are not available.
func NewNet(t *testing.T) *Net {
	t.Helper()
	return NewNetIn(t, netip.MustParsePrefix("198.18.0.0/15"))
}

// NewNetIn is NewNet on a /24 of pool (a /24 or wider) that no route here
// uses: e.g. 10.0.0.0/8 for a test whose machines must be on a private
// (RFC 1918) network. It fails the test when it finds none.
func NewNetIn(t *testing.T, pool netip.Prefix) *Net {
	t.Helper()
	if !pool.Addr().Is4() || pool.Bits() > 24 {
		t.Fatalf("sshtest: pool %s is not an IPv4 network of a /24 or wider", pool)
	}
	if err := hostnet.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v (run the suite as root, as CI does)", err)
	}
	if _, err := os.Stat(SSHD); err != nil {
		t.Fatalf("%v: install Debian's OpenSSH server (apt-get install -y openssh-server)", err)
	}
	var raw [3]byte
	rand.Read(raw[:])
	n := &Net{ID: fmt.Sprintf("%x", raw), Prefix: freeSubnet(t, pool.Masked()), Logs: []string{"/var/lib/corral/clusterd.log"}}
	n.Bridge = "crs" + n.ID
	t.Cleanup(func() { hostnet.DeleteLink(n.Bridge) })
	if err := hostnet.EnsureBridge(n.Bridge, netip.PrefixFrom(n.Prefix.Addr().Next(), 24)); err != nil {
		t.Fatal(err)
	}
	return n
}

// freeSubnet picks, at random, a /24 of pool that no route here uses: by
// default from 198.18.0.0/15 (set aside for benchmarking), as
// internal/clustertest does.
func freeSubnet(t *testing.T, pool netip.Prefix) netip.Prefix {
	base := pool.Addr().As4()
	first := binary.BigEndian.Uint32(base[:])
	count := uint32(1) << (24 - pool.Bits()) // the /24s in pool
	for range 50 {
		var raw [4]byte
		rand.Read(raw[:])
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], first+(binary.BigEndian.Uint32(raw[:])%count)<<8)
		p := netip.PrefixFrom(netip.AddrFrom4(a), 24)
		if clash, err := hostnet.RoutesOverlapping(p, ""); err == nil && len(clash) == 0 {
			return p
		}
	}
	t.Fatalf("no free /24 in %s", pool)
	return netip.Prefix{}
}

// Machines makes the mount points, a client key (its private half in the
// returned identity file, OpenSSH format, unencrypted) authorized for
// root, and count machines.
func (n *Net) Machines(t *testing.T, count int) (ms []*Machine, identity string) {
	t.Helper()
	hosts := make([]int, count)
	for i := range hosts {
		hosts[i] = 11 + i
	}
	return n.MachinesAt(t, hosts...)
}

// MachinesAt is Machines with machine i at host number hosts[i] of the
// /24 (2 to 254; the bridge has 1): MachinesAt(t, 101, 102) makes core-1
// at .101 and core-2 at .102.
func (n *Net) MachinesAt(t *testing.T, hosts ...int) (ms []*Machine, identity string) {
	t.Helper()
	MakeMountpoints(t)
	dir := t.TempDir()
	identity = filepath.Join(dir, "id_ed25519")
	clientKey := NewKey(t, identity)
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(clientKey), 0o600); err != nil {
		t.Fatal(err)
	}
	shadow := UnlockedShadow(t, dir)
	for i, host := range hosts {
		ms = append(ms, n.MachineAt(t, i, host, authorized, shadow))
	}
	return ms, identity
}

// MakeMountpoints makes the private directories that the host lacks, and
// removes them (if still empty) when the test ends.
func MakeMountpoints(t *testing.T) {
	t.Helper()
	for _, d := range PrivateDirs {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(d) })
	}
}

// UnlockedShadow returns a copy of /etc/shadow, written in dir, in which
// root's account is not locked, if it is: sshd without PAM refuses a
// locked account even a key login. "" when root is not locked.
func UnlockedShadow(t *testing.T, dir string) string {
	t.Helper()
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

// NewKey makes an ed25519 key and writes it, OpenSSH-style, to path.
func NewKey(t *testing.T, path string) ssh.PublicKey {
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

// Machine is one test machine.
type Machine struct {
	Name string        // core-1, core-2, …
	NS   string        // its network namespace
	IP   netip.Addr    // its address, where sshd listens on port 22
	Key  ssh.PublicKey // sshd's host key

	t      *testing.T
	net    *Net
	dir    string
	holder *exec.Cmd
	sshd   *exec.Cmd
	sshdWG sync.WaitGroup
	log    syncbuf.Buffer // sshd's log
}

// Machine starts machine i (address .11+i, named core-<i+1>) with root
// allowed in with the keys in authorizedKeys, and the /etc/shadow of
// UnlockedShadow if not "".
func (n *Net) Machine(t *testing.T, i int, authorizedKeys, shadow string) *Machine {
	t.Helper()
	return n.MachineAt(t, i, 11+i, authorizedKeys, shadow)
}

// MachineAt is Machine at host number host of the /24 (2 to 254) rather
// than .11+i; it is still named core-<i+1>.
func (n *Net) MachineAt(t *testing.T, i, host int, authorizedKeys, shadow string) *Machine {
	t.Helper()
	if host < 2 || host > 254 {
		t.Fatalf("sshtest: host number %d is not in 2..254", host)
	}
	ip := n.Prefix.Addr()
	for range host {
		ip = ip.Next()
	}
	m := &Machine{t: t, net: n, Name: fmt.Sprintf("core-%d", i+1), NS: fmt.Sprintf("corral-ssh-%s-%d", n.ID, i+1), IP: ip, dir: t.TempDir()}
	veth := fmt.Sprintf("vs%s%d", n.ID, i+1)
	t.Cleanup(func() { m.remove(veth) })
	err := hostnet.EnsureNode(hostnet.Node{
		Namespace: m.NS, HostVeth: veth, Bridge: n.Bridge,
		Addr: netip.PrefixFrom(ip, 24), Gateway: n.Prefix.Addr().Next(),
	})
	if err != nil {
		t.Fatal(err)
	}
	etcRW := filepath.Join(m.dir, "etc-rw")
	if err := os.Mkdir(etcRW, 0o755); err != nil {
		t.Fatal(err)
	}
	m.holder = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c", holderScript, "holder"}, PrivateDirs...)...)
	m.holder.Env = append(os.Environ(), "SHADOW="+shadow, "ETC_RW="+etcRW)
	m.holder.Stderr = &m.log
	out, err := m.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hostnet.Start(m.NS, m.holder); err != nil {
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
			t.Fatalf("%s: setting up its mount namespace failed: %s", m.Name, m.log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: mount namespace not set up after 30s: %s", m.Name, m.log.String())
	}
	m.Key = NewKey(t, filepath.Join(m.dir, "host_key"))
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
	m.StartSSHD()
	return m
}

// StartSSHD runs sshd in the machine's namespaces and waits until it
// accepts connections.
func (m *Machine) StartSSHD() {
	t := m.t
	t.Helper()
	pid := m.holder.Process.Pid
	m.sshd = exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), fmt.Sprintf("--net=/proc/%d/ns/net", pid),
		SSHD, "-D", "-e", "-f", filepath.Join(m.dir, "sshd_config"))
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
		c, err := net.DialTimeout("tcp", m.Addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s: sshd exited: %s", m.Name, m.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: sshd not listening after 30s: %v\n%s", m.Name, err, m.log.String())
		}
	}
}

// StopSSHD stops sshd (and nothing it started: the installation runs on).
func (m *Machine) StopSSHD() {
	if m.sshd != nil && m.sshd.Process != nil {
		m.sshd.Process.Kill()
		m.sshdWG.Wait()
	}
}

// NewHostKey restarts sshd with a new host key: the machine reinstalled,
// or another machine answering at its address. The old key is kept, for
// RestoreHostKey.
func (m *Machine) NewHostKey() ssh.PublicKey {
	m.t.Helper()
	m.StopSSHD()
	key := filepath.Join(m.dir, "host_key")
	if _, err := os.Stat(key + ".old"); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(key, key+".old"); err != nil {
			m.t.Fatal(err)
		}
	}
	m.Key = NewKey(m.t, key)
	m.StartSSHD()
	return m.Key
}

// RestoreHostKey restarts sshd with the host key it had before the first
// NewHostKey, and returns it.
func (m *Machine) RestoreHostKey() ssh.PublicKey {
	m.t.Helper()
	key := filepath.Join(m.dir, "host_key")
	b, err := os.ReadFile(key + ".old")
	if err != nil {
		m.t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		m.t.Fatal(err)
	}
	m.StopSSHD()
	if err := os.Rename(key+".old", key); err != nil {
		m.t.Fatal(err)
	}
	m.Key = signer.PublicKey()
	m.StartSSHD()
	return m.Key
}

// Addr is sshd's address, host:port.
func (m *Machine) Addr() string { return net.JoinHostPort(m.IP.String(), "22") }

// Path is a path on the machine as the test sees it: through the holder's
// root, which resolves in its mount namespace.
func (m *Machine) Path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", m.holder.Process.Pid, p)
}

// Read reads a file on the machine.
func (m *Machine) Read(p string) (string, error) {
	b, err := os.ReadFile(m.Path(p))
	return string(b), err
}

// Start runs a command in the machine's namespaces, with extra
// environment, in a session of its own, without waiting for it.
func (m *Machine) Start(env []string, argv ...string) *exec.Cmd {
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

// Wipe makes the machine as a reinstalled one: it kills every process in
// its network namespace but sshd and the holder of its namespaces (the
// installation's, and SSH sessions), and empties PrivateDirs. Files the
// installation wrote elsewhere in /etc stay. It does not fail the test,
// so that it can be called from any goroutine.
func (m *Machine) Wipe() error {
	keep := map[int]bool{m.holder.Process.Pid: true}
	if m.sshd != nil && m.sshd.Process != nil {
		keep[m.sshd.Process.Pid] = true
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids, err := hostnet.PIDs(m.NS)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		var left []int
		for _, pid := range pids {
			if !keep[pid] {
				left = append(left, pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: processes %v survive SIGKILL", m.Name, left)
		}
		time.Sleep(20 * time.Millisecond) // polling: these are not our children to wait for
	}
	for _, d := range PrivateDirs {
		entries, err := os.ReadDir(m.Path(d))
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(m.Path(d), e.Name())); err != nil {
				return fmt.Errorf("%s: %w", m.Name, err)
			}
		}
	}
	return nil
}

// remove kills everything in the machine's network namespace (sshd, the
// holder, and whatever the installation left running) and deletes it.
func (m *Machine) remove(veth string) {
	if m.t.Failed() {
		m.t.Logf("%s: sshd's log:\n%s", m.Name, m.log.String())
		if m.holder != nil && m.holder.Process != nil {
			for _, p := range m.net.Logs {
				if log, err := m.Read(p); err == nil {
					lines := strings.Split(strings.TrimSpace(log), "\n")
					m.t.Logf("%s: %s (last 40 lines):\n%s", m.Name, p, strings.Join(lines[max(0, len(lines)-40):], "\n"))
				}
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids, _ := hostnet.PIDs(m.NS)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			m.t.Errorf("%s: processes %v survive SIGKILL", m.Name, pids)
			break
		}
		time.Sleep(20 * time.Millisecond) // polling: these are not our children to wait for
	}
	m.StopSSHD()
	if m.holder != nil && m.holder.Process != nil {
		m.holder.Wait()
	}
	if err := hostnet.DeleteNamespace(m.NS); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.t.Errorf("%s: %v", m.Name, err)
	}
	hostnet.DeleteLink(veth)
}
