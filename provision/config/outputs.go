package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Output is a value the file exports, which `provision output` shows. Its
// expression may refer to cluster, the live cluster, so it is evaluated
// only when that is known, by EvalOutputs.
type Output struct {
	Name        string
	Description string
	// Sensitive outputs are not shown unless asked for by name.
	Sensitive bool
	Expr      hcl.Expression
	DeclRange hcl.Range
}

// Machine is one machine of the live cluster, as outputs see it in
// cluster.machines.
type Machine struct {
	Name     string
	Group    string
	IP       string
	Metadata map[string]string // nil: none
}

var (
	machineType = cty.Object(map[string]cty.Type{
		"name": cty.String, "group": cty.String, "ip": cty.String, "metadata": cty.Map(cty.String),
	})
	clusterType = cty.Object(map[string]cty.Type{"name": cty.String, "machines": cty.List(machineType)})

	outputSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "value", Required: true},
			{Name: "description"},
			{Name: "sensitive"},
		},
	}
)

// ClusterValue is the cluster object outputs refer to: the cluster's name
// and its machines, in the order given.
func ClusterValue(name string, machines []Machine) cty.Value {
	list := make([]cty.Value, len(machines))
	for i, m := range machines {
		md := cty.MapValEmpty(cty.String)
		if len(m.Metadata) > 0 {
			vals := make(map[string]cty.Value, len(m.Metadata))
			for k, v := range m.Metadata {
				vals[k] = cty.StringVal(v)
			}
			md = cty.MapVal(vals)
		}
		list[i] = cty.ObjectVal(map[string]cty.Value{
			"name": cty.StringVal(m.Name), "group": cty.StringVal(m.Group), "ip": cty.StringVal(m.IP), "metadata": md,
		})
	}
	ms := cty.ListValEmpty(machineType)
	if len(list) > 0 {
		ms = cty.ListVal(list)
	}
	return cty.ObjectVal(map[string]cty.Value{"name": cty.StringVal(name), "machines": ms})
}

// decodeOutputs decodes the output blocks, in file order. Each value is
// evaluated once with cluster unknown, so that everything but what depends
// on the live cluster (a bad reference, a function's error, a type error)
// is reported when the file is read rather than after apply.
func decodeOutputs(blocks hcl.Blocks, ctx *hcl.EvalContext) ([]Output, hcl.Diagnostics) {
	var outputs []Output
	var diags hcl.Diagnostics
	seen := map[string]hcl.Range{}
	trial := outputContext(ctx, cty.UnknownVal(clusterType))
	for _, block := range blocks {
		o := Output{Name: block.Labels[0], DeclRange: block.DefRange}
		if !hclsyntax.ValidIdentifier(o.Name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid output name",
				Detail:   fmt.Sprintf("Output name %q must start with a letter or underscore and contain only letters, digits, underscores and hyphens.", o.Name),
				Subject:  block.LabelRanges[0].Ptr(),
			})
			continue
		}
		if first, ok := seen[o.Name]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate output",
				Detail:   fmt.Sprintf("An output named %q is already defined at %s; output names must be unique.", o.Name, position(first)),
				Subject:  block.DefRange.Ptr(),
			})
			continue
		}
		seen[o.Name] = block.DefRange
		content, d := block.Body.Content(outputSchema)
		diags = append(diags, d...)
		if attr, ok := content.Attributes["description"]; ok {
			diags = append(diags, gohcl.DecodeExpression(attr.Expr, nil, &o.Description)...)
		}
		if attr, ok := content.Attributes["sensitive"]; ok {
			diags = append(diags, gohcl.DecodeExpression(attr.Expr, nil, &o.Sensitive)...)
		}
		attr, ok := content.Attributes["value"]
		if !ok {
			continue
		}
		o.Expr = attr.Expr
		outputs = append(outputs, o)
		if d := checkOutputRoots(attr.Expr); d.HasErrors() {
			diags = append(diags, d...)
			continue
		}
		val, d := evalExpr(attr.Expr, trial)
		diags = append(diags, d...)
		if !d.HasErrors() {
			diags = append(diags, o.checkSensitive(val)...)
		}
	}
	return outputs, diags
}

// checkOutputRoots reports references to anything but var, local and
// cluster: an output sees only those.
func checkOutputRoots(expr hcl.Expression) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, t := range expr.Variables() {
		switch t.RootName() {
		case "var", "local", "cluster":
			continue
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid reference in output",
			Detail:   fmt.Sprintf("An output can refer to var.*, local.* and cluster.*, not to %q.", t.RootName()),
			Subject:  t.SourceRange().Ptr(),
		})
	}
	return diags
}

// checkSensitive refuses an output that shows a sensitive variable's value
// without being marked sensitive itself, as Terraform does, so a secret is
// never printed by accident.
func (o *Output) checkSensitive(val cty.Value) hcl.Diagnostics {
	if o.Sensitive {
		return nil
	}
	if _, marks := val.UnmarkDeep(); !marks.Has(sensitive) {
		return nil
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Output refers to sensitive values",
		Detail:   fmt.Sprintf("Output %q shows the value of a sensitive variable; add sensitive = true to the output block to confirm that it may be shown.", o.Name),
		Subject:  o.Expr.Range().Ptr(),
	}}
}

// outputContext is ctx with cluster added.
func outputContext(ctx *hcl.EvalContext, cluster cty.Value) *hcl.EvalContext {
	vars := maps.Clone(ctx.Variables)
	vars["cluster"] = cluster
	return &hcl.EvalContext{Variables: vars, Functions: ctx.Functions}
}

// EvalOutputs evaluates the named outputs, or all of them when no name is
// given, with cluster as the live cluster (see ClusterValue). The values
// are unmarked; an Output's Sensitive says whether to show it.
func (c *Config) EvalOutputs(cluster cty.Value, names ...string) (map[string]cty.Value, *Diagnostics) {
	var diags hcl.Diagnostics
	selected := c.Outputs
	if len(names) > 0 {
		selected = nil
		for _, name := range names {
			i := slices.IndexFunc(c.Outputs, func(o Output) bool { return o.Name == name })
			if i < 0 {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Unknown output",
					Detail:   fmt.Sprintf("%s declares no output %q; it declares: %s.", c.Filename, name, c.outputNames()),
				})
				continue
			}
			selected = append(selected, c.Outputs[i])
		}
	}
	ctx := outputContext(c.ctx, cluster)
	values := make(map[string]cty.Value, len(selected))
	for _, o := range selected {
		val, d := evalExpr(o.Expr, ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		if d := o.checkSensitive(val); d.HasErrors() {
			diags = append(diags, d...)
			continue
		}
		values[o.Name], _ = val.UnmarkDeep()
	}
	return values, newDiagnostics(diags, c.files)
}

func (c *Config) outputNames() string {
	if len(c.Outputs) == 0 {
		return "none"
	}
	names := make([]string, len(c.Outputs))
	for i, o := range c.Outputs {
		names[i] = o.Name
	}
	return strings.Join(names, ", ")
}
