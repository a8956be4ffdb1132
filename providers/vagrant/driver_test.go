package vagrant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/corral-dev/corral/providers"
)

// fakeVagrant is a vagrant that appends its arguments to $FAKE/log and
// answers as Vagrant 2.3 does, in its --machine-readable format where
// asked for (commas escaped as %!(VAGRANT_COMMA), newlines as \n). A
// machine is running when $FAKE/running/NAME exists; status lists the
// machines of ./Vagrantfile. $FAKE/up-stderr, if present, makes up fail
// with it on stderr; $FAKE/status-error makes status fail with an
// error-exit record.
const fakeVagrant = `#!/bin/sh
# Only the system's tools: never the real vagrant.
PATH=/usr/bin:/bin
vagrant() { echo "fake vagrant: ran vagrant $*" >&2; exit 3; }
s=$FAKE
printf '%s\n' "$*" >>"$s/log"
ts=1795440538
case "$1" in
--version)
	echo "Vagrant 2.3.4" ;;
plugin)
	printf '%s\n' "$ts,,ui,info,vagrant-libvirt (0.11.2%!(VAGRANT_COMMA) system)" \
		"$ts,,plugin-name,vagrant-libvirt" \
		"$ts,vagrant-libvirt,plugin-version,0.11.2%!(VAGRANT_COMMA) system" ;;
status)
	if [ -e "$s/status-error" ]; then
		printf '%s\n' "$ts,,ui,error,There was an error loading a Vagrantfile." \
			"$ts,,error-exit,Vagrant::Errors::VagrantfileLoadError,There was an error loading a Vagrantfile. The file being loaded\nand the error message are shown below. This is usually caused by\na syntax error%!(VAGRANT_COMMA) probably."
		exit 1
	fi
	for m in $(sed -n 's/^ *config\.vm\.define "\([^"]*\)" do.*/\1/p' Vagrantfile); do
		if [ -e "$s/running/$m" ]; then st=running h=running; else st=not_created h="not created"; fi
		printf '%s\n' "$ts,$m,metadata,provider,virtualbox" "$ts,$m,provider-name,virtualbox" \
			"$ts,$m,state,$st" "$ts,$m,state-human-short,$h" \
			"$ts,$m,state-human-long,The VM is $h. To stop this VM%!(VAGRANT_COMMA) you can run "'` + "`vagrant halt`" + `'"\nto shut it down forcefully."
	done
	printf '%s\n' "$ts,,ui,info,Current machine states:\n\nThis environment represents multiple VMs. The VMs are all listed\nabove with their current state. For more information about a specific\nVM%!(VAGRANT_COMMA) run "'` + "`vagrant status NAME`" + `'"." ;;
up)
	if [ -e "$s/up-stderr" ]; then cat "$s/up-stderr" >&2; exit 1; fi
	shift 2
	for m; do
		echo "Bringing machine '$m' up with 'virtualbox' provider..."
		echo "==> $m: Importing base box 'flatcar-stable'..."
		touch "$s/running/$m"
	done ;;
destroy)
	shift 2
	for m; do echo "==> $m: Destroying VM and associated drives..."; rm -f "$s/running/$m"; done ;;
ssh-config)
	n=${2##*-}
	cat <<EOF
Host $2
  HostName 127.0.0.1
  User vagrant
  Port $((2200 + ${n#0}))
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "$PWD/.vagrant/machines/$2/virtualbox/private_key"
  IdentitiesOnly yes
  LogLevel FATAL
  PubkeyAcceptedKeyTypes +ssh-rsa
  HostKeyAlgorithms +ssh-rsa

EOF
	;;
*)
	echo "fake vagrant: unexpected command: $*" >&2; exit 2 ;;
esac
`

