package hostnet

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os/exec"
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
	if err := EnsureNode(n); err != nil {
		t.Fatal(err)
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
