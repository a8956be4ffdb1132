package guest

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_4/types"
	"github.com/corral-dev/corral/bootstrap/netboot"
)

func TestParseS3URL(t *testing.T) {
	b, k, err := ParseS3URL("s3://bucket/dir/key")
	if err != nil || b != "bucket" || k != "dir/key" {
		t.Errorf("s3://bucket/dir/key: %q %q %v", b, k, err)
	}
	for _, bad := range []string{"s3://bucket", "s3:///key", "https://bucket/key", "s3://bucket/"} {
		if _, _, err := ParseS3URL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestEnabledServices(t *testing.T) {
	yes, no := true, false
	cfg := types.Config{Systemd: types.Systemd{Units: []types.Unit{
		{Name: "b.service", Enabled: &yes}, {Name: "a.service", Enabled: &yes},
		{Name: "off.service", Enabled: &no}, {Name: "plain.service"},
		{Name: "masked.service", Enabled: &yes, Mask: &yes}, {Name: "t.timer", Enabled: &yes},
	}}}
	if got, want := EnabledServices(cfg), []string{"a.service", "b.service"}; !slices.Equal(got, want) {
		t.Errorf("EnabledServices = %v, want %v", got, want)
	}
}

// TestReadUnit: drop-ins come after the unit, in name order, and override
// it as systemd's do.
func TestReadUnit(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("x.service", "[Service]\nExecStart=/bin/true\nEnvironment=A=1\n")
	write("x.service.d/20-b.conf", "[Service]\nEnvironment=A=3\n")
	write("x.service.d/10-a.conf", "[Service]\nEnvironment=A=2\n")
	f, err := ReadUnit(dir, "x.service")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Values("Service", "Environment"), []string{"A=1", "A=2", "A=3"}; !slices.Equal(got, want) {
		t.Errorf("Environment = %v, want %v", got, want)
	}
	if _, err := ReadUnit(dir, "missing.service"); err == nil {
		t.Error("a missing unit: no error")
	}
}

// TestResolve: a pointer config stands for the config it replaces, whose
// hash is checked; merged configs add to the one that names them.
func TestResolve(t *testing.T) {
	ctx := context.Background()
	enc := func(c types.Config) string {
		c.Ignition.Version = "3.4.0"
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return "data:;base64," + base64.StdEncoding.EncodeToString(b)
	}
	file := func(p string) types.File {
		return types.File{Node: types.Node{Path: p}, FileEmbedded1: types.FileEmbedded1{Contents: types.Resource{Source: ptr("data:,x")}}}
	}
	child := enc(types.Config{Storage: types.Storage{Files: []types.File{file("/etc/child")}}})
	sum := sha512.Sum512([]byte(mustDecode(t, child)))
	full := enc(types.Config{
		Ignition: types.Ignition{Config: types.IgnitionConfig{Merge: []types.Resource{{Source: &child}}}},
		Storage:  types.Storage{Files: []types.File{file("/etc/full")}},
	})
	pointer := types.Config{Ignition: types.Ignition{Config: types.IgnitionConfig{Replace: types.Resource{Source: &full}}}}
	cfg, err := Resolve(ctx, pointer, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range cfg.Storage.Files {
		paths = append(paths, f.Path)
	}
	if want := []string{"/etc/full", "/etc/child"}; !slices.Equal(paths, want) {
		t.Errorf("files %v, want %v", paths, want)
	}

	good := "sha512-" + hex.EncodeToString(sum[:])
	bad := "sha512-" + strings.Repeat("0", 128)
	for hash, ok := range map[string]bool{good: true, bad: false} {
		p := types.Config{Ignition: types.Ignition{Config: types.IgnitionConfig{Replace: types.Resource{Source: &child,
			Verification: types.Verification{Hash: &hash}}}}}
		_, err := Resolve(ctx, p, nil, 0)
		if ok != (err == nil) {
			t.Errorf("hash %.20s…: err %v", hash, err)
		}
		if err != nil && !strings.Contains(err.Error(), "does not match") {
			t.Errorf("hash mismatch: error %q does not say so", err)
		}
	}

	// A chain too long to be anything but a loop is refused.
	if _, err := Resolve(ctx, pointer, nil, maxConfigDepth); err == nil || !strings.Contains(err.Error(), "refer to itself") {
		t.Errorf("a chain over %d configs: err %v", maxConfigDepth, err)
	}
}

func ptr[T any](v T) *T { return &v }

func mustDecode(t *testing.T, dataURL string) string {
	t.Helper()
	b, err := netboot.DecodeDataURL(dataURL)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
