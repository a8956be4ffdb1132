package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Writer writes a cpio archive in the "newc" format, the one the kernel
// unpacks into its root file system at boot. Every entry is owned by root
// and dated at the epoch, so the same inputs give the same bytes. Parent
// directories are added (0755) for entries whose parents were not written.
type Writer struct {
	w    io.Writer
	ino  uint32
	seen map[string]bool
	err  error
}

// NewWriter returns a Writer on w. Close writes the trailer.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, ino: 1, seen: map[string]bool{".": true}}
}

// Unix file type bits of the mode field.
const (
	typeDir     = 0o040000
	typeFile    = 0o100000
	typeSymlink = 0o120000
	typeChar    = 0o020000
)

// cleanName is the name an entry is stored under: relative, clean, with
// no "..": the kernel resolves names against the root.
func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)
	if n == "/" {
		return "", fmt.Errorf("initramfs: empty entry name %q", name)
	}
	return strings.TrimPrefix(n, "/"), nil
}

// Dir adds a directory (and its missing parents).
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if w.seen[n] {
		return nil
	}
	if err := w.parents(n); err != nil {
		return err
	}
	w.seen[n] = true
	return w.entry(n, typeDir|unixPerm(perm), 0, 0, nil, 0)
}

// File adds a regular file of size bytes read from r.
func (w *Writer) File(name string, perm fs.FileMode, size int64, r io.Reader) error {
	n, err := w.prepare(name)
	if err != nil {
		return err
	}
	if size < 0 || size > 0xffffffff {
		return fmt.Errorf("initramfs: %s: size %d does not fit in a newc archive", n, size)
	}
	return w.entry(n, typeFile|unixPerm(perm), 0, 0, r, size)
}

// Bytes adds a regular file with the given contents.
func (w *Writer) Bytes(name string, perm fs.FileMode, data []byte) error {
	return w.File(name, perm, int64(len(data)), bytes.NewReader(data))
}

// Symlink adds a symbolic link at name pointing to target.
func (w *Writer) Symlink(name, target string) error {
	n, err := w.prepare(name)
	if err != nil {
		return err
	}
	return w.entry(n, typeSymlink|0o777, 0, 0, strings.NewReader(target), int64(len(target)))
}

// CharDevice adds a character device node.
func (w *Writer) CharDevice(name string, perm fs.FileMode, major, minor uint32) error {
	n, err := w.prepare(name)
	if err != nil {
		return err
	}
	return w.entry(n, typeChar|unixPerm(perm), major, minor, nil, 0)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.ino = 0
	return w.entry("TRAILER!!!", 0, 0, 0, nil, 0)
}

func (w *Writer) prepare(name string) (string, error) {
	n, err := cleanName(name)
	if err != nil {
		return "", err
	}
	if w.seen[n] {
		return "", fmt.Errorf("initramfs: %s added twice", n)
	}
	if err := w.parents(n); err != nil {
		return "", err
	}
	w.seen[n] = true
	return n, nil
}

func (w *Writer) parents(n string) error {
	if dir := path.Dir(n); !w.seen[dir] {
		return w.Dir(dir, 0o755)
	}
	return nil
}

func (w *Writer) entry(name string, mode, rmajor, rminor uint32, r io.Reader, size int64) error {
	if w.err != nil {
		return w.err
	}
	w.err = w.writeEntry(name, mode, rmajor, rminor, r, size)
	return w.err
}

func (w *Writer) writeEntry(name string, mode, rmajor, rminor uint32, r io.Reader, size int64) error {
	nlink := uint32(1)
	if mode&0o170000 == typeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		w.ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmajor, rminor, len(name)+1, 0)
	w.ino++
	buf := []byte(hdr + name + "\x00")
	buf = append(buf, make([]byte, pad4(len(buf)))...)
	if _, err := w.w.Write(buf); err != nil {
		return err
	}
	if size > 0 {
		n, err := io.Copy(w.w, io.LimitReader(r, size))
		if err != nil {
			return err
		}
		if n != size {
			return fmt.Errorf("initramfs: %s: %w (%d of %d bytes)", name, io.ErrUnexpectedEOF, n, size)
		}
		if _, err := w.w.Write(make([]byte, pad4(int(size)))); err != nil {
			return err
		}
	}
	return nil
}

// unixPerm is the permission bits of a mode, with setuid, setgid and sticky.
func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

func pad4(n int) int { return (4 - n%4) % 4 }
