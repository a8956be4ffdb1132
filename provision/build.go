package provision

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/corral-dev/corral/bootstrap/initramfs"
	"github.com/corral-dev/corral/provision/state"
)

// BuildInitramfsOptions tune `provision build initramfs`.
type BuildInitramfsOptions struct {
	Out           io.Writer // progress
	Output        string    // the image's path
	Binary        string    // default: this program
	KernelRelease string    // default: the newest in /lib/modules
	Modules       []string  // nil: initramfs.DefaultModules
}

// BuildInitramfs writes Corral's initramfs: the corral binary as /init
// (and clusterd), and the kernel modules machines need, so that a stock
// kernel boots straight into clusterd.
func BuildInitramfs(opts BuildInitramfsOptions) error {
	start := time.Now()
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Binary == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		opts.Binary = self
	}
	if opts.KernelRelease == "" {
		dirs, _ := filepath.Glob("/lib/modules/*/modules.dep")
		if len(dirs) == 0 {
			return fmt.Errorf("no kernel modules in /lib/modules: install a kernel (Debian: apt install linux-image-amd64) or give --kernel-release and --modules-dir")
		}
		slices.Sort(dirs)
		opts.KernelRelease = filepath.Base(filepath.Dir(dirs[len(dirs)-1]))
	}
	var img bytes.Buffer
	if err := initramfs.Build(&img, initramfs.Options{Binary: opts.Binary, KernelRelease: opts.KernelRelease, Modules: opts.Modules}); err != nil {
		return err
	}
	if err := state.WriteFile(opts.Output, img.Bytes()); err != nil {
		return err
	}
	os.Chmod(opts.Output, 0o644) // served to machines; it holds no secret
	fmt.Fprintf(opts.Out, "%s: %.1f MiB for kernel %s (%.1fs)\n", opts.Output, float64(img.Len())/(1<<20), opts.KernelRelease, time.Since(start).Seconds())
	return nil
}
