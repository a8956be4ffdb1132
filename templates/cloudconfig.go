package templates

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// cloudConfigHeader is the first line cloud-init requires of a cloud-config.
const cloudConfigHeader = "#cloud-config\n"

// cloudConfig is the part of cloud-init's schema that Corral writes.
// sigs.k8s.io/yaml goes through these JSON tags and writes keys sorted,
// which keeps the output byte-identical from one render to the next.
type cloudConfig struct {
	Hostname          string      `json:"hostname"`
	SSHAuthorizedKeys []string    `json:"ssh_authorized_keys,omitempty"`
	WriteFiles        []writeFile `json:"write_files"`
	RunCmd            [][]string  `json:"runcmd"`
}

type writeFile struct {
	Path        string `json:"path"`
	Content     string `json:"content"`
	Encoding    string `json:"encoding,omitempty"`
	Owner       string `json:"owner,omitempty"`
	Permissions string `json:"permissions"`
	// Defer writes the file in cloud-init's final stage, after the users
	// module has run, so that a file owned by a user the image creates then
	// can be written at all.
	Defer bool `json:"defer,omitempty"`
}

// CloudConfig renders n's cloud-config (cloud-init's format) to the same end
// state as its Ignition config: the host name, the SSH keys for the image's
// default user, Corral's and the group's files and unit files
// (write_files), then one runcmd that downloads clusterd, checks its
// SHA-512 with sha512sum before installing it, reloads systemd and enables
// and starts clusterd.service and the group's enabled units. That command
// stops at the first failure, so a binary that fails its check is never
// run.
func CloudConfig(n Node) ([]byte, error) {
	b, err := n.boot()
	if err != nil {
		return nil, err
	}
	cc := cloudConfig{Hostname: b.hostname, SSHAuthorizedKeys: b.keys}
	for _, f := range b.files {
		cc.WriteFiles = append(cc.WriteFiles, cloudFile(f))
	}
	enable := []string{}
	for _, u := range b.units {
		if u.Content != "" {
			cc.WriteFiles = append(cc.WriteFiles, cloudFile(File{Path: unitPath(u.Name), Content: []byte(u.Content), Mode: 0o644}))
		}
		if u.Enabled {
			enable = append(enable, u.Name)
		}
	}
	cmd := append([]string{"sh", "-ec", installScript, "corral-install", b.binary.URL, b.binary.SHA512}, enable...)
	cc.RunCmd = [][]string{cmd}
	out, err := yaml.Marshal(cc)
	if err != nil {
		return nil, fmt.Errorf("templates: node %q: encoding cloud-config: %w", n.Hostname, err)
	}
	return append([]byte(cloudConfigHeader), out...), nil
}

// cloudFile writes text as it is, so that the cloud-config stays readable
// (Fit compresses the whole document when size matters); anything else is
// base64, gzip'd first when that is smaller.
func cloudFile(f File) writeFile {
	wf := writeFile{Path: f.Path, Permissions: fmt.Sprintf("0%o", f.fileMode()), Owner: f.Owner}
	if f.Owner != "" && f.Owner != "root" && f.Owner != "root:root" {
		wf.Defer = true
	}
	switch data, isGz := compressed(f.Content); {
	case isText(f.Content):
		wf.Content = string(f.Content)
	case isGz:
		wf.Content, wf.Encoding = base64.StdEncoding.EncodeToString(data), "gz+b64"
	default:
		wf.Content, wf.Encoding = base64.StdEncoding.EncodeToString(data), "b64"
	}
	return wf
}

// isText reports whether b survives a trip through YAML as a plain string:
// UTF-8 with no control characters but newlines and tabs.
func isText(b []byte) bool {
	return utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool {
		return r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || r == '\uFEFF'
	})
}

// installScript runs as `sh -ec SCRIPT corral-install URL SHA512 UNIT...`
// (arguments, not text pasted into the script, so nothing needs quoting). It
// downloads next to the destination, so the final mv is atomic, and
// installs only what sha512sum accepts.
const installScript = `url=$1 sum=$2
shift 2
mkdir -p ` + binaryDir + `
tmp=$(mktemp ` + binaryPath + `.XXXXXX)
trap 'rm -f "$tmp"' EXIT
if command -v curl >/dev/null 2>&1; then
  curl -fsSL --retry 5 --retry-delay 2 -o "$tmp" "$url"
else
  wget -q -O "$tmp" "$url"
fi
printf '%s  %s\n' "$sum" "$tmp" | sha512sum -c -
chmod 0755 "$tmp"
mv -f "$tmp" ` + binaryPath + `
systemctl daemon-reload
systemctl enable --now "$@"
`
