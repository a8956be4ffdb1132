// Package config reads and validates the HCL file that describes a Corral
// cluster, and turns it into a typed model for the rest of provision.
//
// A file has one cluster block, one provider block and one or more
// node_group blocks:
//
//	cluster "local" {
//	  etcd_members = 3
//	  machine_ttl  = "10s"
//	}
//	provider "local" {
//	  cidr = "10.77.0.0/24"
//	}
//	node_group "core" {
//	  desired_capacity = 3
//	  metadata         = { role = "web" }
//	}
//
// provider "ssh" runs the nodes on existing machines instead (see ssh.go).
// A node_group may also set its userdata format, min_size and max_size, and
// the systemd_unit and file blocks its machines boot with (see
// nodegroup.go); the cluster block may set ssh_authorized_keys.
//
// Optional service blocks name units that up submits and starts through
// clusterd once the nodes are up (see services.go).
//
// Around those, the language of Terraform-style HCL: variable blocks set
// with -var, -var-file and CORRAL_VAR_ inputs, locals, output blocks that
// may also refer to the live cluster, and the functions users expect
// (see functions.go). Every attribute is an expression over var, local and
// those functions.
//
// Every problem is reported as an HCL diagnostic that points at the offending
// block or attribute, and all of them are reported in one pass, so a user can
// fix a file in one round trip.
package config

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// Config is a validated cluster description.
type Config struct {
	// Filename is the name the file was loaded or parsed under; positions in
	// the DeclRange fields refer to it.
	Filename   string
	Cluster    Cluster
	Provider   Provider
	NodeGroups []NodeGroup // in file order
	Network    *Network    // nil: no overlay
	Logs       *Logs       // nil: no log shipping
	Backup     *Backup     // nil: no scheduled snapshots (see backup.go)
	DeployHook *DeployHook // nil: no deploy webhook (see deployhook.go)
	Variables  []Variable  // in file order, with their values
	// Locals are the values of the locals blocks, by name.
	Locals  map[string]cty.Value
	Outputs []Output // in file order; see EvalOutputs
	// Services are the units up runs through clusterd, in file order;
	// see Units.
	Services []Service
	// BackupBucket and LogGroup are the backup_bucket and log_group blocks
	// of provider "aws" (see aws.go): nil when absent, but with that
	// provider never nil, as they have defaults.
	BackupBucket *BackupBucket
	LogGroup     *LogGroup

	// ctx is what the file's expressions were evaluated in; outputs are
	// evaluated in it later. files are the parsed sources (the file, its
	// var files and -var values), to show in diagnostics.
	ctx   *hcl.EvalContext
	files map[string]*hcl.File
}

// Cluster holds the cluster-wide settings.
type Cluster struct {
	// Name is the cluster block's label; state lives in .corral/<Name>/.
	Name string
	// EtcdMembers is how many nodes run a voting etcd member: 1, 3, 5 or 7.
	EtcdMembers int
	// MachineTTL is how long a machine may miss heartbeats before the
	// cluster considers it gone.
	MachineTTL time.Duration
	// SSHAuthorizedKeys are the public keys, in authorized_keys format,
	// that may log in to every node as its default user; trailing newlines
	// are trimmed, so file("~/.ssh/id_ed25519.pub") works. Nil when not set.
	SSHAuthorizedKeys []string
}

// Node is one machine the config asks for: "<group>-<n>", n from 1.
type Node struct {
	Name     string
	Group    string
	Index    int
	Metadata map[string]string
}

// Nodes lists every machine the config asks for: groups in file order, and
// within a group n = 1..desired_capacity. Each Node has its own copy of the
// group's metadata.
func (c *Config) Nodes() []Node {
	nodes := make([]Node, 0, c.totalCapacity())
	for _, g := range c.NodeGroups {
		for n := 1; n <= g.DesiredCapacity; n++ {
			nodes = append(nodes, Node{
				Name:     g.Name + "-" + strconv.Itoa(n),
				Group:    g.Name,
				Index:    n,
				Metadata: maps.Clone(g.Metadata),
			})
		}
	}
	return nodes
}

func (c *Config) totalCapacity() int {
	total := 0
	for _, g := range c.NodeGroups {
		total += g.DesiredCapacity
	}
	return total
}

