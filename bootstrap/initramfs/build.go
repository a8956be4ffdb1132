// Package initramfs builds the initramfs Corral network-boots machines
// with: the corral binary as /init (see bootstrap/netboot), the same binary
// as clusterd and clusterctl, and the kernel modules the machine needs to
// reach the network and run the overlay, with their dependencies.
package initramfs

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ModulesList is where the image lists the modules to load, one absolute
// path a line, in load order.
const ModulesList = "/etc/corral/modules"

// BinaryLinks are the names the binary is also installed under, as
// symbolic links to /init: clusterd.service runs /opt/bin/clusterd.
var BinaryLinks = []string{"/bin/clusterd", "/bin/clusterctl", "/opt/bin/clusterd"}

// DefaultModules are loaded when Options.Modules is empty: the NICs of QEMU
// and of common servers, and what clusterd's overlay needs.
var DefaultModules = []string{
	// QEMU, VMware and cloud hypervisors.
	"virtio_pci", "virtio_net", "e1000", "e1000e", "vmxnet3",
	// Common server NICs.
	"igb", "ixgbe", "i40e", "ice", "tg3", "bnx2", "bnxt_en", "r8169",
	// DHCP's raw socket and the overlay.
	"af_packet", "vxlan", "bridge", "veth",
	// Entropy on virtual machines without RDRAND: getrandom blocks (and
	// with it DHCP, TLS and etcd) until the kernel's RNG is seeded.
	"virtio_rng",
}

// Options are what goes into the image.
type Options struct {
	// Binary is the corral binary, built for the target. When it is
	// dynamically linked (cgo), its loader and shared libraries are taken
	// from this machine (see SharedLibraries).
	Binary string
	// KernelRelease is the release of the kernel the image boots with
	// (uname -r), e.g. "6.1.0-56-amd64".
	KernelRelease string
	// ModulesDir holds that kernel's modules and modules.dep; "" means
	// /lib/modules/<KernelRelease>.
	ModulesDir string
	// Modules are module names ("virtio_net"); nil means DefaultModules.
	Modules []string
	// ExtraFiles are added as they are, after everything else.
	ExtraFiles []File
}

// File is a file added to the image.
type File struct {
	Path    string
	Mode    fs.FileMode // permission bits; 0 means 0644
	Content []byte
}

// Build writes the gzip-compressed cpio archive of the image to w.
func Build(w io.Writer, opts Options) error {
	if opts.Binary == "" {
		return fmt.Errorf("initramfs: no binary given")
	}
	if opts.KernelRelease == "" {
		return fmt.Errorf("initramfs: no kernel release given")
	}
	modDir := opts.ModulesDir
	if modDir == "" {
		modDir = filepath.Join("/lib/modules", opts.KernelRelease)
	}
	names := opts.Modules
	if names == nil {
		names = DefaultModules
	}
	mods, err := ResolveModules(modDir, names)
	if err != nil {
		return err
	}
	libs, err := SharedLibraries(opts.Binary)
	if err != nil {
		return err
	}
	bin, err := os.Open(opts.Binary)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer bin.Close()
	st, err := bin.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}

	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	a := NewWriter(zw)
	for _, d := range []string{"/bin", "/sbin", "/dev", "/proc", "/sys", "/run", "/tmp", "/etc/corral",
		"/etc/systemd/system", "/opt/bin", "/root", "/var/lib", "/var/log", "/usr/bin", "/lib/modules"} {
		perm := fs.FileMode(0o755)
		if d == "/tmp" {
			perm = 0o777 | fs.ModeSticky
		}
		if err := a.Dir(d, perm); err != nil {
			return err
		}
	}
	if err := a.CharDevice("/dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := a.CharDevice("/dev/null", 0o666, 1, 3); err != nil {
		return err
	}
	if err := a.File("/init", 0o755, st.Size(), bin); err != nil {
		return fmt.Errorf("initramfs: %s: %w", opts.Binary, err)
	}
	for _, lib := range libs {
		if err := addHostFile(a, lib, lib, 0o755); err != nil {
			return err
		}
	}
	for _, l := range BinaryLinks {
		if err := a.Symlink(l, "/init"); err != nil {
			return err
		}
	}
	var list strings.Builder
	for _, m := range mods {
		dst := path.Join("/lib/modules", opts.KernelRelease, m)
		if err := addHostFile(a, dst, filepath.Join(modDir, filepath.FromSlash(m)), 0o644); err != nil {
			return err
		}
		list.WriteString(dst + "\n")
	}
	if err := a.Bytes(ModulesList, 0o644, []byte(list.String())); err != nil {
		return err
	}
	for _, f := range opts.ExtraFiles {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := a.Bytes(f.Path, mode, f.Content); err != nil {
			return err
		}
	}
	if err := a.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func addHostFile(a *Writer, dst, src string, perm fs.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return a.File(dst, perm, st.Size(), f)
}

// moduleName is the name the kernel knows a module file by.
func moduleName(file string) string {
	n := path.Base(file)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

// ResolveModules returns the files (relative to modDir, as modules.dep
// names them) of the named modules and of everything they depend on, in an
// order they can be loaded in: each module after its dependencies, each
// once. Modules built into the kernel (modules.builtin) are left out; a
// name that is neither is an error.
func ResolveModules(modDir string, names []string) ([]string, error) {
	deps, byName, err := readModulesDep(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if f, err := os.Open(filepath.Join(modDir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				builtin[moduleName(l)] = true
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("initramfs: reading modules.builtin: %w", err)
		}
	}
	var order []string
	done := map[string]bool{}
	var visit func(file string, stack []string) error
	visit = func(file string, stack []string) error {
		if done[file] {
			return nil
		}
		for _, s := range stack {
			if s == file {
				return fmt.Errorf("initramfs: modules.dep: dependency cycle through %s", file)
			}
		}
		stack = append(stack, file)
		// modprobe loads the list from its end: the last entry has the
		// fewest dependencies.
		d := deps[file]
		for i := len(d) - 1; i >= 0; i-- {
			if err := visit(d[i], stack); err != nil {
				return err
			}
		}
		done[file] = true
		order = append(order, file)
		return nil
	}
	for _, n := range names {
		key := moduleName(n)
		file, ok := byName[key]
		switch {
		case ok:
			if err := visit(file, nil); err != nil {
				return nil, err
			}
		case builtin[key]:
			// Nothing to load.
		default:
			return nil, fmt.Errorf("initramfs: unknown module %q: neither in %s/modules.dep nor built in", n, modDir)
		}
	}
	return order, nil
}

func readModulesDep(file string) (deps map[string][]string, byName map[string]string, err error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	deps, byName = map[string][]string{}, map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, nil, fmt.Errorf("initramfs: %s: bad line %q", file, line)
		}
		deps[mod] = strings.Fields(rest)
		byName[moduleName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("initramfs: %s: %w", file, err)
	}
	return deps, byName, nil
}
