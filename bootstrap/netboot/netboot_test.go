package netboot

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"github.com/corral-dev/corral/internal/lines"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/templates"
)

// testNode is a single init node with a fresh CA, whose address is found
// at boot, fetching its binary from binURL.
func testNode(t testing.TB, binURL string, binary []byte) templates.Node {
	t.Helper()
	ca, err := pki.NewCA("netboot")
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
	sum := sha512.Sum512(binary)
	return templates.Node{
		Hostname: "boot-1", Cluster: "netboot",
		Clusterd: templates.Clusterd{Mode: templates.ModeInit, Token: tok.String(), CACert: ca.CertPEM(), CAKey: key},
		Binary:   templates.Binary{URL: binURL, SHA512: hex.EncodeToString(sum[:])},
		Files: []templates.File{
			{Path: "/etc/big.txt", Content: bytes.Repeat([]byte("compressible line\n"), 200), Mode: 0o640},
		},
		Units: []templates.Unit{{Name: "extra.service", Content: "[Service]\nExecStart=/bin/true\n"}},
	}
}

func TestParseCmdline(t *testing.T) {
	got := ParseCmdline(`BOOT_IMAGE=/vmlinuz console=ttyS0 quiet corral.config=http://10.0.2.2:8080/ignition?node=a&x=1 "corral.report=http://h/r" x="a b" console=tty0` + "\n")
	want := map[string]string{
		"BOOT_IMAGE": "/vmlinuz", "console": "tty0", "quiet": "",
		ParamConfig: "http://10.0.2.2:8080/ignition?node=a&x=1", ParamReport: "http://h/r", "x": "a b",
	}
	if len(got) != len(want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
}

func TestApplyRenderedConfig(t *testing.T) {
	binary := []byte("\x7fELF the corral binary")
	n := testNode(t, "http://boot.example/corral", binary)
	data, err := templates.Ignition(n)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"compression":"gzip"`) {
		t.Error("the fixture has no gzip'd file: the test would not cover them")
	}

	// As in the image: /opt/bin/clusterd is a link to /init.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "opt/bin"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "init"), binary, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "init"), filepath.Join(root, "opt/bin/clusterd")); err != nil {
		t.Fatal(err)
	}
	fetched := 0
	fetch := func(ctx context.Context, url string) ([]byte, error) { fetched++; return binary, nil }
	if err := ApplyConfig(context.Background(), root, cfg, fetch, t.Logf); err != nil {
		t.Fatal(err)
	}
	if fetched != 0 {
		t.Errorf("fetched the binary %d times though the image has it", fetched)
	}
	if l, err := os.Readlink(filepath.Join(root, "opt/bin/clusterd")); err != nil || l != filepath.Join(root, "init") {
		t.Errorf("/opt/bin/clusterd: link %q, %v; want the image's link kept", l, err)
	}
	checkFile := func(p string, mode os.FileMode, want string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Error(err)
			return
		}
		st, _ := os.Stat(filepath.Join(root, p))
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), mode)
		}
		if want != "" && string(b) != want {
			t.Errorf("%s: %q, want %q", p, b, want)
		}
	}
	checkFile("etc/hostname", 0o644, "boot-1\n")
	checkFile("etc/corral/token", 0o600, n.Clusterd.Token+"\n")
	checkFile("etc/corral/ca.pem", 0o644, string(n.Clusterd.CACert))
	checkFile("etc/corral/ca-key.pem", 0o600, string(n.Clusterd.CAKey))
	checkFile("etc/big.txt", 0o640, strings.Repeat("compressible line\n", 200))
	checkFile("opt/bin/corral-detect-ip", 0o755, "")
	checkFile("etc/systemd/system/extra.service", 0o644, "[Service]\nExecStart=/bin/true\n")

	// clusterd.service, run as the init runs it.
	f, err := os.Open(filepath.Join(root, UnitDir, ClusterdUnit))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	svc, err := ParseService(f)
	if err != nil {
		t.Fatal(err)
	}
	if svc.RestartSec != 5*time.Second || svc.LimitNOFILE != 65536 {
		t.Errorf("RestartSec %s, LimitNOFILE %d", svc.RestartSec, svc.LimitNOFILE)
	}
	if len(svc.ExecStartPre) != 1 {
		t.Fatalf("ExecStartPre %q, want the IP detection", svc.ExecStartPre)
	}
	out, target, ok := DetectIPStep(svc.ExecStartPre[0])
	if !ok || out != "/run/corral/clusterd-ip.env" || target != "" {
		t.Fatalf("DetectIPStep(%q) = %q, %q, %v", svc.ExecStartPre[0], out, target, ok)
	}
	if err := WriteIPEnv(root, out, "10.0.2.15"); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	if err := ReadEnvironment(root, svc.EnvironmentFiles, env); err != nil {
		t.Fatal(err)
	}
	argv, _ := Expand(svc.ExecStart, env)
	want := []string{"/opt/bin/clusterd", "--name=boot-1", "--ip=10.0.2.15", "--mode=init",
		"--token-file=/etc/corral/token", "--ca-cert=/etc/corral/ca.pem", "--ca-key=/etc/corral/ca-key.pem"}
	if !slices.Equal(argv, want) {
		t.Errorf("clusterd runs\n%q\nwant\n%q", argv, want)
	}
	if env["CORRAL_CLUSTER"] != "netboot" || env["CORRAL_NODE"] != "boot-1" {
		t.Errorf("environment %q", env)
	}
}

func TestApplyFetchesMismatchedBinary(t *testing.T) {
	binary := []byte("the new binary")
	n := testNode(t, "http://boot.example/corral", binary)
	data, err := templates.Ignition(n)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "opt/bin"), 0o755)
	os.WriteFile(filepath.Join(root, "init"), []byte("old"), 0o755)
	os.Symlink(filepath.Join(root, "init"), filepath.Join(root, "opt/bin/clusterd"))

	fetch := func(ctx context.Context, url string) ([]byte, error) { return []byte("tampered"), nil }
	if err := ApplyConfig(context.Background(), root, cfg, fetch, t.Logf); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("a binary with the wrong hash: %v", err)
	}
	fetch = func(ctx context.Context, url string) ([]byte, error) { return binary, nil }
	if err := ApplyConfig(context.Background(), root, cfg, fetch, t.Logf); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "opt/bin/clusterd")); string(b) != string(binary) {
		t.Errorf("/opt/bin/clusterd is %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "init")); string(b) != "old" {
		t.Errorf("writing /opt/bin/clusterd went through the link to /init: %q", b)
	}
	// Unreachable, but the image has one: kept.
	os.Remove(filepath.Join(root, "opt/bin/clusterd"))
	os.Symlink(filepath.Join(root, "init"), filepath.Join(root, "opt/bin/clusterd"))
	fetch = func(ctx context.Context, url string) ([]byte, error) { return nil, errors.New("no route") }
	if err := ApplyConfig(context.Background(), root, cfg, fetch, t.Logf); err != nil {
		t.Errorf("unreachable binary with one in the image: %v", err)
	}
}

func TestDecodeDataURL(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("hello"))
	zw.Close()
	for _, c := range []struct{ in, want string }{
		{"data:,hello%20world%0A", "hello world\n"},
		{"data:text/plain;charset=utf-8,a%2Cb", "a,b"},
		{"data:;base64," + base64.StdEncoding.EncodeToString([]byte("\x00\x01\xff+/")), "\x00\x01\xff+/"},
		{"data:application/octet-stream;base64," + base64.StdEncoding.EncodeToString(gz.Bytes()), gz.String()},
	} {
		got, err := DecodeDataURL(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("DecodeDataURL(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := DecodeDataURL("http://x"); err == nil {
		t.Error("accepted a non-data URL")
	}
}

func TestSplitAndExpand(t *testing.T) {
	words, err := SplitExec(`-/opt/bin/x --a=${IP} \` + "\n" + `  "--b=c d \"q\" \\" 'single $$' $LIST --pct=100%% --lit=$${IP} --missing=${NOPE}`)
	if err != nil {
		t.Fatal(err)
	}
	got, ignore := Expand(words, map[string]string{"IP": "10.0.0.1", "LIST": "one  two"})
	want := []string{"/opt/bin/x", "--a=10.0.0.1", `--b=c d "q" \`, "single $", "one", "two", "--pct=100%", "--lit=${IP}", "--missing="}
	if !slices.Equal(got, want) || !ignore {
		t.Errorf("got %q (ignore %v), want %q", got, ignore, want)
	}
	if _, err := SplitExec(`a "b`); err == nil {
		t.Error("unterminated quote accepted")
	}
	for in, want := range map[string]time.Duration{"5s": 5 * time.Second, "5": 5 * time.Second, "1min 30s": 90 * time.Second, "500ms": 500 * time.Millisecond} {
		if got, err := ParseTimespan(in); err != nil || got != want {
			t.Errorf("ParseTimespan(%q) = %v, %v", in, got, err)
		}
	}
}

