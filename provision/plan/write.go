package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// symbols mark each action as Terraform users know them.
var symbols = map[Action]string{Create: "+", Update: "~", Delete: "-", Replace: "-/+"}

// colours are ANSI SGR codes per action, for a terminal.
var colours = map[Action]string{Create: "32", Update: "33", Delete: "31", Replace: "35"}

// WriteText prints the plan for people: one line per change with its
// symbol, resource, action and reason, then a summary. colour adds ANSI
// colours, for a terminal; piped output stays plain.
func (p *Plan) WriteText(w io.Writer, colour bool) error {
	paint := func(a Action, s string) string {
		if !colour {
			return s
		}
		return "\x1b[" + colours[a] + "m" + s + "\x1b[0m"
	}
	if p.Empty() {
		_, err := fmt.Fprintf(w, "No changes: cluster %q (%s provider) matches its file.\n", p.Cluster, p.Provider)
		return err
	}
	fmt.Fprintf(w, "Cluster %q (%s provider) needs these changes:\n\n", p.Cluster, p.Provider)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rolling := false
	for _, c := range p.Changes {
		why := c.Reason
		if c.Drift != "" {
			why = "drifted: " + c.Drift + "; " + why
		}
		if c.Replacement != "" {
			why += "; " + c.Replacement + " joins first"
			rolling = true
		}
		// The colour codes sit outside the padded cells, so that
		// tabwriter counts the same widths with or without them.
		fmt.Fprintf(tw, "  %s\t%s %s\t%s\t%s\n", paint(c.Action, symbols[c.Action]), c.Kind, c.Name, paint(c.Action, string(c.Action)), why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	n := p.Count()
	fmt.Fprintf(w, "\nPlan: %d to create, %d to update, %d to replace, %d to delete.\n", n[Create], n[Update], n[Replace], n[Delete])
	if rolling {
		fmt.Fprintln(w, "Replacements roll one node at a time: each new node joins and is healthy before the old one goes.")
	}
	return nil
}

// jsonPlan is the plan as --output json prints it.
type jsonPlan struct {
	*Plan
	Summary map[Action]int `json:"summary"`
}

// WriteJSON prints the plan for machines: the changes in order and a
// summary of the counts by action.
func (p *Plan) WriteJSON(w io.Writer) error {
	out := jsonPlan{Plan: p, Summary: p.Count()}
	if out.Changes == nil {
		cp := *p
		cp.Changes = []Change{}
		out.Plan = &cp
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// String is the plan as plain text.
func (p *Plan) String() string {
	var b strings.Builder
	p.WriteText(&b, false)
	return b.String()
}
