package config

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// local is one named value of a locals block.
type local struct {
	attr  *hcl.Attribute
	index int      // in file order
	deps  []*local // the declared locals its expression refers to
}

// decodeLocals collects the locals of every locals block, in file order,
// reporting a name defined twice.
func decodeLocals(blocks hcl.Blocks) ([]*local, hcl.Diagnostics) {
	var locals []*local
	var diags hcl.Diagnostics
	seen := map[string]*local{}
	for _, block := range blocks {
		attrs, d := block.Body.JustAttributes()
		diags = append(diags, d...)
		for _, attr := range sortedAttrs(attrs) {
			if first, ok := seen[attr.Name]; ok {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Duplicate local value",
					Detail:   fmt.Sprintf("A local value named %q is already defined at %s; local value names must be unique.", attr.Name, position(first.attr.NameRange)),
					Subject:  attr.NameRange.Ptr(),
				})
				continue
			}
			l := &local{attr: attr, index: len(locals)}
			seen[attr.Name] = l
			locals = append(locals, l)
		}
	}
	for _, l := range locals {
		for _, t := range l.attr.Expr.Variables() {
			if name, _, ok := refName(t); ok && t.RootName() == "local" && seen[name] != nil {
				l.deps = append(l.deps, seen[name])
			}
		}
	}
	return locals, diags
}

// evalLocals evaluates the locals in dependency order with ctx, which has
// var and the functions, and sets ctx's local. A cycle is reported once, at
// the definition of its local that comes first in the file; the locals in
// it, and those that fail, are unknown, so nothing that depends on them is
// reported again.
func evalLocals(locals []*local, ctx *hcl.EvalContext) hcl.Diagnostics {
	values := make(map[string]cty.Value, len(locals))
	for _, l := range locals {
		values[l.attr.Name] = cty.DynamicVal // declared: see checkRefs
	}
	var diags hcl.Diagnostics
	// Strongly connected components come out dependencies first, which
	// is the order to evaluate them in.
	for _, scc := range components(locals) {
		if len(scc) > 1 || slices.Contains(scc[0].deps, scc[0]) {
			diags = append(diags, cycleError(scc))
			continue
		}
		l := scc[0]
		ctx.Variables["local"] = cty.ObjectVal(values)
		val, d := evalExpr(l.attr.Expr, ctx)
		diags = append(diags, d...)
		if !d.HasErrors() {
			values[l.attr.Name] = val
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(values)
	return diags
}

// components are Tarjan's strongly connected components of the locals'
// dependency graph, in reverse topological order: each after every one it
// depends on. Locals are visited in file order, so the order is stable.
func components(locals []*local) [][]*local {
	index := make(map[*local]int, len(locals))
	low := make(map[*local]int, len(locals))
	onStack := map[*local]bool{}
	var stack []*local
	var out [][]*local
	var visit func(l *local)
	visit = func(l *local) {
		index[l] = len(index)
		low[l] = index[l]
		stack = append(stack, l)
		onStack[l] = true
		for _, d := range l.deps {
			if _, seen := index[d]; !seen {
				visit(d)
				low[l] = min(low[l], low[d])
			} else if onStack[d] {
				low[l] = min(low[l], index[d])
			}
		}
		if low[l] == index[l] {
			var scc []*local
			for {
				top := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[top] = false
				scc = append(scc, top)
				if top == l {
					break
				}
			}
			out = append(out, scc)
		}
	}
	for _, l := range locals {
		if _, seen := index[l]; !seen {
			visit(l)
		}
	}
	return out
}

// cycleError names one cycle through the component, from and back to its
// local that comes first in the file, by the shortest path.
func cycleError(scc []*local) *hcl.Diagnostic {
	in := map[*local]bool{}
	start := scc[0]
	for _, l := range scc {
		in[l] = true
		if l.index < start.index {
			start = l
		}
	}
	// Breadth-first from start over the component's edges, until an edge
	// leads back to start.
	prev := map[*local]*local{}
	queue := []*local{start}
	var last *local
	for len(queue) > 0 && last == nil {
		l := queue[0]
		queue = queue[1:]
		for _, d := range l.deps {
			if d == start {
				last = l
				break
			}
			if _, seen := prev[d]; !seen && in[d] {
				prev[d] = l
				queue = append(queue, d)
			}
		}
	}
	path := []string{"local." + start.attr.Name}
	for l := last; l != start; l = prev[l] {
		path = append(path, "local."+l.attr.Name)
	}
	// path is start, then the cycle backwards; put it in reference order.
	for i, j := 1, len(path)-1; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	path = append(path, "local."+start.attr.Name)
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Cycle between local values",
		Detail:   fmt.Sprintf("The local values refer to each other in a cycle: %s. Break the cycle by removing one of the references.", strings.Join(path, " → ")),
		Subject:  start.attr.Range.Ptr(),
	}
}

// sortedAttrs lists a body's attributes in file order.
func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	list := slices.Collect(maps.Values(attrs))
	slices.SortFunc(list, func(a, b *hcl.Attribute) int { return cmp.Compare(a.Range.Start.Byte, b.Range.Start.Byte) })
	return list
}
