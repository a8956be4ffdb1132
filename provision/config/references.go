package config

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// checkRefs reports the references in expr that ctx cannot satisfy, each
// at the reference, in words about the language rather than HCL's generic
// "Unsupported attribute": an undeclared variable or local, a bare var or
// local, and cluster anywhere but in an output (ctx has cluster only when
// it evaluates outputs). Other unknown names are left to HCL's own
// "Unknown variable". The caller does not evaluate an expression with
// errors here, so that nothing is reported twice.
func checkRefs(expr hcl.Expression, ctx *hcl.EvalContext) hcl.Diagnostics {
	if ctx == nil {
		return nil // constants only: HCL reports any reference
	}
	var diags hcl.Diagnostics
	for _, t := range expr.Variables() {
		root := t.RootName()
		obj, ok := ctx.Variables[root]
		switch {
		case root == "cluster" && !ok:
			what := "cluster"
			if name, _, ok := refName(t); ok {
				what += "." + name
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Reference to cluster outside an output",
				Detail:   fmt.Sprintf("%s is known only after apply; use it in an output block.", what),
				Subject:  t.SourceRange().Ptr(),
			})
		case (root == "var" || root == "local") && ok:
			diags = append(diags, checkDeclared(t, obj)...)
		}
	}
	return diags
}

// checkDeclared reports a reference to var or local that does not name a
// member of obj, which holds every declared one.
func checkDeclared(t hcl.Traversal, obj cty.Value) hcl.Diagnostics {
	root := t.RootName()
	name, rng, ok := refName(t)
	if !ok {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid reference",
			Detail:   fmt.Sprintf("A reference to %s must name one, like %s.example.", root, root),
			Subject:  t.SourceRange().Ptr(),
		}}
	}
	if obj.Type().IsObjectType() && obj.Type().HasAttribute(name) {
		return nil
	}
	d := &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Reference to undeclared input variable",
		Detail:   fmt.Sprintf("An input variable named %q has not been declared; declare it with a variable %q {} block.", name, name),
		Subject:  rng.Ptr(),
	}
	if root == "local" {
		d.Summary = "Reference to undeclared local value"
		d.Detail = fmt.Sprintf("A local value named %q has not been declared; define it in a locals block.", name)
	}
	return hcl.Diagnostics{d}
}

// refName is the name a traversal picks out of its root, as in var.name or
// var["name"], and the range of root and name together.
func refName(t hcl.Traversal) (string, hcl.Range, bool) {
	if len(t) < 2 {
		return "", hcl.Range{}, false
	}
	rng := hcl.RangeBetween(t[0].SourceRange(), t[1].SourceRange())
	switch step := t[1].(type) {
	case hcl.TraverseAttr:
		return step.Name, rng, true
	case hcl.TraverseIndex:
		if step.Key.Type() == cty.String && step.Key.IsKnown() && !step.Key.IsNull() {
			return step.Key.AsString(), rng, true
		}
	}
	return "", hcl.Range{}, false
}

// evalExpr evaluates expr after checking its references.
func evalExpr(expr hcl.Expression, ctx *hcl.EvalContext) (cty.Value, hcl.Diagnostics) {
	if diags := checkRefs(expr, ctx); diags.HasErrors() {
		return cty.DynamicVal, diags
	}
	return expr.Value(ctx)
}
