package config

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"golang.org/x/crypto/ssh"
)

// SSHProvider runs the nodes on machines that are already up, one node per
// host, reached over SSH:
//
//	provider "ssh" {
//	  hosts          = ["10.0.0.11", "10.0.0.12:2222", "node3.example.com"]
//	  user           = "core"
//	  identity_files = ["~/.ssh/id_ed25519"]
//	  known_hosts    = ["~/.ssh/known_hosts"]
//	}
type SSHProvider struct {
	// Hosts are the machines, as written: "host" (port 22) or "host:port",
	// an IPv6 address in brackets when it has a port. Node n, counting
	// from 1 across all groups in file order, runs on Hosts[n-1].
	Hosts []string
	// User is who provision logs in as; "core" when not set.
	User string
	// IdentityFiles are private keys to try, as absolute paths ("~/" and
	// paths relative to the cluster file resolved). Nil when not set: the
	// SSH agent's keys are used.
	IdentityFiles []string
	// KnownHosts are known_hosts files that host keys are checked against,
	// as absolute paths. Nil when not set: the first key a host shows is
	// trusted and recorded in provision's state.
	KnownHosts []string
}

const (
	defaultSSHUser = "core"
	defaultSSHPort = "22"
)

var (
	sshSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "hosts", Required: true},
			{Name: "user"},
			{Name: "identity_files"},
			{Name: "known_hosts"},
		},
	}
	// hostnameRE matches DNS names; addresses are parsed with netip.
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$`)
	sshUserRE  = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$`)
)

func decodeSSH(body hcl.Body, ctx *hcl.EvalContext, dir string, p *Provider) hcl.Diagnostics {
	content, diags := body.Content(sshSchema)
	s := &SSHProvider{User: defaultSSHUser}
	p.SSH = s

	// hostsOK stays false when hosts is missing or wrong, so that no
	// capacity error is reported against hosts nobody meant.
	hostsOK := false
	attr, d := decodeAttr(content, "hosts", ctx, &s.Hosts)
	diags = append(diags, d...)
	if attr != nil {
		d := checkHosts(attr, s.Hosts)
		diags = append(diags, d...)
		hostsOK = !d.HasErrors()
	}
	if !hostsOK {
		s.Hosts = nil
	}

	attr, d = decodeAttr(content, "user", ctx, &s.User)
	diags = append(diags, d...)
	if attr != nil && !sshUserRE.MatchString(s.User) {
		diags = append(diags, attrError(attr, "Invalid user",
			fmt.Sprintf("user must be a user name such as %q, got %q.", defaultSSHUser, s.User)))
	}

	for _, name := range []string{"identity_files", "known_hosts"} {
		target := &s.IdentityFiles
		if name == "known_hosts" {
			target = &s.KnownHosts
		}
		attr, d = decodeAttr(content, name, ctx, target)
		diags = append(diags, d...)
		if attr == nil {
			continue
		}
		for i, f := range *target {
			var err error
			if f == "" {
				err = fmt.Errorf("it is empty")
			} else {
				(*target)[i], err = resolvePath(dir, f)
			}
			if err == nil {
				// Provision may run from elsewhere than the file's
				// directory by the time it reads them.
				(*target)[i], err = filepath.Abs((*target)[i])
			}
			if err != nil {
				diags = append(diags, elemError(attr, i, len(*target), "Invalid "+name,
					fmt.Sprintf("%s %s is not a path: %s.", name, entryName(i), err)))
			}
		}
	}
	return diags
}

