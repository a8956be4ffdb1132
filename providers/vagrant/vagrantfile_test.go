package vagrant

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var testSettings = Settings{Box: "flatcar-stable", Provider: "virtualbox", Memory: 1024, CPUs: 1}

// testMachines are core-01 … core-0n at .101 … .10n of 172.17.8.0/24.
func testMachines(n int) []Machine {
	var ms []Machine
	for i := 1; i <= n; i++ {
		ms = append(ms, Machine{Name: fmt.Sprintf("core-%02d", i), IP: netip.AddrFrom4([4]byte{172, 17, 8, byte(100 + i)})})
	}
	return ms
}

func TestVagrantfileGolden(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			got := Vagrantfile(testSettings, testMachines(n))
			golden(t, fmt.Sprintf("testdata/vagrantfile-%d.golden", n), got)
		})
	}
	for _, prov := range Providers() {
		t.Run(prov, func(t *testing.T) {
			s := testSettings
			s.Provider, s.Memory, s.CPUs = prov, 2048, 2
			s.Network = netip.MustParsePrefix("10.20.0.0/16")
			golden(t, "testdata/vagrantfile-"+prov+".golden", Vagrantfile(s, testMachines(2)))
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Vagrantfile differs from %s (go test -update rewrites it):\n%s", path, got)
	}
}

// validate runs the real `vagrant validate` on the Vagrantfile in dir,
// with a VAGRANT_HOME of its own. A missing vagrant fails the test: CI
// installs it.
func validate(t *testing.T, dir string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("vagrant")
	if err != nil {
		t.Fatalf("vagrant is needed for this test (Debian: apt install vagrant): %v", err)
	}
	cmd := exec.Command(bin, append([]string{"validate"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "VAGRANT_HOME="+t.TempDir(), "VAGRANT_CHECKPOINT_DISABLE=1", "VAGRANT_NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Vagrantfile validated successfully") {
		b, _ := os.ReadFile(filepath.Join(dir, "Vagrantfile"))
		t.Fatalf("vagrant validate %s: %v\n%s\nVagrantfile:\n%s", strings.Join(args, " "), err, out, b)
	}
}

func writeVagrantfile(t *testing.T, b []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Vagrantfile"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestVagrantValidate has Vagrant itself read the generated files.
// --ignore-provider: VirtualBox is not installed where tests run.
func TestVagrantValidate(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			validate(t, writeVagrantfile(t, Vagrantfile(testSettings, testMachines(n))), "--ignore-provider")
		})
	}
	for _, prov := range Providers() {
		t.Run(prov, func(t *testing.T) {
			s := testSettings
			s.Provider = prov
			s.Network = netip.MustParsePrefix("10.20.0.0/16")
			validate(t, writeVagrantfile(t, Vagrantfile(s, testMachines(3))), "--ignore-provider")
		})
	}
}

// TestVagrantValidateLibvirt validates the libvirt provider block too,
// provider config included, where Debian's vagrant-libvirt plugin is
// installed (the vagrant package recommends it).
func TestVagrantValidateLibvirt(t *testing.T) {
	cmd := exec.Command("vagrant", "plugin", "list")
	cmd.Env = append(os.Environ(), "VAGRANT_HOME="+t.TempDir(), "VAGRANT_CHECKPOINT_DISABLE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("vagrant plugin list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "vagrant-libvirt") {
		t.Skip("vagrant-libvirt is not installed; TestVagrantValidate checked the file without provider config")
	}
	s := testSettings
	s.Provider = "libvirt"
	validate(t, writeVagrantfile(t, Vagrantfile(s, testMachines(3))))
}

func TestRubyString(t *testing.T) {
	for in, want := range map[string]string{
		"flatcar-stable":  `"flatcar-stable"`,
		"a#{system('x')}": `'a#{system(\'x\')}'`,
		`a\b"c`:           `'a\\b"c'`,
	} {
		if got := rubyString(in); got != want {
			t.Errorf("rubyString(%q) = %s, want %s", in, got, want)
		}
	}
}
