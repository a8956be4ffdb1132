// Package cloudinittest checks cloud-configs with Debian's cloud-init, for
// tests: what cloud-init's own schema refuses or warns about must not pass.
package cloudinittest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Schema runs Debian's `cloud-init schema --config-file` on doc.
// cloud-init 22.4 prints "Valid cloud-config: FILE" and exits 0 for a good
// document, and "Error:\nCloud config schema errors: ..." on stderr with
// exit 1 for a bad one. It exits 0 on deprecated keys, printing them on a
// "Cloud config schema deprecations:" line, so any output besides the one
// "Valid" line fails the check too. A missing cloud-init fails the test: a
// check that silently doesn't run is worse than none.
func Schema(t testing.TB, doc []byte) error {
	t.Helper()
	bin, err := exec.LookPath("cloud-init")
	if err != nil {
		t.Fatalf("cloud-init is not installed, so cloud-configs can't be checked: apt-get install -y cloud-init (%v)", err)
	}
	file := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "schema", "--config-file", file)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	out := strings.TrimSpace(stdout.String() + "\n" + stderr.String())
	switch {
	case err != nil:
		return &SchemaError{Err: err.Error(), Output: out}
	case out != "Valid cloud-config: "+file:
		return &SchemaError{Err: "unexpected output", Output: out}
	}
	return nil
}

// SchemaError is cloud-init's verdict on a document it did not accept.
type SchemaError struct{ Err, Output string }

func (e *SchemaError) Error() string { return "cloud-init schema: " + e.Err + ":\n" + e.Output }
