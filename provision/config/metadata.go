package config

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
)

// Metadata is written out as fleet-style "key=value" pairs joined by commas
// (MachineMetadata=role=web,disk=ssd), so keys are restricted to a safe set
// and values may contain neither separator.
var metadataKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// checkMetadata reports every bad key and value of the metadata attribute,
// in key order.
func checkMetadata(attr *hcl.Attribute, ctx *hcl.EvalContext, md map[string]string) hcl.Diagnostics {
	entries, diags := literalEntries(attr.Expr, ctx)
	for _, k := range slices.Sorted(maps.Keys(md)) {
		v := md[k]
		e, ok := entries[k]
		if !ok {
			e = entry{key: attr.Expr.Range(), value: attr.Expr.Range()}
		}
		if !metadataKeyRE.MatchString(k) {
			diags = append(diags, metadataError(attr, e.key,
				fmt.Sprintf("metadata key %q may contain only letters, digits, '_', '.' and '-'.", k)))
		}
		switch {
		case v == "":
			diags = append(diags, metadataError(attr, e.value,
				fmt.Sprintf("metadata value for %q must not be empty.", k)))
		case strings.ContainsAny(v, ",="):
			diags = append(diags, metadataError(attr, e.value,
				fmt.Sprintf("metadata value %q for %q must not contain ',' or '='.", v, k)))
		}
	}
	return diags
}

func metadataError(attr *hcl.Attribute, subject hcl.Range, detail string) *hcl.Diagnostic {
	d := attrError(attr, "Invalid metadata", detail)
	d.Subject = subject.Ptr()
	return d
}

// entry locates one key = value pair of a literal object.
type entry struct{ key, value hcl.Range }

// literalEntries locates each key of a literal object expression, so that a
// diagnostic can point at the one bad key or value. It also reports keys
// written twice, which HCL would otherwise resolve silently in favour of the
// last. For any other kind of expression, such as a reference, it finds
// nothing.
func literalEntries(expr hcl.Expression, ctx *hcl.EvalContext) (map[string]entry, hcl.Diagnostics) {
	pairs, diags := hcl.ExprMap(expr)
	if diags.HasErrors() {
		return nil, nil
	}
	entries := make(map[string]entry, len(pairs))
	var dups hcl.Diagnostics
	for _, kv := range pairs {
		var k string
		if gohcl.DecodeExpression(kv.Key, ctx, &k).HasErrors() {
			continue // already reported when the whole object was decoded
		}
		if first, ok := entries[k]; ok {
			dups = append(dups, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate metadata key",
				Detail:   fmt.Sprintf("metadata key %q is already set at %s; remove one of them.", k, position(first.key)),
				Subject:  kv.Key.Range().Ptr(),
				Context:  expr.Range().Ptr(),
			})
		}
		entries[k] = entry{key: kv.Key.Range(), value: kv.Value.Range()}
	}
	return entries, dups
}
