package netboot

import "strings"

// Kernel parameters the boot server passes.
const (
	ParamConfig = "corral.config" // URL of the node's Ignition config
	ParamReport = "corral.report" // URL the init POSTs its status to
)

// ParseCmdline reads a kernel command line (/proc/cmdline) into its
// key=value parameters; a bare word maps to "". Double quotes group words
// as the kernel's own parser does; a later parameter overrides an earlier.
func ParseCmdline(s string) map[string]string {
	params := map[string]string{}
	var word strings.Builder
	inQuote, has := false, false
	flush := func() {
		if has {
			k, v, _ := strings.Cut(word.String(), "=")
			params[k] = v
		}
		word.Reset()
		has = false
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			has = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			flush()
		default:
			word.WriteRune(r)
			has = true
		}
	}
	flush()
	return params
}
