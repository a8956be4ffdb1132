package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-dev/corral/templates"
	"github.com/hashicorp/hcl/v2"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXW37q8TeazUoPDD906hrA6KQvsTpLMmop3hpI0GO7Q me@example"

// TestBootContent decodes a file that uses every piece of a node group's
// boot content, ssh_authorized_keys and the ssh provider.
func TestBootContent(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	src := strings.Join([]string{
		`cluster "c" {`,
		`  ssh_authorized_keys = [file("~/.ssh/id.pub"), "` + testKey + `\n"]`,
		`}`,
		`provider "ssh" {`,
		`  hosts          = ["10.0.0.11", "10.0.0.12:2222", "node3.example.com", "[fd00::1]:22", "fd00::2"]`,
		`  user           = "admin"`,
		`  identity_files = ["~/.ssh/id_ed25519", "keys/deploy"]`,
		`  known_hosts    = ["/etc/ssh/ssh_known_hosts"]`,
		`}`,
		`node_group "core" {`,
		`  desired_capacity = 3`,
		`  min_size         = 1`,
		`  max_size         = 3`,
		`  userdata         = "cloud-config"`,
		`  systemd_unit "hello.service" {`,
		`    content = "[Service]\nExecStart=/bin/echo hi\n[Install]\nWantedBy=multi-user.target\n"`,
		`    enabled = true`,
		`  }`,
		`  systemd_unit "docker.socket" {`,
		`    enabled = true`,
		`  }`,
		`  systemd_unit "data.mount" {`,
		`    content = "[Mount]\nWhat=/dev/vdb\nWhere=/data\n"`,
		`  }`,
		`  file "/etc/motd" {`,
		`    content = "hello\n"`,
		`  }`,
		`  file "/opt/bin/run" {`,
		`    content = "#!/bin/sh\n"`,
		`    mode    = "0755"`,
		`    owner   = "core:core"`,
		`  }`,
		`  file "/etc/app.conf" {`,
		`    content = ""`,
		`    mode    = 0640`,
		`    owner   = "app"`,
		`  }`,
		`}`,
		`node_group "edge" {`,
		`  desired_capacity = 2`,
		`}`,
	}, "\n") + "\n"
	cfg := mustParseIn(t, src, Inputs{}, map[string]string{filepath.Join(home, ".ssh/id.pub"): testKey + "\n"})
	dir, _ := filepath.Abs(".")

	if want := []string{testKey, testKey}; !reflect.DeepEqual(cfg.Cluster.SSHAuthorizedKeys, want) {
		t.Errorf("SSHAuthorizedKeys = %q, want %q", cfg.Cluster.SSHAuthorizedKeys, want)
	}
	wantProvider := Provider{
		Type: "ssh",
		SSH: &SSHProvider{
			Hosts:         []string{"10.0.0.11", "10.0.0.12:2222", "node3.example.com", "[fd00::1]:22", "fd00::2"},
			User:          "admin",
			IdentityFiles: []string{filepath.Join(home, ".ssh/id_ed25519"), filepath.Join(dir, "keys/deploy")},
			KnownHosts:    []string{"/etc/ssh/ssh_known_hosts"},
		},
		DeclRange: cfg.Provider.DeclRange,
	}
	if !reflect.DeepEqual(cfg.Provider, wantProvider) {
		t.Errorf("Provider =\n%#v\nwant\n%#v", cfg.Provider.SSH, wantProvider.SSH)
	}
	want := []NodeGroup{{
		Name:            "core",
		DesiredCapacity: 3,
		MinSize:         1,
		MaxSize:         3,
		Userdata:        templates.FormatCloudConfig,
		Units: []templates.Unit{
			{Name: "hello.service", Content: "[Service]\nExecStart=/bin/echo hi\n[Install]\nWantedBy=multi-user.target\n", Enabled: true},
			{Name: "docker.socket", Enabled: true},
			{Name: "data.mount", Content: "[Mount]\nWhat=/dev/vdb\nWhere=/data\n"},
		},
		Files: []templates.File{
			{Path: "/etc/motd", Content: []byte("hello\n")},
			{Path: "/opt/bin/run", Content: []byte("#!/bin/sh\n"), Mode: 0o755, Owner: "core:core"},
			{Path: "/etc/app.conf", Content: []byte{}, Mode: 0o640, Owner: "app"},
		},
		DeclRange: cfg.NodeGroups[0].DeclRange,
	}, {
		Name:            "edge",
		DesiredCapacity: 2,
		MaxSize:         -1,
		Userdata:        templates.FormatIgnition,
		DeclRange:       cfg.NodeGroups[1].DeclRange,
	}}
	if !reflect.DeepEqual(cfg.NodeGroups, want) {
		t.Errorf("NodeGroups =\n%#v\nwant\n%#v", cfg.NodeGroups, want)
	}
	if got := cfg.NodeGroups[0].DeclRange.Start.Line; got != 10 {
		t.Errorf("core declared on line %d, want 10", got)
	}
}

