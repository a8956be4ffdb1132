package config

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Inputs are the values given for a file's variables from outside it. Later
// sources win, as in Terraform: a variable's default, then the environment,
// then VarFiles in order, then Vars in order.
type Inputs struct {
	// Vars are -var options, "name=value", in the order given.
	Vars []string
	// VarFiles are -var-file paths, in the order given: "name = value"
	// lines in HCL syntax, or a JSON object when the name ends in .json.
	VarFiles []string
	// Env is the environment as os.Environ returns it: CORRAL_VAR_name
	// sets var.name. Entries for variables the file does not declare are
	// ignored, since the environment is shared by every file.
	Env []string
}

// envPrefix starts the environment variables that set input variables.
const envPrefix = "CORRAL_VAR_"

// inputValue is the value given for a variable by the input that wins.
type inputValue struct {
	expr hcl.Expression // from a var file
	raw  string         // from -var or the environment
	// subject is where the value was written: a var file's line, or a
	// synthetic file "<value for var.NAME>" that holds just the raw text.
	subject hcl.Range
}

// value is the input as a cty value, before conversion to v's type. As in
// Terraform, -var and environment text is the value itself for a string
// variable, or one with no type, and an HCL expression for any other.
func (in *inputValue) value(v *variable) (cty.Value, hcl.Diagnostics) {
	if in.expr != nil {
		return in.expr.Value(nil) // constants only, as in a default
	}
	if !v.typeSet || v.Type == cty.String {
		return cty.StringVal(in.raw), nil
	}
	expr, diags := hclsyntax.ParseExpression([]byte(in.raw), in.subject.Filename, hcl.InitialPos)
	if diags.HasErrors() {
		return cty.DynamicVal, diags
	}
	return expr.Value(nil)
}

// rawInput is text given for var.name on the command line or in the
// environment. It is added to parser as a file of its own, so that
// diagnostics about it show it as they show a line of a file.
func rawInput(parser *hclparse.Parser, name, raw string) *inputValue {
	filename := fmt.Sprintf("<value for var.%s>", name)
	parser.AddFile(filename, &hcl.File{Bytes: []byte(raw)})
	first, _, _ := strings.Cut(raw, "\n")
	return &inputValue{raw: raw, subject: hcl.Range{
		Filename: filename,
		Start:    hcl.InitialPos,
		End:      hcl.Pos{Line: 1, Column: 1 + utf8.RuneCountInString(first), Byte: len(first)},
	}}
}

// collectInputs finds the value each variable is given, if any, reporting
// values for variables the file does not declare and var files that cannot
// be read (and then says the inputs are incomplete). filename is the
// cluster file, for messages.
func collectInputs(in Inputs, vars []*variable, parser *hclparse.Parser, filename string) (given map[string]*inputValue, incomplete bool, diags hcl.Diagnostics) {
	declared := map[string]bool{}
	for _, v := range vars {
		declared[v.Name] = true
	}
	undeclared := func(name, source string, subject hcl.Range) *hcl.Diagnostic {
		return &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Value for undeclared variable",
			Detail: fmt.Sprintf("%s sets var.%s, but %s declares no variable %q; declare it with a variable block, or remove the value.",
				source, name, filename, name),
			Subject: subject.Ptr(),
		}
	}
	given = map[string]*inputValue{}
	for _, kv := range in.Env {
		key, raw, _ := strings.Cut(kv, "=")
		if name, ok := strings.CutPrefix(key, envPrefix); ok && declared[name] {
			given[name] = rawInput(parser, name, raw)
		}
	}
	for _, path := range in.VarFiles {
		values, d := readVarFile(parser, path)
		diags = append(diags, d...)
		incomplete = incomplete || d.HasErrors()
		for _, attr := range values {
			if !declared[attr.Name] {
				diags = append(diags, undeclared(attr.Name, "The var file "+path, attr.NameRange))
				continue
			}
			given[attr.Name] = &inputValue{expr: attr.Expr, subject: attr.Expr.Range()}
		}
	}
	for _, opt := range in.Vars {
		name, raw, ok := strings.Cut(opt, "=")
		if !ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid -var option",
				Detail:   fmt.Sprintf("The -var option %q is not a variable name and a value separated by an equals sign, like -var 'name=value'.", opt),
			})
			continue
		}
		if !declared[name] {
			diags = append(diags, undeclared(name, "A -var option", rawInput(parser, name, raw).subject))
			continue
		}
		given[name] = rawInput(parser, name, raw)
	}
	return given, incomplete, diags
}

// readVarFile reads a var file's attributes, in file order.
func readVarFile(parser *hclparse.Parser, path string) ([]*hcl.Attribute, hcl.Diagnostics) {
	var file *hcl.File
	var diags hcl.Diagnostics
	if strings.HasSuffix(path, ".json") {
		file, diags = parser.ParseJSONFile(path)
	} else {
		file, diags = parser.ParseHCLFile(path)
	}
	if diags.HasErrors() {
		// A file with syntax errors has a partial body; reading it would
		// only add confusing follow-on errors.
		return nil, diags
	}
	attrs, d := file.Body.JustAttributes()
	diags = append(diags, d...)
	return sortedAttrs(attrs), diags
}
