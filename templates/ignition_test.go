package templates

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestIgnitionValidates parses every fixture's config with Ignition's
// validator: no report entries at all, warnings included.
func TestIgnitionValidates(t *testing.T) {
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			cfg, err := Ignition(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckIgnition(cfg); err != nil {
				t.Fatal(err)
			}
			s := ignitionState(t, cfg)
			bin := s.Files[binaryPath]
			if want := "fetch " + n.Binary.URL + " sha512-" + n.Binary.SHA512; bin.Content != want || bin.Mode != 0o755 {
				t.Errorf("binary %+v, want %q mode 0755", bin, want)
			}
		})
	}
}

// TestCheckIgnitionFailsOnWarnings shows a warning alone fails the check,
// and that the message carries Ignition's report.
func TestCheckIgnitionFailsOnWarnings(t *testing.T) {
	for name, tc := range map[string]struct{ config, want string }{
		"enabled without [Install]": {
			`{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"a.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n"}]}}`,
			"has no install section",
		},
		"setuid": {
			`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/x","mode":2541,"contents":{"source":"data:,x"}}]}}`,
			"setuid/setgid/sticky",
		},
		"unknown key": {
			`{"ignition":{"version":"3.4.0"},"storage":{"filez":[]}}`,
			"unused key filez",
		},
		"error": {
			`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"relative"}]}}`,
			"path not absolute",
		},
		"old version": {`{"ignition":{"version":"3.3.0"}}`, "unsupported config version"},
	} {
		t.Run(name, func(t *testing.T) {
			err := CheckIgnition([]byte(tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestClusterdServiceVerifies runs systemd's own unit parser
// (systemd-analyze verify) on each fixture's clusterd.service, so quoting
// in ExecStart is checked by systemd, not only by the test's reading of it.
// systemd-analyze insists the executables exist, so the unit is checked
// with /opt/bin pointed at a directory of stand-ins.
func TestClusterdServiceVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is not installed (apt-get install -y systemd): %v", err)
	}
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{binaryPath, detectIPPath} {
				if err := os.WriteFile(filepath.Join(bin, filepath.Base(p)), []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			b, err := n.boot()
			if err != nil {
				t.Fatal(err)
			}
			unitFile := filepath.Join(dir, clusterdUnit)
			content := strings.ReplaceAll(b.units[0].Content, binaryDir+"/", bin+"/")
			if err := os.WriteFile(unitFile, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", unitFile).CombinedOutput()
			if err != nil || strings.Contains(string(out), unitFile) {
				t.Fatalf("systemd-analyze verify: %v\n%s\n%s", err, out, content)
			}
		})
	}
}