func TestSSHDefaults(t *testing.T) {
	cfg := mustParse(t, lines(
		`cluster "c" {}`,
		`provider "ssh" { hosts = ["a", "b"] }`,
		`node_group "core" { desired_capacity = 2 }`,
	))
	if want := (&SSHProvider{Hosts: []string{"a", "b"}, User: "core"}); !reflect.DeepEqual(cfg.Provider.SSH, want) {
		t.Errorf("SSH = %+v, want %+v", cfg.Provider.SSH, want)
	}
	if cfg.Provider.Local != nil {
		t.Errorf("Local = %+v, want nil", cfg.Provider.Local)
	}
	if cfg.Cluster.SSHAuthorizedKeys != nil {
		t.Errorf("SSHAuthorizedKeys = %q, want nil", cfg.Cluster.SSHAuthorizedKeys)
	}
	if len(cfg.Nodes()) != 2 {
		t.Errorf("%d nodes, want 2", len(cfg.Nodes()))
	}
}

func TestOrdinal(t *testing.T) {
	for n, want := range map[int]string{1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 22: "22nd", 101: "101st", 111: "111th"} {
		if got := ordinal(n); got != want {
			t.Errorf("ordinal(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestBootContentErrors checks that each rule of the node group's boot
// content, ssh_authorized_keys and the ssh provider reports exactly one
// error, on the right line, with a precise summary and detail.
func TestBootContentErrors(t *testing.T) {
	const (
		cluster  = `cluster "c" {}`
		provider = `provider "local" {}`
		group    = `node_group "core" { desired_capacity = 1 }`
		ssh3     = `provider "ssh" { hosts = ["a", "b", "c"] }`
	)
	// unitGroup is a group with one systemd_unit block, which starts on
	// line 5.
	unitGroup := func(label string, body ...string) []byte {
		ls := append([]string{cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  systemd_unit "` + label + `" {`}, body...)
		return lines(append(ls, `  }`, `}`)...)
	}
	// fileGroup is a group with one file block, which starts on line 5.
	fileGroup := func(label string, body ...string) []byte {
		ls := append([]string{cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  file "` + label + `" {`}, body...)
		return lines(append(ls, `  }`, `}`)...)
	}
	tests := []struct {
		name    string
		src     []byte
		line    int
		summary string
		detail  string
	}{
		{"bad userdata", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  userdata = "yaml"`, `}`),
			5, "Invalid userdata", `userdata must be "ignition" or "cloud-config", got "yaml".`},
		{"min_size above max_size", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 3`, `  min_size = 4`, `  max_size = 2`, `}`),
			6, "Invalid max_size", `max_size 2 is below min_size 4 of node group "core".`},
		{"negative min_size", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 3`, `  min_size = -1`, `}`),
			5, "Invalid min_size", "min_size must be 0 or more, got -1."},
		{"desired_capacity above max_size", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 12`, `  max_size = 9`, `}`),
			4, "Invalid desired_capacity", `desired_capacity 12 is above max_size 9 of node group "core".`},
		{"desired_capacity above max_size 0", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  max_size = 0`, `}`),
			4, "Invalid desired_capacity", `desired_capacity 1 is above max_size 0 of node group "core".`},
		{"desired_capacity below min_size", lines(cluster, provider, `node_group "core" {`, `  min_size = 2`, `  desired_capacity = 1`, `}`),
			5, "Invalid desired_capacity", `desired_capacity 1 is below min_size 2 of node group "core".`},

		{"unit name without suffix", unitGroup("hello", `    enabled = true`),
			5, "Invalid systemd_unit name", `unit name "hello" must end in one of .service .socket`},
		{"unit name with unknown suffix", unitGroup("hello.conf", `    enabled = true`),
			5, "Invalid systemd_unit name", `unit name "hello.conf" must end in one of`},
		{"unit name with slash", unitGroup("a/b.service", `    enabled = true`),
			5, "Invalid systemd_unit name", `unit name "a/b.service" must not contain '/'`},
		{"unit name only a suffix", unitGroup(".service", `    enabled = true`),
			5, "Invalid systemd_unit name", `unit name ".service" has nothing before its suffix.`},
		{"duplicate unit", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`,
			`  systemd_unit "a.service" { enabled = true }`, `  systemd_unit "b.service" { enabled = true }`, `  systemd_unit "a.service" { enabled = true }`, `}`),
			7, `Duplicate systemd_unit "a.service"`, `Node group "core" already has a systemd_unit "a.service" at file.hcl:5,3`},
		{"enabled unit without [Install]", unitGroup("hello.service", `    content = "[Service]\nExecStart=/bin/true\n"`, `    enabled = true`),
			7, "Unit cannot be enabled", "hello.service has no [Install] section, and enabling a unit needs one: WantedBy= in [Install]"},
		{"unit with nothing to do", unitGroup("hello.service", `    enabled = false`),
			5, "Unit does nothing", `systemd_unit "hello.service" has neither content nor enabled = true`},
		{"unit with nothing at all", unitGroup("hello.service"),
			5, "Unit does nothing", `systemd_unit "hello.service" has neither content nor enabled = true`},
		{"unit enabled not a bool", unitGroup("hello.service", `    enabled = "yes please"`),
			6, "Incorrect attribute value type", `Inappropriate value for attribute "enabled"`},

		{"relative file path", fileGroup("etc/motd", `    content = "x"`),
			5, "Invalid file path", `file path "etc/motd" must be absolute`},
		{"unclean file path", fileGroup("/etc//motd", `    content = "x"`),
			5, "Invalid file path", `file path "/etc//motd" is not clean; did you mean "/etc/motd"?`},
		{"root file path", fileGroup("/", `    content = "x"`),
			5, "Invalid file path", `file path "/" is the root directory`},
		{"duplicate file path", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`,
			`  file "/etc/motd" { content = "a" }`, `  file "/etc/motd" { content = "b" }`, `}`),
			6, `Duplicate file "/etc/motd"`, `Node group "core" already has a file "/etc/motd" at file.hcl:5,3`},
		{"file without content", fileGroup("/etc/motd", `    mode = "0644"`),
			5, "Missing required argument", `"content"`},
		{"mode 04755", fileGroup("/opt/bin/x", `    content = "x"`, `    mode = "04755"`),
			7, "Invalid mode", "mode must be at most 0777, got 04755: Ignition cannot set the setuid, setgid or sticky bits."},
		{"bad mode string", fileGroup("/opt/bin/x", `    content = "x"`, `    mode = "rwxr-xr-x"`),
			7, "Invalid mode", `mode must be octal permission bits such as "0644", got "rwxr-xr-x".`},
		{"mode number with 9", fileGroup("/opt/bin/x", `    content = "x"`, `    mode = 0649`),
			7, "Invalid mode", `got "649"`},
		{"bad owner", fileGroup("/etc/motd", `    content = "x"`, `    owner = "a:b:c"`),
			7, "Invalid owner", `owner must be "user" or "user:group", got "a:b:c".`},

		{"bad ssh_authorized_keys entry", lines(`cluster "c" {`, `  ssh_authorized_keys = [`, `    "`+testKey+`",`, `    "ssh-rsa notbase64",`, `  ]`, `}`, provider, group),
			4, "Invalid ssh_authorized_keys", "ssh_authorized_keys entry 1 (the 2nd) is not a public key in authorized_keys format"},
		{"two keys in one entry", lines(`cluster "c" {`, `  ssh_authorized_keys = ["`+testKey+`\n`+testKey+`\n"]`, `}`, provider, group),
			2, "Invalid ssh_authorized_keys", "entry 0 (the 1st) is not a public key in authorized_keys format, such as the content of ~/.ssh/id_ed25519.pub: it holds more than one key"},
		{"empty ssh_authorized_keys entry", lines(`cluster "c" {`, `  ssh_authorized_keys = ["\n"]`, `}`, provider, group),
			2, "Invalid ssh_authorized_keys", "entry 0 (the 1st) is not a public key in authorized_keys format, such as the content of ~/.ssh/id_ed25519.pub: it is empty."},
		{"ssh_authorized_keys not a list", lines(`cluster "c" {`, `  ssh_authorized_keys = { a = 1 }`, `}`, provider, group),
			2, "Incorrect attribute value type", `"ssh_authorized_keys"`},

		{"ssh provider without hosts", lines(cluster, `provider "ssh" {`, `  user = "core"`, `}`, group),
			2, "Missing required argument", `"hosts"`},
		{"empty hosts", lines(cluster, `provider "ssh" {`, `  hosts = []`, `}`, group),
			3, "Invalid hosts", "hosts must list at least one machine"},
		{"duplicate host", lines(cluster, `provider "ssh" {`, `  hosts = [`, `    "10.0.0.1",`, `    "10.0.0.2",`, `    "10.0.0.1:22",`, `  ]`, `}`, group),
			6, "Duplicate host", `hosts entry 2 (the 3rd), "10.0.0.1:22", is the same machine as entry 0 (the 1st), "10.0.0.1"`},
		{"bad port", lines(cluster, `provider "ssh" {`, `  hosts = ["a:22", "b:70000"]`, `}`, group),
			3, "Invalid hosts", `hosts entry 1 (the 2nd), "b:70000", has port "70000"; a port must be a number from 1 to 65535.`},
		{"port 0", lines(cluster, `provider "ssh" {`, `  hosts = ["a:0"]`, `}`, group),
			3, "Invalid hosts", `has port "0"`},
		{"bad host name", lines(cluster, `provider "ssh" {`, `  hosts = ["a b"]`, `}`, group),
			3, "Invalid hosts", `hosts entry 0 (the 1st), "a b", must be an IP address or a DNS name.`},
		{"bad user", lines(cluster, `provider "ssh" {`, `  hosts = ["a"]`, `  user = "root@a"`, `}`, group),
			4, "Invalid user", `got "root@a"`},
		{"capacity over hosts", lines(cluster, ssh3, `node_group "a" { desired_capacity = 2 }`, `node_group "b" {`, `  desired_capacity = 2`, `}`),
			5, "Too many nodes", "The node groups ask for 4 nodes in total, but the ssh provider runs one node per host and has 3 hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := Parse(tt.src, "file.hcl", Inputs{})
			if cfg != nil {
				t.Errorf("Parse returned a Config along with errors")
			}
			if diags == nil || len(diags.Diags) != 1 {
				t.Fatalf("want one diagnostic, got:\n%s", diags.Error())
			}
			d := diags.Diags[0]
			if d.Severity != hcl.DiagError || d.Subject == nil {
				t.Fatalf("want an error with a subject, got %s", diags.Error())
			}
			if d.Subject.Filename != "file.hcl" || d.Subject.Start.Line != tt.line {
				t.Errorf("subject = %s, want file.hcl line %d", d.Subject, tt.line)
			}
			if d.Summary != tt.summary {
				t.Errorf("summary %q, want %q", d.Summary, tt.summary)
			}
			if !strings.Contains(d.Detail, tt.detail) {
				t.Errorf("detail %q does not mention %q", d.Detail, tt.detail)
			}
		})
	}
}
