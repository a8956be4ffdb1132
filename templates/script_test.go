package templates

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDetectIP runs the address-detection script as rendered: with a
// server address it writes the source address of the route towards it
// (127.0.0.1 here: loopback, so the test needs no network).
func TestDetectIP(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2's ip is not installed (apt-get install -y iproute2): %v", err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "corral-detect-ip")
	if err := os.WriteFile(script, []byte(detectIPScript), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "run", "ip.env")
	if b, err := exec.Command(script, out, "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != ipEnvVariable+"=127.0.0.1\n" {
		t.Errorf("wrote %q", got)
	}
	// The script is what the node gets.
	n := fixtures(t)["client"]
	b, _ := n.boot()
	found := false
	for _, f := range b.files {
		if f.Path == detectIPPath {
			found = string(f.Content) == detectIPScript && f.fileMode() == 0o755
		}
	}
	if !found {
		t.Error("the client node does not get the detection script")
	}
}

// TestDetectIPNoAddress runs the script in a network namespace with no
// address at all: it must fail and write nothing, rather than hand clusterd
// an empty --ip.
func TestDetectIPNoAddress(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "corral-detect-ip")
	if err := os.WriteFile(script, []byte(detectIPScript), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "ip.env")
	b, err := exec.Command("unshare", "--net", script, out).CombinedOutput()
	if err == nil {
		t.Fatalf("succeeded with no address: %s", b)
	}
	if !strings.Contains(string(b), "no address found") {
		t.Errorf("output %q", b)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("wrote %s anyway", out)
	}
}

// TestInstallScript runs the cloud-config's runcmd as rendered, against a
// loopback HTTP server, with /opt/bin moved into a temporary directory and
// a stand-in systemctl: a binary with the right hash is installed and the
// units enabled; one with the wrong hash is not installed and nothing is
// enabled.
func TestInstallScript(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if _, err := exec.LookPath("wget"); err != nil {
			t.Fatal("neither curl nor wget is installed: apt-get install -y curl")
		}
	}
	payload := []byte("#!/bin/sh\necho clusterd\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }))
	defer srv.Close()
	sum := sha512.Sum512(payload)
	good := hex.EncodeToString(sum[:])

	for _, tc := range []struct {
		name    string
		sha     string
		install bool
	}{
		{"right hash", good, true},
		{"wrong hash", strings.Repeat("0", 128), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := fixtures(t)["join"]
			n.Binary = Binary{URL: srv.URL + "/clusterd", SHA512: tc.sha}
			doc, err := CloudConfig(n)
			if err != nil {
				t.Fatal(err)
			}
			var cc cloudConfig
			if err := yaml.Unmarshal(bytes.TrimPrefix(doc, []byte(cloudConfigHeader)), &cc); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			fakeBin := filepath.Join(dir, "fakebin")
			optBin := filepath.Join(dir, "opt", "bin")
			log := filepath.Join(dir, "systemctl.log")
			os.Mkdir(fakeBin, 0o755)
			if err := os.WriteFile(filepath.Join(fakeBin, "systemctl"), []byte("#!/bin/sh\necho \"$@\" >>"+log+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			argv := cc.RunCmd[0]
			argv[2] = strings.ReplaceAll(argv[2], binaryDir, optBin)
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "PATH="+fakeBin+":"+os.Getenv("PATH"), "no_proxy=127.0.0.1", "NO_PROXY=127.0.0.1")
			out, err := cmd.CombinedOutput()
			if (err == nil) != tc.install {
				t.Fatalf("install script: %v\n%s", err, out)
			}
			installed := filepath.Join(optBin, "clusterd")
			fi, statErr := os.Stat(installed)
			calls, _ := os.ReadFile(log)
			if !tc.install {
				if statErr == nil {
					t.Error("installed a binary that failed its hash")
				}
				if len(calls) != 0 {
					t.Errorf("ran systemctl %q after a failed check", calls)
				}
				if left, _ := filepath.Glob(filepath.Join(optBin, "*")); len(left) != 0 {
					t.Errorf("left %q behind", left)
				}
				return
			}
			if statErr != nil || fi.Mode().Perm() != 0o755 {
				t.Fatalf("installed binary: %v %v", statErr, fi)
			}
			if got, _ := os.ReadFile(installed); !bytes.Equal(got, payload) {
				t.Error("installed the wrong bytes")
			}
			want := "daemon-reload\nenable --now clusterd.service exporter.service systemd-timesyncd.service\n"
			if string(calls) != want {
				t.Errorf("systemctl calls %q, want %q", calls, want)
			}
		})
	}
}
