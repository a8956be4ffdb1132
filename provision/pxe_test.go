package provision_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/provision/state"
)

// A pxe cluster without machines powered on: the boot server serves what
// the state and the file say, a machine that installed to disk is told to
// boot from it, and reprovision undoes that.
func TestPXEServeAndReprovision(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	file := filepath.Join(dir, "pxe.hcl")
	src := fmt.Sprintf(`cluster "pxetest" {}
provider "pxe" {
  listen  = %q
  network = "10.252.0.0/24"
}
node_group "metal" {
  desired_capacity = 1
  machine "node1" { mac = "52:54:00:b1:00:01" }
  boot {
    kernel       = "vmlinuz"
    initrd       = ["initrd.img"]
    args         = ["console=ttyS0", "coreos.inst.install_dev=/dev/sda"]
    own_ignition = true
  }
  install_to_disk = true
}
`, listen)
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := provision.Options{File: file, Binary: clustertest.Binary(t)}

	// The reservation for node1 is in the dnsmasq config.
	conf, err := render(t, file, "", "dnsmasq")
	if err != nil || !strings.Contains(conf, "dhcp-host=52:54:00:b1:00:01,10.252.0.11,node1") {
		t.Fatalf("render --format dnsmasq: %v\n%s", err, conf)
	}

	// up records the node, serves it, and gives up waiting for it.
	var out bytes.Buffer
	opts.Out, opts.Err = &out, &out
	err = provision.Up(context.Background(), provision.UpOptions{Options: opts, Timeout: 2 * time.Second, AutoApprove: true})
	if err == nil || !strings.Contains(err.Error(), "node1 did not join") {
		t.Fatalf("up with no machine powered on: %v\n%s", err, out.String())
	}
	st, _ := state.For(file, "pxetest").Load()
	if n := st.Node("node1"); n == nil || n.MAC != "52:54:00:b1:00:01" || n.IP.String() != "10.252.0.11" {
		t.Fatalf("state: %+v", st.Nodes)
	}
	ign, err := render(t, file, "node1", "ignition")
	if err != nil || !strings.Contains(ign, "corral-installed.service") || !strings.Contains(ign, "/report?mac=52:54:00:b1:00:01") {
		t.Fatalf("node1's Ignition has no installed report: %v\n%s", err, ign)
	}

	// serve: the machine installs and reports so; it is then booted from
	// its disk, and the state remembers.
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- provision.Serve(ctx, opts) }()
	base := "http://" + listen
	get := func(path string) string {
		t.Helper()
		for {
			resp, err := http.Get(base + path)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return string(b)
			}
			select {
			case err := <-served:
				t.Fatalf("serve ended: %v", err)
			case <-time.After(50 * time.Millisecond): // until serve listens
			}
		}
	}
	if s := get("/ipxe?mac=52-54-00-b1-00-01"); !strings.Contains(s, "ignition.config.url=") || !strings.Contains(s, "coreos.inst.install_dev=/dev/sda") {
		t.Fatalf("installer script:\n%s", s)
	}
	resp, err := http.Post(base+"/report?mac=52:54:00:b1:00:01", "application/json", strings.NewReader(`{"status":"installed"}`))
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("report: %v %v", err, resp)
	}
	if s := get("/ipxe?mac=52:54:00:b1:00:01"); !strings.Contains(s, "sanboot") {
		t.Fatalf("an installed machine is not booted from its disk:\n%s", s)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	st, _ = state.For(file, "pxetest").Load()
	if n := st.Node("node1"); n.Installed == nil {
		t.Fatal("the state does not record the installation")
	}

	out.Reset()
	if err := provision.Reprovision(opts, "node1"); err != nil || !strings.Contains(out.String(), "installs again") {
		t.Fatalf("reprovision: %v\n%s", err, out.String())
	}
	st, _ = state.For(file, "pxetest").Load()
	if st.Node("node1").Installed != nil {
		t.Fatal("reprovision left the installation record")
	}
	if err := provision.Down(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
}
