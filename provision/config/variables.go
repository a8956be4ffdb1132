package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Variable is an input variable the file declares, with the value it has
// for this run.
type Variable struct {
	Name        string
	Description string
	// Type is the type constraint; cty.DynamicPseudoType when the variable
	// has none or says any.
	Type      cty.Type
	Sensitive bool
	// Value is the final value, after inputs, defaults and conversion.
	Value     cty.Value
	DeclRange hcl.Range
}

// variable is a Variable while the file is being read.
type variable struct {
	Variable
	block *hcl.Block
	// typeSet says the block has a type argument: without one, -var and
	// environment values are taken as plain strings.
	typeSet     bool
	defaults    *typeexpr.Defaults // optional() attributes' defaults
	hasDefault  bool
	def         cty.Value
	validations []validation
	failed      bool // its value could not be worked out; already reported
}

// validation is one validation block of a variable.
type validation struct {
	condition, message hcl.Expression
	// invalid says a reference in it is not to the variable itself; that
	// is reported when it is decoded, and it is not evaluated.
	invalid bool
}

var (
	variableSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "type"},
			{Name: "default"},
			{Name: "description"},
			{Name: "sensitive"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "validation"}},
	}
	validationSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "condition", Required: true},
			{Name: "error_message", Required: true},
		},
	}
)

// sensitive marks the values of sensitive variables, and everything
// computed from them, so that diagnostics do not print them (HCL's writer
// skips marked values) and outputs that expose them must say so.
const sensitive = mark("sensitive")

type mark string

// decodeVariables decodes the variable blocks, in file order. Defaults are
// constants: they are evaluated without variables or functions, as in
// Terraform, so a variable's default never depends on another's value.
func decodeVariables(blocks hcl.Blocks) ([]*variable, hcl.Diagnostics) {
	var vars []*variable
	var diags hcl.Diagnostics
	seen := map[string]*variable{}
	for _, block := range blocks {
		v, d := decodeVariable(block)
		diags = append(diags, d...)
		if !hclsyntax.ValidIdentifier(v.Name) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid variable name",
				Detail:   fmt.Sprintf("Variable name %q must start with a letter or underscore and contain only letters, digits, underscores and hyphens.", v.Name),
				Subject:  block.LabelRanges[0].Ptr(),
				Context:  block.DefRange.Ptr(),
			})
			continue
		}
		if first, ok := seen[v.Name]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate variable declaration",
				Detail:   fmt.Sprintf("A variable named %q is already declared at %s; variable names must be unique.", v.Name, position(first.DeclRange)),
				Subject:  block.DefRange.Ptr(),
			})
			continue
		}
		seen[v.Name] = v
		vars = append(vars, v)
	}
	return vars, diags
}

func decodeVariable(block *hcl.Block) (*variable, hcl.Diagnostics) {
	v := &variable{
		Variable: Variable{Name: block.Labels[0], Type: cty.DynamicPseudoType, Value: cty.DynamicVal, DeclRange: block.DefRange},
		block:    block,
	}
	content, diags := block.Body.Content(variableSchema)
	if attr, ok := content.Attributes["type"]; ok {
		ty, defaults, d := typeexpr.TypeConstraintWithDefaults(attr.Expr)
		diags = append(diags, d...)
		if !d.HasErrors() {
			v.Type, v.defaults, v.typeSet = ty, defaults, true
		}
	}
	if attr, ok := content.Attributes["description"]; ok {
		diags = append(diags, gohcl.DecodeExpression(attr.Expr, nil, &v.Description)...)
	}
	if attr, ok := content.Attributes["sensitive"]; ok {
		diags = append(diags, gohcl.DecodeExpression(attr.Expr, nil, &v.Sensitive)...)
	}
	if attr, ok := content.Attributes["default"]; ok {
		v.hasDefault = true
		val, d := attr.Expr.Value(nil)
		diags = append(diags, d...)
		if d.HasErrors() {
			v.failed = true
		} else if v.def, d = v.convert(val, attr.Expr.Range(), "Invalid default value for variable",
			"This default value is not compatible with the variable's type constraint: %s."); d != nil {
			diags = append(diags, d...)
			v.failed = true
		}
	}
	for _, b := range content.Blocks {
		val, d := decodeValidation(v.Name, b)
		diags = append(diags, d...)
		v.validations = append(v.validations, val)
	}
	// A block with a mistake, say "kind" for "type", would otherwise be
	// reported again as, say, a required variable without a value.
	v.failed = v.failed || diags.HasErrors()
	return v, diags
}

// convert converts val to the variable's type, filling in optional
// attributes' defaults first. A failure is reported at subject, with
// detail a format for the reason.
func (v *variable) convert(val cty.Value, subject hcl.Range, summary, detail string) (cty.Value, hcl.Diagnostics) {
	if v.defaults != nil {
		val = v.defaults.Apply(val)
	}
	out, err := convert.Convert(val, v.Type)
	if err != nil {
		return cty.DynamicVal, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  summary,
			Detail:   fmt.Sprintf(detail, convertError(err)),
			Subject:  subject.Ptr(),
		}}
	}
	return out, nil
}

