package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every HCL example in the README is valid as written: a whole file as
// it is, a fragment (no cluster block) added to examples/local.hcl, both
// read from examples/ so their relative paths resolve as a user's would.
func TestReadmeExamples(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	local, err := os.ReadFile("../../examples/local.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// The examples read the user's public key, as users have one.
	home := t.TempDir()
	t.Setenv("HOME", home)
	os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPmjdHYuPgbmEHHkFkz4K5sK/CTbGVmiKsc1qVSJmYEh user@host\n"
	if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 3 {
		t.Fatalf("found %d hcl blocks in the README", len(blocks))
	}
	for i, b := range blocks {
		src := string(b[1])
		if !strings.Contains(src, `cluster "`) {
			src = string(local) + "\n" + src
		}
		name := filepath.Join("..", "..", "examples", "readme-example.hcl")
		if strings.Contains(src, `provider "pxe"`) {
			// Beside the boot files the example tells users to make.
			dir := t.TempDir()
			for _, f := range []string{"vmlinuz", "initramfs.img"} {
				os.WriteFile(filepath.Join(dir, f), nil, 0o644)
			}
			name = filepath.Join(dir, "metal.hcl")
		}
		if _, diags := Parse([]byte(src), name, Inputs{}); diags.HasErrors() {
			t.Errorf("README hcl block %d:\n%s\n%s", i+1, b[1], diags.Error())
		}
	}
}
