package ssh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/templates"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// The tests in this file need no root: they run the provider against a
// recording of a machine (fakeMachine), and the shell it generates against
// the local sh.

// fakeMachine stands in for a machine's shell: it keeps the files that
// write-file sends, answers the probe from them, and records every
// command. It fakes the machine, not the provider: the provider's code
// runs as it does over SSH; what it can't show is that systemctl on a real
// systemd does what the commands ask (see the package's report).
type fakeMachine struct {
	systemd bool
	files   map[string]fakeFile
	log     []string
	active  bool // clusterd.service, for status
	// failRestart makes systemctl restart fail, as an interrupted Launch.
	failRestart bool
}

type fakeFile struct {
	mode, owner, sum string
	content          string
}

func (f *fakeMachine) run(ctx context.Context, c command, stdin io.Reader) (string, error) {
	if c.script == nil {
		f.log = append(f.log, strings.Join(c.args, " "))
		if f.failRestart && len(c.args) > 1 && c.args[1] == "restart" {
			return "", &RemoteError{Command: c.String(), Err: errors.New("exit status 1"), Stderr: "interrupted"}
		}
		if len(c.args) == 3 && c.args[0] == "cat" {
			if ff, ok := f.files[c.args[2]]; ok {
				return ff.content, nil
			}
			return "", &RemoteError{Command: c.String(), Err: errors.New("exit status 1")}
		}
		if len(c.args) > 2 && c.args[0] == "rm" {
			for _, p := range c.args[3:] {
				delete(f.files, p)
			}
		}
		if len(c.args) > 1 && c.args[0] == "systemctl" && (c.args[1] == "start" || c.args[1] == "restart") {
			f.active = true
		}
		return "", nil
	}
	switch c.script {
	case probeScript:
		f.log = append(f.log, "probe")
		var b strings.Builder
		if f.systemd {
			b.WriteString("systemd\n")
		} else {
			b.WriteString("none\n")
		}
		b.WriteString("x86_64\n")
		for _, p := range c.args[1:] {
			if ff, ok := f.files[p]; ok {
				user, group, _ := strings.Cut(ff.owner, ":")
				fmt.Fprintf(&b, "%s %s %s %s\n", ff.mode, user, group, ff.sum)
			} else {
				b.WriteString("missing\n")
			}
		}
		b.WriteString(f.files[c.args[0]].content)
		return b.String(), nil
	case writeScript:
		b, _ := io.ReadAll(stdin)
		sum := sha512.Sum512(b)
		if got := hex.EncodeToString(sum[:]); got != c.args[3] {
			return "", &RemoteError{Command: c.String(), Err: errors.New("exit status 1"), Stderr: "sum " + got}
		}
		f.log = append(f.log, "write "+c.args[0])
		f.files[c.args[0]] = fakeFile{mode: strings.TrimPrefix(c.args[1], "0"), owner: cmpOr(c.args[2], "root:root"), sum: c.args[3], content: string(b)}
		return "", nil
	case statusScript:
		state := "inactive"
		if f.active {
			state = "active"
		}
		return "systemd yes " + state + "\n", nil
	case joinedScript:
		f.log = append(f.log, "list-machines")
		return `[{"name":"core-1","ip":"10.0.0.11"}]`, nil
	}
	f.log = append(f.log, c.String())
	return "", nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// writes are the paths the log says were written.
func (f *fakeMachine) writes() []string {
	var out []string
	for _, l := range f.log {
		if p, ok := strings.CutPrefix(l, "write "); ok {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeMachine) commands() []string {
	var out []string
	for _, l := range f.log {
		if !strings.HasPrefix(l, "write ") && l != "probe" {
			out = append(out, l)
		}
	}
	return out
}

const exporterUnit = `[Unit]
Description=exporter

[Service]
ExecStart=/usr/local/bin/exporter

[Install]
WantedBy=multi-user.target
`

// testNode is an init node with a group file, an enabled unit of its
// own, a template and an image unit to enable.
func testNode(t *testing.T, binSum string) *templates.Node {
	ca, err := pki.NewCA("demo")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return &templates.Node{
		Hostname: "core-1", Cluster: "demo",
		Clusterd: templates.Clusterd{Mode: templates.ModeInit, Token: tok.String(), CACert: ca.CertPEM(), CAKey: key, IP: netip.MustParseAddr("10.0.0.11")},
		Binary:   templates.Binary{URL: "https://example.com/clusterd", SHA512: binSum},
		Files:    []templates.File{{Path: "/etc/motd", Content: []byte("hello\n")}},
		Units: []templates.Unit{
			{Name: "exporter.service", Content: exporterUnit, Enabled: true},
			{Name: "hello@.service", Content: "[Service]\nExecStart=/bin/echo %i\n"},
			{Name: "systemd-timesyncd.service", Enabled: true},
		},
	}
}

func testBinary(t *testing.T) *localBinary {
	p := filepath.Join(t.TempDir(), "clusterd")
	content := []byte("#!/bin/sh\necho not really clusterd\n")
	if err := os.WriteFile(p, content, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(content)
	return &localBinary{path: p, sum: hex.EncodeToString(sum[:])}
}

// TestSystemdSequence: on a machine whose PID 1 is systemd, a first Launch
// writes the manifest, the binary, Corral's and the group's files and the
// unit files, reloads systemd, enables the enabled units and restarts
// what changed; a second Launch writes nothing and restarts nothing; a
// changed group unit restarts that unit alone; a restart an interrupted
// Launch left undone is done by the next; Terminate disables
// Corral's units (not the image's) and removes everything.
func TestSystemdSequence(t *testing.T) {
	bin := testBinary(t)
	n := testNode(t, bin.sum)
	inst, err := n.Install()
	if err != nil {
		t.Fatal(err)
	}
	spec := providers.NodeSpec{Name: "core-1", Boot: n}
	m := &fakeMachine{systemd: true, files: map[string]fakeFile{}}
	p := &Provider{}
	ctx := context.Background()
	if err := p.launch(ctx, m, spec, inst, bin); err != nil {
		t.Fatal(err)
	}
	wantWrites := []string{manifestPath, "/opt/bin/clusterd"}
	for _, f := range inst.Files {
		wantWrites = append(wantWrites, f.Path)
	}
	wantWrites = append(wantWrites, "/etc/systemd/system/clusterd.service", "/etc/systemd/system/exporter.service", "/etc/systemd/system/hello@.service")
	// The manifest twice: with the restarts pending, then without.
	if got := m.writes(); !slices.Equal(got, append(wantWrites, manifestPath)) {
		t.Errorf("first Launch wrote\n%q\nwant\n%q", got, wantWrites)
	}
	enabled := "clusterd.service exporter.service systemd-timesyncd.service"
	want := []string{
		"systemctl daemon-reload",
		"systemctl enable -- " + enabled,
		"systemctl restart -- clusterd.service exporter.service",
		"systemctl start -- " + enabled,
		"list-machines",
	}
	if got := m.commands(); !slices.Equal(got, want) {
		t.Errorf("first Launch ran\n%q\nwant\n%q", got, want)
	}
	if _, ok := m.files[supervisorPath]; ok {
		t.Error("the supervisor was installed on a machine with systemd")
	}
	if f := m.files["/etc/corral/ca-key.pem"]; f.mode != "600" || f.owner != "root:root" {
		t.Errorf("CA key written as %+v", f)
	}

	m.log = nil
	if err := p.launch(ctx, m, spec, inst, bin); err != nil {
		t.Fatal(err)
	}
	want = []string{"systemctl enable -- " + enabled, "systemctl start -- " + enabled, "list-machines"}
	if got := m.writes(); len(got) > 0 {
		t.Errorf("second Launch wrote %q", got)
	}
	if got := m.commands(); !slices.Equal(got, want) {
		t.Errorf("second Launch ran\n%q\nwant\n%q", got, want)
	}

	// A group file and a group unit change: the file is written, the unit
	// restarted, clusterd left alone; a dropped unit file is removed.
	n2 := *n
	n2.Files = []templates.File{{Path: "/etc/motd", Content: []byte("changed\n")}}
	n2.Units = []templates.Unit{{Name: "exporter.service", Content: exporterUnit + "# changed\n", Enabled: true}}
	inst2, err := n2.Install()
	if err != nil {
		t.Fatal(err)
	}
	m.log = nil
	if err := p.launch(ctx, m, providers.NodeSpec{Name: "core-1", Boot: &n2}, inst2, bin); err != nil {
		t.Fatal(err)
	}
	// The manifest lists the dropped unit and the restart until they are
	// done; then it is written without them.
	if got, want := m.writes(), []string{manifestPath, "/etc/motd", "/etc/systemd/system/exporter.service", manifestPath}; !slices.Equal(got, want) {
		t.Errorf("changed Launch wrote %q, want %q", got, want)
	}
	want = []string{
		"rm -f -- /etc/systemd/system/hello@.service",
		"systemctl daemon-reload",
		"systemctl enable -- clusterd.service exporter.service",
		"systemctl restart -- exporter.service",
		"systemctl start -- clusterd.service exporter.service",
		"list-machines",
	}
	if got := m.commands(); !slices.Equal(got, want) {
		t.Errorf("changed Launch ran\n%q\nwant\n%q", got, want)
	}

	// A Launch that fails after writing (here: the restart fails) leaves
	// the restart pending, and the next Launch does it though every file
	// is right by then.
	n3 := n2
	n3.Files = []templates.File{{Path: "/etc/motd", Content: []byte("changed\n")}}
	n3.Units = []templates.Unit{{Name: "exporter.service", Content: exporterUnit + "# changed again\n", Enabled: true}}
	inst3, err := n3.Install()
	if err != nil {
		t.Fatal(err)
	}
	spec3 := providers.NodeSpec{Name: "core-1", Boot: &n3}
	m.failRestart = true
	if err := p.launch(ctx, m, spec3, inst3, bin); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Launch with a failing restart: %v", err)
	}
	m.failRestart, m.log = false, nil
	if err := p.launch(ctx, m, spec3, inst3, bin); err != nil {
		t.Fatal(err)
	}
	if got, want := m.writes(), []string{manifestPath}; !slices.Equal(got, want) {
		t.Errorf("Launch after an interrupted one wrote %q, want %q (the manifest, done)", got, want)
	}
	want = []string{
		"systemctl daemon-reload",
		"systemctl enable -- clusterd.service exporter.service",
		"systemctl restart -- exporter.service",
		"systemctl start -- clusterd.service exporter.service",
		"list-machines",
	}
	if got := m.commands(); !slices.Equal(got, want) {
		t.Errorf("Launch after an interrupted one ran\n%q\nwant\n%q", got, want)
	}

	m.log = nil
	if err := p.terminate(ctx, m); err != nil {
		t.Fatal(err)
	}
	var installed []string
	for _, f := range wantWrites[1:] {
		if !strings.HasSuffix(f, "/hello@.service") {
			installed = append(installed, f)
		}
	}
	want = []string{
		"cat -- " + manifestPath,
		"sh -c <disable-units> corral /etc/systemd/system clusterd.service exporter.service",
		"sh -c <stop-unit-processes> corral /var/lib/clusterd 10",
		"sh -c <remove> corral /var/lib/clusterd " + strings.Join(installed, " ") + " " +
			strings.Join([]string{supervisorPath, supervisorPID, clusterdPID, logPath, logPath + ".1", manifestPath}, " "),
		"systemctl daemon-reload",
	}
	if got := m.commands(); !slices.Equal(got, want) {
		t.Errorf("Terminate ran\n%q\nwant\n%q", got, want)
	}
}

// TestNoSystemdRefusesUnits: without systemd only clusterd can run, so a
// group's enabled units are refused before anything is written.
func TestNoSystemdRefusesUnits(t *testing.T) {
	bin := testBinary(t)
	n := testNode(t, bin.sum)
	inst, err := n.Install()
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMachine{files: map[string]fakeFile{}}
	err = (&Provider{}).launch(context.Background(), m, providers.NodeSpec{Name: "core-1", Boot: n}, inst, bin)
	if err == nil || !strings.Contains(err.Error(), "exporter.service, systemd-timesyncd.service") {
		t.Fatalf("Launch without systemd, with enabled units: %v", err)
	}
	if w := m.writes(); len(w) > 0 {
		t.Errorf("wrote %q before refusing", w)
	}
}

// TestBinaryMismatch: the boot description pins clusterd's SHA-512, and a
// different binary is not installed.
func TestBinaryMismatch(t *testing.T) {
	bin := testBinary(t)
	n := testNode(t, strings.Repeat("ab", 64))
	p := &Provider{Hosts: map[string]string{"core-1": "192.0.2.1"}, Binary: bin.path}
	err := p.Launch(context.Background(), providers.NodeSpec{Name: "core-1", Boot: n})
	if err == nil || !strings.Contains(err.Error(), bin.sum) || !strings.Contains(err.Error(), strings.Repeat("ab", 64)) {
		t.Fatalf("Launch with another binary: %v", err)
	}
}

func newPublicKey(t *testing.T) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestTrustOnFirstUse: the first key is recorded through OnNewHostKey
// (whose error refuses it), the same key passes, another is a
// HostKeyError; and a recorded key pins the host key algorithm.
func TestTrustOnFirstUse(t *testing.T) {
	k1, k2 := newPublicKey(t), newPublicKey(t)
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 2222}
	var calls []string
	refuse := errors.New("state is read-only")
	var fail error
	p := &Provider{OnNewHostKey: func(host, fp string) error {
		calls = append(calls, host+" "+fp)
		return fail
	}}
	check, algos, err := p.hostKeyCheck("core-1", "192.0.2.1:2222")
	if err != nil || algos != nil {
		t.Fatalf("no record: algorithms %v, %v", algos, err)
	}
	fail = refuse
	if err := check("192.0.2.1:2222", remote, k1); !errors.Is(err, refuse) || len(p.HostKeys) != 0 {
		t.Fatalf("refused record: %v, keys %v", err, p.HostKeys)
	}
	fail = nil
	if err := check("192.0.2.1:2222", remote, k1); err != nil {
		t.Fatal(err)
	}
	want := "[192.0.2.1]:2222 " + fingerprint(k1)
	if len(calls) != 2 || calls[1] != want || p.HostKeys["[192.0.2.1]:2222"] != fingerprint(k1) {
		t.Fatalf("OnNewHostKey calls %q, keys %v; want %q", calls, p.HostKeys, want)
	}
	check, algos, _ = p.hostKeyCheck("core-1", "192.0.2.1:2222")
	if !slices.Equal(algos, []string{ssh.KeyAlgoED25519}) {
		t.Errorf("algorithms for a recorded ed25519 key: %v", algos)
	}
	if err := check("192.0.2.1:2222", remote, k1); err != nil {
		t.Errorf("the recorded key: %v", err)
	}
	err = check("192.0.2.1:2222", remote, k2)
	var hk *HostKeyError
	if !errors.As(err, &hk) || hk.Recorded != fingerprint(k1) || hk.Offered != fingerprint(k2) || hk.Host != "[192.0.2.1]:2222" || hk.Node != "core-1" {
		t.Fatalf("another key: %#v", err)
	}
	if len(calls) != 2 {
		t.Errorf("OnNewHostKey called for a changed key: %q", calls)
	}
	// A bare fingerprint (no type) is honoured too.
	p.HostKeys["[192.0.2.1]:2222"] = ssh.FingerprintSHA256(k2)
	check, algos, _ = p.hostKeyCheck("core-1", "192.0.2.1:2222")
	if err := check("", remote, k2); err != nil || algos != nil {
		t.Errorf("bare fingerprint: %v, algorithms %v", err, algos)
	}
}

// TestKnownHosts: a host missing from known_hosts is refused; a host with
// another key is a HostKeyError naming the file and line; the host's key
// types are asked for.
func TestKnownHosts(t *testing.T) {
	k1, k2 := newPublicKey(t), newPublicKey(t)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte("# hosts\n"+knownhosts.Line([]string{"192.0.2.1"}, k1)+"\n"), 0o600)
	p := &Provider{KnownHosts: []string{kh}, HostKeys: map[string]string{"192.0.2.1": fingerprint(k2)}}
	remote := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 22}
	check, algos, err := p.hostKeyCheck("core-1", "192.0.2.1:22")
	if err != nil || !slices.Equal(algos, []string{ssh.KeyAlgoED25519}) {
		t.Fatalf("algorithms %v, %v", algos, err)
	}
	if err := check("", remote, k1); err != nil {
		t.Errorf("the known key: %v", err)
	}
	err = check("", remote, k2)
	var hk *HostKeyError
	if !errors.As(err, &hk) || hk.Where != kh+":2" || hk.Recorded != fingerprint(k1) || hk.Offered != fingerprint(k2) {
		t.Errorf("another key: %v", err)
	}
	check, _, _ = p.hostKeyCheck("core-2", "192.0.2.2:22")
	if err := check("", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 22}, k1); err == nil || errors.As(err, &hk) || !strings.Contains(err.Error(), "not in "+kh) {
		t.Errorf("an unknown host: %v", err)
	}
}

