package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	ignition "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/coreos/ignition/v2/config/v3_4/types"
)

// IgnitionVersion is the Ignition spec the configs are written in.
const IgnitionVersion = "3.4.0"

// loginUser is the user Ignition installs the SSH keys for: Fedora CoreOS's
// and Flatcar's default, as it was CoreOS's.
const loginUser = "core"

// Ignition renders n's Ignition config (spec 3.4.0): the host name, the SSH
// keys for core, Corral's files (clusterd's environment, the token, the CA,
// clusterd itself fetched from n.Binary and checked against its SHA-512),
// clusterd.service, and the group's files and units.
//
// The result has been parsed back with Ignition's own config package: any
// report entry, warning or worse, fails the render, with the report's text,
// so a config a node would stumble on never reaches one.
func Ignition(n Node) ([]byte, error) {
	b, err := n.boot()
	if err != nil {
		return nil, err
	}
	cfg := types.Config{Ignition: types.Ignition{Version: IgnitionVersion}}
	if len(b.keys) > 0 {
		user := types.PasswdUser{Name: loginUser}
		for _, k := range b.keys {
			user.SSHAuthorizedKeys = append(user.SSHAuthorizedKeys, types.SSHAuthorizedKey(k))
		}
		cfg.Passwd.Users = append(cfg.Passwd.Users, user)
	}
	files := []types.File{inlineFile(File{Path: hostnamePath, Content: []byte(b.hostname + "\n"), Mode: 0o644})}
	for _, f := range b.files {
		files = append(files, inlineFile(f))
	}
	// Ignition fetches the binary and refuses it unless its hash matches.
	files = append(files, types.File{
		Node: types.Node{Path: binaryPath, Overwrite: ptr(true)},
		FileEmbedded1: types.FileEmbedded1{
			Mode: ptr(0o755),
			Contents: types.Resource{
				Source:       ptr(b.binary.URL),
				Verification: types.Verification{Hash: ptr("sha512-" + b.binary.SHA512)},
			},
		},
	})
	cfg.Storage.Files = files
	for _, u := range b.units {
		iu := types.Unit{Name: u.Name}
		if u.Content != "" {
			iu.Contents = ptr(u.Content)
		}
		if u.Enabled {
			iu.Enabled = ptr(true)
		}
		cfg.Systemd.Units = append(cfg.Systemd.Units, iu)
	}
	out, err := marshalIgnition(cfg)
	if err != nil {
		return nil, err
	}
	if err := CheckIgnition(out); err != nil {
		return nil, fmt.Errorf("templates: node %q: %w", n.Hostname, err)
	}
	return out, nil
}

// inlineFile carries f in the config itself, gzip'd when that is smaller.
// Every file is written with overwrite, since images may ship some of these
// paths (/etc/hostname) and Ignition otherwise fails on an existing file.
func inlineFile(f File) types.File {
	data, isGz := compressed(f.Content)
	res := types.Resource{Source: ptr(dataURL(data))}
	if isGz {
		res.Compression = ptr("gzip")
	}
	node := types.Node{Path: f.Path, Overwrite: ptr(true)}
	if f.Owner != "" {
		user, group, _ := strings.Cut(f.Owner, ":")
		node.User.Name = ptr(user)
		if group != "" {
			node.Group.Name = ptr(group)
		}
	}
	return types.File{Node: node, FileEmbedded1: types.FileEmbedded1{Contents: res, Mode: ptr(f.fileMode())}}
}

// marshalIgnition writes compact JSON (user data is counted in bytes),
// without the empty objects that Ignition's types marshal for every unset
// struct ("user":{}, "verification":{}: a zero struct means the same as an
// absent one) and without HTML escaping, which would only make unit files
// longer. Keys come out sorted, as encoding/json writes maps.
func marshalIgnition(cfg types.Config) ([]byte, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("templates: encoding Ignition config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("templates: re-reading Ignition config: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(pruneEmpty(tree)); err != nil {
		return nil, fmt.Errorf("templates: encoding Ignition config: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// pruneEmpty removes the objects that are empty, or become empty once their
// own empty objects are gone.
func pruneEmpty(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			child = pruneEmpty(child)
			if m, ok := child.(map[string]any); ok && len(m) == 0 {
				delete(v, k)
				continue
			}
			v[k] = child
		}
	case []any:
		for i, child := range v {
			v[i] = pruneEmpty(child)
		}
	}
	return v
}

// CheckIgnition parses an Ignition config as Ignition will and fails on
// anything its report says, warnings included: a warning at render time is
// a surprise at boot time.
func CheckIgnition(config []byte) error {
	_, rpt, err := ignition.Parse(config)
	report := strings.TrimSpace(rpt.String())
	switch {
	case err != nil && report != "":
		return fmt.Errorf("Ignition config invalid: %w:\n%s", err, report)
	case err != nil:
		return fmt.Errorf("Ignition config invalid: %w", err)
	case len(rpt.Entries) > 0:
		return errors.New("Ignition config has warnings:\n" + report)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