// convertError words a conversion error as Terraform does, naming the part
// of the value that is wrong: `attribute "port": a number is required`.
func convertError(err error) string {
	var pe cty.PathError
	if !errors.As(err, &pe) || len(pe.Path) == 0 {
		return err.Error()
	}
	var b strings.Builder
	for _, step := range pe.Path {
		switch s := step.(type) {
		case cty.GetAttrStep:
			fmt.Fprintf(&b, ".%s", s.Name)
		case cty.IndexStep:
			switch s.Key.Type() {
			case cty.String:
				fmt.Fprintf(&b, "[%q]", s.Key.AsString())
			case cty.Number:
				fmt.Fprintf(&b, "[%s]", s.Key.AsBigFloat().Text('f', -1))
			}
		}
	}
	path := strings.TrimPrefix(b.String(), ".")
	return fmt.Sprintf("%s: %s", path, err.Error())
}

func decodeValidation(name string, block *hcl.Block) (validation, hcl.Diagnostics) {
	content, diags := block.Body.Content(validationSchema)
	val := validation{invalid: diags.HasErrors()}
	for _, attrName := range []string{"condition", "error_message"} {
		attr, ok := content.Attributes[attrName]
		if !ok {
			continue
		}
		if attrName == "condition" {
			val.condition = attr.Expr
		} else {
			val.message = attr.Expr
		}
		// Only the variable itself: a rule that read other variables
		// would depend on the order values are worked out in.
		for _, t := range attr.Expr.Variables() {
			if ref, _, ok := refName(t); ok && t.RootName() == "var" && ref == name {
				continue
			}
			val.invalid = true
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid reference in variable validation",
				Detail:   fmt.Sprintf("The %s for variable %q can only refer to the variable itself, using var.%s.", attrName, name, name),
				Subject:  t.SourceRange().Ptr(),
				Context:  attr.Range.Ptr(),
			})
		}
	}
	return val, diags
}

// resolve works out the variable's value from the input given for it, if
// any, or its default, and checks its validation rules. incomplete says
// that a var file could not be read, so that a variable without a value
// may have been given one there.
func (v *variable) resolve(in *inputValue, incomplete bool, ctx *hcl.EvalContext) hcl.Diagnostics {
	if v.failed {
		return nil
	}
	var diags hcl.Diagnostics
	switch {
	case in != nil:
		val, d := in.value(v)
		diags = append(diags, d...)
		if d.HasErrors() {
			v.failed = true
			return diags
		}
		v.Value, d = v.convert(val, in.subject, "Invalid value for input variable",
			fmt.Sprintf("The given value is not suitable for var.%s declared at %s: %%s.", v.Name, position(v.DeclRange)))
		diags = append(diags, d...)
	case v.hasDefault:
		v.Value = v.def
	case incomplete:
		v.failed = true
		return nil
	default:
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "No value for required variable",
			Detail: fmt.Sprintf("The input variable %q is not set and has no default value. Set it with -var %s=VALUE, "+
				"with -var-file, or with the environment variable %s%s.", v.Name, v.Name, envPrefix, v.Name),
			Subject: v.block.DefRange.Ptr(),
		}}
	}
	if diags.HasErrors() {
		v.failed = true
		return diags
	}
	return append(diags, v.validate(ctx)...)
}

// validate checks the variable's validation rules, all of them, so that
// every rule a value breaks is reported. ctx holds the functions.
func (v *variable) validate(ctx *hcl.EvalContext) hcl.Diagnostics {
	ctx = &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{v.Name: v.marked()})},
		Functions: ctx.Functions,
	}
	var diags hcl.Diagnostics
	for _, rule := range v.validations {
		if rule.invalid {
			continue
		}
		result, d := rule.condition.Value(ctx)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		result, _ = result.Unmark()
		if result.Type() != cty.Bool || result.IsNull() {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid validation condition",
				Detail:   fmt.Sprintf("A validation condition must be true or false, got %s.", describe(result)),
				Subject:  rule.condition.Range().Ptr(),
			})
			continue
		}
		if result.True() {
			continue
		}
		var msg string
		if d := gohcl.DecodeExpression(rule.message, ctx, &msg); d.HasErrors() {
			diags = append(diags, d...)
			msg = fmt.Sprintf("The value of var.%s does not satisfy this validation condition.", v.Name)
		}
		v.failed = true
		diags = append(diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     "Invalid value for variable",
			Detail:      msg,
			Subject:     rule.condition.Range().Ptr(),
			Expression:  rule.condition,
			EvalContext: ctx,
		})
	}
	return diags
}

// describe names a value's type for a message, or says it is null.
func describe(v cty.Value) string {
	if v.IsNull() {
		return "null"
	}
	return "a " + v.Type().FriendlyName()
}

// marked is the value as expressions see it: marked when sensitive.
func (v *variable) marked() cty.Value {
	if v.failed {
		return cty.DynamicVal
	}
	if v.Sensitive {
		return v.Value.Mark(sensitive)
	}
	return v.Value
}

// varObject is var: every declared variable, a failed one unknown so that
// what depends on it is not reported again.
func varObject(vars []*variable) cty.Value {
	attrs := make(map[string]cty.Value, len(vars))
	for _, v := range vars {
		attrs[v.Name] = v.marked()
	}
	return cty.ObjectVal(attrs)
}