// TestShellQuoting runs commands as the machine's sh would: every word
// arrives as it was, and only ${CLUSTERD_IP} is expanded, as systemd
// expands it in ExecStart.
func TestShellQuoting(t *testing.T) {
	words := []string{"/opt/bin/clusterd", "--ip=" + ipVariable, "--metadata=zone=eu west 1,cost=$5", "it's", "", `back\slash "q"`, ipVariable, "a" + ipVariable + "b" + ipVariable}
	c := command{script: &script{name: "echo", text: `for a do printf '[%s]\n' "$a"; done`}, args: words}
	out, err := exec.Command("sh", "-c", c.line(false)).Output()
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for _, w := range words {
		fmt.Fprintf(&want, "[%s]\n", w)
	}
	if string(out) != want.String() {
		t.Errorf("command line %s\ngave %q\nwant %q", c.line(false), out, want.String())
	}
	out, err = exec.Command("sh", "-c", `CLUSTERD_IP=10.1.2.3; for a in `+shellCommand(words)+`; do printf '[%s]\n' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	want.Reset()
	for _, w := range words {
		fmt.Fprintf(&want, "[%s]\n", strings.ReplaceAll(w, ipVariable, "10.1.2.3"))
	}
	if string(out) != want.String() {
		t.Errorf("shellCommand %s\ngave %q\nwant %q", shellCommand(words), out, want.String())
	}
}

// TestSupervisorScript: the supervisor parses, and runs the IP detection
// before clusterd when the node's address is found at boot.
func TestSupervisorScript(t *testing.T) {
	bin := testBinary(t)
	n := testNode(t, bin.sum)
	n.Units = nil
	n.Clusterd.IP = netip.Addr{}
	inst, err := n.Install()
	if err != nil {
		t.Fatal(err)
	}
	s := supervisor(inst.Name, inst.Clusterd)
	if out, err := exec.Command("sh", "-n", "-c", s).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v: %s\n%s", err, out, s)
	}
	pre := shellCommand(inst.Clusterd.ExecStartPre[0])
	start := "exec " + shellCommand(inst.Clusterd.ExecStart)
	if i, j := strings.Index(s, pre), strings.Index(s, start); i < 0 || j < i || !strings.Contains(s, `--ip="${CLUSTERD_IP}"`) {
		t.Errorf("supervisor does not run %q then %q:\n%s", pre, start, s)
	}
	if !strings.Contains(s, "if [ -r /run/corral/clusterd-ip.env ]; then . /run/corral/clusterd-ip.env; fi") {
		t.Errorf("supervisor does not read the optional environment file:\n%s", s)
	}
}
