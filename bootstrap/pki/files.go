package pki

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Files names the PEM files that hold a node's TLS material.
type Files struct {
	CA, Cert, Key string
}

// Write stores the three PEM files with mode 0600, creating their
// directories with mode 0700. Each file is replaced atomically, so a crash
// or a concurrent reader never sees a half-written certificate or key.
func (f Files) Write(caPEM, certPEM, keyPEM []byte) error {
	for _, w := range []struct {
		path string
		data []byte
	}{{f.CA, caPEM}, {f.Cert, certPEM}, {f.Key, keyPEM}} {
		if err := writeAtomic(w.path, w.data); err != nil {
			return err
		}
	}
	return nil
}

// Read loads the three PEM files.
func (f Files) Read() (caPEM, certPEM, keyPEM []byte, err error) {
	if caPEM, err = readFile(f.CA); err != nil {
		return nil, nil, nil, err
	}
	if certPEM, err = readFile(f.Cert); err != nil {
		return nil, nil, nil, err
	}
	if keyPEM, err = readFile(f.Key); err != nil {
		return nil, nil, nil, err
	}
	return caPEM, certPEM, keyPEM, nil
}

func readFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("pki: read TLS files: a path is empty; set CA, Cert and Key")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read TLS file: %w", err)
	}
	return data, nil
}

// writeAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeAtomic(path string, data []byte) (err error) {
	if path == "" {
		return errors.New("pki: write TLS files: a path is empty; set CA, Cert and Key")
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: write TLS file: %w", err)
	}
	// CreateTemp makes the file 0600, so a key is never readable by others,
	// not even briefly.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: write TLS file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}