// fake puts a fake vagrant (and VBoxManage, unless noVBox) alone on PATH
// and returns its state directory.
func fake(t *testing.T, noVBox bool) string {
	t.Helper()
	bin, state := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(state, "running"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"vagrant": fakeVagrant}
	if !noVBox {
		files["VBoxManage"] = "#!/bin/sh\necho 7.0.14r161095\n"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	t.Setenv("FAKE", state)
	return state
}

// commands are the fake's calls so far, and forgets them.
func commands(t *testing.T, state string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(state, "log"))
	if len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func want(t *testing.T, state string, cmds ...string) {
	t.Helper()
	if got := commands(t, state); !slices.Equal(got, cmds) {
		t.Errorf("vagrant ran\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(cmds, "\n  "))
	}
}

func specs(n int) []providers.NodeSpec {
	var s []providers.NodeSpec
	for i := 1; i <= n; i++ {
		s = append(s, providers.NodeSpec{Name: fmt.Sprintf("core-%d", i), IP: netip.AddrFrom4([4]byte{172, 17, 8, byte(100 + i)})})
	}
	return s
}

type installs struct {
	mu   sync.Mutex
	got  map[string]sshConfig
	fail error
}

func (in *installs) install(_ context.Context, spec providers.NodeSpec, c sshConfig) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.got[spec.Name] = c
	return in.fail
}

func newTestProvider(t *testing.T) (*Provider, *installs, *bytes.Buffer) {
	in := &installs{got: map[string]sshConfig{}}
	var out bytes.Buffer
	p := &Provider{Dir: filepath.Join(t.TempDir(), "vagrant"), Settings: testSettings, Out: &out, install: in.install}
	return p, in, &out
}

func inventory(t *testing.T, p *Provider) []string {
	t.Helper()
	list, err := p.Inventory(context.Background())
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	var names []string
	for _, in := range list {
		if !in.Running {
			t.Errorf("%s not running: %s", in.Name, in.Detail)
		}
		names = append(names, in.Name)
	}
	return names
}

func vagrantfile(t *testing.T, p *Provider) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.Dir, "Vagrantfile"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDriverScale(t *testing.T) {
	state := fake(t, false)
	ctx := context.Background()
	p, in, out := newTestProvider(t)

	if got := inventory(t, p); got != nil {
		t.Errorf("Inventory before anything = %q, want none", got)
	}
	want(t, state) // no Vagrantfile: nothing to ask vagrant

	// Up of 3.
	if err := p.Prepare(ctx, specs(3)); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	want(t, state, "--version", "status --machine-readable", "up --provider=virtualbox core-01 core-02 core-03")
	if got := vagrantfile(t, p); got != string(Vagrantfile(testSettings, testMachines(3))) {
		t.Errorf("Vagrantfile:\n%s", got)
	}
	var wg sync.WaitGroup
	for _, s := range specs(3) {
		wg.Go(func() {
			if err := p.Launch(ctx, s); err != nil {
				t.Errorf("Launch %s: %v", s.Name, err)
			}
		})
	}
	wg.Wait()
	got := commands(t, state)
	slices.Sort(got) // Launches run concurrently
	if want := []string{"ssh-config core-01", "ssh-config core-02", "ssh-config core-03"}; !slices.Equal(got, want) {
		t.Errorf("Launch ran %q, want %q", got, want)
	}
	wantConfig := sshConfig{HostName: "127.0.0.1", Port: "2202", User: "vagrant",
		IdentityFiles: []string{filepath.Join(p.Dir, ".vagrant/machines/core-02/virtualbox/private_key")}}
	if got := in.got["core-2"]; !reflect.DeepEqual(got, wantConfig) {
		t.Errorf("core-2 installed with %+v, want %+v", got, wantConfig)
	}
	if got := inventory(t, p); !slices.Equal(got, []string{"core-1", "core-2", "core-3"}) {
		t.Errorf("Inventory = %q", got)
	}
	commands(t, state)

	// The same again: nothing to bring up.
	if err := p.Prepare(ctx, specs(3)); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	want(t, state, "status --machine-readable")

	// Scale 3 → 5: only the new machines come up.
	if err := p.Prepare(ctx, specs(5)); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	want(t, state, "status --machine-readable", "up --provider=virtualbox core-04 core-05")
	if got := inventory(t, p); !slices.Equal(got, []string{"core-1", "core-2", "core-3", "core-4", "core-5"}) {
		t.Errorf("Inventory = %q", got)
	}
	commands(t, state)

	// Scale 5 → 3: a Prepare with the 3 that stay keeps the 2 others in
	// the Vagrantfile, so that they can still be destroyed.
	if err := p.Prepare(ctx, specs(3)); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	want(t, state, "status --machine-readable")
	if got := vagrantfile(t, p); got != string(Vagrantfile(testSettings, testMachines(5))) {
		t.Errorf("Vagrantfile after Prepare of 3 of 5:\n%s", got)
	}
	for _, n := range []string{"core-5", "core-4"} {
		if err := p.Terminate(ctx, n); err != nil {
			t.Fatalf("Terminate %s: %v", n, err)
		}
	}
	want(t, state, "destroy -f core-05", "destroy -f core-04")
	if got := vagrantfile(t, p); got != string(Vagrantfile(testSettings, testMachines(3))) {
		t.Errorf("Vagrantfile after scaling down to 3:\n%s", got)
	}
	if got := inventory(t, p); !slices.Equal(got, []string{"core-1", "core-2", "core-3"}) {
		t.Errorf("Inventory = %q", got)
	}
	commands(t, state)

	// A node it never made is not its business.
	if err := p.Terminate(ctx, "core-9"); err != nil {
		t.Errorf("Terminate core-9: %v", err)
	}
	want(t, state)

	// A fresh Provider knows the machines from machines.json alone.
	p2 := &Provider{Dir: p.Dir, Settings: testSettings}
	for _, n := range []string{"core-3", "core-2", "core-1"} {
		if err := p2.Terminate(ctx, n); err != nil {
			t.Fatalf("Terminate %s: %v", n, err)
		}
	}
	want(t, state, "destroy -f core-03", "destroy -f core-02", "destroy -f core-01")
	if _, err := os.Stat(filepath.Join(p.Dir, "Vagrantfile")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Vagrantfile left with no machine: %v", err)
	}
	if got := inventory(t, p2); got != nil {
		t.Errorf("Inventory after all terminated = %q", got)
	}

	for _, line := range []string{"vagrant: Bringing machine 'core-04' up with 'virtualbox' provider...", "vagrant: ==> core-05: Destroying VM and associated drives..."} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("output does not have %q:\n%s", line, out)
		}
	}
}

