package provision_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/cloudinittest"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/templates"
	"golang.org/x/crypto/ssh"
)

// render runs `provision render FILE --node NODE --format FORMAT`.
func render(t *testing.T, file, node, format string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := provision.Command()
	cmd.SetArgs([]string{"render", file, "--node", node, "--format", format})
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// A node's boot config renders from the file and the state, for a node
// that exists and for one the plan would create, in both formats, and each
// passes its format's own checker. A plan that replaces nodes is not
// applied without approval.
func TestRenderNode(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	c.Edit(`machine_ttl  = "3s"`, `machine_ttl  = "3s"
  ssh_authorized_keys = ["`+key+`"]`)
	c.Edit(`desired_capacity = 1`, `desired_capacity = 2
  userdata         = "cloud-config"
  file "/etc/motd" { content = "managed by corral\n" }
  systemd_unit "format-data.service" {
    content = "[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    enabled = true
  }`)

	for _, node := range []string{"core-1", "core-2"} { // in the state; planned
		ign, err := render(t, c.File, node, "ignition")
		if err != nil {
			t.Fatalf("render %s as ignition: %v", node, err)
		}
		if err := templates.CheckIgnition([]byte(ign)); err != nil {
			t.Errorf("%s: %v\n%s", node, err, ign)
		}
		cc, err := render(t, c.File, node, "cloud-config")
		if err != nil {
			t.Fatalf("render %s as cloud-config: %v", node, err)
		}
		if err := cloudinittest.Schema(t, []byte(cc)); err != nil {
			t.Errorf("%s: %v", node, err)
		}
		for _, want := range []string{"hostname: " + node, "/etc/motd", "format-data.service", key, "--mode=" + map[string]string{"core-1": "init", "core-2": "client"}[node]} {
			if !strings.Contains(cc, want) {
				t.Errorf("%s's cloud-config has no %q:\n%s", node, want, cc)
			}
		}
	}
	// Without --format, the group's userdata decides.
	if out, err := render(t, c.File, "core-2", ""); err != nil || !strings.HasPrefix(out, "#cloud-config") {
		t.Errorf("default format: %v\n%.80s", err, out)
	}
	if _, err := render(t, c.File, "core-9", "ignition"); err == nil || !strings.Contains(err.Error(), `no node "core-9"`) {
		t.Errorf("unknown node: %v", err)
	}

	// provision ssh reaches the node where it runs: here, its namespace,
	// with clusterctl at hand; the command's status is the exit status.
	var shOut bytes.Buffer
	cmd := provision.Command()
	cmd.SetArgs([]string{"ssh", c.File, "core-1", "--", "clusterctl list-machines; ip -4 -o addr show eth0; exit 7"})
	cmd.SetOut(&shOut)
	cmd.SetErr(&shOut)
	var code provision.ExitCode
	if err := cmd.ExecuteContext(context.Background()); !errors.As(err, &code) || code != 7 ||
		!strings.Contains(shOut.String(), "MACHINE") || !strings.Contains(shOut.String(), c.Node("core-1").IP.String()+"/") {
		t.Errorf("provision ssh: %v\n%s", err, shOut.String())
	}

	// The file now replaces core-1: up asks first, and refuses when it
	// cannot ask.
	var out bytes.Buffer
	err = provision.Up(context.Background(), provision.UpOptions{
		Options: provision.Options{File: c.File, Out: &out, Err: &out, Binary: c.Binary},
		In:      strings.NewReader("yes\n"), // not a terminal: not asked
	})
	if !errors.Is(err, provision.ErrNotApproved) || !strings.Contains(err.Error(), "--auto-approve") {
		t.Fatalf("destructive plan without approval: %v\n%s", err, out.String())
	}
	if st, _ := c.Dir().Load(); len(st.Nodes) != 1 {
		t.Errorf("an unapproved plan changed the state: %+v", st.Nodes)
	}
}
