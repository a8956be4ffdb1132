package pxe

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var dnsmasqCases = map[string]DnsmasqOptions{
	// A network with a DHCP server of its own: dnsmasq adds the boot
	// options and serves iPXE's binaries itself.
	"proxy": {
		Interface:  "eth1",
		Network:    netip.MustParsePrefix("192.168.10.0/24"),
		Proxy:      true,
		BootURL:    "http://192.168.10.5:8080/boot.ipxe",
		EnableTFTP: true,
	},
	// A network of its own: dnsmasq leases the addresses, and Corral's
	// TFTP server (ServeTFTP, on another host) sends iPXE.
	"full": {
		Interface:  "enp3s0",
		Network:    netip.MustParsePrefix("10.20.0.0/16"),
		RangeStart: netip.MustParseAddr("10.20.1.10"),
		RangeEnd:   netip.MustParseAddr("10.20.1.250"),
		LeaseTime:  90 * time.Minute,
		BootURL:    "http://10.20.0.1:8080/boot.ipxe",
		TFTPServer: netip.MustParseAddr("10.20.0.2"),
	},
}

// dnsmasqTest has dnsmasq itself check a configuration.
func dnsmasqTest(t *testing.T, conf []byte) {
	t.Helper()
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		bin = "/usr/sbin/dnsmasq"
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("dnsmasq is not installed (apt-get install dnsmasq): the configuration can't be checked: %v", err)
		}
	}
	file := filepath.Join(t.TempDir(), "dnsmasq.conf")
	if err := os.WriteFile(file, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--test", "--conf-file="+file).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "syntax check OK") {
		t.Errorf("dnsmasq --test refused the configuration: %v\n%s\n%s", err, out, conf)
	}
}

func TestDnsmasqConfig(t *testing.T) {
	for name, o := range dnsmasqCases {
		t.Run(name, func(t *testing.T) {
			got, err := DnsmasqConfig(o)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "dnsmasq-"+name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestDnsmasqConfig -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output (run with -update if the change is meant):\n%s", golden, got)
			}
			dnsmasqTest(t, got)

			s := string(got)
			for _, want := range []string{"dhcp-userclass=set:ipxe,iPXE\n", "dhcp-match=set:ipxe,175\n", o.BootURL + "\n", "port=0\n", "interface=" + o.Interface + "\n"} {
				if !strings.Contains(s, want) {
					t.Errorf("the configuration lacks %q", want)
				}
			}
		})
	}

	// Every combination of the modes passes dnsmasq's own check.
	for _, proxy := range []bool{false, true} {
		for _, tftp := range []bool{false, true} {
			for _, server := range []netip.Addr{{}, netip.MustParseAddr("10.0.0.9")} {
				o := DnsmasqOptions{Network: netip.MustParsePrefix("10.0.0.0/24"), Proxy: proxy, RangeStart: netip.MustParseAddr("10.0.0.100"), RangeEnd: netip.MustParseAddr("10.0.0.200"),
					BootURL: "http://10.0.0.1:8080/boot.ipxe", EnableTFTP: tftp, TFTPRoot: t.TempDir(), TFTPServer: server}
				conf, err := DnsmasqConfig(o)
				if err != nil {
					t.Fatal(err)
				}
				dnsmasqTest(t, conf)
			}
		}
	}
}

func TestDnsmasqConfigRefuses(t *testing.T) {
	ok := dnsmasqCases["full"]
	for name, change := range map[string]func(*DnsmasqOptions){
		"no network":      func(o *DnsmasqOptions) { o.Network = netip.Prefix{} },
		"IPv6 network":    func(o *DnsmasqOptions) { o.Network = netip.MustParsePrefix("fd00::/64") },
		"no boot URL":     func(o *DnsmasqOptions) { o.BootURL = "" },
		"not a URL":       func(o *DnsmasqOptions) { o.BootURL = "tftp://x/boot.ipxe" },
		"comma in URL":    func(o *DnsmasqOptions) { o.BootURL = "http://x/boot.ipxe?a,b" },
		"no range":        func(o *DnsmasqOptions) { o.RangeStart = netip.Addr{} },
		"range outside":   func(o *DnsmasqOptions) { o.RangeEnd = netip.MustParseAddr("10.21.0.1") },
		"range backwards": func(o *DnsmasqOptions) { o.RangeStart, o.RangeEnd = o.RangeEnd, o.RangeStart },
		"short lease":     func(o *DnsmasqOptions) { o.LeaseTime = time.Minute },
		"bad interface":   func(o *DnsmasqOptions) { o.Interface = "eth0\nport=53" },
	} {
		o := ok
		change(&o)
		if conf, err := DnsmasqConfig(o); err == nil {
			t.Errorf("%s: accepted:\n%s", name, conf)
		}
	}
}

// Fixed addresses by MAC are reservations dnsmasq accepts; proxy mode,
// which hands out no address, refuses them.
func TestDnsmasqHosts(t *testing.T) {
	o := DnsmasqOptions{Network: netip.MustParsePrefix("10.0.0.0/24"), RangeStart: netip.MustParseAddr("10.0.0.200"), RangeEnd: netip.MustParseAddr("10.0.0.250"),
		BootURL: "http://10.0.0.1:8080/boot.ipxe", EnableTFTP: true,
		Hosts: []DnsmasqHost{{MAC: "52-54-00-A1-00-01", IP: netip.MustParseAddr("10.0.0.11"), Name: "node1"}, {MAC: "52:54:00:a1:00:02", IP: netip.MustParseAddr("10.0.0.12"), Name: "node2"}}}
	conf, err := DnsmasqConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dhcp-host=52:54:00:a1:00:01,10.0.0.11,node1\n", "dhcp-host=52:54:00:a1:00:02,10.0.0.12,node2\n"} {
		if !bytes.Contains(conf, []byte(want)) {
			t.Errorf("no %q in\n%s", want, conf)
		}
	}
	dnsmasqTest(t, conf)
	o.Proxy = true
	if _, err := DnsmasqConfig(o); err == nil || !strings.Contains(err.Error(), "need full DHCP") {
		t.Errorf("proxy mode with fixed addresses: %v", err)
	}
	o.Proxy = false
	o.Hosts[0].IP = netip.MustParseAddr("10.9.0.11")
	if _, err := DnsmasqConfig(o); err == nil || !strings.Contains(err.Error(), "not in 10.0.0.0/24") {
		t.Errorf("an address outside the network: %v", err)
	}
}
