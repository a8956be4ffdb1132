package pxe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
)

// DefaultTFTPDir is where Debian's ipxe package installs iPXE's chainload
// binaries: undionly.kpxe (BIOS), ipxe.efi and snponly.efi (UEFI).
const DefaultTFTPDir = "/usr/lib/ipxe"

// tftpDir resolves ServeTFTP's dir.
func tftpDir(dir string) (string, error) {
	if dir == "" {
		dir = DefaultTFTPDir
		if _, err := os.Stat(dir); err != nil {
			return "", fmt.Errorf("pxe: no TFTP directory given and %s is missing (install Debian's ipxe package): %w", dir, err)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("pxe: TFTP directory: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("pxe: TFTP directory %s is not a directory", abs)
	}
	return abs, nil
}

// tftpPath is the file a TFTP read request names, inside dir, or an error
// for names that would leave it. Leading slashes are dropped (some PXE
// ROMs send "/undionly.kpxe"). Symbolic links inside dir are followed
// (Debian's ipxe.efi is a link to /boot/ipxe.efi): whoever put them there
// meant them to be served.
func tftpPath(dir, name string) (string, error) {
	n := strings.TrimLeft(strings.ReplaceAll(name, "\\", "/"), "/")
	if n == "" || !filepath.IsLocal(n) {
		return "", fmt.Errorf("refused: %q is not a file in the TFTP directory", name)
	}
	return filepath.Join(dir, filepath.FromSlash(n)), nil
}

// ServeTFTP serves the files of dir, read-only, over TFTP on conn until ctx
// is done, then closes conn and returns nil. It is for PXE ROMs to fetch
// iPXE from, when dnsmasq's own TFTP server is off; dir "" means
// DefaultTFTPDir. Write requests and names outside dir are refused.
func ServeTFTP(ctx context.Context, conn net.PacketConn, dir string) error {
	return serveTFTP(ctx, dir, func(s *tftp.Server) error { return s.Serve(conn) })
}

// ListenAndServeTFTP is ServeTFTP on the UDP address addr (":69").
func ListenAndServeTFTP(ctx context.Context, addr, dir string) error {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	conn, err := net.ListenUDP("udp", a)
	if err != nil {
		return err
	}
	return ServeTFTP(ctx, conn, dir)
}

func serveTFTP(ctx context.Context, dir string, serve func(*tftp.Server) error) error {
	dir, err := tftpDir(dir)
	if err != nil {
		return err
	}
	log := slog.Default()
	read := func(name string, rf io.ReaderFrom) error {
		from := ""
		if ri, ok := rf.(tftp.OutgoingTransfer); ok {
			addr := ri.RemoteAddr()
			from = addr.String()
		}
		p, err := tftpPath(dir, name)
		if err != nil {
			log.Warn("pxe: TFTP request refused", "file", name, "from", from)
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			log.Warn("pxe: TFTP file not found", "file", name, "from", from)
			return errors.New("file not found")
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			return errors.New("file not found")
		}
		if ot, ok := rf.(tftp.OutgoingTransfer); ok {
			ot.SetSize(fi.Size())
		}
		n, err := rf.ReadFrom(f)
		if err != nil {
			log.Warn("pxe: TFTP transfer failed", "file", name, "from", from, "sent", n, "err", err)
			return err
		}
		log.Info("pxe: TFTP file served", "file", name, "from", from, "bytes", n)
		return nil
	}
	// No write handler: pin/tftp answers write requests with an error.
	s := tftp.NewServer(read, nil)
	s.SetTimeout(5 * time.Second)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			s.Shutdown() // closes the connection, waits for transfers
		case <-done:
		}
	}()
	err = serve(s)
	close(done)
	<-stopped
	if ctx.Err() != nil {
		return nil
	}
	return err
}
