package pxe

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// The iPXE scripts. iPXE expands ${setting} everywhere in a line and takes
// "||", "&&" and ";" as operators when they stand alone, so nothing a
// request carries is written into a script unless normalised first (MACs,
// UUIDs), and names are restricted to letters, digits, '.', '_' and '-'.

func writeScript(w http.ResponseWriter, script string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte(script))
}

// handleBoot answers /boot.ipxe, the URL DHCP gives iPXE: the same script
// for every machine, asking for the machine's own by its MAC and UUID.
func (s *Server) handleBoot(w http.ResponseWriter, r *http.Request) {
	s.init()
	writeScript(w, bootScript(s.base(r)))
}

func bootScript(base string) string {
	return "#!ipxe\n" +
		"# Corral boot server: ask for this machine's own boot script, naming it by\n" +
		"# the MAC of the NIC iPXE booted from and the machine's SMBIOS UUID.\n" +
		"chain --autofree " + base + "/ipxe?mac=${mac:hexhyp}&uuid=${uuid} || goto failed\n" +
		"exit\n" +
		":failed\n" +
		"echo Corral boot server: could not fetch this machine's boot script from " + base + "/ipxe (is provision up running?)\n" +
		"echo Leaving network boot: the firmware goes on to its next boot device.\n" +
		"exit\n"
}

// handleIPXE answers /ipxe?mac=&uuid=: the machine's boot script. Every
// answer is 200 with a script, since iPXE runs no script it got with an
// error status: a machine that isn't booted is told why on its console.
func (s *Server) handleIPXE(w http.ResponseWriter, r *http.Request) {
	m, ms := s.lookup(r, true)
	if ms != nil {
		s.warnUnknown(r, ms)
		writeScript(w, missScript(ms))
		return
	}
	s.mu.RLock()
	at, installed := s.install[m.Name]
	s.mu.RUnlock()
	if m.InstallToDisk && installed {
		s.log().Info("pxe: installed machine told to boot from its disk", "machine", m.Name, "mac", m.MAC, "installed", at)
		writeScript(w, localBootScript(m, at))
		return
	}
	s.log().Info("pxe: boot script served", "machine", m.Name, "mac", m.MAC, "kernel", m.Profile.Kernel)
	writeScript(w, machineScript(s.base(r), m))
}

func missScript(ms *miss) string {
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	b.WriteString("# Corral boot server: this machine is not one of the cluster's, so it is\n")
	b.WriteString("# not booted: say why on its console and go back to the firmware.\n")
	b.WriteString("echo\n")
	for _, l := range wrap(ms.text(), 76) {
		b.WriteString("echo " + l + "\n")
	}
	b.WriteString("echo Leaving network boot: the firmware goes on to its next boot device.\n")
	b.WriteString("echo\n")
	b.WriteString("exit\n")
	return b.String()
}

// wrap breaks text into lines of at most width bytes, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// assetURL is an asset's URL on the server, each segment of its name escaped.
func assetURL(base, name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return base + "/assets/" + strings.Join(segs, "/")
}

// machineQuery is the query naming m in its config and report URLs: its
// MAC, and its UUID when it declares one, since both must then match.
func machineQuery(m Machine) string {
	q := "mac=" + m.MAC
	if m.UUID != "" {
		q += "&uuid=" + m.UUID
	}
	return q
}

func machineScript(base string, m Machine) string {
	p := m.Profile
	var b strings.Builder
	b.WriteString("#!ipxe\n")
	fmt.Fprintf(&b, "# Corral boot server: machine %s", m.Name)
	if m.Group != "" {
		fmt.Fprintf(&b, " (group %s)", m.Group)
	}
	fmt.Fprintf(&b, ", MAC %s.\n", m.MAC)
	if p.OwnIgnition {
		b.WriteString("# Its OS runs Ignition itself, from ignition.config.url.\n")
	} else {
		b.WriteString("# Corral's initramfs fetches its config from corral.config.\n")
	}
	if m.InstallToDisk {
		b.WriteString("# It installs itself to disk, then boots from it.\n")
	}
	// UEFI's kernel stub loads the initrds iPXE names (initrd --name) from
	// initrd= arguments; BIOS iPXE passes them itself and ignores these.
	args := []string{"kernel", assetURL(base, p.Kernel)}
	for _, i := range p.Initrds {
		args = append(args, "initrd="+path.Base(i))
	}
	args = append(args, p.Args...)
	q := machineQuery(m)
	if p.OwnIgnition {
		args = append(args, "ignition.config.url="+base+"/ignition?"+q, "ignition.platform.id=metal")
	} else {
		args = append(args, "corral.config="+base+"/ignition?"+q)
	}
	args = append(args, "corral.report="+base+"/report?"+q)
	b.WriteString(strings.Join(args, " ") + "\n")
	for _, i := range p.Initrds {
		fmt.Fprintf(&b, "initrd --name %s %s\n", path.Base(i), assetURL(base, i))
	}
	b.WriteString("boot\n")
	return b.String()
}

func localBootScript(m Machine, at time.Time) string {
	return "#!ipxe\n" +
		fmt.Sprintf("# Corral boot server: machine %s installed itself to its disk at %s.\n", m.Name, at.UTC().Format(time.RFC3339)) +
		"# Boot it from that disk rather than install it again: a machine whose\n" +
		"# firmware boots from the network first would otherwise be reinstalled\n" +
		"# at every boot, in a loop. Reprovisioning it clears the record.\n" +
		"# sanboot boots the first BIOS disk; where it can't (UEFI), exit hands the\n" +
		"# machine back to its firmware, which goes on to its next boot device: the disk.\n" +
		fmt.Sprintf("echo Corral boot server: %s is installed: booting from its disk.\n", m.Name) +
		"sanboot --no-describe --drive 0x80 || exit\n"
}
