package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestFilesRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "corral", "tls")
	f := Files{
		CA:   filepath.Join(dir, "ca.pem"),
		Cert: filepath.Join(dir, "node.pem"),
		Key:  filepath.Join(dir, "node-key.pem"),
	}
	if err := f.Write([]byte("old ca"), []byte("old cert"), []byte("old key")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	// A second write replaces the files (certificate renewal).
	want := [3][]byte{[]byte("ca"), []byte("cert"), []byte("key")}
	if err := f.Write(want[0], want[1], want[2]); err != nil {
		t.Fatalf("second Write: %v", err)
	}
	ca, cert, key, err := f.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got := [3][]byte{ca, cert, key}; !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) || !bytes.Equal(got[2], want[2]) {
		t.Errorf("Read = %q, want %q", got, want)
	}

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, err %v; want mode 0700", fi.Mode(), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("directory holds %d entries, want 3 (temporary files left behind?)", len(entries))
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
}

func TestFilesErrors(t *testing.T) {
	if err := (Files{}).Write(nil, nil, nil); err == nil {
		t.Error("Write with empty paths succeeded")
	}
	dir := t.TempDir()
	f := Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "c.pem"), Key: filepath.Join(dir, "k.pem")}
	if _, _, _, err := f.Read(); err == nil {
		t.Error("Read of missing files succeeded")
	}
}
