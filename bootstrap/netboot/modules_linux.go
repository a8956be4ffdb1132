package netboot

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// LoadModules loads each module with finit_module, in order. A module
// already loaded (or built in) is fine; the others' errors are joined, and
// loading goes on with the next module.
func LoadModules(paths []string, logf Logf) error {
	var errs []error
	for _, p := range paths {
		if err := loadModule(p); err != nil {
			errs = append(errs, fmt.Errorf("loading %s: %w", p, err))
			continue
		}
	}
	if logf != nil {
		logf("loaded %d kernel modules (%d failed)", len(paths)-len(errs), len(errs))
	}
	return errors.Join(errs...)
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(p, ".xz") || strings.HasSuffix(p, ".zst") || strings.HasSuffix(p, ".gz") {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
