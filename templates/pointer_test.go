package templates

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"

	ignition "github.com/coreos/ignition/v2/config/v3_4"
)

// bigNode is the join fixture plus 20 KiB of files that don't compress
// (random bytes from a fixed seed, so renders stay deterministic).
func bigNode(t *testing.T) Node {
	n := fixtures(t)["join"]
	rng := rand.New(rand.NewPCG(1, 2))
	blob := make([]byte, 20<<10)
	for i := range blob {
		blob[i] = byte(rng.UintN(256))
	}
	n.Files = append(n.Files, File{Path: "/opt/web/blob.bin", Content: blob, Mode: 0o644})
	return n
}

// TestFitIgnitionPointer is the acceptance test: a 20 KiB config becomes a
// pointer under EC2's 16 KiB whose hash is the full config's SHA-512, and
// which itself passes Ignition's validator with no warnings.
func TestFitIgnitionPointer(t *testing.T) {
	full, err := Ignition(bigNode(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(full) < 20<<10 {
		t.Fatalf("full config is only %d bytes", len(full))
	}
	const url = "https://corral-demo-assets.s3.amazonaws.com/ignition/web-2.ign"
	ud, err := Fit(full, FormatIgnition, EC2UserDataLimit, url)
	if err != nil {
		t.Fatal(err)
	}
	if ud.Delivery != Pointer || len(ud.Data) >= EC2UserDataLimit {
		t.Fatalf("delivery %s, %d bytes", ud.Delivery, len(ud.Data))
	}
	if err := CheckIgnition(ud.Data); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := ignition.Parse(ud.Data)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(full)
	want := "sha512-" + hex.EncodeToString(sum[:])
	r := cfg.Ignition.Config.Replace
	if r.Source == nil || *r.Source != url || r.Verification.Hash == nil || *r.Verification.Hash != want || ud.Hash != want || ud.URL != url {
		t.Fatalf("pointer replaces with %v %v, want %s %s", r.Source, r.Verification.Hash, url, want)
	}
	if len(cfg.Storage.Files)+len(cfg.Systemd.Units)+len(cfg.Passwd.Users) != 0 {
		t.Error("the pointer carries more than the pointer")
	}
	t.Logf("%d-byte config → %d-byte pointer", len(full), len(ud.Data))

	// Deterministic too: plan diffs the pointer as it diffs anything.
	again, _ := Fit(full, FormatIgnition, EC2UserDataLimit, url)
	if !bytes.Equal(again.Data, ud.Data) {
		t.Error("two fits differ")
	}
}

func TestFitInline(t *testing.T) {
	for _, f := range []Format{FormatIgnition, FormatCloudConfig} {
		full, err := Render(fixtures(t)["join"], f)
		if err != nil {
			t.Fatal(err)
		}
		ud, err := Fit(full, f, EC2UserDataLimit, "")
		if err != nil {
			t.Fatal(err)
		}
		if ud.Delivery != Inline || !bytes.Equal(ud.Data, full) {
			t.Errorf("%s: delivery %s", f, ud.Delivery)
		}
		// Exactly at the limit is still inline.
		if ud, err := Fit(full, f, len(full), ""); err != nil || ud.Delivery != Inline {
			t.Errorf("%s at the limit: %v %v", f, ud.Delivery, err)
		}
	}
}

// TestFitCloudConfigGzip: a cloud-config over the limit that compresses
// under it is sent gzip'd, and unpacks to the very document.
func TestFitCloudConfigGzip(t *testing.T) {
	n := fixtures(t)["join"]
	n.Files = append(n.Files, File{Path: "/etc/web/big.conf", Content: []byte(strings.Repeat("upstream backend { server 10.0.0.1:8080; }\n", 500))})
	full, err := CloudConfig(n)
	if err != nil {
		t.Fatal(err)
	}
	if len(full) <= EC2UserDataLimit {
		t.Fatalf("only %d bytes", len(full))
	}
	ud, err := Fit(full, FormatCloudConfig, EC2UserDataLimit, "https://example.com/ignored")
	if err != nil {
		t.Fatal(err)
	}
	if ud.Delivery != Gzipped || len(ud.Data) > EC2UserDataLimit {
		t.Fatalf("delivery %s, %d bytes", ud.Delivery, len(ud.Data))
	}
	if got := gunzip(t, ud.Data); !bytes.Equal(got, full) {
		t.Error("the gzip'd user data is not the cloud-config")
	}
	if err := cloudInitSchema(t, gunzip(t, ud.Data)); err != nil {
		t.Error(err)
	}
}

func TestFitErrors(t *testing.T) {
	bigIgn, err := Ignition(bigNode(t))
	if err != nil {
		t.Fatal(err)
	}
	bigCC, err := CloudConfig(bigNode(t))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		full   []byte
		format Format
		url    string
		want   string
	}{
		"cloud-config too big":  {bigCC, FormatCloudConfig, "https://example.com/x", "cannot fetch the rest with a verified hash"},
		"no URL":                {bigIgn, FormatIgnition, "", "no URL"},
		"bad URL scheme":        {bigIgn, FormatIgnition, "ftp://example.com/x.ign", "pointer config"},
		"URL too long":          {bigIgn, FormatIgnition, "https://example.com/" + strings.Repeat("a", 17<<10), "even the pointer"},
		"swapped formats":       {bigIgn, FormatCloudConfig, "", "not a cloud-config"},
		"swapped formats again": {bigCC, FormatIgnition, "https://example.com/x", "not an Ignition config"},
		"unknown format":        {bigIgn, "butane", "", "unknown format"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Fit(tc.full, tc.format, EC2UserDataLimit, tc.url)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
