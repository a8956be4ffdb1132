package vagrant

import (
	"reflect"
	"testing"
)

// statusOutput is `vagrant status --machine-readable` as Vagrant 2.3.4
// writes it, with a running machine, one not created and one powered off.
const statusOutput = `1795440538,core-01,metadata,provider,virtualbox
1795440538,core-02,metadata,provider,virtualbox
1795440538,core-03,metadata,provider,virtualbox
1795440538,core-01,provider-name,virtualbox
1795440538,core-01,state,running
1795440538,core-01,state-human-short,running
1795440538,core-01,state-human-long,The VM is running. To stop this VM%!(VAGRANT_COMMA) you can run ` + "`vagrant halt`" + ` to\nshut it down forcefully%!(VAGRANT_COMMA) or you can run ` + "`vagrant suspend`" + ` to simply\nsuspend the virtual machine.
1795440538,core-02,provider-name,virtualbox
1795440538,core-02,state,not_created
1795440538,core-02,state-human-short,not created
1795440538,core-02,state-human-long,The environment has not yet been created. Run ` + "`vagrant up`" + ` to\ncreate the environment.
1795440538,core-03,provider-name,virtualbox
1795440538,core-03,state,poweroff
1795440538,core-03,state-human-short,poweroff
1795440538,core-03,state-human-long,The VM is powered off. To restart the VM%!(VAGRANT_COMMA) simply run ` + "`vagrant up`" + `
1795440538,,ui,info,Current machine states:\n\ncore-01                   running (virtualbox)\ncore-02                   not created (virtualbox)\ncore-03                   poweroff (virtualbox)\n\nThis environment represents multiple VMs. The VMs are all listed\nabove with their current state. For more information about a specific\nVM%!(VAGRANT_COMMA) run ` + "`vagrant status NAME`" + `.
`

func TestParseMachineReadable(t *testing.T) {
	recs := parseMachineReadable([]byte("warning: not a record\n" + statusOutput + "1795440538,,error-exit,Vagrant::Errors::X,a%!(VAGRANT_COMMA) b\\nc\\r\r\n"))
	if len(recs) != 17 {
		t.Fatalf("%d records, want 17: %q", len(recs), recs)
	}
	if want := (record{Target: "core-01", Type: "metadata", Data: []string{"provider", "virtualbox"}}); !reflect.DeepEqual(recs[0], want) {
		t.Errorf("first record %q, want %q", recs[0], want)
	}
	want := "The VM is running. To stop this VM, you can run `vagrant halt` to\nshut it down forcefully, or you can run `vagrant suspend` to simply\nsuspend the virtual machine."
	if got := recs[6].Data; len(got) != 1 || got[0] != want {
		t.Errorf("state-human-long = %q, want %q", got, want)
	}
	if got, want := recs[16].Data, []string{"Vagrant::Errors::X", "a, b\nc\r"}; !reflect.DeepEqual(got, want) {
		t.Errorf("error-exit data = %q, want %q", got, want)
	}
}

func TestParseStatus(t *testing.T) {
	got := parseStatus([]byte(statusOutput))
	want := map[string]machineState{
		"core-01": {State: "running", Human: "running", Provider: "virtualbox"},
		"core-02": {State: "not_created", Human: "not created", Provider: "virtualbox"},
		"core-03": {State: "poweroff", Human: "poweroff", Provider: "virtualbox"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseStatus = %+v, want %+v", got, want)
	}
}

func TestErrorExit(t *testing.T) {
	// `vagrant ssh-config core-01 --machine-readable` of a machine not up.
	out := "1795440539,core-01,metadata,provider,libvirt\n" +
		"1795440539,,ui,error,The provider for this Vagrant-managed machine is reporting that it\\nis not yet ready for SSH.\n" +
		"1795440539,,error-exit,Vagrant::Errors::SSHNotReady,The provider for this Vagrant-managed machine is reporting that it\\nis not yet ready for SSH. Additionally%!(VAGRANT_COMMA) check the output of `vagrant status`.\n"
	msg, ok := errorExit([]byte(out))
	if want := "The provider for this Vagrant-managed machine is reporting that it\nis not yet ready for SSH. Additionally, check the output of `vagrant status`."; !ok || msg != want {
		t.Errorf("errorExit = %q, %v, want %q", msg, ok, want)
	}
	if _, ok := errorExit([]byte(statusOutput)); ok {
		t.Errorf("errorExit found an error in a successful status")
	}
}

func TestParseSSHConfig(t *testing.T) {
	tests := []struct {
		name, out string
		want      sshConfig
	}{
		{"virtualbox", `Host core-01
  HostName 127.0.0.1
  User vagrant
  Port 2222
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /home/me/.corral/c/vagrant/.vagrant/machines/core-01/virtualbox/private_key
  IdentitiesOnly yes
  LogLevel FATAL
  PubkeyAcceptedKeyTypes +ssh-rsa
  HostKeyAlgorithms +ssh-rsa

`, sshConfig{HostName: "127.0.0.1", Port: "2222", User: "vagrant",
			IdentityFiles: []string{"/home/me/.corral/c/vagrant/.vagrant/machines/core-01/virtualbox/private_key"}}},
		{"libvirt, quoted paths, two keys", `Host core-02
  HostName 192.168.121.17
  User core
  Port 22
  IdentityFile "/home/me/my keys/.vagrant/machines/core-02/libvirt/private_key"
  IdentityFile /home/me/.vagrant.d/insecure_private_key
  IdentitiesOnly yes
`, sshConfig{HostName: "192.168.121.17", Port: "22", User: "core",
			IdentityFiles: []string{"/home/me/my keys/.vagrant/machines/core-02/libvirt/private_key", "/home/me/.vagrant.d/insecure_private_key"}}},
		{"keywords in any case, = and tabs; second host ignored", "Host a\n\thostname=10.0.0.1\n\tPORT\t2200\n  user  root\nHost b\n  HostName 10.0.0.2\n",
			sshConfig{HostName: "10.0.0.1", Port: "2200", User: "root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseSSHConfig([]byte(tt.out)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseSSHConfig = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMachineName(t *testing.T) {
	for node, machine := range map[string]string{
		"core-1": "core-01", "core-4": "core-04", "core-10": "core-10", "core-123": "core-123",
		"edge-gw-3": "edge-gw-03", "solo": "solo",
	} {
		if got := MachineName(node); got != machine {
			t.Errorf("MachineName(%q) = %q, want %q", node, got, machine)
		}
		if got := nodeName(machine); got != node {
			t.Errorf("nodeName(%q) = %q, want %q", machine, got, node)
		}
	}
}
