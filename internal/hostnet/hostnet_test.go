package hostnet

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A node namespace gets eth0 on the bridge; a process started in it is found
// by namespace; the namespace and its veth can be removed.
func TestNodeNamespace(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatalf("needs network namespaces: %v (run as root, as CI does)", err)
	}
	var raw [3]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	n := Node{
		Namespace: "corral-hostnet-test-" + id, HostVeth: "vht" + id, Bridge: "brht" + id,
		Addr: netip.MustParsePrefix("10.249.3.11/24"), Gateway: netip.MustParseAddr("10.249.3.1"),
	}
	t.Cleanup(func() {
		DeleteNamespace(n.Namespace)
		DeleteLink(n.HostVeth)
		DeleteLink(n.Bridge)
	})
	if err := EnsureBridge(n.Bridge, netip.PrefixFrom(n.Gateway, 24)); err != nil {
		t.Fatal(err)
	}
	// A run killed between creating the namespace's file and binding the
	// namespace onto it leaves a plain file under the namespace's name.
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nsDir, n.Namespace), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := EnsureNode(n); err != nil {
		t.Fatalf("EnsureNode over an unbound namespace file: %v", err)
	}
	if err := EnsureNode(n); err != nil {
		t.Fatalf("EnsureNode is not idempotent: %v", err)
	}
	if list, _ := Namespaces("corral-hostnet-test-" + id); !slices.Equal(list, []string{n.Namespace}) {
		t.Fatalf("Namespaces = %v", list)
	}

	cmd := exec.Command("ip", "-o", "-4", "addr", "show", "dev", "eth0")
	var out strings.Builder
	cmd.Stdout = &out
	if err := Start(n.Namespace, cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "10.249.3.11/24") {
		t.Fatalf("eth0 inside the namespace: %v %q", err, out.String())
	}

	// A run killed between eth0's rename and its configuration leaves it
	// unaddressed, down and unrouted, and the host side may be down:
	// EnsureNode finishes the job instead of trusting eth0's presence.
	h, err := Handle(n.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetDown(eth0); err != nil { // takes the default route with it
		t.Fatal(err)
	}
	if err := h.AddrDel(eth0, toAddr(n.Addr)); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := SetLinkUp(n.HostVeth, false); err != nil {
		t.Fatal(err)
	}
	if err := EnsureNode(n); err != nil {
		t.Fatalf("EnsureNode on a half-configured node: %v", err)
	}
	ip := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("ip", args...)
		var out strings.Builder
		cmd.Stdout = &out
		if err := Start(n.Namespace, cmd); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
		return out.String()
	}
	if got := ip("-o", "-4", "addr", "show", "dev", "eth0", "up"); !strings.Contains(got, "10.249.3.11/24") {
		t.Errorf("after repair, eth0 is %q, want up with 10.249.3.11/24", got)
	}
	if got := ip("route", "show", "default"); !strings.Contains(got, "via 10.249.3.1 dev eth0") {
		t.Errorf("after repair, the default route is %q", got)
	}
	if host, err := exec.Command("ip", "-o", "link", "show", "dev", n.HostVeth, "up").Output(); err != nil || !strings.Contains(string(host), "master "+n.Bridge) {
		t.Errorf("after repair, the host veth is %q (%v), want up on %s", host, err, n.Bridge)
	}

	long := exec.Command("cat") // blocks on its stdin until the pipe closes
	stdin, err := long.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := Start(n.Namespace, long); err != nil {
		t.Fatal(err)
	}
	pids, err := PIDs(n.Namespace)
	if err != nil || !slices.Contains(pids, long.Process.Pid) {
		t.Fatalf("PIDs = %v (%v), want %d", pids, err, long.Process.Pid)
	}
	stdin.Close()
	long.Wait()

	if err := SetLinkUp(n.HostVeth, false); err != nil {
		t.Fatal(err)
	}
	if err := DeleteNamespace(n.Namespace); err != nil {
		t.Fatal(err)
	}
	if Exists(n.Namespace) {
		t.Fatal("namespace still exists")
	}
	// The kernel frees the namespace's veth asynchronously; DeleteLink
	// removes it now whether or not that has happened.
	if err := DeleteLink(n.HostVeth); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("ip", "link", "show", n.HostVeth).Run(); err == nil {
		t.Fatal("the veth is still there")
	}
}
