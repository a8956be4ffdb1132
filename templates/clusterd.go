package templates

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Where Corral puts things on a node. Both formats write the same paths.
const (
	binaryDir     = "/opt/bin"
	binaryPath    = binaryDir + "/clusterd"
	detectIPPath  = binaryDir + "/corral-detect-ip"
	envPath       = "/etc/corral/clusterd.env"
	tokenPath     = "/etc/corral/token"
	caCertPath    = "/etc/corral/ca.pem"
	caKeyPath     = "/etc/corral/ca-key.pem"
	hostnamePath  = "/etc/hostname"
	clusterdUnit  = "clusterd.service"
	unitDir       = "/etc/systemd/system"
	ipEnvPath     = "/run/corral/clusterd-ip.env"
	ipEnvVariable = "CLUSTERD_IP"
)

func unitPath(name string) string { return unitDir + "/" + name }

// reservedPaths are the paths a node group's own files may not take.
func reservedPaths() map[string]bool {
	m := map[string]bool{}
	for _, p := range []string{binaryPath, detectIPPath, envPath, tokenPath, caCertPath, caKeyPath, hostnamePath, unitPath(clusterdUnit)} {
		m[p] = true
	}
	return m
}

// boot is what a node boots with, whichever format carries it. Both
// renderers walk the same lists, which is what makes them reach the same
// end state.
type boot struct {
	hostname string
	keys     []string
	binary   Binary
	files    []File // Corral's, then the group's; not /etc/hostname or the binary
	units    []Unit // clusterd.service, then the group's
}

func (n Node) boot() (boot, error) {
	if err := n.Validate(); err != nil {
		return boot{}, err
	}
	c := n.Clusterd
	b := boot{hostname: n.Hostname, keys: n.SSHAuthorizedKeys, binary: n.Binary}
	b.files = append(b.files,
		File{Path: envPath, Content: []byte(n.envFile()), Mode: 0o644},
		File{Path: tokenPath, Content: []byte(strings.TrimSpace(c.Token) + "\n"), Mode: 0o600},
	)
	if len(c.CACert) > 0 {
		b.files = append(b.files, File{Path: caCertPath, Content: c.CACert, Mode: 0o644})
	}
	if len(c.CAKey) > 0 {
		b.files = append(b.files, File{Path: caKeyPath, Content: c.CAKey, Mode: 0o600})
	}
	if !c.IP.IsValid() {
		b.files = append(b.files, File{Path: detectIPPath, Content: []byte(detectIPScript), Mode: 0o755})
	}
	b.files = append(b.files, n.Files...)
	b.units = append(b.units, Unit{Name: clusterdUnit, Content: n.clusterdService(), Enabled: true})
	b.units = append(b.units, n.Units...)
	return b, nil
}

// envFile names the cluster and the node on the node: clusterd has no flag
// for the cluster's name, and scripts and units want both.
func (n Node) envFile() string {
	return "# Written by Corral at provisioning time.\n" +
		"CORRAL_CLUSTER=" + n.Cluster + "\n" +
		"CORRAL_NODE=" + n.clusterdName() + "\n"
}

// clusterdArgs is clusterd's command line, without the program, in the
// order clusterd declares its flags. Only flags that differ from clusterd's
// defaults are given, so that a default changed in clusterd reaches nodes.
// An undetermined IP is the systemd variable that the detection script
// sets.
func (n Node) clusterdArgs() []string {
	c := n.Clusterd
	args := []string{"--name=" + n.clusterdName()}
	if c.DataDir != "" {
		args = append(args, "--data-dir="+c.DataDir)
	}
	if c.IP.IsValid() {
		args = append(args, "--ip="+c.IP.String())
	} else {
		args = append(args, "--ip=${"+ipEnvVariable+"}")
	}
	args = append(args, "--mode="+string(c.Mode))
	if len(c.Servers) > 0 {
		args = append(args, "--servers="+strings.Join(c.Servers, ","))
	}
	args = append(args, "--token-file="+tokenPath)
	if len(c.CACert) > 0 {
		args = append(args, "--ca-cert="+caCertPath)
	}
	if len(c.CAKey) > 0 {
		args = append(args, "--ca-key="+caKeyPath)
	}
	if len(c.Metadata) > 0 {
		var pairs []string
		for _, k := range slices.Sorted(maps.Keys(c.Metadata)) {
			pairs = append(pairs, k+"="+c.Metadata[k])
		}
		args = append(args, "--metadata="+strings.Join(pairs, ","))
	}
	if c.MachineTTL != 0 {
		args = append(args, "--machine-ttl="+c.MachineTTL.String())
	}
	if c.QuotaBytes != 0 {
		args = append(args, "--quota-bytes="+strconv.FormatInt(c.QuotaBytes, 10))
	}
	if c.APIPort != 0 {
		args = append(args, "--api-port="+strconv.Itoa(c.APIPort))
	}
	if c.Network.Disabled {
		args = append(args, "--no-overlay")
	}
	if c.Network.Bridge != "" {
		args = append(args, "--bridge="+c.Network.Bridge)
	}
	if c.Network.SubnetFile != "" {
		args = append(args, "--subnet-file="+c.Network.SubnetFile)
	}
	if c.Network.NoIPMasq {
		args = append(args, "--ip-masq=false")
	}
	if c.Driver != "" {
		args = append(args, "--driver="+c.Driver)
	}
	if c.RescheduleGrace != 0 {
		args = append(args, "--reschedule-grace="+c.RescheduleGrace.String())
	}
	return args
}

