package config

import (
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/templates"
	"github.com/hashicorp/hcl/v2"
)

// NodeGroup is a set of identical machines, named after the group:
//
//	node_group "core" {
//	  desired_capacity = 3
//	  min_size         = 1
//	  max_size         = 5
//	  metadata         = { role = "web" }
//	  userdata         = "ignition"
//
//	  systemd_unit "hello.service" {
//	    content = file("units/hello.service")
//	    enabled = true
//	  }
//	  file "/etc/motd" {
//	    content = "hello\n"
//	    mode    = "0644"
//	    owner   = "root:root"
//	  }
//	}
type NodeGroup struct {
	Name            string
	DesiredCapacity int
	// MinSize and MaxSize bound DesiredCapacity: MinSize ≤ DesiredCapacity
	// ≤ MaxSize. MinSize is 0 when not set; MaxSize is -1 when not set,
	// which means no upper bound (an explicit max_size = 0 is a bound).
	MinSize int
	MaxSize int
	// Metadata is attached to every machine of the group; units select
	// machines with it (fleet's MachineMetadata). Nil when not set.
	Metadata map[string]string
	// Userdata is the format the group's machines boot from:
	// templates.FormatIgnition (the default) or templates.FormatCloudConfig.
	Userdata templates.Format
	// Units are the systemd_unit blocks, in file order: units written to
	// the machines at first boot (Content set) or shipped units to enable
	// (Content empty, Enabled true). Nil when there are none.
	Units []templates.Unit
	// Files are the file blocks, in file order: files written at first
	// boot. Mode is at most 0777, and 0 when not set (templates writes
	// 0644). Nil when there are none.
	Files []templates.File
	// PXE is the group's bare-metal part (provider "pxe"), nil without one.
	PXE *PXEGroup
	// InstanceType and Image are the group's EC2 instance type and image
	// (provider "aws", see aws.go): "t3.small" and "flatcar-stable" by
	// default with that provider, "" with any other.
	InstanceType string
	Image        string
	// Volumes are extra EBS volumes and LoadBalancers the load balancers
	// in front of the group (provider "aws"), in file order; nil when none.
	Volumes       []Volume
	LoadBalancers []LoadBalancer
	DeclRange     hcl.Range

	// awsOnly locates the settings above that only provider "aws" uses, so
	// that they can be reported under another provider.
	awsOnly []awsSetting
}

// noMaxSize is NodeGroup.MaxSize when max_size is not set.
const noMaxSize = -1

var (
	nodeGroupSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "desired_capacity", Required: true},
			{Name: "min_size"},
			{Name: "max_size"},
			{Name: "metadata"},
			{Name: "userdata"},
			{Name: "install_to_disk"},
			{Name: "default"},
			{Name: "instance_type"},
			{Name: "image"},
		},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "systemd_unit", LabelNames: []string{"name"}},
			{Type: "file", LabelNames: []string{"path"}},
			{Type: "machine", LabelNames: []string{"name"}},
			{Type: "mac_range"},
			{Type: "boot"},
			{Type: "volume", LabelNames: []string{"path"}},
			{Type: "load_balancer", LabelNames: []string{"name"}},
		},
	}
	systemdUnitSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "content"},
			{Name: "enabled"},
		},
	}
	fileSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "content", Required: true},
			{Name: "mode"},
			{Name: "owner"},
		},
	}
)

