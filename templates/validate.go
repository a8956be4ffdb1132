package templates

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/corral-dev/corral/bootstrap/pki"
)

// Validate reports everything wrong with n, each problem naming its field
// (e.g. "Files[2].Path"). Both renderers call it first, so a bad node never
// yields a config that fails at boot.
func (n Node) Validate() error {
	var v validator
	v.check("Hostname", checkHostname(n.Hostname))
	v.check("Cluster", checkName(n.Cluster))
	for i, k := range n.SSHAuthorizedKeys {
		v.check(fmt.Sprintf("SSHAuthorizedKeys[%d]", i), checkSSHKey(k))
	}
	n.Clusterd.validate(&v)
	v.check("Binary.URL", checkURL(n.Binary.URL))
	v.check("Binary.SHA512", checkSHA512(n.Binary.SHA512))

	reserved := reservedPaths()
	paths := map[string]string{}
	for i, f := range n.Files {
		field := fmt.Sprintf("Files[%d]", i)
		v.check(field+".Path", checkPath(f.Path))
		if reserved[f.Path] {
			v.add(field+".Path", fmt.Errorf("%s is written by Corral itself", f.Path))
		}
		if prev, ok := paths[f.Path]; ok {
			v.add(field+".Path", fmt.Errorf("%s is also %s", f.Path, prev))
		}
		paths[f.Path] = field
		v.check(field+".Mode", checkMode(f.Mode))
		v.check(field+".Owner", checkOwner(f.Owner))
	}
	units := map[string]string{clusterdUnit: "Corral's own unit"}
	for i, u := range n.Units {
		field := fmt.Sprintf("Units[%d]", i)
		v.check(field+".Name", checkUnitName(u.Name))
		if prev, ok := units[u.Name]; ok {
			v.add(field+".Name", fmt.Errorf("%s is also %s", u.Name, prev))
		}
		units[u.Name] = field
		if prev, ok := paths[unitPath(u.Name)]; ok && u.Content != "" {
			v.add(field+".Name", fmt.Errorf("%s would overwrite %s", u.Name, prev))
		}
		v.check(field+".Content", checkUnitContent(u))
		if strings.Contains(u.Name, "@.") && u.Enabled {
			v.add(field+".Enabled", fmt.Errorf("%s is a template: enable an instance of it instead", u.Name))
		}
		if tmpl, ok := templateOf(u.Name); ok && u.Enabled && u.Content == "" {
			if j := slices.IndexFunc(n.Units, func(t Unit) bool { return t.Name == tmpl }); j >= 0 && !hasInstall(n.Units[j].Content) {
				// Enabling an instance goes through its template's [Install].
				v.add(field+".Enabled", fmt.Errorf("its template %s (Units[%d]) has no [Install] section, so enabling it would do nothing", tmpl, j))
			}
		}
		if u.Content == "" && !u.Enabled {
			v.add(field, errors.New("has no content and is not enabled: it would do nothing"))
		}
	}
	return v.err(n.Hostname)
}

