package systemddriver

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/corral-dev/corral/clusterd/unit"
)

// withEnv returns a copy of f whose [Service] section begins with an
// Environment= line for each of env, in key order (so that the file, and
// its hash, do not change from one Start to the next). systemd applies
// assignments in order, the last one winning, so the unit's own
// Environment= lines, which come after, override these. A drop-in would be
// simpler to write but is read after the unit file, and so would override
// the unit instead. A unit without a [Service] section (a socket, a timer)
// is left as it is.
func withEnv(f *unit.File, env map[string]string) *unit.File {
	f = f.Clone()
	if len(env) == 0 {
		return f
	}
	for _, s := range f.Sections {
		if s.Name != "Service" {
			continue
		}
		var opts []*unit.Option
		for _, k := range slices.Sorted(maps.Keys(env)) {
			opts = append(opts, &unit.Option{Name: "Environment", Value: quoteEnv(k + "=" + env[k])})
		}
		s.Options = append(opts, s.Options...)
		break
	}
	return f
}

// quoteEnv quotes an assignment for Environment=, which systemd unquotes,
// C-unescapes and expands %-specifiers in: the unit sees the value as given,
// spaces, quotes, backslashes and percent signs included.
func quoteEnv(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '%':
			b.WriteString("%%")
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