// service is how clusterd.service runs clusterd: it waits for the network
// to be up (clusterd binds its address at start), restarts forever (a node
// that can't reach its servers yet must keep trying), and finds the node's
// address first when the node has none.
func (n Node) service() Service {
	c := n.Clusterd
	s := Service{
		EnvironmentFiles: []string{envPath},
		ExecStart:        append([]string{binaryPath}, n.clusterdArgs()...),
		RestartSec:       5 * time.Second,
		// etcd keeps many files open; systemd's default soft limit is 1024.
		LimitNOFILE: 65536,
	}
	if !c.IP.IsValid() {
		// systemd reads environment files afresh for each command it
		// starts, so ExecStart sees what ExecStartPre wrote.
		s.ExecStartPre = [][]string{append([]string{detectIPPath, ipEnvPath}, detectTarget(c.Servers)...)}
		s.EnvironmentFiles = append(s.EnvironmentFiles, "-"+ipEnvPath)
	}
	return s
}

// clusterdService is clusterd.service, written from service(). With the
// exec driver, it leaves the units clusterd supervises running when
// clusterd restarts, as clusterd re-adopts them.
func (n Node) clusterdService() string {
	s := n.service()
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by Corral for node %s of cluster %s.\n", n.clusterdName(), n.Cluster)
	b.WriteString("[Unit]\n")
	b.WriteString("Description=Corral node daemon (etcd member or client, machine registry, units, overlay)\n")
	b.WriteString("Wants=network-online.target\n")
	b.WriteString("After=network-online.target\n")
	b.WriteString("\n[Service]\n")
	// The first environment file comes before the commands that write the
	// others, as the unit has always been laid out.
	b.WriteString("EnvironmentFile=" + s.EnvironmentFiles[0] + "\n")
	for _, pre := range s.ExecStartPre {
		b.WriteString("ExecStartPre=" + execLine(pre) + "\n")
	}
	for _, f := range s.EnvironmentFiles[1:] {
		b.WriteString("EnvironmentFile=" + f + "\n")
	}
	b.WriteString("ExecStart=" + execWord(s.ExecStart[0]))
	for _, a := range s.ExecStart[1:] {
		b.WriteString(" \\\n  " + execWord(a))
	}
	b.WriteString("\nRestart=always\n")
	fmt.Fprintf(&b, "RestartSec=%s\n", s.RestartSec)
	fmt.Fprintf(&b, "LimitNOFILE=%d\n", s.LimitNOFILE)
	if n.Clusterd.Driver == "exec" {
		b.WriteString("KillMode=process\n")
	}
	b.WriteString("\n[Install]\n")
	b.WriteString("WantedBy=multi-user.target\n")
	return b.String()
}

// detectTarget is the address whose route tells the node its own address:
// the first server, when it is one.
func detectTarget(servers []string) []string {
	if len(servers) == 0 {
		return nil
	}
	host := servers[0]
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []string{a.String()}
	}
	return nil
}

func execLine(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = execWord(w)
	}
	return strings.Join(out, " ")
}

// execWord quotes one word of an Exec line as systemd reads it: '%' starts
// a specifier and '$' a variable, so both are doubled, except the one
// variable Corral means (${CLUSTERD_IP}); a word with spaces, quotes or
// backslashes is double-quoted with C-style escapes.
func execWord(w string) string {
	const ipVar = "${" + ipEnvVariable + "}"
	parts := strings.Split(w, ipVar)
	for i, p := range parts {
		p = strings.ReplaceAll(p, "%", "%%")
		parts[i] = strings.ReplaceAll(p, "$", "$$")
	}
	w = strings.Join(parts, ipVar)
	if w != "" && !strings.ContainsAny(w, " \t\"'\\;") {
		return w
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(w) + `"`
}

// detectIPScript writes the node's address for clusterd's --ip, as
// CLUSTERD_IP=<address> in the file named by its first argument: the source
// address of the route towards its second argument (the first server) if
// given, else of the default route (192.0.2.1 is a documentation address:
// only the routing table is asked, nothing is sent), else the first global
// IPv4 address.
const detectIPScript = `#!/bin/sh
# Written by Corral: finds this machine's address on the cluster network for
# clusterd's --ip. Usage: corral-detect-ip OUTPUT-FILE [SERVER-IP]
set -eu
out=$1
target=${2:-}
src() { ip -o route get "$1" 2>/dev/null | sed -n 's/.* src \([^ ]*\).*/\1/p' | head -n 1; }
addr=
if [ -n "$target" ]; then addr=$(src "$target"); fi
if [ -z "$addr" ]; then addr=$(src 192.0.2.1); fi
if [ -z "$addr" ]; then
	addr=$(ip -o -4 addr show scope global | awk '{ sub("/.*", "", $4); print $4; exit }')
fi
if [ -z "$addr" ]; then
	echo "corral-detect-ip: no address found; give the node an ip in the cluster file" >&2
	exit 1
fi
mkdir -p "$(dirname "$out")"
printf '%s=%s\n' CLUSTERD_IP "$addr" >"$out.tmp"
mv "$out.tmp" "$out"
`