func TestDriverInventoryNotCreated(t *testing.T) {
	state := fake(t, false)
	p, _, _ := newTestProvider(t)
	if err := p.Prepare(context.Background(), specs(2)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(state, "running", "core-02"))
	list, err := p.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// core-02 is not created: not listed.
	wantList := []providers.Instance{{Name: "core-1", Running: true, Detail: "vagrant machine core-01 running (virtualbox)"}}
	if !reflect.DeepEqual(list, wantList) {
		t.Errorf("Inventory = %+v, want %+v", list, wantList)
	}
}

func TestDriverErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("up fails", func(t *testing.T) {
		state := fake(t, false)
		// Vagrant 2.3.4's own words, on stderr, when VirtualBox is missing.
		msg := "The provider 'virtualbox' that was requested to back the machine\n'core-01' is reporting that it isn't usable on this system. The\nreason is shown below:\n\nVagrant could not detect VirtualBox! Make sure VirtualBox is properly installed.\n"
		if err := os.WriteFile(filepath.Join(state, "up-stderr"), []byte(msg), 0o644); err != nil {
			t.Fatal(err)
		}
		p, _, out := newTestProvider(t)
		err := p.Prepare(ctx, specs(1))
		var ve *Error
		if !errors.As(err, &ve) || ve.Message != strings.TrimSpace(msg) {
			t.Fatalf("Prepare: %v, want Vagrant's message %q", err, msg)
		}
		if !strings.HasPrefix(err.Error(), "vagrant up --provider=virtualbox core-01: The provider 'virtualbox'") {
			t.Errorf("error %q", err)
		}
		if !strings.Contains(out.String(), "vagrant: Vagrant could not detect VirtualBox!") {
			t.Errorf("stderr not streamed:\n%s", out)
		}
	})
	t.Run("error-exit", func(t *testing.T) {
		state := fake(t, false)
		if err := os.WriteFile(filepath.Join(state, "status-error"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		p, _, _ := newTestProvider(t)
		err := p.Prepare(ctx, specs(1))
		msg := "There was an error loading a Vagrantfile. The file being loaded\nand the error message are shown below. This is usually caused by\na syntax error, probably."
		var ve *Error
		if !errors.As(err, &ve) || ve.Message != msg {
			t.Fatalf("Prepare: %v, want Vagrant's message %q", err, msg)
		}
		want(t, state, "--version", "status --machine-readable")
	})
	t.Run("install fails", func(t *testing.T) {
		fake(t, false)
		p, in, _ := newTestProvider(t)
		in.fail = errors.New("ssh: boom")
		if err := p.Prepare(ctx, specs(1)); err != nil {
			t.Fatal(err)
		}
		if err := p.Launch(ctx, specs(1)[0]); !errors.Is(err, in.fail) {
			t.Errorf("Launch: %v, want the install's error", err)
		}
	})
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		provider string
		noVBox   bool
		err      string
	}{
		{"virtualbox", false, ""},
		{"libvirt", false, ""},
		{"virtualbox", true, `vagrant: provider "virtualbox" needs VBoxManage on PATH (install VirtualBox)`},
		{"parallels", false, `vagrant: provider "parallels" needs the vagrant-parallels plugin: vagrant plugin install vagrant-parallels`},
		{"vmware_desktop", false, `vagrant: provider "vmware_desktop" needs the vagrant-vmware-desktop plugin: vagrant plugin install vagrant-vmware-desktop`},
		{"docker", false, `vagrant: unsupported Vagrant provider "docker"; supported: libvirt, parallels, virtualbox, vmware_desktop`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/novbox=%v", tt.provider, tt.noVBox), func(t *testing.T) {
			state := fake(t, tt.noVBox)
			p := &Provider{Dir: filepath.Join(t.TempDir(), "vagrant"), Settings: Settings{Box: "b", Provider: tt.provider, Memory: 1024, CPUs: 1}}
			err := p.Check(ctx)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.err)) {
				t.Errorf("Check: %v, want %q", err, tt.err)
			}
			if err == nil {
				return
			}
			// Prepare checks first, and writes and runs nothing when that fails.
			commands(t, state)
			if err := p.Prepare(ctx, specs(1)); err == nil {
				t.Errorf("Prepare succeeded where Check fails")
			}
			if _, err := os.Stat(p.Dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Prepare made %s though Check fails", p.Dir)
			}
			for _, c := range commands(t, state) {
				if c != "--version" && c != "plugin list --machine-readable" {
					t.Errorf("Prepare ran %q though Check fails", c)
				}
			}
		})
	}
	t.Run("no vagrant", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		p := &Provider{Settings: testSettings}
		if err := p.Check(ctx); err == nil || !strings.Contains(err.Error(), "install Vagrant") {
			t.Errorf("Check: %v", err)
		}
	})
}
