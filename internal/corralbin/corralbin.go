// Package corralbin gives tests the corral binary under test. It imports
// nothing of corral's, so that any package's tests can use it without
// bringing provision along.
package corralbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// Path returns the corral binary under test: $CORRAL_BIN (what `make test`
// builds), or one built once for this test process.
func Path(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("CORRAL_BIN"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "corral-bin-")
		if err != nil {
			buildErr = err
			return
		}
		// Readable by all: some tests run it as an unprivileged user.
		if buildErr = os.Chmod(dir, 0o755); buildErr != nil {
			return
		}
		built = filepath.Join(dir, "provision")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-p", "2", "-o", built, "./cmd/provision")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building corral: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}
