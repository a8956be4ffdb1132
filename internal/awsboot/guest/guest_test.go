package guest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_4/types"
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
