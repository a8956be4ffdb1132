package templates

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/cloudinittest"
	"sigs.k8s.io/yaml"
)

// cloudInitSchema checks doc with Debian's cloud-init.
func cloudInitSchema(t *testing.T, doc []byte) error { return cloudinittest.Schema(t, doc) }

func TestCloudConfigSchema(t *testing.T) {
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			doc, err := CloudConfig(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := cloudInitSchema(t, doc); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCloudConfigSchemaRejects proves the check above can fail: documents
// cloud-init's schema refuses, or warns about, must not pass.
func TestCloudConfigSchemaRejects(t *testing.T) {
	good, err := CloudConfig(fixtures(t)["join"])
	if err != nil {
		t.Fatal(err)
	}
	for name, doc := range map[string]string{
		// write_files permissions must be a string such as "0644".
		"numeric permissions": strings.Replace(string(good), `permissions: "0600"`, `permissions: 384`, 1),
		"no header":           strings.TrimPrefix(string(good), cloudConfigHeader),
		"file without path":   "#cloud-config\nwrite_files:\n- content: hi\n",
		"not YAML":            "#cloud-config\nhostname: [core-1\n",
		"deprecated key":      "#cloud-config\nca-certs:\n  trusted: [abc]\n",
		"bad encoding":        "#cloud-config\nwrite_files:\n- path: /x\n  content: aGk=\n  encoding: base32\n",
	} {
		t.Run(name, func(t *testing.T) {
			if doc == string(good) {
				t.Fatal("the mutation did not apply")
			}
			err := cloudInitSchema(t, []byte(doc))
			if err == nil {
				t.Fatal("cloud-init schema accepted it")
			}
			t.Logf("rejected as expected: %v", err)
		})
	}
}

// cloudInitPython is the interpreter cloud-init runs under (its #! line),
// whose PyYAML is what reads user data on a node.
func cloudInitPython(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("cloud-init")
	if err != nil {
		t.Fatalf("cloud-init is not installed: apt-get install -y cloud-init (%v)", err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	py, ok := strings.CutPrefix(line, "#!")
	if !ok {
		t.Fatalf("%s has no #! line", bin)
	}
	return strings.Fields(py)[0]
}

// trickyNode has file contents that YAML emitters and YAML 1.1 readers
// disagree on if anything is quoted wrong.
func trickyNode(n Node) Node {
	n.Files = append([]File(nil), n.Files...)
	n.Hostname = "on" // a YAML 1.1 boolean, unquoted
	for i, s := range []string{
		"  leading spaces\nand more\n",
		"trailing spaces   \n\tand a tab\n",
		"no final newline",
		"---\n# not a comment\n...\n",
		"yes",
		"0644",
		"1e3",
		"null",
		"ünïcödé ✓ \u00a0non-breaking\n",
		"windows\r\nline ends\r\n",
		"\n\n\nblank lines first\n\n",
		"key: value\n- item\n{ flow: map }\n",
		"",
	} {
		n.Files = append(n.Files, File{Path: fmt.Sprintf("/etc/tricky/%d", i), Content: []byte(s)})
	}
	return n
}

// TestCloudConfigPyYAML reads every cloud-config with cloud-init's own
// YAML library and checks it means exactly what the renderer meant.
func TestCloudConfigPyYAML(t *testing.T) {
	py := cloudInitPython(t)
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			doc, err := CloudConfig(n)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "user-data")
			if err := os.WriteFile(file, doc, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(py, "-c",
				"import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1], 'rb'))))", file).Output()
			if err != nil {
				t.Fatalf("PyYAML: %v", err)
			}
			var got cloudConfig
			dec := json.NewDecoder(bytes.NewReader(out))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("PyYAML read something else: %v\n%s", err, out)
			}
			b, _ := n.boot()
			want := cloudConfig{Hostname: b.hostname, SSHAuthorizedKeys: b.keys}
			if got.Hostname != want.Hostname || !slices.Equal(got.SSHAuthorizedKeys, want.SSHAuthorizedKeys) {
				t.Errorf("PyYAML reads hostname %q keys %q", got.Hostname, got.SSHAuthorizedKeys)
			}
			s := cloudState(t, doc)
			for _, f := range n.Files {
				var pf *writeFile
				for i := range got.WriteFiles {
					if got.WriteFiles[i].Path == f.Path {
						pf = &got.WriteFiles[i]
					}
				}
				if pf == nil {
					t.Fatalf("PyYAML finds no %s", f.Path)
				}
				if pf.Encoding == "" && pf.Content != string(f.Content) {
					t.Errorf("%s: PyYAML reads %q, want %q", f.Path, pf.Content, f.Content)
				}
				if s.Files[f.Path].Content != string(f.Content) {
					t.Errorf("%s: decodes to %q, want %q", f.Path, s.Files[f.Path].Content, f.Content)
				}
			}
			if !slices.Equal(got.RunCmd[0], cloudStateRunCmd(t, doc)) {
				t.Errorf("PyYAML reads runcmd %q", got.RunCmd)
			}
		})
	}
}

func cloudStateRunCmd(t *testing.T, doc []byte) []string {
	var cc cloudConfig
	if err := yaml.Unmarshal(bytes.TrimPrefix(doc, []byte(cloudConfigHeader)), &cc); err != nil {
		t.Fatal(err)
	}
	return cc.RunCmd[0]
}
