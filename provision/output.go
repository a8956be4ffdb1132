package provision

import (
	"fmt"
	"slices"
	"strings"

	"github.com/corral-dev/corral/provision/config"
	"github.com/zclconf/go-cty/cty"
)

// OutputOptions tune `provision output`.
type OutputOptions struct {
	Options
	Name string // one output; "" for all of them
	JSON bool   // JSON rather than HCL-style text
}

// hidden stands for a sensitive output's value where it is not asked for
// by name.
const hidden = "(sensitive)"

// Output prints the file's outputs, evaluated against the cluster as its
// state records it: all of them as `name = value` lines (or one JSON
// object), or the named one alone, a string as it is and anything else as
// JSON, so that scripts can use it. Sensitive values are shown only when
// asked for by name.
func Output(opts OutputOptions) error {
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	outputs := c.cfg.Outputs
	if opts.Name != "" {
		i := slices.IndexFunc(outputs, func(o config.Output) bool { return o.Name == opts.Name })
		if i < 0 {
			return fmt.Errorf("%s has no output %q; it has: %s", opts.File, opts.Name, outputNames(outputs))
		}
		outputs = outputs[i : i+1]
	}
	if len(c.state.Nodes) == 0 {
		fmt.Fprintf(c.opts.Err, "note: cluster %q has no nodes; cluster.machines is empty\n", c.cfg.Cluster.Name)
	}
	names := make([]string, len(outputs))
	for i, o := range outputs {
		names[i] = o.Name
	}
	values, diags := c.cfg.EvalOutputs(c.clusterValue(), names...)
	if diags != nil {
		diags.WriteTo(c.opts.Err)
	}
	if diags.HasErrors() {
		return ErrInvalidConfig
	}

	if opts.Name != "" {
		v := values[opts.Name]
		if v.Type() == cty.String && !v.IsNull() && !opts.JSON {
			// As it is, ending the line if it does not end one itself.
			s := v.AsString()
			if !strings.HasSuffix(s, "\n") {
				s += "\n"
			}
			fmt.Fprint(c.opts.Out, s)
			return nil
		}
		b, err := toJSON(v)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.opts.Out, "%s\n", b)
		return nil
	}
	if opts.JSON {
		all := cty.EmptyObjectVal
		if len(outputs) > 0 {
			m := make(map[string]cty.Value, len(outputs))
			for _, o := range outputs {
				m[o.Name] = values[o.Name]
				if o.Sensitive {
					m[o.Name] = cty.StringVal(hidden)
				}
			}
			all = cty.ObjectVal(m)
		}
		b, err := toJSON(all)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.opts.Out, "%s\n", b)
		return nil
	}
	var b strings.Builder
	for _, o := range outputs {
		b.WriteString(o.Name + " = ")
		if o.Sensitive {
			b.WriteString(hidden)
		} else {
			renderHCL(&b, values[o.Name], "")
		}
		b.WriteString("\n")
	}
	fmt.Fprint(c.opts.Out, b.String())
	// What the provider made (aws: load balancers, bucket, instances).
	return c.writeProviderOutputs(c.opts.Out)
}

// clusterValue is the cluster as outputs see it: its name and the nodes of
// the state, in the state's order, with their group's metadata as the file
// has it now.
func (c *cluster) clusterValue() cty.Value {
	metadata := map[string]map[string]string{}
	for _, g := range c.cfg.NodeGroups {
		metadata[g.Name] = g.Metadata
	}
	machines := make([]config.Machine, 0, len(c.state.Nodes))
	for _, n := range c.state.Nodes {
		m := config.Machine{Name: n.Name, Group: n.Group, Metadata: metadata[n.Group]}
		if n.IP.IsValid() {
			m.IP = n.IP.String()
		}
		machines = append(machines, m)
	}
	return config.ClusterValue(c.cfg.Cluster.Name, machines)
}

func outputNames(outputs []config.Output) string {
	if len(outputs) == 0 {
		return "none"
	}
	names := make([]string, len(outputs))
	for i, o := range outputs {
		names[i] = o.Name
	}
	return strings.Join(names, ", ")
}
