package templates

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestValidateNamesTheField breaks one thing at a time and expects the
// error to name the field (and both renderers to refuse the node).
func TestValidateNamesTheField(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*Node)
		want string
	}{
		"hostname":          {func(n *Node) { n.Hostname = "web_2" }, "Hostname:"},
		"hostname empty":    {func(n *Node) { n.Hostname = "" }, "Hostname:"},
		"cluster":           {func(n *Node) { n.Cluster = "Demo Cluster" }, "Cluster:"},
		"ssh key":           {func(n *Node) { n.SSHAuthorizedKeys = []string{keyAlice, "ssh-ed25519 AAAAnotakey"} }, "SSHAuthorizedKeys[1]:"},
		"ssh key two lines": {func(n *Node) { n.SSHAuthorizedKeys = []string{keyAlice + "\n" + keyBob} }, "SSHAuthorizedKeys[0]: must be one line"},
		"ssh key type lies": {func(n *Node) { n.SSHAuthorizedKeys = []string{strings.Replace(keyAlice, "ssh-ed25519", "ssh-rsa", 1)} }, "SSHAuthorizedKeys[0]:"},
		"mode":              {func(n *Node) { n.Clusterd.Mode = "member" }, "Clusterd.Mode:"},
		"no servers":        {func(n *Node) { n.Clusterd.Servers = nil }, "Clusterd.Servers: a join node needs"},
		"server host name":  {func(n *Node) { n.Clusterd.Servers = []string{"10.0.0.1", "core-1:7379"} }, "Clusterd.Servers[1]:"},
		"server port":       {func(n *Node) { n.Clusterd.Servers = []string{"10.0.0.1:0"} }, "Clusterd.Servers[0]:"},
		"token":             {func(n *Node) { n.Clusterd.Token = "CRL1::sha256:abc::def" }, "Clusterd.Token:"},
		"CA not the token's": {func(n *Node) {
			n.Clusterd.Token = "CRL1::sha256:" + strings.Repeat("0", 64) + "::" + strings.Repeat("1", 64)
		}, "Clusterd.CACert: is sha256:"},
		"CA not PEM":        {func(n *Node) { n.Clusterd.CACert = []byte("hello") }, "Clusterd.CACert:"},
		"CA key on join":    {func(n *Node) { n.Clusterd.CAKey = []byte("k") }, "Clusterd.CAKey: only the init node"},
		"init without key":  {func(n *Node) { n.Clusterd.Mode = ModeInit }, "Clusterd.CAKey: the init node needs"},
		"IP unspecified":    {func(n *Node) { n.Clusterd.IP = netip.IPv4Unspecified() }, "Clusterd.IP:"},
		"metadata key":      {func(n *Node) { n.Clusterd.Metadata = map[string]string{"a b": "c"} }, `Clusterd.Metadata["a b"]:`},
		"metadata comma":    {func(n *Node) { n.Clusterd.Metadata = map[string]string{"a": "b,c"} }, `Clusterd.Metadata["a"]:`},
		"metadata empty":    {func(n *Node) { n.Clusterd.Metadata = map[string]string{"a": ""} }, `Clusterd.Metadata["a"]: value is empty`},
		"ttl":               {func(n *Node) { n.Clusterd.MachineTTL = -time.Second }, "Clusterd.MachineTTL:"},
		"port":              {func(n *Node) { n.Clusterd.APIPort = 70000 }, "Clusterd.APIPort:"},
		"driver":            {func(n *Node) { n.Clusterd.Driver = "docker" }, "Clusterd.Driver:"},
		"bridge":            {func(n *Node) { n.Clusterd.Network.Bridge = "a-very-long-bridge-name" }, "Clusterd.Network.Bridge:"},
		"data dir":          {func(n *Node) { n.Clusterd.DataDir = "var/lib" }, "Clusterd.DataDir:"},
		"binary URL":        {func(n *Node) { n.Binary.URL = "s3://bucket/clusterd" }, "Binary.URL:"},
		"binary hash":       {func(n *Node) { n.Binary.SHA512 = "abc" }, "Binary.SHA512:"},
		"binary hash upper": {func(n *Node) { n.Binary.SHA512 = strings.ToUpper(binSHA) }, "Binary.SHA512:"},
		"relative path":     {func(n *Node) { n.Files[1].Path = "usr/local/bin/x" }, "Files[1].Path: \"usr/local/bin/x\" is not an absolute path"},
		"unclean path":      {func(n *Node) { n.Files[1].Path = "/etc/../etc/x" }, "Files[1].Path:"},
		"directory path":    {func(n *Node) { n.Files[1].Path = "/etc/x/" }, "Files[1].Path:"},
		"reserved path":     {func(n *Node) { n.Files[0].Path = "/etc/corral/token" }, "Files[0].Path: /etc/corral/token is written by Corral"},
		"duplicate path":    {func(n *Node) { n.Files[1].Path = n.Files[0].Path }, "Files[1].Path: /etc/motd is also Files[0]"},
		"mode too big":      {func(n *Node) { n.Files[0].Mode = 0o10000 }, "Files[0].Mode: 010000 is not a permission mode"},
		"setuid":            {func(n *Node) { n.Files[0].Mode = 0o4755 }, "Files[0].Mode: 04755 has setuid"},
		"owner":             {func(n *Node) { n.Files[0].Owner = "root:wheel:x" }, "Files[0].Owner:"},
		"unit name":         {func(n *Node) { n.Units[0].Name = "exporter" }, "Units[0].Name: \"exporter\" has no unit type"},
		"unit name chars":   {func(n *Node) { n.Units[0].Name = "my exporter.service" }, "Units[0].Name:"},
		"unit is clusterd":  {func(n *Node) { n.Units[0].Name = "clusterd.service" }, "Units[0].Name: clusterd.service is also Corral's own unit"},
		"unit twice":        {func(n *Node) { n.Units[1].Name = n.Units[0].Name }, "Units[1].Name: exporter.service is also Units[0]"},
		"unit as a file":    {func(n *Node) { n.Files[0].Path = "/etc/systemd/system/exporter.service" }, "Units[0].Name: exporter.service would overwrite Files[0]"},
		"unit no install":   {func(n *Node) { n.Units[0].Content = helloUnit }, "Units[0].Content: the unit is enabled but has no [Install] section"},
		"unit not a unit":   {func(n *Node) { n.Units[0].Content = "[Unit\nfoo" }, "Units[0].Content: not a unit file"},
		"template enabled":  {func(n *Node) { n.Units[1].Enabled = true }, "Units[1].Enabled: hello@.service is a template"},
		"instance, template without [Install]": {func(n *Node) { n.Units = append(n.Units, Unit{Name: "hello@web.service", Enabled: true}) },
			"Units[3].Enabled: its template hello@.service (Units[1]) has no [Install] section"},
		"unit does nothing": {func(n *Node) { n.Units[2].Enabled = false }, "Units[2]: has no content and is not enabled"},
	} {
		t.Run(name, func(t *testing.T) {
			n := fixtures(t)["join"]
			// Fresh slices: the fixture's are shared by nothing, but be sure.
			n.Files = append([]File(nil), n.Files...)
			n.Units = append([]Unit(nil), n.Units...)
			tc.edit(&n)
			err := n.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an error containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), `templates: node "`) {
				t.Errorf("error does not name the node: %v", err)
			}
			for _, f := range []Format{FormatIgnition, FormatCloudConfig} {
				if _, err := Render(n, f); err == nil {
					t.Errorf("%s rendered an invalid node", f)
				}
			}
		})
	}
}

// TestValidateReportsAll: one render reports every problem, not the first.
func TestValidateReportsAll(t *testing.T) {
	n := fixtures(t)["join"]
	n.Hostname = "bad_host"
	n.Binary.SHA512 = ""
	n.Units = append([]Unit(nil), n.Units...)
	n.Units[0].Name = "x"
	err := n.Validate()
	for _, want := range []string{"Hostname:", "Binary.SHA512:", "Units[0].Name:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestValidateAccepts(t *testing.T) {
	n := fixtures(t)["join"]
	n.SSHAuthorizedKeys = append(n.SSHAuthorizedKeys, `from="10.0.0.0/8",no-pty `+keyAlice)
	n.Units = append([]Unit(nil), n.Units...)
	n.Units[1].Content = helloUnit + "\n[Install]\nWantedBy=multi-user.target\n"
	n.Units = append(n.Units, Unit{Name: "hello@web.service", Enabled: true}, Unit{Name: "backup.timer", Content: "[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n", Enabled: true})
	n.Clusterd.Servers = []string{"fd00::1", "[fd00::2]:7379"}
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := Ignition(n); err != nil {
		t.Fatal(err)
	}
}