func (c Clusterd) validate(v *validator) {
	if c.Name != "" {
		v.check("Clusterd.Name", checkHostname(c.Name))
	}
	switch c.Mode {
	case ModeInit, ModeJoin, ModeClient:
	default:
		v.add("Clusterd.Mode", fmt.Errorf("%q: want %q, %q or %q", c.Mode, ModeInit, ModeJoin, ModeClient))
	}
	if c.DataDir != "" {
		v.check("Clusterd.DataDir", checkPath(c.DataDir))
	}
	if len(c.Servers) == 0 && c.Mode != ModeInit {
		v.add("Clusterd.Servers", fmt.Errorf("a %s node needs at least one server to join through", c.Mode))
	}
	for i, s := range c.Servers {
		v.check(fmt.Sprintf("Clusterd.Servers[%d]", i), checkServer(s))
	}
	tok, err := pki.ParseToken(c.Token)
	v.check("Clusterd.Token", err)
	if len(c.CACert) > 0 {
		if hash, err := pki.HashPEM(c.CACert); err != nil {
			v.add("Clusterd.CACert", err)
		} else if tok.CAHash != "" && hash != tok.CAHash {
			v.add("Clusterd.CACert", fmt.Errorf("is %s but the token pins %s", hash, tok.CAHash))
		}
	}
	switch {
	case c.Mode == ModeInit && (len(c.CACert) == 0 || len(c.CAKey) == 0):
		v.add("Clusterd.CAKey", errors.New("the init node needs the CA certificate and key"))
	case c.Mode != ModeInit && len(c.CAKey) > 0:
		v.add("Clusterd.CAKey", fmt.Errorf("only the init node gets the CA key, not a %s node", c.Mode))
	case len(c.CAKey) > 0:
		if _, err := pki.ParseCA(c.CACert, c.CAKey); err != nil {
			v.add("Clusterd.CAKey", err)
		}
	}
	if c.IP.IsValid() && (c.IP.IsUnspecified() || c.IP.Zone() != "") {
		v.add("Clusterd.IP", fmt.Errorf("%s is not a usable node address", c.IP))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Metadata)) {
		v.check("Clusterd.Metadata["+strconv.Quote(k)+"]", checkMetadata(k, c.Metadata[k]))
	}
	if c.MachineTTL < 0 {
		v.add("Clusterd.MachineTTL", fmt.Errorf("%s is negative", c.MachineTTL))
	}
	if c.RescheduleGrace < 0 {
		v.add("Clusterd.RescheduleGrace", fmt.Errorf("%s is negative", c.RescheduleGrace))
	}
	if c.QuotaBytes < 0 {
		v.add("Clusterd.QuotaBytes", fmt.Errorf("%d is negative", c.QuotaBytes))
	}
	if c.APIPort < 0 || c.APIPort > 65535 {
		v.add("Clusterd.APIPort", fmt.Errorf("%d is not a TCP port", c.APIPort))
	}
	switch c.Driver {
	case "", "auto", "exec", "systemd":
	default:
		v.add("Clusterd.Driver", fmt.Errorf("%q: want exec, systemd or auto", c.Driver))
	}
	if b := c.Network.Bridge; b != "" && !bridgeRE.MatchString(b) {
		v.add("Clusterd.Network.Bridge", fmt.Errorf("%q is not an interface name (letters, digits, '_.-', at most 15)", b))
	}
	if c.Network.SubnetFile != "" {
		v.check("Clusterd.Network.SubnetFile", checkPath(c.Network.SubnetFile))
	}
}

// validator gathers every problem, so one render reports them all.
type validator struct{ errs []error }

func (v *validator) add(field string, err error) {
	v.errs = append(v.errs, fmt.Errorf("%s: %w", field, err))
}

func (v *validator) check(field string, err error) {
	if err != nil {
		v.add(field, err)
	}
}

func (v *validator) err(node string) error {
	if len(v.errs) == 0 {
		return nil
	}
	return fmt.Errorf("templates: node %q: %w", node, errors.Join(v.errs...))
}

// The same rules as provision's config: cluster names are DNS labels,
// metadata keys a safe set, bridges interface names.
var (
	nameRE        = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)
	labelRE       = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	metadataKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	bridgeRE      = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	ownerRE       = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*(:[a-z_][a-z0-9_.-]*)?$`)
)

func checkName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%q is not a DNS label (lower-case letters, digits and '-')", s)
	}
	return nil
}

// checkHostname accepts what both /etc/hostname and clusterd's certificate
// (a DNS name) accept: dot-separated DNS labels, at most 253 bytes.
func checkHostname(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%q is not a host name (1 to 253 characters)", s)
	}
	for _, l := range strings.Split(s, ".") {
		if !labelRE.MatchString(l) {
			return fmt.Errorf("%q is not a host name: label %q is not letters, digits and '-' (at most 63)", s, l)
		}
	}
	return nil
}

// checkSSHKey checks one authorized_keys line: optional options, then a key
// type and a base64 blob that names the same type. Catching a truncated or
// mangled key here beats finding the node unreachable.
func checkSSHKey(line string) error {
	if strings.ContainsAny(line, "\r\n") {
		return errors.New("must be one line")
	}
	fields := strings.Fields(line)
	for i := 0; i+1 < len(fields); i++ {
		blob, err := base64.StdEncoding.DecodeString(fields[i+1])
		if err != nil || len(blob) < 4 {
			continue
		}
		n := binary.BigEndian.Uint32(blob)
		if uint64(n) <= uint64(len(blob)-4) && string(blob[4:4+n]) == fields[i] {
			return nil
		}
	}
	return fmt.Errorf("%q is not an SSH public key (\"<type> <base64> [comment]\")", shorten(line))
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("%q has no host", s)
		}
		return nil
	}
	// Ignition could fetch s3:// or tftp://, but cloud-init's curl fetches
	// only http(s), and both formats must do the same.
	return fmt.Errorf("%q: want an http:// or https:// URL", s)
}

func checkSHA512(s string) error {
	if len(s) != 128 || strings.ToLower(s) != s {
		return fmt.Errorf("%q is not 128 lower-case hex digits", shorten(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("%q is not 128 lower-case hex digits", shorten(s))
	}
	return nil
}

func checkPath(p string) error {
	switch {
	case !path.IsAbs(p):
		return fmt.Errorf("%q is not an absolute path", p)
	case path.Clean(p) != p || p == "/":
		return fmt.Errorf("%q is not a clean file path (no trailing '/', '.', '..' or '//')", p)
	case hasControl(p):
		return fmt.Errorf("%q contains control characters", p)
	}
	return nil
}

func checkMode(m os.FileMode) error {
	switch {
	case m > 0o7777:
		return fmt.Errorf("%#o is not a permission mode (at most 0777)", uint32(m))
	case m&0o7000 != 0:
		return fmt.Errorf("%#o has setuid, setgid or sticky bits, which Ignition 3.4 cannot set (at most 0777)", uint32(m))
	}
	return nil
}

func checkOwner(s string) error {
	if s != "" && !ownerRE.MatchString(s) {
		return fmt.Errorf("%q: want \"user\" or \"user:group\"", s)
	}
	return nil
}

// checkServer accepts an IP address or IP:port: clusterd joins through
// host:port but takes only IP literals as etcd endpoints.
func checkServer(s string) error {
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port", s)
		}
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("%q: want an IP address or IP:port (clusterd uses only IP literals as etcd endpoints)", s)
	}
	return nil
}

// checkMetadata follows provision's rules, plus what survives the trip
// through --metadata's comma-separated (CSV) flag: no quotes, no newlines.
func checkMetadata(k, v string) error {
	switch {
	case !metadataKeyRE.MatchString(k):
		return errors.New("key may contain only letters, digits, '_', '.' and '-'")
	case v == "":
		return errors.New("value is empty")
	case strings.ContainsAny(v, `,="`) || hasControl(v):
		return fmt.Errorf("value %q must not contain ',', '=', '\"' or control characters", v)
	}
	return nil
}

