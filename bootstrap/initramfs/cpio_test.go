package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// entry is one member of an archive, as readCpio finds it.
type entry struct {
	Name         string
	Mode         uint32 // type and permission bits
	UID, GID     uint32
	RMajor, RMin uint32
	Data         []byte
}

// readCpio reads a newc archive up to its trailer, checking the format as
// strictly as the kernel does (magic, padding).
func readCpio(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	field := func(h []byte, i int) uint32 {
		v, err := strconv.ParseUint(string(h[6+8*i:6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("header field %d %q: %v", i, h[6+8*i:6+8*i+8], err)
		}
		return uint32(v)
	}
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated archive at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		e := entry{Mode: field(h, 1), UID: field(h, 2), GID: field(h, 3), RMajor: field(h, 9), RMin: field(h, 10)}
		size, nameSize := int(field(h, 6)), int(field(h, 11))
		off += 110
		name := b[off : off+nameSize]
		if name[nameSize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		e.Name = string(name[:nameSize-1])
		off += nameSize
		off += pad4(110 + nameSize)
		if off%4 != 0 {
			t.Fatalf("%s: data not aligned", e.Name)
		}
		e.Data = b[off : off+size]
		off += size + pad4(size)
		if e.Name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("/etc", 0o755))
	must(w.Bytes("/etc/hostname", 0o644, []byte("node\n")))
	must(w.Bytes("/a/b/c/odd", 0o600, []byte("xyz")))
	must(w.Bytes("/empty", 0o644, nil))
	must(w.Symlink("/bin/clusterd", "/init"))
	must(w.CharDevice("/dev/console", 0o600, 5, 1))
	if err := w.Bytes("etc/hostname", 0o644, nil); err == nil {
		t.Error("a second /etc/hostname was accepted")
	}
	must(w.Close())

	got := readCpio(t, buf.Bytes())
	var lines []string
	for _, e := range got {
		if e.UID != 0 || e.GID != 0 {
			t.Errorf("%s: owner %d:%d", e.Name, e.UID, e.GID)
		}
		lines = append(lines, fmt.Sprintf("%s %o %d:%d %q", e.Name, e.Mode, e.RMajor, e.RMin, e.Data))
	}
	want := []string{
		`etc 40755 0:0 ""`,
		`etc/hostname 100644 0:0 "node\n"`,
		`a 40755 0:0 ""`,
		`a/b 40755 0:0 ""`,
		`a/b/c 40755 0:0 ""`,
		`a/b/c/odd 100600 0:0 "xyz"`,
		`empty 100644 0:0 ""`,
		`bin 40755 0:0 ""`,
		`bin/clusterd 120777 0:0 "/init"`,
		`dev 40755 0:0 ""`,
		`dev/console 20600 5:1 ""`,
	}
	if !slices.Equal(lines, want) {
		t.Errorf("archive:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	checkWithCpio(t, buf.Bytes(), []string{"etc", "etc/hostname", "a", "a/b", "a/b/c", "a/b/c/odd", "empty", "bin", "bin/clusterd", "dev", "dev/console"})
}

// checkWithCpio lists the archive with GNU cpio, when it is installed.
func checkWithCpio(t *testing.T, archive []byte, want []string) {
	t.Helper()
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Log("cpio is not installed: not checking the archive with it")
		return
	}
	cmd := exec.Command(cpio, "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(archive)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, want) {
		t.Errorf("cpio -t lists %q, want %q", got, want)
	}
	// Extract it too: modes and symlinks must come out as written.
	dir := t.TempDir()
	cmd = exec.Command(cpio, "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(archive)
	if out, err := cmd.CombinedOutput(); err != nil {
		// Device nodes need privileges; everything else must extract.
		if !strings.Contains(string(out), "mknod") {
			t.Fatalf("cpio -i: %v\n%s", err, out)
		}
	}
	for _, name := range want {
		st, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			if strings.HasPrefix(name, "dev/") {
				continue
			}
			t.Error(err)
			continue
		}
		if st.Mode()&os.ModeSymlink != 0 {
			if target, _ := os.Readlink(filepath.Join(dir, name)); target == "" {
				t.Errorf("%s: empty link", name)
			}
		}
	}
}
