package initramfs

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeModules lays out a modules directory: a needs b and c, c needs d
// (modules.dep lists every transitive dependency, as depmod does).
func fakeModules(t *testing.T) string {
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": "kernel/a.ko: kernel/sub/b-x.ko kernel/c.ko kernel/d.ko\n" +
			"kernel/sub/b-x.ko:\n" +
			"kernel/c.ko: kernel/d.ko\n" +
			"kernel/d.ko:\n" +
			"kernel/e.ko: kernel/d.ko\n",
		"modules.builtin": "kernel/net/packet/af_packet.ko\n",
		"kernel/a.ko":     "A", "kernel/sub/b-x.ko": "B", "kernel/c.ko": "C", "kernel/d.ko": "D", "kernel/e.ko": "E",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestResolveModules(t *testing.T) {
	dir := fakeModules(t)
	got, err := ResolveModules(dir, []string{"af_packet", "a", "e", "b_x", "d"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/d.ko", "kernel/c.ko", "kernel/sub/b-x.ko", "kernel/a.ko", "kernel/e.ko"}
	if !slices.Equal(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
	_, err = ResolveModules(dir, []string{"a", "nosuch"})
	if err == nil || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("unknown module: error %v, want one naming it", err)
	}
}

// TestResolveDebianModules checks the default list against the installed
// kernel's modules.dep, when there is one.
func TestResolveDebianModules(t *testing.T) {
	dirs, _ := filepath.Glob("/lib/modules/*/modules.dep")
	if len(dirs) == 0 {
		t.Skip("no kernel modules installed")
	}
	dir := filepath.Dir(dirs[0])
	got, err := ResolveModules(dir, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range got {
		pos[moduleName(m)] = i
	}
	for _, pair := range [][2]string{{"virtio", "virtio_net"}, {"virtio_ring", "virtio_net"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"}, {"udp_tunnel", "vxlan"}, {"stp", "bridge"}} {
		a, okA := pos[pair[0]]
		b, okB := pos[pair[1]]
		if !okA || !okB || a > b {
			t.Errorf("%s (at %d, %v) must come before %s (at %d, %v) in %q", pair[0], a, okA, pair[1], b, okB, got)
		}
	}
	t.Logf("%s: %d modules", dir, len(got))
}

func TestBuild(t *testing.T) {
	dir := fakeModules(t)
	// A small dynamically linked program stands in for corral.
	bin := "/bin/true"
	binData, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	libs, err := SharedLibraries(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err = Build(&buf, Options{
		Binary: bin, KernelRelease: "6.1.0-test", ModulesDir: dir, Modules: []string{"a", "af_packet"},
		ExtraFiles: []File{{Path: "/etc/motd", Content: []byte("hi\n")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := gunzip(t, buf.Bytes())
	entries := map[string]entry{}
	var names []string
	for _, e := range readCpio(t, raw) {
		entries[e.Name] = e
		names = append(names, e.Name)
	}
	check := func(name string, mode uint32, data string) {
		t.Helper()
		e, ok := entries[name]
		if !ok {
			t.Errorf("%s missing", name)
			return
		}
		if e.Mode != mode || string(e.Data) != data {
			t.Errorf("%s: mode %o data %q, want %o %q", name, e.Mode, e.Data, mode, data)
		}
	}
	check("init", 0o100755, string(binData))
	for _, lib := range libs {
		data, err := os.ReadFile(lib)
		if err != nil {
			t.Fatal(err)
		}
		check(strings.TrimPrefix(lib, "/"), 0o100755, string(data))
	}
	for _, l := range BinaryLinks {
		check(strings.TrimPrefix(l, "/"), 0o120777, "/init")
	}
	check("dev/console", 0o020600, "")
	check("dev/null", 0o020666, "")
	check("tmp", 0o041777, "")
	check("lib/modules/6.1.0-test/kernel/sub/b-x.ko", 0o100644, "B")
	check("etc/corral/modules", 0o100644,
		"/lib/modules/6.1.0-test/kernel/d.ko\n/lib/modules/6.1.0-test/kernel/c.ko\n"+
			"/lib/modules/6.1.0-test/kernel/sub/b-x.ko\n/lib/modules/6.1.0-test/kernel/a.ko\n")
	check("etc/motd", 0o100644, "hi\n")
	if _, ok := entries["lib/modules/6.1.0-test/kernel/e.ko"]; ok {
		t.Error("e.ko is in the image but was not asked for")
	}
	checkWithCpio(t, raw, names)

	if err := Build(&bytes.Buffer{}, Options{Binary: bin, KernelRelease: "x", ModulesDir: dir, Modules: []string{"zzz"}}); err == nil || !strings.Contains(err.Error(), "zzz") {
		t.Errorf("unknown module: %v", err)
	}
}

func TestSharedLibraries(t *testing.T) {
	libs, err := SharedLibraries("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) < 2 || !strings.Contains(libs[0], "ld-linux") || !slices.ContainsFunc(libs, func(s string) bool { return strings.HasSuffix(s, "/libc.so.6") }) {
		t.Errorf("/bin/true needs %q; want the loader first, and libc", libs)
	}
	if _, err := SharedLibraries("build_test.go"); err == nil {
		t.Error("a text file was taken for a binary")
	}
}