func TestReadEnvironment(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/a.env"), []byte("# comment\nA=1\nB=\"two words\"\n; other\nexport C='x'\nbad line\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/b.env"), []byte("A=override\n"), 0o644)
	env := map[string]string{}
	if err := ReadEnvironment(root, []string{"/etc/a.env", "-/run/missing.env", "/etc/b.env"}, env); err != nil {
		t.Fatal(err)
	}
	if env["A"] != "override" || env["B"] != "two words" || env["C"] != "x" || len(env) != 3 {
		t.Errorf("env %q", env)
	}
	if err := ReadEnvironment(root, []string{"/run/missing.env"}, env); err == nil {
		t.Error("a missing required file was accepted")
	}
}

func TestDetectIPStep(t *testing.T) {
	for _, c := range []struct {
		words       []string
		out, target string
		ok          bool
	}{
		{[]string{"/opt/bin/corral-detect-ip", "/run/corral/clusterd-ip.env"}, "/run/corral/clusterd-ip.env", "", true},
		{[]string{"-/opt/bin/corral-detect-ip", "/run/x.env", "10.0.0.11"}, "/run/x.env", "10.0.0.11", true},
		{[]string{"/bin/true"}, "", "", false},
		{[]string{"/opt/bin/corral-detect-ip"}, "", "", false},
	} {
		out, target, ok := DetectIPStep(c.words)
		if out != c.out || target != c.target || ok != c.ok {
			t.Errorf("DetectIPStep(%q) = %q, %q, %v", c.words, out, target, ok)
		}
	}
}

