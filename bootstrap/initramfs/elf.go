package initramfs

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// libDirs are where shared libraries are looked for, as the dynamic
// loader's default search path has them on Debian and its relatives.
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// SharedLibraries returns the files a dynamically linked binary needs to
// run: its interpreter (the dynamic loader) and its shared libraries,
// transitively, as absolute paths on this machine, which are also where
// the image puts them. A static binary needs none.
func SharedLibraries(binary string) ([]string, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", binary, err)
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("initramfs: %s: reading its interpreter: %w", binary, err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		return nil, nil
	}
	out := []string{interp}
	seen := map[string]bool{interp: true}
	queue, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("initramfs: %s: %w", binary, err)
	}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		p, err := findLibrary(name)
		if err != nil {
			return nil, fmt.Errorf("initramfs: %s needs %s: %w", binary, name, err)
		}
		if seen[p] || filepath.Base(p) == filepath.Base(interp) {
			continue
		}
		seen[p] = true
		out = append(out, p)
		lf, err := elf.Open(p)
		if err != nil {
			return nil, fmt.Errorf("initramfs: %s: %w", p, err)
		}
		more, err := lf.ImportedLibraries()
		lf.Close()
		if err != nil {
			return nil, fmt.Errorf("initramfs: %s: %w", p, err)
		}
		queue = append(queue, more...)
	}
	return out, nil
}

func findLibrary(name string) (string, error) {
	if filepath.IsAbs(name) {
		return name, nil
	}
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("not found in " + strings.Join(libDirs, ", "))
}
