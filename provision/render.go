package provision

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// renderHCL writes v as it would be written in HCL, over several lines
// when it is a non-empty collection, as `terraform output` shows values:
// a person reads it, and can paste it back into a file.
func renderHCL(b *strings.Builder, v cty.Value, indent string) {
	ty := v.Type()
	switch {
	case v.IsNull():
		b.WriteString("null")
	case !v.IsKnown():
		b.WriteString("(known after apply)")
	case ty == cty.String:
		b.WriteString(quoteHCL(v.AsString()))
	case ty == cty.Number:
		b.WriteString(v.AsBigFloat().Text('f', -1))
	case ty == cty.Bool:
		fmt.Fprint(b, v.True())
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		if v.LengthInt() == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			b.WriteString(indent + "  ")
			renderHCL(b, e, indent+"  ")
			b.WriteString(",\n")
		}
		b.WriteString(indent + "]")
	case ty.IsMapType() || ty.IsObjectType():
		if v.LengthInt() == 0 {
			b.WriteString("{}")
			return
		}
		// Keys in order (cty iterates them sorted), equals signs aligned.
		var keys []string
		var vals []cty.Value
		width := 0
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			key := k.AsString()
			if !hclsyntax.ValidIdentifier(key) {
				key = quoteHCL(key)
			}
			keys, vals = append(keys, key), append(vals, e)
			width = max(width, len(key))
		}
		b.WriteString("{\n")
		for i, key := range keys {
			fmt.Fprintf(b, "%s  %-*s = ", indent, width, key)
			renderHCL(b, vals[i], indent+"  ")
			b.WriteString("\n")
		}
		b.WriteString(indent + "}")
	default:
		fmt.Fprintf(b, "%#v", v)
	}
}

// quoteHCL quotes s as an HCL string literal: JSON's escapes, plus the
// doubled $ and % that keep "${" and "%{" from starting a template.
func quoteHCL(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteString(`\` + string(r))
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		case (r == '$' || r == '%') && strings.HasPrefix(s[i+1:], "{"):
			b.WriteString(string(r) + string(r))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// toJSON is v as JSON. It goes through plain Go values rather than cty's
// own encoding, which wraps values of undecided type (a null, say) in a
// {"value", "type"} object that no reader expects.
func toJSON(v cty.Value) ([]byte, error) {
	return json.Marshal(plain(v))
}

// plain is v as the Go value encoding/json encodes the same way.
func plain(v cty.Value) any {
	ty := v.Type()
	switch {
	case v.IsNull() || !v.IsKnown():
		return nil
	case ty == cty.String:
		return v.AsString()
	case ty == cty.Number:
		return json.Number(v.AsBigFloat().Text('f', -1))
	case ty == cty.Bool:
		return v.True()
	case ty.IsListType() || ty.IsSetType() || ty.IsTupleType():
		out := make([]any, 0, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			out = append(out, plain(e))
		}
		return out
	case ty.IsMapType() || ty.IsObjectType():
		out := make(map[string]any, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			out[k.AsString()] = plain(e)
		}
		return out
	}
	return nil
}
