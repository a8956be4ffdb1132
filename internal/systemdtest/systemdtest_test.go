package systemdtest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBoot checks the instance and its fences: journald runs, no
// generator ran, the host's units are not loaded, and / is read-only
// inside while the host can still write.
func TestBoot(t *testing.T) {
	in := Boot(t)
	c := in.Conn(t)
	p, err := c.GetUnitProperty("systemd-journald.service", "ActiveState")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Value.Value(); got != "active" {
		t.Errorf("journald is %v, want active", got)
	}
	if _, err := os.Stat(filepath.Join(in.Root(), "run/systemd/generator")); err == nil {
		t.Error("generators ran")
	}
	p, err = c.GetUnitProperty("systemd-tmpfiles-setup.service", "LoadState")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Value.Value(); got != "not-found" {
		t.Errorf("the host's systemd-tmpfiles-setup.service is %v, want not-found", got)
	}
	if err := os.WriteFile(filepath.Join(in.Root(), "run/probe"), nil, 0o644); err != nil {
		t.Errorf("the instance's /run is not writable: %v", err)
	}
	probe := filepath.Join(in.Root(), t.TempDir(), "probe")
	if err := os.WriteFile(probe, nil, 0o644); err == nil {
		t.Errorf("wrote %s: the instance's / is writable", probe)
	}
}