// systemd's unit types; Ignition refuses any other suffix.
var unitTypes = map[string]bool{
	"service": true, "socket": true, "device": true, "mount": true, "automount": true,
	"swap": true, "target": true, "path": true, "timer": true, "slice": true, "scope": true,
}

// checkUnitName applies systemd's unit name rules: prefix[@instance].type,
// from letters, digits and ":-_.\" (plus '@' in the instance), at most
// 255 bytes.
func checkUnitName(name string) error {
	dot := strings.LastIndexByte(name, '.')
	if dot <= 0 || !unitTypes[name[dot+1:]] {
		return fmt.Errorf("%q has no unit type suffix such as .service or .timer", name)
	}
	if len(name) > 255 {
		return fmt.Errorf("%q is longer than 255 characters", shorten(name))
	}
	base := name[:dot]
	prefix, instance, _ := strings.Cut(base, "@")
	if prefix == "" {
		return fmt.Errorf("%q has nothing before the '@' or the type", name)
	}
	for i, part := range []string{prefix, instance} {
		for _, c := range []byte(part) {
			ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(`:-_.\`, c) >= 0 ||
				c == '@' && i == 1 // systemd allows '@' in the instance
			if !ok {
				return fmt.Errorf("%q: %q is not allowed in unit names (systemd-escape writes anything else)", name, c)
			}
		}
	}
	return nil
}

// checkUnitContent parses the unit as Ignition will, and requires an
// [Install] section on enabled units: without one, enabling does nothing,
// which Ignition reports as a warning.
func checkUnitContent(u Unit) error {
	if u.Content == "" {
		return nil
	}
	if _, err := unit.DeserializeOptions(strings.NewReader(u.Content)); err != nil {
		return fmt.Errorf("not a unit file: %w", err)
	}
	if u.Enabled && !hasInstall(u.Content) {
		return errors.New("the unit is enabled but has no [Install] section, so enabling it would do nothing")
	}
	return nil
}

func hasInstall(content string) bool {
	opts, err := unit.DeserializeOptions(strings.NewReader(content))
	return err == nil && slices.ContainsFunc(opts, func(o *unit.UnitOption) bool { return o.Section == "Install" })
}

// templateOf returns the template an instance name belongs to:
// "hello@web.service" is an instance of "hello@.service".
func templateOf(name string) (string, bool) {
	at := strings.IndexByte(name, '@')
	dot := strings.LastIndexByte(name, '.')
	if at < 0 || dot < at+2 {
		return "", false
	}
	return name[:at+1] + name[dot:], true
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) || !utf8.ValidString(s)
}

func shorten(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
