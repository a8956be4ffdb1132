package provision

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/templates"
)

// The bucket's layout, under corral/<cluster>/: bootstrap/ holds what
// awsnode reads at boot (ca.crt, ca.key, token; see bootstrap/awsnode),
// assets/clusterd the corral binary instances install, and userdata/ the
// full Ignition configs of groups whose config is over EC2's user-data
// limit (their user data is a pointer to it).
func awsPrefix(cluster string) string    { return "corral/" + cluster + "/" }
func awsBootstrap(cluster string) string { return awsPrefix(cluster) + "bootstrap" }
func awsBinaryKey(cluster string) string { return awsPrefix(cluster) + "assets/clusterd" }
func awsConfigKey(cluster, group string) string {
	return awsPrefix(cluster) + "userdata/" + group + ".ign"
}

// placeholderToken satisfies the renderer's check of the token: an
// instance's user data carries no token (awsnode reads it from the
// bucket), so the one rendered in is removed again, and the user data is
// the same before and after the cluster's PKI exists.
var placeholderToken = "CRL1::sha256:" + strings.Repeat("0", 64) + "::" + strings.Repeat("0", 64)

// Paths of templates' Ignition that an instance of an Auto Scaling group
// must not have: its name, address and role are its own, learnt at boot.
const (
	awsHostnameFile = "/etc/hostname"
	awsTokenFile    = "/etc/corral/token"
	awsEnvFile      = "/etc/corral/clusterd.env"
	awsBinaryFile   = "/opt/bin/clusterd"
	awsDetectIPFile = "/opt/bin/corral-detect-ip"
	awsClusterdUnit = "clusterd.service"
)

// awsGroupConfig is a group's boot config on AWS: one for all its
// instances, and what their user data is (the config, or a pointer to it
// in the bucket when the config is over EC2's 16 KiB).
type awsGroupConfig struct {
	full     []byte
	userData templates.UserData
}

// awsUserData renders the group's boot config for its instances: the
// group's files and units and clusterd, as templates renders them for any
// node, made the same for every instance of the group: no host name, no
// token, no address or role (clusterd is run with --aws-bootstrap and
// learns them at boot, see bootstrap/awsnode), and clusterd fetched by
// Ignition from the bucket with the instance's role. It is checked against
// the user-data limit here, at plan time.
func (c *cluster) awsUserData(g config.NodeGroup, bucket string) (awsGroupConfig, error) {
	where := groupPosition(g)
	if err := checkAWSUserdata(g); err != nil {
		return awsGroupConfig{}, err
	}
	sum, err := c.binarySum()
	if err != nil {
		return awsGroupConfig{}, err
	}
	name := c.cfg.Cluster.Name
	binKey := awsBinaryKey(name)
	node := templates.Node{
		Hostname:          g.Name,
		Cluster:           name,
		SSHAuthorizedKeys: c.cfg.Cluster.SSHAuthorizedKeys,
		Clusterd: templates.Clusterd{
			Mode: templates.ModeClient, Servers: []string{"127.0.0.1"}, Token: placeholderToken,
			IP: netip.MustParseAddr("127.0.0.1"), Metadata: g.Metadata, MachineTTL: c.cfg.Cluster.MachineTTL,
		},
		// The https form passes the renderer's check; Ignition is given
		// the s3:// form below, which it fetches with the instance role.
		Binary: templates.Binary{URL: "https://" + bucket + ".s3.amazonaws.com/" + binKey, SHA512: sum},
		Files:  g.Files,
		Units:  g.Units,
	}
	if nw := c.cfg.Network; nw != nil {
		node.Clusterd.Network = templates.Network{Bridge: nw.Bridge, NoIPMasq: !nw.IPMasq}
	}
	rendered, err := templates.Ignition(node)
	if err != nil {
		return awsGroupConfig{}, fmt.Errorf("%s: %w", where, err)
	}
	full, err := c.forInstances(rendered, g.Name, "s3://"+bucket+"/"+binKey, bucket)
	if err != nil {
		return awsGroupConfig{}, fmt.Errorf("%s: %w", where, err)
	}
	ud, err := templates.Fit(full, templates.FormatIgnition, templates.EC2UserDataLimit, "s3://"+bucket+"/"+awsConfigKey(name, g.Name))
	if err != nil {
		return awsGroupConfig{}, fmt.Errorf("%s: %w", where, err)
	}
	return awsGroupConfig{full: full, userData: ud}, nil
}

