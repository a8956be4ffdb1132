package provision_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/provision"
)

// examples/vagrant.hcl renders its Vagrantfile without running anything,
// and up without vagrant says so before writing anything.
func TestVagrantExample(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../examples/vagrant.hcl")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "vagrant.hcl")
	if err := os.WriteFile(file, src, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir()) // no vagrant, nor anything else
	out, err := render(t, file, "", "vagrantfile")
	if err != nil {
		t.Fatalf("render --format vagrantfile: %v", err)
	}
	for _, want := range []string{`config.vm.box = "flatcar-stable"`, `config.vm.define "core-01"`, `ip: "172.17.8.101"`, `config.vm.define "core-03"`, `ip: "172.17.8.103"`} {
		if !strings.Contains(out, want) {
			t.Errorf("Vagrantfile has no %s:\n%s", want, out)
		}
	}
	var log bytes.Buffer
	err = provision.Up(context.Background(), provision.UpOptions{Options: provision.Options{File: file, Out: &log, Err: &log}, AutoApprove: true})
	if err == nil || !strings.Contains(err.Error(), "vagrant not found") {
		t.Fatalf("up without vagrant: %v\n%s", err, log.String())
	}
	if _, err := os.Stat(filepath.Join(dir, ".corral")); !os.IsNotExist(err) {
		t.Errorf("up wrote a state directory before finding vagrant missing (%v)", err)
	}
}
