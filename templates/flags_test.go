package templates

import (
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/daemon"
	"github.com/corral-dev/corral/clusterd/store"
)

// execStart reads clusterd.service's ExecStart out of a node's rendered
// unit and splits it into arguments as systemd would, with env for the
// variables systemd expands.
func execStart(t *testing.T, n Node, env map[string]string) []string {
	t.Helper()
	b, err := n.boot()
	if err != nil {
		t.Fatal(err)
	}
	opts, err := unit.DeserializeOptions(strings.NewReader(b.units[0].Content))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, o := range opts {
		if o.Section == "Service" && o.Name == "ExecStart" {
			line = o.Value
		}
	}
	words, err := splitExec(line, env)
	if err != nil {
		t.Fatalf("ExecStart %q: %v", line, err)
	}
	return words
}

// splitExec splits an Exec line by systemd's rules (systemd.service,
// "Command lines"): backslash-newline continues the line, words are
// separated by whitespace, double and single quotes group, backslash
// escapes, "$$" is '$', "${NAME}" is a variable, "%%" is '%'. Any other
// specifier or variable is an error: Corral means none.
func splitExec(line string, env map[string]string) ([]string, error) {
	line = strings.ReplaceAll(line, "\\\n", " ")
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
		quote byte
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == 0 && (c == ' ' || c == '\t' || c == '\n'):
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
			continue
		case quote == 0 && (c == '"' || c == '\''):
			quote, in = c, true
			continue
		case quote != 0 && c == quote:
			quote = 0
			continue
		case c == '\\':
			if i+1 == len(line) {
				return nil, fmt.Errorf("trailing backslash")
			}
			i++
			cur.WriteByte(line[i])
		case c == '%':
			if i+1 == len(line) || line[i+1] != '%' {
				return nil, fmt.Errorf("specifier %q", line[i:min(i+2, len(line))])
			}
			i++
			cur.WriteByte('%')
		case c == '$':
			switch {
			case strings.HasPrefix(line[i:], "$$"):
				i++
				cur.WriteByte('$')
			case strings.HasPrefix(line[i:], "${"):
				end := strings.IndexByte(line[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unterminated variable")
				}
				name := line[i+2 : i+end]
				v, ok := env[name]
				if !ok {
					return nil, fmt.Errorf("unexpected variable %s", name)
				}
				cur.WriteString(v)
				i += end
			default:
				return nil, fmt.Errorf("unexpected $ at %d", i)
			}
		default:
			cur.WriteByte(c)
		}
		in = true
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote")
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

type errorf string

func (e errorf) Error() string { return string(e) }

// TestClusterdFlags parses every fixture's ExecStart with clusterd's own
// flag set (daemon.Command), so a renamed or retyped flag in clusterd fails
// here rather than on a booted node, and checks each value arrives as the
// Node says.
func TestClusterdFlags(t *testing.T) {
	const detected = "10.9.8.7"
	for name, n := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			args := execStart(t, n, map[string]string{ipEnvVariable: detected})
			if len(args) == 0 || args[0] != binaryPath {
				t.Fatalf("ExecStart runs %q, want %s", args, binaryPath)
			}
			cmd := daemon.Command("test")
			fs := cmd.Flags()
			if err := fs.Parse(args[1:]); err != nil {
				t.Fatalf("clusterd refuses its command line %q: %v", args[1:], err)
			}
			if fs.NArg() != 0 {
				t.Fatalf("clusterd takes no arguments, got %q", fs.Args())
			}
			c := n.Clusterd
			str := func(flag string) string {
				v, err := fs.GetString(flag)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			strs := func(flag string) []string {
				v, err := fs.GetStringSlice(flag)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			dur := func(flag string, want time.Duration) {
				v, err := fs.GetDuration(flag)
				if err != nil {
					t.Fatal(err)
				}
				if want != 0 && v != want {
					t.Errorf("--%s = %s, want %s", flag, v, want)
				}
				if want == 0 && fs.Changed(flag) {
					t.Errorf("--%s given though the node leaves clusterd's default", flag)
				}
			}
			check := func(flag string, got, want any) {
				if !reflect.DeepEqual(got, want) {
					t.Errorf("--%s = %#v, want %#v", flag, got, want)
				}
			}

			check("name", str("name"), n.Hostname)
			wantIP := detected
			if c.IP.IsValid() {
				wantIP = c.IP.String()
			}
			check("ip", str("ip"), wantIP)
			if net.ParseIP(str("ip")) == nil {
				t.Errorf("--ip %q is not an IP", str("ip"))
			}
			mode, err := store.ParseMode(str("mode"))
			if err != nil {
				t.Error(err)
			}
			check("mode", string(mode), string(c.Mode))
			if len(c.Servers) > 0 {
				check("servers", strs("servers"), c.Servers)
			} else if fs.Changed("servers") {
				t.Error("--servers given to a node without servers")
			}
			check("token-file", str("token-file"), tokenPath)
			if str("token") != "" {
				t.Error("the token must not be on the command line")
			}
			check("ca-cert", str("ca-cert") != "", len(c.CACert) > 0)
			check("ca-key", str("ca-key") != "", len(c.CAKey) > 0)
			md, err := daemon.ParseMetadata(strs("metadata"))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Metadata) > 0 || len(md) > 0 {
				check("metadata", md, c.Metadata)
			}
			dur("machine-ttl", c.MachineTTL)
			dur("reschedule-grace", c.RescheduleGrace)
			if c.DataDir != "" {
				check("data-dir", str("data-dir"), c.DataDir)
			}
			if c.APIPort != 0 {
				p, _ := fs.GetInt("api-port")
				check("api-port", p, c.APIPort)
			}
			if c.QuotaBytes != 0 {
				q, _ := fs.GetInt64("quota-bytes")
				check("quota-bytes", q, c.QuotaBytes)
			}
			noOverlay, _ := fs.GetBool("no-overlay")
			check("no-overlay", noOverlay, c.Network.Disabled)
			masq, _ := fs.GetBool("ip-masq")
			check("ip-masq", masq, !c.Network.NoIPMasq)
			if c.Network.Bridge != "" {
				check("bridge", str("bridge"), c.Network.Bridge)
			}
			if c.Network.SubnetFile != "" {
				check("subnet-file", str("subnet-file"), c.Network.SubnetFile)
			}
			if c.Driver != "" {
				check("driver", str("driver"), c.Driver)
			}
		})
	}
}

