package pxe

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// startTFTP serves dir on a loopback port until the test ends.
func startTFTP(t *testing.T, dir string) *tftp.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeTFTP(ctx, conn, dir) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeTFTP: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeTFTP didn't stop with its context")
		}
	})
	c, err := tftp.NewClient(conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	c.SetRetries(2)
	return c
}

func tftpGet(c *tftp.Client, name string) ([]byte, error) {
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_, err = wt.WriteTo(&b)
	return b.Bytes(), err
}

func TestTFTP(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "ipxe")
	os.Mkdir(dir, 0o755)
	data := make([]byte, 100_000) // many blocks, and not a multiple of 512
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "undionly.kpxe"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "secret"), []byte("secret"), 0o600)
	c := startTFTP(t, dir)

	for _, name := range []string{"undionly.kpxe", "/undionly.kpxe"} {
		got, err := tftpGet(c, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("read %s: %d bytes, %v", name, len(got), err)
		}
	}
	for _, name := range []string{"../secret", "/../secret", "sub/../../secret", `..\secret`, "nothing.efi", ""} {
		got, err := tftpGet(c, name)
		if err == nil {
			t.Errorf("read %q: served %d bytes (%q), want a refusal", name, len(got), got)
		}
	}

	// Writes are refused, and nothing is written.
	rf, err := c.Send("new.efi", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("evil"))
	}
	if err == nil {
		t.Error("a write was accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "new.efi")); err == nil {
		t.Error("a write created a file")
	}
}

// TestTFTPDefaultDir reads iPXE's binaries from Debian's ipxe package, as
// a PXE ROM does (ipxe.efi is a link out of the directory, to /boot).
// CI must install the ipxe package.
func TestTFTPDefaultDir(t *testing.T) {
	if _, err := os.Stat(filepath.Join(DefaultTFTPDir, "undionly.kpxe")); err != nil {
		t.Fatalf("iPXE's binaries are missing (apt-get install ipxe): %v", err)
	}
	c := startTFTP(t, "")
	for _, name := range []string{"undionly.kpxe", "ipxe.efi"} {
		want, err := os.ReadFile(filepath.Join(DefaultTFTPDir, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := tftpGet(c, name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("read %s: %d of %d bytes, %v", name, len(got), len(want), err)
		}
	}
}

func TestTFTPBadDir(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := ServeTFTP(context.Background(), conn, filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("ServeTFTP served a missing directory")
	}
}