// Defaults and limits of the cluster block.
const (
	defaultEtcdMembers = 3
	defaultMachineTTL  = 10 * time.Second
	// A TTL below 2s makes heartbeats race ordinary GC pauses and network
	// jitter; above 5m a dead machine's units stay unscheduled too long.
	minMachineTTL = 2 * time.Second
	maxMachineTTL = 5 * time.Minute
	// Names become host names and parts of node names (<group>-<n>), so they
	// must be DNS labels, short enough to leave room for the suffix.
	maxNameLen = 40
)

var nameRE = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)

var (
	rootSchema = &hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "cluster", LabelNames: []string{"name"}},
			{Type: "provider", LabelNames: []string{"type"}},
			{Type: "node_group", LabelNames: []string{"name"}},
			{Type: "network"},
			{Type: "logs"},
			{Type: "backup"},
			{Type: "deploy_hook"},
			{Type: "variable", LabelNames: []string{"name"}},
			{Type: "locals"},
			{Type: "output", LabelNames: []string{"name"}},
			{Type: "service", LabelNames: []string{"name"}},
			{Type: "backup_bucket"},
			{Type: "log_group"},
		},
	}
	clusterSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "etcd_members"},
			{Name: "machine_ttl"},
			{Name: "ssh_authorized_keys"},
		},
	}
)

// Load reads and parses the file at path, with the variables' values from
// in. See Parse.
func Load(path string, in Inputs) (*Config, *Diagnostics) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, &Diagnostics{Diags: hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read file",
			Detail:   err.Error(),
		}}}
	}
	return Parse(src, path, in)
}

// Parse parses and validates src, naming it filename in diagnostics, with
// the variables' values from in. Paths in file functions are relative to
// filename's directory. The Config is nil when there are errors. The
// Diagnostics are nil when there is nothing at all to report.
func Parse(src []byte, filename string, in Inputs) (*Config, *Diagnostics) {
	parser := hclparse.NewParser()
	file, diags := parser.ParseHCL(src, filename)
	if diags.HasErrors() {
		// The body of a file with syntax errors is partial; decoding it
		// would only add confusing follow-on errors.
		return nil, newDiagnostics(diags, parser.Files())
	}
	cfg, more := decode(file.Body, filename, in, parser)
	diags = append(diags, more...)
	if diags.HasErrors() {
		cfg = nil
	}
	return cfg, newDiagnostics(diags, parser.Files())
}

// evaluate works out the language around the cluster's blocks: the
// variables' values, then the locals, into the context every other
// expression is evaluated in; and it checks the outputs.
func evaluate(content *hcl.BodyContent, filename string, in Inputs, parser *hclparse.Parser, cfg *Config) (*hcl.EvalContext, hcl.Diagnostics) {
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{},
		Functions: functions(filepath.Dir(filename)),
	}
	vars, diags := decodeVariables(content.Blocks.OfType("variable"))
	given, incomplete, d := collectInputs(in, vars, parser, filename)
	diags = append(diags, d...)
	for _, v := range vars {
		diags = append(diags, v.resolve(given[v.Name], incomplete, ctx)...)
		cfg.Variables = append(cfg.Variables, v.Variable)
	}
	ctx.Variables["var"] = varObject(vars)

	locals, d := decodeLocals(content.Blocks.OfType("locals"))
	diags = append(diags, d...)
	diags = append(diags, evalLocals(locals, ctx)...)
	if vals := ctx.Variables["local"].AsValueMap(); len(vals) > 0 {
		cfg.Locals = make(map[string]cty.Value, len(vals))
		for name, v := range vals {
			cfg.Locals[name], _ = v.UnmarkDeep()
		}
	}

	cfg.Outputs, d = decodeOutputs(content.Blocks.OfType("output"), ctx)
	return ctx, append(diags, d...)
}

