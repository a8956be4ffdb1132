package templates

import (
	"bytes"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// Test fixtures: a CA, its key and a token pinning it, made once with
// bootstrap/pki for these tests only.
func fixtureFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	keyAlice = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKrshZu94L2QWNsDb7XWdFsLTLgjRf2TG0SFcBeQ9CD alice@example"
	keyBob   = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDPgX88FIFrjt+BiuitgB6be39WMhQHdPavuzCdsZIvVJY93ZBqgq2LI1tE7n5LBlo+e5v7mjvw2Odn5UMjiQCkEf9xlA/H9lMDtkrHYrKm+GS55p2rl9qIU8Wte9vJVwJR591MXpuJT57kn2cULOZWpieYmyDtp6EsyKHGR3Vh6/rZwBLLj4PsIBinDBiBogXIBNFEBr0fVztu99DrBWyiJ0odrlf4Ab32r+05Bt4KzJ4vR3pBMIOgp2xWIqSyuX498embKdg5N9e7S6SOrQv7h49SncVwIhIalwhpYl0SMqBzG6V8185e0HuVx7h4dUF6NqaIsWWyy8TD2POA5M2J bob@example"
	binURL   = "https://assets.example.com/corral/v0.4.0/provision-linux-amd64"
	binSHA   = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
)

const helloUnit = `[Unit]
Description=Hello from %i

[Service]
ExecStart=/bin/sh -c 'while true; do echo "hello %i"; sleep 5; done'
`

const webUnit = `[Unit]
Description=The web group's exporter
After=clusterd.service

[Service]
ExecStart=/usr/local/bin/exporter --listen=:9100
Restart=on-failure

[Install]
WantedBy=multi-user.target
`

// fixtures are the nodes every format test renders: the init node of a
// cluster, a joining member with the group's files and units, a client
// whose address is found at boot, and the member again with file contents
// that are hard to carry in YAML (see trickyNode).
func fixtures(t testing.TB) map[string]Node {
	m := baseFixtures(t)
	m["tricky"] = trickyNode(m["join"])
	return m
}

func baseFixtures(t testing.TB) map[string]Node {
	token := strings.TrimSpace(string(fixtureFile(t, "token")))
	ca := fixtureFile(t, "ca.pem")
	blob := bytes.Repeat([]byte{0, 1, 2, 3, 0xff, 0xfe}, 40) // binary: goes base64
	return map[string]Node{
		"init": {
			Hostname: "core-1", Cluster: "demo",
			SSHAuthorizedKeys: []string{keyAlice},
			Clusterd: Clusterd{
				Mode: ModeInit, Token: token, CACert: ca, CAKey: fixtureFile(t, "ca-key.pem"),
				IP: netip.MustParseAddr("10.0.0.11"),
			},
			Binary: Binary{URL: binURL, SHA512: binSHA},
		},
		"join": {
			Hostname: "web-2", Cluster: "demo",
			SSHAuthorizedKeys: []string{keyAlice, keyBob},
			Clusterd: Clusterd{
				Mode: ModeJoin, Token: token, CACert: ca,
				Servers:    []string{"10.0.0.11", "10.0.0.12:7400"},
				IP:         netip.MustParseAddr("10.0.0.22"),
				Metadata:   map[string]string{"role": "web", "disk": "ssd", "zone": "eu west 1"},
				MachineTTL: 30 * time.Second, APIPort: 7400, QuotaBytes: 4 << 30,
				Driver: "exec", RescheduleGrace: 10 * time.Second,
				Network: Network{Bridge: "docker0", SubnetFile: "/run/flannel/subnet.env", NoIPMasq: true},
			},
			Binary: Binary{URL: binURL, SHA512: binSHA},
			Files: []File{
				{Path: "/etc/motd", Content: []byte("Welcome to web-2, a Corral node.\n")},
				{Path: "/usr/local/bin/exporter", Content: blob, Mode: 0o755},
				{Path: "/etc/web/config.yaml", Content: []byte(strings.Repeat("listen: :8080 # 100% of it\n", 20)), Mode: 0o640, Owner: "root:adm"},
				{Path: "/home/core/.hushlogin", Content: nil, Mode: 0o600, Owner: "core:core"},
			},
			Units: []Unit{
				{Name: "exporter.service", Content: webUnit, Enabled: true},
				{Name: "hello@.service", Content: helloUnit},
				{Name: "systemd-timesyncd.service", Enabled: true},
			},
		},
		"client": {
			Hostname: "worker-7", Cluster: "demo",
			Clusterd: Clusterd{
				Mode: ModeClient, Token: token,
				Servers: []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"},
				DataDir: "/var/lib/corral data",
				Network: Network{Disabled: true},
			},
			Binary: Binary{URL: binURL, SHA512: binSHA},
		},
	}
}