// checkHosts reports every host that is not "host" or "host:port", and
// every repeat, counting "h" and "h:22" as the same host.
func checkHosts(attr *hcl.Attribute, hosts []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if len(hosts) == 0 {
		return hcl.Diagnostics{attrError(attr, "Invalid hosts",
			"hosts must list at least one machine, such as [\"10.0.0.11\"].")}
	}
	seen := make(map[string]int)
	for i, h := range hosts {
		key, problem := parseHost(h)
		if problem != "" {
			diags = append(diags, elemError(attr, i, len(hosts), "Invalid hosts",
				fmt.Sprintf("hosts %s, %q, %s", entryName(i), h, problem)))
			continue
		}
		if first, ok := seen[key]; ok {
			diags = append(diags, elemError(attr, i, len(hosts), "Duplicate host",
				fmt.Sprintf("hosts %s, %q, is the same machine as %s, %q; each host runs one node.",
					entryName(i), h, entryName(first), hosts[first])))
			continue
		}
		seen[key] = i
	}
	return diags
}

// parseHost checks a hosts entry and returns it as "host:port", or says
// what is wrong with it.
func parseHost(s string) (string, string) {
	host, port := s, defaultSSHPort
	if _, err := netip.ParseAddr(s); err != nil && strings.Contains(s, ":") {
		// Not a bare IPv6 address, so it has a port.
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return "", fmt.Sprintf("must be \"host\" or \"host:port\" (\"[addr]:port\" for IPv6): %s.",
				strings.TrimPrefix(err.Error(), "address "+s+": "))
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return "", fmt.Sprintf("has port %q; a port must be a number from 1 to 65535.", port)
		}
		port = strconv.FormatUint(n, 10)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return "", "has a zone; give an address that is the same from every host."
		}
		return net.JoinHostPort(addr.String(), port), ""
	}
	if !hostnameRE.MatchString(host) {
		return "", "must be an IP address or a DNS name."
	}
	return net.JoinHostPort(strings.TrimSuffix(strings.ToLower(host), "."), port), ""
}

// maxNodes is one node per host.
func (p *SSHProvider) maxNodes() (int, string, bool) {
	n := len(p.Hosts)
	return n, fmt.Sprintf("the ssh provider runs one node per host and has %d hosts; add hosts or lower desired_capacity.", n), n > 0
}

// checkAuthorizedKeys reports every entry of ssh_authorized_keys that is
// not one authorized key, and trims trailing newlines from the others.
func checkAuthorizedKeys(attr *hcl.Attribute, keys []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for i, k := range keys {
		k = strings.TrimRight(k, "\r\n")
		keys[i] = k
		_, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k))
		var problem string
		switch {
		case strings.TrimSpace(k) == "":
			problem = "it is empty"
		case err != nil:
			problem = strings.TrimPrefix(err.Error(), "ssh: ")
		case len(bytes.TrimSpace(rest)) > 0:
			problem = "it holds more than one key; give each key its own entry"
		default:
			continue
		}
		diags = append(diags, elemError(attr, i, len(keys), "Invalid ssh_authorized_keys",
			fmt.Sprintf("ssh_authorized_keys %s is not a public key in authorized_keys format, "+
				"such as the content of ~/.ssh/id_ed25519.pub: %s.", entryName(i), problem)))
	}
	return diags
}

// entryName names the i'th entry of a list, counting from 0, for a person.
func entryName(i int) string {
	return fmt.Sprintf("entry %d (the %s)", i, ordinal(i+1))
}

// ordinal is 1st, 2nd, 3rd, 4th, … 11th, 12th, 13th, … 21st.
func ordinal(n int) string {
	suffix := "th"
	if n%100 < 11 || n%100 > 13 {
		switch n % 10 {
		case 1:
			suffix = "st"
		case 2:
			suffix = "nd"
		case 3:
			suffix = "rd"
		}
	}
	return strconv.Itoa(n) + suffix
}

// elemError is an error about the i'th of n entries of a list attribute.
// The subject is the entry when the list is written out, the whole value
// otherwise.
func elemError(attr *hcl.Attribute, i, n int, summary, detail string) *hcl.Diagnostic {
	d := attrError(attr, summary, detail)
	if t, ok := attr.Expr.(*hclsyntax.TupleConsExpr); ok && len(t.Exprs) == n {
		d.Subject = t.Exprs[i].Range().Ptr()
	}
	return d
}