// decodeNodeGroup decodes a node_group block. It also returns the range of
// desired_capacity, for checks on the total across groups.
func decodeNodeGroup(block *hcl.Block, ctx *hcl.EvalContext, dir string) (NodeGroup, hcl.Range, hcl.Diagnostics) {
	g := NodeGroup{Name: block.Labels[0], MaxSize: noMaxSize, Userdata: templates.FormatIgnition, DeclRange: block.DefRange}
	diags := checkName(block, "node_group")

	content, d := block.Body.Content(nodeGroupSchema)
	diags = append(diags, d...)

	capRange := block.DefRange
	capAttr, d := decodeAttr(content, "desired_capacity", ctx, &g.DesiredCapacity)
	diags = append(diags, d...)
	if capAttr != nil {
		capRange = capAttr.Expr.Range()
		if g.DesiredCapacity < 0 {
			diags = append(diags, attrError(capAttr, "Invalid desired_capacity",
				fmt.Sprintf("desired_capacity must be 0 or more, got %d.", g.DesiredCapacity)))
			g.DesiredCapacity = 0
			capAttr = nil // reported; no bounds checks against it
		}
	}
	diags = append(diags, g.decodeSize(content, ctx, capAttr)...)

	attr, d := decodeAttr(content, "metadata", ctx, &g.Metadata)
	diags = append(diags, d...)
	if attr != nil {
		diags = append(diags, checkMetadata(attr, ctx, g.Metadata)...)
	}

	var format string
	attr, d = decodeAttr(content, "userdata", ctx, &format)
	diags = append(diags, d...)
	if attr != nil {
		switch f := templates.Format(format); f {
		case templates.FormatIgnition, templates.FormatCloudConfig:
			g.Userdata = f
		default:
			diags = append(diags, attrError(attr, "Invalid userdata",
				fmt.Sprintf("userdata must be %q or %q, got %q.", templates.FormatIgnition, templates.FormatCloudConfig, format)))
		}
	}

	units := make(map[string]*hcl.Block)
	files := make(map[string]*hcl.Block)
	for _, b := range content.Blocks {
		switch b.Type {
		case "systemd_unit":
			// A duplicate is reported before its body is read: one
			// diagnostic for it, not one per problem in a copy.
			if first, ok := units[b.Labels[0]]; ok {
				diags = append(diags, duplicateIn(b, first, g.Name))
				continue
			}
			units[b.Labels[0]] = b
			u, d := decodeSystemdUnit(b, ctx)
			diags = append(diags, d...)
			g.Units = append(g.Units, u)
		case "file":
			if first, ok := files[b.Labels[0]]; ok {
				diags = append(diags, duplicateIn(b, first, g.Name))
				continue
			}
			files[b.Labels[0]] = b
			f, d := decodeFile(b, ctx)
			diags = append(diags, d...)
			g.Files = append(g.Files, f)
		}
	}
	diags = append(diags, decodePXEGroup(content, ctx, dir, &g)...)
	diags = append(diags, decodeAWSGroup(content, ctx, &g)...)
	return g, capRange, diags
}

// decodeSize decodes min_size and max_size and checks them against each
// other and against desired_capacity, whose attribute is capAttr (nil when
// it is not set or already reported).
func (g *NodeGroup) decodeSize(content *hcl.BodyContent, ctx *hcl.EvalContext, capAttr *hcl.Attribute) hcl.Diagnostics {
	var diags hcl.Diagnostics
	decodeBound := func(name string, target *int, unset int) *hcl.Attribute {
		attr, d := decodeAttr(content, name, ctx, target)
		diags = append(diags, d...)
		if attr != nil && *target < 0 {
			diags = append(diags, attrError(attr, "Invalid "+name,
				fmt.Sprintf("%s must be 0 or more, got %d.", name, *target)))
			attr = nil
		}
		if attr == nil {
			*target = unset
		}
		return attr
	}
	minAttr := decodeBound("min_size", &g.MinSize, 0)
	maxAttr := decodeBound("max_size", &g.MaxSize, noMaxSize)

	if minAttr != nil && maxAttr != nil && g.MinSize > g.MaxSize {
		// Which bound desired_capacity breaks means nothing until the
		// bounds agree.
		return append(diags, attrError(maxAttr, "Invalid max_size",
			fmt.Sprintf("max_size %d is below min_size %d of node group %q.", g.MaxSize, g.MinSize, g.Name)))
	}
	if capAttr == nil {
		return diags
	}
	switch {
	case minAttr != nil && g.DesiredCapacity < g.MinSize:
		diags = append(diags, attrError(capAttr, "Invalid desired_capacity",
			fmt.Sprintf("desired_capacity %d is below min_size %d of node group %q.", g.DesiredCapacity, g.MinSize, g.Name)))
	case maxAttr != nil && g.DesiredCapacity > g.MaxSize:
		diags = append(diags, attrError(capAttr, "Invalid desired_capacity",
			fmt.Sprintf("desired_capacity %d is above max_size %d of node group %q.", g.DesiredCapacity, g.MaxSize, g.Name)))
	}
	return diags
}

// duplicateIn reports block, a systemd_unit or file block, as a repeat of
// first in the same node group.
func duplicateIn(block, first *hcl.Block, group string) *hcl.Diagnostic {
	what := fmt.Sprintf("%s %q", block.Type, block.Labels[0])
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Duplicate " + what,
		Detail: fmt.Sprintf("Node group %q already has a %s at %s; remove one of them.",
			group, what, position(first.DefRange)),
		Subject: block.LabelRanges[0].Ptr(),
		Context: block.DefRange.Ptr(),
	}
}

// unitSuffixes are the unit types a systemd_unit may be.
var unitSuffixes = []string{
	".service", ".socket", ".timer", ".path", ".mount", ".automount",
	".target", ".slice", ".swap", ".device", ".scope",
}

// maxUnitNameLen is systemd's UNIT_NAME_MAX, less the terminating NUL.
const maxUnitNameLen = 255

