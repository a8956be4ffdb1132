package vagrant

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Settings are the machines' settings, the same for every machine.
type Settings struct {
	Box string // the box, e.g. "flatcar-stable"
	// Provider is the Vagrant provider: one of Providers.
	Provider string
	Memory   int // MiB
	CPUs     int
	// Network is the private network the machines' addresses are in. When
	// set and not a /24, its netmask is written out; Vagrant's default
	// netmask is 255.255.255.0.
	Network netip.Prefix
}

// Machine is one Vagrant machine.
type Machine struct {
	Name string     // the Vagrant machine's name, e.g. "core-01"
	IP   netip.Addr // its address on the private network
}

// vagrantProvider is what this package knows of one Vagrant provider.
type vagrantProvider struct {
	v      string // the provider block's variable
	lines  func(v string, s Settings) []string
	plugin string // the Vagrant plugin that provides it, if not built in
	tool   string // an executable it needs on PATH
	hint   string // how to get tool
}

// memoryCPUs sets memory and cpus, as most providers name them.
func memoryCPUs(v string, s Settings) []string {
	return []string{
		fmt.Sprintf("%s.memory = %d", v, s.Memory),
		fmt.Sprintf("%s.cpus = %d", v, s.CPUs),
	}
}

// vagrantProviders are the Vagrant providers machines can be made with: those
// that run boxes, honour private_network addresses, and have memory and
// cpus settings. Not docker (containers: no box, no memory or cpus) nor
// hyperv (it ignores private_network, so a machine would not get its
// address).
var vagrantProviders = map[string]vagrantProvider{
	"virtualbox": {v: "vb", lines: memoryCPUs, tool: "VBoxManage", hint: "install VirtualBox"},
	"libvirt":    {v: "lv", lines: memoryCPUs, plugin: "vagrant-libvirt"},
	"parallels":  {v: "prl", lines: memoryCPUs, plugin: "vagrant-parallels", tool: "prlctl", hint: "install Parallels Desktop"},
	"vmware_desktop": {v: "v", plugin: "vagrant-vmware-desktop", lines: func(v string, s Settings) []string {
		// The VMware provider sets the VM's .vmx keys, as strings.
		return []string{
			fmt.Sprintf("%s.vmx[\"memsize\"] = \"%d\"", v, s.Memory),
			fmt.Sprintf("%s.vmx[\"numvcpus\"] = \"%d\"", v, s.CPUs),
		}
	}},
}

// Providers are the names of the Vagrant providers this package supports,
// sorted.
func Providers() []string {
	names := make([]string, 0, len(vagrantProviders))
	for n := range vagrantProviders {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Vagrantfile is the Vagrantfile for the machines, in order. It is plain
// Ruby that reads as configuration: no loops, no variables.
func Vagrantfile(s Settings, machines []Machine) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# Written by Corral's vagrant provider; it is rewritten on every")
	w("# `provision up`, so edits to it are lost: change the cluster file instead.")
	w("#")
	w("# One machine per node. Vagrant only makes the machines: clusterd is")
	w("# installed on each of them afterwards over SSH, with the parameters of")
	w("# `vagrant ssh-config`, the same way whatever the box and the provider.")
	w("")
	w("Vagrant.configure(\"2\") do |config|")
	w("  config.vm.box = %s", rubyString(s.Box))
	w("")
	w("  # Nothing is shared with the machines: clusterd and its files go over")
	w("  # SSH, and the default /vagrant synced folder would need guest")
	w("  # additions or an NFS or rsync setup that not every box has.")
	w("  config.vm.synced_folder \".\", \"/vagrant\", disabled: true")
	if p, ok := vagrantProviders[s.Provider]; ok {
		w("")
		w("  config.vm.provider %s do |%s|", rubyString(s.Provider), p.v)
		for _, l := range p.lines(p.v, s) {
			w("    %s", l)
		}
		w("  end")
	}
	netmask := ""
	if s.Network.IsValid() && s.Network.Addr().Is4() && s.Network.Bits() != 24 {
		m := net.CIDRMask(s.Network.Bits(), 32)
		netmask = ", netmask: " + rubyString(net.IP(m).String())
	}
	for _, m := range machines {
		w("")
		w("  config.vm.define %s do |m|", rubyString(m.Name))
		w("    m.vm.hostname = %s", rubyString(m.Name))
		w("    m.vm.network \"private_network\", ip: %s%s", rubyString(m.IP.String()), netmask)
		w("  end")
	}
	w("end")
	return b.Bytes()
}

// rubyString quotes s as a Ruby string literal: single quotes, in which
// only \ and ' are special, so that nothing is interpolated.
func rubyString(s string) string {
	if !strings.ContainsAny(s, `\'`) && isPrintable(s) {
		return `"` + s + `"`
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
	return "'" + r + "'"
}

// isPrintable reports whether s can go between double quotes as is: no
// escapes, no interpolation.
func isPrintable(s string) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f || c == '"' || c == '#' {
			return false
		}
	}
	return true
}