// decode turns the file's body into a Config, reporting every problem it
// finds rather than stopping at the first.
func decode(body hcl.Body, filename string, in Inputs, parser *hclparse.Parser) (*Config, hcl.Diagnostics) {
	cfg := &Config{Filename: filename, files: parser.Files()}
	content, diags := body.Content(rootSchema)
	ctx, d := evaluate(content, filename, in, parser, cfg)
	diags = append(diags, d...)
	cfg.ctx = ctx

	// Blocks a file has at most one of: a second is reported against the
	// first, before its body is read.
	single := map[string]*hcl.Block{}
	once := map[string]bool{"cluster": true, "provider": true, "network": true, "logs": true,
		"deploy_hook": true, "backup": true, "backup_bucket": true, "log_group": true}
	groups := make(map[string]*hcl.Block)
	services := make(map[string]*hcl.Block)
	// capacityRanges[i] locates NodeGroups[i].DesiredCapacity, so provider
	// limits on the total can point at the group that crosses them.
	var capacityRanges []hcl.Range

	for _, block := range content.Blocks {
		if once[block.Type] {
			if first := single[block.Type]; first != nil {
				diags = append(diags, duplicate(block, first))
				continue
			}
			single[block.Type] = block
		}
		var d hcl.Diagnostics
		switch block.Type {
		case "cluster":
			d = decodeCluster(block, ctx, &cfg.Cluster)
		case "provider":
			d = decodeProvider(block, ctx, filepath.Dir(filename), &cfg.Provider)
		case "network":
			cfg.Network, d = decodeNetwork(block, ctx)
		case "logs":
			cfg.Logs, d = decodeLogs(block, ctx)
		case "deploy_hook":
			cfg.DeployHook, d = decodeDeployHook(block, ctx)
		case "backup":
			cfg.Backup, d = decodeBackup(block, ctx)
		case "backup_bucket", "log_group":
			d = decodeAWSBlock(block, ctx, cfg)
		case "node_group":
			g, capRange, gd := decodeNodeGroup(block, ctx, filepath.Dir(filename))
			diags = append(diags, gd...)
			if first, ok := groups[g.Name]; ok {
				diags = append(diags, duplicate(block, first))
				continue
			}
			groups[g.Name] = block
			cfg.NodeGroups = append(cfg.NodeGroups, g)
			capacityRanges = append(capacityRanges, capRange)
		case "service":
			// A duplicate is reported before its body is read: one
			// diagnostic for it, not one per problem in a copy.
			if first, ok := services[block.Labels[0]]; ok {
				diags = append(diags, duplicate(block, first))
				continue
			}
			services[block.Labels[0]] = block
			var s Service
			s, d = decodeService(block, ctx, filepath.Dir(filename))
			cfg.Services = append(cfg.Services, s)
		}
		diags = append(diags, d...)
	}

	cluster, provider := single["cluster"], single["provider"]
	if cluster == nil {
		diags = append(diags, missing(filename, "cluster",
			`A file describes exactly one cluster; add cluster "local" { } at the top.`))
	}
	if provider == nil {
		diags = append(diags, missing(filename, "provider",
			`A cluster needs exactly one provider; add provider "local" { } to run it on this machine.`))
	}
	if len(content.Blocks.OfType("node_group")) == 0 {
		diags = append(diags, missing(filename, "node_group",
			`A cluster needs at least one node_group; add node_group "core" { desired_capacity = 3 }.`))
	}
	diags = append(diags, checkPXE(&cfg.Provider, cfg.NodeGroups, capacityRanges)...)
	diags = append(diags, checkAWS(cfg)...)
	diags = append(diags, checkBackup(cfg)...)
	if l := cfg.Provider.limiter(); l != nil {
		diags = append(diags, checkCapacity(l, cfg.NodeGroups, capacityRanges)...)
	}
	if cfg.Network != nil {
		diags = append(diags, cfg.Network.checkOverlap(&cfg.Provider)...)
	}
	return cfg, diags
}