// checkUnitName says what is wrong with a systemd unit name, or "".
func checkUnitName(name string) string {
	dot := strings.LastIndexByte(name, '.')
	switch {
	case strings.Contains(name, "/"):
		return fmt.Sprintf("unit name %q must not contain '/'; it names a file in /etc/systemd/system.", name)
	case dot < 0 || !slices.Contains(unitSuffixes, name[dot:]):
		return fmt.Sprintf("unit name %q must end in one of %s.", name, strings.Join(unitSuffixes, " "))
	case dot == 0:
		return fmt.Sprintf("unit name %q has nothing before its suffix.", name)
	case len(name) > maxUnitNameLen:
		return fmt.Sprintf("unit name %q is longer than %d characters.", name, maxUnitNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(":-_.\\@", r)) {
			return fmt.Sprintf("unit name %q may contain only letters, digits and \":-_.\\@\", not %q.", name, r)
		}
	}
	return ""
}

// hasInstallSection reports whether a unit file has an [Install] section.
func hasInstallSection(content string) bool {
	for line := range strings.Lines(content) {
		if strings.TrimSpace(line) == "[Install]" {
			return true
		}
	}
	return false
}

func decodeSystemdUnit(block *hcl.Block, ctx *hcl.EvalContext) (templates.Unit, hcl.Diagnostics) {
	u := templates.Unit{Name: block.Labels[0]}
	content, diags := block.Body.Content(systemdUnitSchema)
	if problem := checkUnitName(u.Name); problem != "" {
		diags = append(diags, labelError(block, "Invalid systemd_unit name", problem))
	}

	contentAttr, d := decodeAttr(content, "content", ctx, &u.Content)
	diags = append(diags, d...)
	enabledAttr, d := decodeAttr(content, "enabled", ctx, &u.Enabled)
	diags = append(diags, d...)
	if len(diags) > 0 {
		return u, diags
	}
	_, hasContent := content.Attributes["content"]
	switch {
	case u.Enabled && contentAttr != nil && !hasInstallSection(u.Content):
		diags = append(diags, attrError(enabledAttr, "Unit cannot be enabled",
			fmt.Sprintf("%s has no [Install] section, and enabling a unit needs one: WantedBy= in [Install] names the target "+
				"that starts it. Add \"[Install]\\nWantedBy=multi-user.target\" to content, or drop enabled.", u.Name)))
	case !u.Enabled && !hasContent:
		diags = append(diags, labelError(block, "Unit does nothing",
			fmt.Sprintf("systemd_unit %q has neither content nor enabled = true, so it would do nothing; "+
				"set content to write the unit, enabled = true to enable it, or remove the block.", u.Name)))
	}
	return u, diags
}

// maxFileMode is the most a file block may ask for: Ignition cannot set
// the setuid, setgid and sticky bits.
const maxFileMode = 0o777

func decodeFile(block *hcl.Block, ctx *hcl.EvalContext) (templates.File, hcl.Diagnostics) {
	f := templates.File{Path: block.Labels[0]}
	content, diags := block.Body.Content(fileSchema)
	switch p := f.Path; {
	case !path.IsAbs(p):
		diags = append(diags, labelError(block, "Invalid file path",
			fmt.Sprintf("file path %q must be absolute, such as \"/etc/motd\".", p)))
	case p == "/":
		diags = append(diags, labelError(block, "Invalid file path", `file path "/" is the root directory, not a file.`))
	case path.Clean(p) != p:
		diags = append(diags, labelError(block, "Invalid file path",
			fmt.Sprintf("file path %q is not clean; did you mean %q?", p, path.Clean(p))))
	}

	var s string
	attr, d := decodeAttr(content, "content", ctx, &s)
	diags = append(diags, d...)
	if attr != nil {
		f.Content = []byte(s)
	}

	// A number converts to its decimal digits, which are read as octal, as
	// chmod reads them: HCL has no octal literals, so mode = 0644 is the
	// number 644.
	var mode string
	attr, d = decodeAttr(content, "mode", ctx, &mode)
	diags = append(diags, d...)
	if attr != nil {
		m, err := strconv.ParseUint(strings.TrimPrefix(mode, "0o"), 8, 32)
		switch {
		case err != nil || mode == "":
			diags = append(diags, attrError(attr, "Invalid mode",
				fmt.Sprintf(`mode must be octal permission bits such as "0644", got %q.`, mode)))
		case m > maxFileMode:
			diags = append(diags, attrError(attr, "Invalid mode",
				fmt.Sprintf("mode must be at most 0777, got %#o: Ignition cannot set the setuid, setgid or sticky bits.", m)))
		default:
			f.Mode = os.FileMode(m)
		}
	}

	attr, d = decodeAttr(content, "owner", ctx, &f.Owner)
	diags = append(diags, d...)
	if attr != nil && !validOwner(f.Owner) {
		diags = append(diags, attrError(attr, "Invalid owner",
			fmt.Sprintf(`owner must be "user" or "user:group", got %q.`, f.Owner)))
	}
	return f, diags
}

// validOwner reports whether s is "user" or "user:group", each part a name
// or id without spaces.
func validOwner(s string) bool {
	parts := strings.Split(s, ":")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return false
		}
	}
	return true
}