// TestClusterdFlagsCoverNode renders a node that sets every setting at
// once and checks each flag written is one clusterd declares.
func TestClusterdFlagsCoverNode(t *testing.T) {
	n := fixtures(t)["join"]
	n.Clusterd.DataDir = "/var/lib/clusterd-2"
	n.Clusterd.Network.Disabled = true
	args := execStart(t, n, nil)
	fs := daemon.Command("test").Flags()
	var rendered []string
	for _, a := range args[1:] {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		rendered = append(rendered, name)
		if fs.Lookup(name) == nil {
			t.Errorf("rendered --%s, which clusterd does not declare", name)
		}
	}
	want := []string{"name", "data-dir", "ip", "mode", "servers", "token-file", "ca-cert", "metadata", "machine-ttl",
		"quota-bytes", "api-port", "no-overlay", "bridge", "subnet-file", "ip-masq", "driver", "reschedule-grace"}
	if !slices.Equal(rendered, want) {
		t.Errorf("rendered flags %q, want %q", rendered, want)
	}
}

// TestTokenFileIsReadable checks that what the token file holds is what
// clusterd's --token-file reading accepts.
func TestTokenFileIsReadable(t *testing.T) {
	n := fixtures(t)["join"]
	b, err := n.boot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range b.files {
		if f.Path == tokenPath {
			if f.fileMode() != 0o600 {
				t.Errorf("token file mode %#o, want 0600", f.fileMode())
			}
			if _, err := pki.ParseToken(string(f.Content)); err != nil {
				t.Error(err)
			}
			return
		}
	}
	t.Fatal("no token file")
}

func TestSplitExec(t *testing.T) {
	got, err := splitExec(`/bin/x a\
  "b c" 'd e' f\"g $${X} ${V} 100%% "q\\\"r"`, map[string]string{"V": "v w"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/bin/x", "a", "b c", "d e", `f"g`, "${X}", "v w", "100%", `q\"r`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{`x %n`, `x ${NOPE}`, `x "open`, `x $HOME`} {
		if _, err := splitExec(bad, nil); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