func TestModuleListAndResolvConf(t *testing.T) {
	got := ReadModuleList("# modules\n/lib/modules/x/a.ko\n\n  /lib/modules/x/b.ko  \n")
	if !slices.Equal(got, []string{"/lib/modules/x/a.ko", "/lib/modules/x/b.ko"}) {
		t.Errorf("ReadModuleList: %q", got)
	}
	rc := ResolvConf([]net.IP{net.ParseIP("10.0.2.3"), net.ParseIP("1.1.1.1")}, "example.com")
	if !strings.Contains(rc, "search example.com\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n") {
		t.Errorf("resolv.conf:\n%s", rc)
	}
}

func TestConsoleLogTail(t *testing.T) {
	var out bytes.Buffer
	l := newConsoleLog(&out, 3)
	w := &lines.Writer{Line: l.line}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\nthree\nfour\n"))
	if got := l.Tail(); got != "two\nthree\nfour" {
		t.Errorf("tail %q", got)
	}
	if out.String() != "one\ntwo\nthree\nfour\n" {
		t.Errorf("console %q", out.String())
	}
}

// A file for a user the image doesn't have is refused with its name,
// rather than written with the wrong owner.
func TestApplyRefusesUnknownOwner(t *testing.T) {
	n := testNode(t, "http://boot.example/corral", []byte("bin"))
	n.Files = append(n.Files, templates.File{Path: "/etc/app.conf", Content: []byte("x"), Owner: "app:app"})
	data, err := templates.Ignition(n)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	err = ApplyConfig(context.Background(), t.TempDir(), cfg, HTTPFetch, t.Logf)
	if err == nil || !strings.Contains(err.Error(), `/etc/app.conf: owner "app" does not exist here`) {
		t.Fatalf("a file owned by app: %v", err)
	}
}