// groupPosition names a node group and where the file declares it.
func groupPosition(g config.NodeGroup) string {
	return fmt.Sprintf("%s:%d: node group %q", g.DeclRange.Filename, g.DeclRange.Start.Line, g.Name)
}

// checkAWSUserdata refuses a group that boots from cloud-config: its
// instances fetch clusterd from the cluster's private bucket, which
// Ignition can (s3:// with the instance's role) and cloud-config's curl
// cannot.
func checkAWSUserdata(g config.NodeGroup) error {
	if g.Userdata == templates.FormatIgnition {
		return nil
	}
	return fmt.Errorf(`%s: userdata = %q is not supported by provider "aws": instances fetch clusterd from the cluster's private bucket, which Ignition can (s3:// with the instance's role) and cloud-config's curl cannot; use userdata = "ignition" with a Flatcar image`,
		groupPosition(g), g.Userdata)
}

// forInstances rewrites a node's rendered Ignition config into one every
// instance of the group can boot with, and checks it with Ignition's own
// parser.
func (c *cluster) forInstances(rendered []byte, group, binaryURL, bucket string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(rendered))
	dec.UseNumber() // file modes stay integers
	var cfg map[string]any
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("reading the rendered Ignition config: %w", err)
	}
	storage, _ := cfg["storage"].(map[string]any)
	files, _ := storage["files"].([]any)
	var kept []any
	for _, f := range files {
		file, _ := f.(map[string]any)
		switch file["path"] {
		case awsHostnameFile, awsTokenFile, awsEnvFile, awsDetectIPFile:
			continue
		case awsBinaryFile:
			contents, _ := file["contents"].(map[string]any)
			if contents == nil {
				return nil, fmt.Errorf("the rendered config fetches %s from nowhere", awsBinaryFile)
			}
			contents["source"] = binaryURL
		}
		kept = append(kept, f)
	}
	storage["files"] = kept
	systemd, _ := cfg["systemd"].(map[string]any)
	units, _ := systemd["units"].([]any)
	found := false
	for _, u := range units {
		unit, _ := u.(map[string]any)
		if unit["name"] != awsClusterdUnit {
			continue
		}
		text, _ := unit["contents"].(string)
		aws, err := c.awsClusterdUnit(text, group, bucket)
		if err != nil {
			return nil, err
		}
		unit["contents"] = aws
		found = true
	}
	if !found {
		return nil, fmt.Errorf("the rendered config has no %s", awsClusterdUnit)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if err := templates.CheckIgnition(out); err != nil {
		return nil, err
	}
	return out, nil
}

// awsDropped are clusterd's flags that an instance learns at boot from
// --aws-bootstrap instead (awsnode.Identity), and the files they named.
var awsDropped = []string{"--name=", "--ip=", "--mode=", "--servers=", "--token-file=", "--ca-cert=", "--ca-key="}

// awsClusterdUnit turns the rendered clusterd.service into the one for
// instances: the same unit, with clusterd's identity flags replaced by
// --aws-bootstrap and --etcd-members, and without the environment file
// that named the node.
func (c *cluster) awsClusterdUnit(unit, group, bucket string) (string, error) {
	var out []string
	lines := strings.Split(unit, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case line == "EnvironmentFile="+awsEnvFile:
			continue
		case strings.HasPrefix(line, "# Written by Corral for node "):
			out = append(out, fmt.Sprintf("# Written by Corral for every instance of node group %s of cluster %s.", group, c.cfg.Cluster.Name))
		case strings.HasPrefix(line, "ExecStart="):
			// ExecStart=prog \
			//   --flag=value \
			//   --last
			words := []string{strings.TrimSuffix(strings.TrimPrefix(line, "ExecStart="), " \\")}
			for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
				i++
				line = lines[i]
				words = append(words, strings.TrimSuffix(strings.TrimSpace(line), " \\"))
			}
			if words[0] != awsBinaryFile {
				return "", fmt.Errorf("the rendered %s runs %q, not %s", awsClusterdUnit, words[0], awsBinaryFile)
			}
			args := []string{
				"--aws-bootstrap=s3://" + bucket + "/" + awsBootstrap(c.cfg.Cluster.Name),
				"--etcd-members=" + strconv.Itoa(c.cfg.Cluster.EtcdMembers),
			}
			for _, w := range words[1:] {
				if !hasAnyPrefix(w, awsDropped) {
					args = append(args, w)
				}
			}
			out = append(out, "ExecStart="+words[0]+" \\")
			for j, a := range args {
				if j < len(args)-1 {
					a += " \\"
				}
				out = append(out, "  "+a)
			}
		default:
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n"), nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
