package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/hashicorp/hcl/v2"
)

// Service is a service block: a unit, or a template and how many of its
// instances, that up submits and starts through clusterd once the nodes
// are up:
//
//	service "hello@.service" {
//	  source    = "units/hello@.service"
//	  instances = 3
//	}
type Service struct {
	// Name is the block's label: a unit name (web.service) or a template
	// name (hello@.service).
	Name string
	// Content is the unit file in clusterd's canonical form (no comments,
	// normalised spacing), so that editing a comment does not replace
	// running units: only a change clusterd would see does.
	Content string
	// Instances is how many instances of a template run (@1..@N); 1 for
	// a plain unit.
	Instances int
	// State is the desired state: launched (the default) or loaded.
	State     string
	DeclRange hcl.Range
}

// Unit is one unit the services ask for: a plain unit, or one instance of
// a template, which carries the template's content as clusterctl submits
// it (the agent fills in %i).
type Unit struct {
	Name    string
	Service string // the service block it comes from
	Content string
	State   string
}

// Units expands the services into the units they ask for, in file order,
// instances in order: hello@1.service, hello@2.service, …
func (c *Config) Units() []Unit {
	var out []Unit
	for _, s := range c.Services {
		n, _ := unit.ParseName(s.Name) // checked when the file was loaded
		if !n.IsTemplate() {
			out = append(out, Unit{Name: s.Name, Service: s.Name, Content: s.Content, State: s.State})
			continue
		}
		for i := 1; i <= s.Instances; i++ {
			n.Instance = strconv.Itoa(i)
			out = append(out, Unit{Name: n.String(), Service: s.Name, Content: s.Content, State: s.State})
		}
	}
	return out
}

// The desired states a service may ask for: inactive would submit a unit
// that never runs, which is what leaving the block out is for.
const (
	serviceLaunched = "launched"
	serviceLoaded   = "loaded"
)

var serviceSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "source"},
		{Name: "content"},
		{Name: "instances"},
		{Name: "state"},
	},
}

// decodeService decodes a service block; dir is the cluster file's
// directory, which source is relative to. The unit is parsed and validated
// here, so a bad unit stops up before anything is created.
func decodeService(block *hcl.Block, ctx *hcl.EvalContext, dir string) (Service, hcl.Diagnostics) {
	s := Service{Name: block.Labels[0], Instances: 1, State: serviceLaunched, DeclRange: block.DefRange}
	content, diags := block.Body.Content(serviceSchema)

	n, err := unit.ParseName(s.Name)
	switch {
	case err != nil:
		return s, append(diags, labelError(block, "Invalid service name", err.Error()+"."))
	case n.String() != s.Name:
		// "hello" would silently mean hello.service: asking for the full
		// name keeps the label, clusterctl's listing and the state alike.
		return s, append(diags, labelError(block, "Invalid service name",
			fmt.Sprintf("A service is named by its full unit name, such as %q.", n.String())))
	case n.IsInstance():
		return s, append(diags, labelError(block, "Invalid service name",
			fmt.Sprintf("%s is an instance; declare its template %s with instances = N instead.", s.Name, n.Template())))
	}

	attr, d := decodeAttr(content, "instances", ctx, &s.Instances)
	diags = append(diags, d...)
	if attr != nil {
		switch {
		case !n.IsTemplate():
			diags = append(diags, attrError(attr, "Invalid instances",
				fmt.Sprintf("%s is not a template, so it runs once; instances is only for templates such as %s.",
					s.Name, unit.Name{Prefix: n.Prefix, Type: n.Type, Templated: true})))
		case s.Instances < 0:
			diags = append(diags, attrError(attr, "Invalid instances",
				fmt.Sprintf("instances must be 0 or more, got %d.", s.Instances)))
			s.Instances = 0
		}
	}

	attr, d = decodeAttr(content, "state", ctx, &s.State)
	diags = append(diags, d...)
	if attr != nil && s.State != serviceLaunched && s.State != serviceLoaded {
		diags = append(diags, attrError(attr, "Invalid state",
			fmt.Sprintf(`state must be "launched" or "loaded", got %q.`, s.State)))
	}

	src, srcAttr, d := serviceSource(block, content, ctx, dir)
	diags = append(diags, d...)
	if srcAttr == nil {
		return s, diags
	}
	filename := s.Name
	if srcAttr.Name == "source" {
		// Unit errors then read as the user's file: units/hello@.service:7: …
		filename = src.path
	}
	f, err := unit.Parse(filename, src.text)
	if err == nil {
		if n.IsTemplate() {
			err = unit.ValidateTemplate(filename, f, n)
		} else {
			err = unit.Validate(filename, f, n)
		}
	}
	if err != nil {
		return s, append(diags, attrError(srcAttr, "Invalid unit file",
			fmt.Sprintf("Unit %s is not valid:\n%s", s.Name, err)))
	}
	s.Content = f.String()
	return s, diags
}

type serviceText struct {
	path string // source as written; "" for content
	text []byte
}

// serviceSource reads the unit's text from source or content, exactly one
// of which must be set. It returns the attribute the text came from, nil
// when there is none to check.
func serviceSource(block *hcl.Block, content *hcl.BodyContent, ctx *hcl.EvalContext, dir string) (serviceText, *hcl.Attribute, hcl.Diagnostics) {
	srcAttr, hasSource := content.Attributes["source"]
	textAttr, hasContent := content.Attributes["content"]
	switch {
	case hasSource && hasContent:
		return serviceText{}, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Conflicting service source",
			Detail: fmt.Sprintf("Service %q sets both source (at %s) and content; set exactly one of them.",
				block.Labels[0], position(srcAttr.Range)),
			Subject: textAttr.Range.Ptr(),
			Context: block.DefRange.Ptr(),
		}}
	case !hasSource && !hasContent:
		return serviceText{}, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Missing service source",
			Detail: fmt.Sprintf("Service %q needs the unit file: source = \"units/%s\" (relative to the cluster file) or content = <<-EOT … EOT.",
				block.Labels[0], block.Labels[0]),
			Subject: block.DefRange.Ptr(),
		}}
	case hasContent:
		var text string
		attr, diags := decodeAttr(content, "content", ctx, &text)
		return serviceText{text: []byte(text)}, attr, diags
	}
	var path string
	attr, diags := decodeAttr(content, "source", ctx, &path)
	if attr == nil {
		return serviceText{}, nil, diags
	}
	// The file functions' reading, so source and file() resolve a path
	// alike and fail alike.
	b, resolved, err := readFile(dir, path)
	if err != nil {
		summary := "Cannot read unit file"
		if _, serr := os.Stat(resolved); errors.Is(serr, fs.ErrNotExist) {
			summary = "Unit file not found"
		}
		return serviceText{}, nil, append(diags, attrError(attr, summary,
			fmt.Sprintf("Service %q: %s.", block.Labels[0], err)))
	}
	return serviceText{path: path, text: b}, attr, diags
}

// labelError is an error about a block's label.
func labelError(block *hcl.Block, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  block.LabelRanges[0].Ptr(),
		Context:  block.DefRange.Ptr(),
	}
}
