package netboot

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/initramfs"
	"github.com/corral-dev/corral/internal/corralbin"
	"github.com/corral-dev/corral/templates"
)

// bootKernel is the newest kernel in /boot whose modules are installed
// (Debian's linux-image-amd64 in CI).
func bootKernel(t *testing.T) (vmlinuz, release string) {
	t.Helper()
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(kernels)))
	for _, k := range kernels {
		rel := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", rel, "modules.dep")); err != nil {
			continue
		}
		f, err := os.Open(k)
		if err != nil {
			t.Fatalf("kernel %s is not readable (%v): run the test as root or make it readable", k, err)
		}
		f.Close()
		return k, rel
	}
	t.Fatalf("no kernel in /boot with its modules in /lib/modules (found %q): install linux-image-amd64", kernels)
	return "", ""
}

// bootImage builds the initramfs with the corral binary under test.
func bootImage(t *testing.T) (vmlinuz, initrd, bin string) {
	t.Helper()
	vmlinuz, release := bootKernel(t)
	bin = corralbin.Path(t)
	initrd = filepath.Join(t.TempDir(), "initramfs.cpio.gz")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	if err := initramfs.Build(w, initramfs.Options{Binary: bin, KernelRelease: release}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return vmlinuz, initrd, bin
}

// vm is a QEMU machine booting the image, with the host serving its
// config, the corral binary and the report endpoint.
type vm struct {
	start   time.Time
	reports chan Status
	console chan string // lines of clusterd serving
	exited  chan error
	limit   <-chan time.Time
	limitD  time.Duration
}

// bootVM boots a machine whose config is config(base URL, binary).
func bootVM(t *testing.T, config func(base string, binary []byte) []byte) *vm {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86): %v", err)
	}
	vmlinuz, initrd, bin := bootImage(t)
	binary, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://10.0.2.2:%d", ln.Addr().(*net.TCPAddr).Port) // the host's loopback, seen from QEMU's user network
	cfg := config(base, binary)
	m := &vm{reports: make(chan Status, 16), console: make(chan string, 1), exited: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ignition", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(cfg)
	})
	mux.HandleFunc("GET /corral", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "corral", time.Time{}, bytes.NewReader(binary))
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var st Status
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case m.reports <- st:
		default:
		}
	})
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: mux}}
	srv.Start()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, qemu,
		"-M", "q35", "-m", "1024", "-smp", "1", "-nographic", "-no-reboot",
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 "+ParamConfig+"="+base+"/ignition "+ParamReport+"="+base+"/report",
		"-nic", "user,model=virtio-net-pci",
		// Without RDRAND (software emulation) the kernel's RNG is seeded
		// by virtio-rng; getrandom blocks until it is.
		"-device", "virtio-rng-pci",
	)
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// CORRAL_QEMU_CONSOLE names a file to copy the serial console to.
	var copyTo io.Writer = io.Discard
	if p := os.Getenv("CORRAL_QEMU_CONSOLE"); p != "" {
		cf, err := os.Create(p)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		t.Cleanup(func() { cf.Close() })
		copyTo = cf
	}
	m.start = time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var console struct {
		sync.Mutex
		lines []string
	}
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			console.Lock()
			console.lines = append(console.lines, line)
			console.Unlock()
			fmt.Fprintln(copyTo, line)
			if strings.Contains(line, "serving the API") || strings.Contains(line, "registering machine") {
				select {
				case m.console <- line:
				default:
				}
			}
		}
	}()
	go func() {
		<-consoleDone
		m.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel() // kills QEMU, even when the test failed
		<-m.exited
		if t.Failed() {
			console.Lock()
			defer console.Unlock()
			tail := console.lines
			if len(tail) > 150 {
				tail = tail[len(tail)-150:]
			}
			t.Logf("serial console (last %d lines):\n%s\nqemu stderr:\n%s", len(tail), strings.Join(tail, "\n"), stderr.String())
		}
	})
	// Software emulation is slow; the boot takes seconds here, but CI
	// machines vary.
	m.limitD = 8 * time.Minute
	if d, ok := t.Deadline(); ok {
		m.limitD = min(m.limitD, time.Until(d)-30*time.Second)
	}
	m.limit = time.After(m.limitD)
	return m
}

func (m *vm) since() time.Duration { return time.Since(m.start).Round(time.Millisecond) }

// TestQEMUBoot network-boots a virtual machine with Debian's kernel and
// Corral's initramfs, serving its Ignition config (a single init node whose
// address comes from DHCP) from the host, and waits for the "booted" report
// and for clusterd to serve.
func TestQEMUBoot(t *testing.T) {
	m := bootVM(t, func(base string, binary []byte) []byte {
		config, err := templates.Ignition(testNode(t, base+"/corral", binary))
		if err != nil {
			t.Fatal(err)
		}
		return config
	})
	var booted, served bool
	for !booted || !served {
		select {
		case st := <-m.reports:
			switch st.Status {
			case "booted":
				if !booted {
					booted = true
					t.Logf("boot to \"booted\": %s", m.since())
				}
			case "error":
				t.Fatalf("the init reported an error after %s: %s\n%s", m.since(), st.Error, st.Log)
			default:
				t.Logf("report %q after %s", st.Status, m.since())
			}
		case line := <-m.console:
			served = true
			t.Logf("clusterd serving after %s: %s", m.since(), line)
		case err := <-m.exited:
			m.exited <- err
			t.Fatalf("QEMU exited after %s: %v", m.since(), err)
		case <-m.limit:
			t.Fatalf("after %s: booted report %v, clusterd serving %v", m.limitD, booted, served)
		}
	}
}

// TestQEMUBootReportsError boots with a config that has no clusterd.service:
// the init must report the error with the console's last lines, and keep
// running (QEMU exits when the kernel panics: -no-reboot, panic=-1).
func TestQEMUBootReportsError(t *testing.T) {
	m := bootVM(t, func(string, []byte) []byte {
		return []byte(`{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/hostname","contents":{"source":"data:,broken-1%0A"}}]}}`)
	})
	for errors := 0; errors < 2; {
		select {
		case st := <-m.reports:
			if st.Status != "error" {
				t.Fatalf("report %+v, want an error", st)
			}
			if !strings.Contains(st.Error, ClusterdUnit) || !strings.Contains(st.Log, "fetched the config") {
				t.Errorf("error report %q, log:\n%s", st.Error, st.Log)
			}
			errors++
			t.Logf("error report %d after %s: %s", errors, m.since(), st.Error)
		case err := <-m.exited:
			m.exited <- err
			t.Fatalf("QEMU exited after %s (did PID 1 exit?): %v", m.since(), err)
		case <-m.limit:
			t.Fatalf("no error reported after %s", m.limitD)
		}
	}
}
