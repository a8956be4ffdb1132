package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// The file functions read files named relative to the directory of the
// cluster file, so a file means the same thing wherever provision runs
// from; "~/" is the user's home, as in a shell.

// resolvePath turns a file function's path argument into a path to open.
func resolvePath(dir, path string) (string, error) {
	if path == "~" || strings.HasPrefix(path, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot expand %q: %w", path, err)
		}
		path = filepath.Join(home, path[1:])
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	return path, nil
}

// readFile reads a file function's file, with Terraform's wording when it
// is missing. The error is about the path, the function's first argument.
func readFile(dir, path string) ([]byte, string, error) {
	resolved, err := resolvePath(dir, path)
	if err != nil {
		return nil, "", function.NewArgError(0, err)
	}
	b, err := os.ReadFile(resolved)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, resolved, function.NewArgErrorf(0, "no file exists at %q", resolved)
	case err != nil:
		return nil, resolved, function.NewArgErrorf(0, "failed to read %q: %s", resolved, unwrapPathError(err))
	}
	return b, resolved, nil
}

// unwrapPathError drops the path an *fs.PathError repeats.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var pathParam = function.Parameter{Name: "path", Type: cty.String}

// makeFileFunc is file(path): the file's content as a string. It must be
// UTF-8 text; filebase64 is for anything else.
func makeFileFunc(dir string) function.Function {
	return function.New(&function.Spec{
		Description: "Reads the file at the given path, relative to the cluster file's directory, as UTF-8 text.",
		Params:      []function.Parameter{pathParam},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			b, resolved, err := readFile(dir, args[0].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			if !utf8.Valid(b) {
				return cty.NilVal, function.NewArgErrorf(0, "contents of %q are not valid UTF-8; use filebase64 for binary files", resolved)
			}
			return cty.StringVal(string(b)), nil
		},
	})
}

// makeFileBase64Func is filebase64(path): the file's bytes in Base64.
func makeFileBase64Func(dir string) function.Function {
	return function.New(&function.Spec{
		Description: "Reads the file at the given path, relative to the cluster file's directory, and returns its bytes in Base64.",
		Params:      []function.Parameter{pathParam},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			b, _, err := readFile(dir, args[0].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			return cty.StringVal(base64.StdEncoding.EncodeToString(b)), nil
		},
	})
}

// makeFileExistsFunc is fileexists(path). A path that exists but is not a
// regular file is an error, as in Terraform, rather than a silent false.
func makeFileExistsFunc(dir string) function.Function {
	return function.New(&function.Spec{
		Description: "Reports whether a regular file exists at the given path, relative to the cluster file's directory.",
		Params:      []function.Parameter{pathParam},
		Type:        function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			resolved, err := resolvePath(dir, args[0].AsString())
			if err != nil {
				return cty.NilVal, function.NewArgError(0, err)
			}
			fi, err := os.Stat(resolved)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return cty.False, nil
			case err != nil:
				return cty.NilVal, function.NewArgErrorf(0, "failed to stat %q: %s", resolved, unwrapPathError(err))
			case !fi.Mode().IsRegular():
				return cty.NilVal, function.NewArgErrorf(0, "%q is not a regular file", resolved)
			}
			return cty.True, nil
		},
	})
}

// makeTemplateFileFunc is templatefile(path, vars): the file rendered as an
// HCL template whose only variables are the keys of vars. funcs are the
// functions the template may call.
func makeTemplateFileFunc(dir string, funcs map[string]function.Function) function.Function {
	return function.New(&function.Spec{
		Description: "Renders the file at the given path, relative to the cluster file's directory, as a template with the given variables.",
		Params: []function.Parameter{
			pathParam,
			{Name: "vars", Type: cty.DynamicPseudoType},
		},
		// A template that is a single interpolation, "${list}", yields
		// that value unchanged, as in Terraform, so the type is not
		// known until it is rendered.
		Type: function.StaticReturnType(cty.DynamicPseudoType),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			b, resolved, err := readFile(dir, args[0].AsString())
			if err != nil {
				return cty.NilVal, err
			}
			vars := args[1]
			if ty := vars.Type(); !ty.IsMapType() && !ty.IsObjectType() {
				return cty.NilVal, function.NewArgErrorf(1, "invalid vars value: must be a map")
			}
			ctx := &hcl.EvalContext{Variables: vars.AsValueMap(), Functions: funcs}
			for name := range ctx.Variables {
				if !hclsyntax.ValidIdentifier(name) {
					return cty.NilVal, function.NewArgErrorf(1, "invalid template variable name %q: must start with a letter, followed by letters, digits and underscores", name)
				}
			}
			tmpl, diags := hclsyntax.ParseTemplate(b, resolved, hcl.InitialPos)
			if diags.HasErrors() {
				return cty.NilVal, diags
			}
			// Checked here to say that the key is missing from this
			// call's vars, which HCL's "Unknown variable" would not.
			for _, t := range tmpl.Variables() {
				if _, ok := ctx.Variables[t.RootName()]; !ok {
					return cty.NilVal, function.NewArgErrorf(1, "vars map does not contain key %q, referenced at %s", t.RootName(), t[0].SourceRange())
				}
			}
			val, diags := tmpl.Value(ctx)
			if diags.HasErrors() {
				return cty.NilVal, diags
			}
			return val, nil
		},
	})
}