func decodeCluster(block *hcl.Block, ctx *hcl.EvalContext, c *Cluster) hcl.Diagnostics {
	c.Name = block.Labels[0]
	c.EtcdMembers = defaultEtcdMembers
	c.MachineTTL = defaultMachineTTL
	diags := checkName(block, "cluster")

	content, d := block.Body.Content(clusterSchema)
	diags = append(diags, d...)

	attr, d := decodeAttr(content, "etcd_members", ctx, &c.EtcdMembers)
	diags = append(diags, d...)
	if attr != nil {
		switch c.EtcdMembers {
		case 1, 3, 5, 7:
		default:
			// An even count adds a member without adding fault
			// tolerance, and more than 7 slows every write.
			diags = append(diags, attrError(attr, "Invalid etcd_members",
				fmt.Sprintf("etcd_members must be 1, 3, 5 or 7, got %d.", c.EtcdMembers)))
		}
	}

	var ttl string
	attr, d = decodeAttr(content, "machine_ttl", ctx, &ttl)
	diags = append(diags, d...)
	if attr != nil {
		var err error
		if c.MachineTTL, err = time.ParseDuration(ttl); err != nil {
			diags = append(diags, attrError(attr, "Invalid machine_ttl",
				fmt.Sprintf(`machine_ttl must be a duration such as "10s" or "1m30s", got %q.`, ttl)))
		} else if c.MachineTTL < minMachineTTL || c.MachineTTL > maxMachineTTL {
			diags = append(diags, attrError(attr, "Invalid machine_ttl",
				fmt.Sprintf("machine_ttl must be between %v and %v, got %v.", minMachineTTL, maxMachineTTL, c.MachineTTL)))
		}
	}

	attr, d = decodeAttr(content, "ssh_authorized_keys", ctx, &c.SSHAuthorizedKeys)
	diags = append(diags, d...)
	if attr != nil {
		diags = append(diags, checkAuthorizedKeys(attr, c.SSHAuthorizedKeys)...)
	}
	return diags
}

// checkName reports a block label that is not a lowercase DNS label.
func checkName(block *hcl.Block, kind string) hcl.Diagnostics {
	name := block.Labels[0]
	if len(name) <= maxNameLen && nameRE.MatchString(name) {
		return nil
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Invalid " + kind + " name",
		Detail: fmt.Sprintf("%s name %q must be a lowercase DNS label: letters a-z, digits and hyphens, "+
			"starting with a letter, ending with a letter or digit, at most %d characters.", kind, name, maxNameLen),
		Subject: block.LabelRanges[0].Ptr(),
		Context: block.DefRange.Ptr(),
	}}
}

// decodeAttr decodes the named attribute, if it is set, into target. It
// returns the attribute only when it is set and decoded, so the caller can
// validate the value and point at it.
func decodeAttr(content *hcl.BodyContent, name string, ctx *hcl.EvalContext, target any) (*hcl.Attribute, hcl.Diagnostics) {
	attr, ok := content.Attributes[name]
	if !ok {
		return nil, nil
	}
	val, diags := evalExpr(attr.Expr, ctx)
	if diags.HasErrors() {
		// The value is unknown; converting it would only add noise.
		return nil, diags
	}
	// Sensitivity matters to outputs, not to the cluster's own settings.
	val, _ = val.UnmarkDeep()
	if !val.IsWhollyKnown() {
		// It depends on a variable or local whose value failed, which is
		// reported already: values are unknown only then.
		return nil, diags
	}
	ty, err := gocty.ImpliedType(target)
	if err != nil {
		panic(err) // target is one of this package's field types
	}
	if val, err = convert.Convert(val, ty); err == nil {
		err = gocty.FromCtyValue(val, target)
	}
	if err != nil {
		// Worded as hcldec words it, so that the message names the attribute.
		return nil, append(diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     "Incorrect attribute value type",
			Detail:      fmt.Sprintf("Inappropriate value for attribute %q: %s.", name, err),
			Subject:     attr.Expr.Range().Ptr(),
			Context:     attr.Range.Ptr(),
			Expression:  attr.Expr,
			EvalContext: ctx,
		})
	}
	return attr, diags
}

// attrError is an error about an attribute's value: the value is the
// subject, the whole attribute the context.
func attrError(attr *hcl.Attribute, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  attr.Expr.Range().Ptr(),
		Context:  attr.Range.Ptr(),
	}
}

// duplicate reports block as a repeat of first.
func duplicate(block, first *hcl.Block) *hcl.Diagnostic {
	what := block.Type + " block"
	if block.Type == "node_group" || block.Type == "service" {
		what = fmt.Sprintf("%s %q", block.Type, block.Labels[0])
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Duplicate " + what,
		Detail:   fmt.Sprintf("A %s is already defined at %s; remove one of them.", what, position(first.DefRange)),
		Subject:  block.DefRange.Ptr(),
	}
}

// missing reports an absent block. There is nothing to point at, so the
// subject is the start of the file.
func missing(filename, blockType, detail string) *hcl.Diagnostic {
	start := hcl.Pos{Line: 1, Column: 1}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Missing " + blockType + " block",
		Detail:   detail,
		Subject:  &hcl.Range{Filename: filename, Start: start, End: start},
	}
}
