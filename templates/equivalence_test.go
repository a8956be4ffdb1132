package templates

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	ignition "github.com/coreos/ignition/v2/config/v3_4"
	"sigs.k8s.io/yaml"
)

// endState is what a node ends up with, read back out of a rendered config.
type endState struct {
	Hostname string
	Keys     []string
	Files    map[string]fileState
	Units    map[string]unitState
}

type fileState struct {
	Content string // for the fetched binary: "fetch URL sha512-HEX"
	Mode    int
	Owner   string
}

type unitState struct {
	Content string
	Enabled bool
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ignitionState decodes an Ignition config with Ignition's own parser.
func ignitionState(t *testing.T, raw []byte) endState {
	t.Helper()
	cfg, rpt, err := ignition.Parse(raw)
	if err != nil || len(rpt.Entries) > 0 {
		t.Fatalf("Ignition parse: %v %s", err, rpt)
	}
	s := endState{Files: map[string]fileState{}, Units: map[string]unitState{}}
	for _, u := range cfg.Passwd.Users {
		if u.Name != loginUser {
			t.Errorf("keys for user %q", u.Name)
		}
		for _, k := range u.SSHAuthorizedKeys {
			s.Keys = append(s.Keys, string(k))
		}
	}
	for _, f := range cfg.Storage.Files {
		src := *f.Contents.Source
		var content string
		if data, ok := strings.CutPrefix(src, "data:;base64,"); ok {
			b, err := base64.StdEncoding.DecodeString(data)
			if err != nil {
				t.Fatal(err)
			}
			if f.Contents.Compression != nil && *f.Contents.Compression == "gzip" {
				b = gunzip(t, b)
			}
			content = string(b)
		} else {
			content = "fetch " + src + " " + *f.Contents.Verification.Hash
		}
		owner := ""
		if f.User.Name != nil {
			owner = *f.User.Name
			if f.Group.Name != nil {
				owner += ":" + *f.Group.Name
			}
		}
		if f.Path == hostnamePath {
			s.Hostname = strings.TrimSuffix(content, "\n")
			continue
		}
		s.Files[f.Path] = fileState{Content: content, Mode: *f.Mode, Owner: owner}
	}
	for _, u := range cfg.Systemd.Units {
		us := unitState{Enabled: u.Enabled != nil && *u.Enabled}
		if u.Contents != nil {
			us.Content = *u.Contents
		}
		s.Units[u.Name] = us
	}
	return s
}

// cloudState decodes a cloud-config: write_files under /etc/systemd/system
// are units, and the one runcmd names the binary and the units to enable.
func cloudState(t *testing.T, raw []byte) endState {
	t.Helper()
	var cc cloudConfig
	if err := yaml.UnmarshalStrict(bytes.TrimPrefix(raw, []byte(cloudConfigHeader)), &cc); err != nil {
		t.Fatal(err)
	}
	s := endState{Hostname: cc.Hostname, Keys: cc.SSHAuthorizedKeys, Files: map[string]fileState{}, Units: map[string]unitState{}}
	for _, f := range cc.WriteFiles {
		var b []byte
		switch f.Encoding {
		case "":
			b = []byte(f.Content)
		case "b64", "gz+b64":
			var err error
			if b, err = base64.StdEncoding.DecodeString(f.Content); err != nil {
				t.Fatal(err)
			}
			if f.Encoding == "gz+b64" {
				b = gunzip(t, b)
			}
		default:
			t.Fatalf("%s: encoding %q", f.Path, f.Encoding)
		}
		var mode int
		if _, err := fmt.Sscanf(f.Permissions, "%o", &mode); err != nil {
			t.Fatal(err)
		}
		if name, ok := strings.CutPrefix(f.Path, unitDir+"/"); ok {
			if mode != 0o644 {
				t.Errorf("unit %s mode %#o", name, mode)
			}
			s.Units[name] = unitState{Content: string(b)}
			continue
		}
		s.Files[f.Path] = fileState{Content: string(b), Mode: mode, Owner: f.Owner}
	}
	if len(cc.RunCmd) != 1 || len(cc.RunCmd[0]) < 6 {
		t.Fatalf("runcmd %q: want one install command", cc.RunCmd)
	}
	cmd := cc.RunCmd[0]
	s.Files[binaryPath] = fileState{Content: "fetch " + cmd[4] + " sha512-" + cmd[5], Mode: 0o755}
	for _, name := range cmd[6:] {
		u := s.Units[name]
		u.Enabled = true
		s.Units[name] = u
	}
	return s
}

// TestSameEndState decodes both formats of every fixture and compares
// host name, keys, every file (content, mode, owner) and every unit
// (content, enabled).
func TestSameEndState(t *testing.T) {
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			ign, err := Ignition(n)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := CloudConfig(n)
			if err != nil {
				t.Fatal(err)
			}
			a, b := ignitionState(t, ign), cloudState(t, cc)
			if a.Hostname != b.Hostname || a.Hostname != n.Hostname {
				t.Errorf("hostname: Ignition %q, cloud-config %q, node %q", a.Hostname, b.Hostname, n.Hostname)
			}
			if !slices.Equal(a.Keys, b.Keys) || !slices.Equal(a.Keys, n.SSHAuthorizedKeys) {
				t.Errorf("keys: Ignition %q, cloud-config %q", a.Keys, b.Keys)
			}
			if got, want := slices.Sorted(maps.Keys(a.Files)), slices.Sorted(maps.Keys(b.Files)); !slices.Equal(got, want) {
				t.Errorf("file paths: Ignition %q, cloud-config %q", got, want)
			}
			for p, f := range a.Files {
				if g := b.Files[p]; g != f {
					t.Errorf("%s: Ignition %+v, cloud-config %+v", p, f, g)
				}
			}
			if !reflect.DeepEqual(a.Units, b.Units) {
				t.Errorf("units: Ignition %+v, cloud-config %+v", a.Units, b.Units)
			}
			// And both carry the node's own files and units as given.
			for _, f := range n.Files {
				if got := a.Files[f.Path]; got.Content != string(f.Content) || got.Mode != f.fileMode() || got.Owner != f.Owner {
					t.Errorf("%s: rendered %+v from %+v", f.Path, got, f)
				}
			}
			for _, u := range n.Units {
				if got := a.Units[u.Name]; got != (unitState{u.Content, u.Enabled}) {
					t.Errorf("unit %s: rendered %+v", u.Name, got)
				}
			}
			if !a.Units[clusterdUnit].Enabled {
				t.Error("clusterd.service is not enabled")
			}
			if f := a.Files[tokenPath]; f.Mode != 0o600 || strings.TrimSpace(f.Content) != n.Clusterd.Token {
				t.Errorf("token file %+v", f)
			}
		})
	}
}

// TestCloudConfigKeysKnown: cloud-init 22.4's schema check passes unknown
// top-level keys, so a misspelt key would be silently ignored at boot.
// Check every key the renderer writes is one the schema defines.
func TestCloudConfigKeysKnown(t *testing.T) {
	const schemaFile = "/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json"
	raw, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatalf("cloud-init's schema is not installed (apt-get install -y cloud-init): %v", err)
	}
	var schema struct {
		Defs map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, d := range schema.Defs {
		for k := range d.Properties {
			known[k] = true
		}
	}
	for name, n := range fixtures(t) {
		doc, err := CloudConfig(n)
		if err != nil {
			t.Fatal(err)
		}
		var top map[string]any
		if err := yaml.Unmarshal(doc, &top); err != nil {
			t.Fatal(err)
		}
		for k := range top {
			if !known[k] {
				t.Errorf("%s: key %q is not in cloud-init's schema", name, k)
			}
		}
	}
}
