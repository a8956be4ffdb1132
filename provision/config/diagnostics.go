package config

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Diagnostics are the problems found in a file, with the parsed files so
// that they can be printed with the offending source lines.
//
// A nil *Diagnostics means there is nothing to report; its methods are
// nil-safe. It implements error, but return it as one only when HasErrors
// is true, or a nil pointer becomes a non-nil error.
type Diagnostics struct {
	Diags hcl.Diagnostics
	files map[string]*hcl.File
}

func newDiagnostics(diags hcl.Diagnostics, files map[string]*hcl.File) *Diagnostics {
	if len(diags) == 0 {
		return nil
	}
	return &Diagnostics{Diags: diags, files: files}
}

// HasErrors reports whether any diagnostic is an error rather than a warning.
func (d *Diagnostics) HasErrors() bool {
	return d != nil && d.Diags.HasErrors()
}

// Error returns every diagnostic, one per line, as
// "file:line,col: summary; detail".
func (d *Diagnostics) Error() string {
	if d == nil {
		return ""
	}
	lines := make([]string, len(d.Diags))
	for i, diag := range d.Diags {
		var b strings.Builder
		if diag.Subject != nil {
			b.WriteString(position(*diag.Subject) + ": ")
		}
		if diag.Severity == hcl.DiagWarning {
			b.WriteString("warning: ")
		}
		b.WriteString(diag.Summary)
		if diag.Detail != "" {
			b.WriteString("; " + diag.Detail)
		}
		lines[i] = b.String()
	}
	return strings.Join(lines, "\n")
}

// WriteTo writes every diagnostic for a person to read: its position as
// "file:line,col", then HCL's own rendering with the source lines it is
// about, without color.
func (d *Diagnostics) WriteTo(w io.Writer) (int64, error) {
	if d == nil {
		return 0, nil
	}
	cw := &countingWriter{w: w}
	tw := hcl.NewDiagnosticTextWriter(cw, d.files, 78, false)
	for _, diag := range d.Diags {
		// HCL's writer names only the line; the column is what an editor
		// needs to jump to the problem.
		if diag.Subject != nil {
			if _, err := fmt.Fprintf(cw, "%s: ", position(*diag.Subject)); err != nil {
				return cw.n, err
			}
		}
		if err := tw.WriteDiagnostic(diag); err != nil {
			return cw.n, err
		}
	}
	return cw.n, nil
}

// position formats the start of r as "file:line,col", the way HCL formats
// ranges.
func position(r hcl.Range) string {
	return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
