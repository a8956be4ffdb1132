package systemddriver

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/corral-dev/corral/clusterd/unit"
)

// literalPercent returns a copy of f with every '%' doubled. The agent hands
// drivers units with Corral's specifiers (%i, %n, %m, %H …) already
// expanded, %% already made '%', so every '%' left is literal; systemd would
// expand it again (a unit's "100%%" would reach systemd as "100%" and fail).
// Specifiers Corral does not know (%t, %h) are therefore literal under the
// systemd driver as under exec: a unit means the same on either.
func literalPercent(f *unit.File) *unit.File {
	f = f.Clone()
	for _, s := range f.Sections {
		for _, o := range s.Options {
			o.Value = strings.ReplaceAll(o.Value, "%", "%%")
		}
	}
	return f
}

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
