package pxe

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/syncbuf"
	"github.com/corral-dev/corral/providers"
)

// logBuf collects a Server's log lines.
type logBuf struct{ syncbuf.Buffer }

// lines returns the lines logged at level or above.
func (l *logBuf) lines(level slog.Level) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		line := sc.Text()
		for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
			if lv >= level && strings.Contains(line, "level="+lv.String()) {
				out = append(out, line)
			}
		}
	}
	return out
}

type fixture struct {
	srv  *Server
	http *httptest.Server
	log  *logBuf
}

// newFixture starts s (its Log replaced) behind a real HTTP server; the
// server's BaseURL is the test server's.
func newFixture(t *testing.T, s *Server) *fixture {
	t.Helper()
	f := &fixture{srv: s, log: &logBuf{}}
	s.Log = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.http = httptest.NewServer(s)
	t.Cleanup(f.http.Close)
	s.BaseURL = f.http.URL
	return f
}

func (f *fixture) get(t *testing.T, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(f.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func (f *fixture) report(t *testing.T, query, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(f.http.URL+"/report?"+query, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// script fetches an iPXE script, checking that it is well formed.
func (f *fixture) script(t *testing.T, path string) string {
	t.Helper()
	code, body, h := f.get(t, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	checkScript(t, body)
	return body
}

// iPXE settings a script may leave for iPXE to expand.
var allowedSettings = map[string]bool{"${mac:hexhyp}": true, "${uuid}": true}

func checkScript(t *testing.T, s string) {
	t.Helper()
	if !strings.HasPrefix(s, "#!ipxe\n") {
		t.Errorf("script does not start with #!ipxe:\n%s", s)
	}
	if !strings.HasSuffix(s, "\n") {
		t.Errorf("script does not end with a newline:\n%s", s)
	}
	for _, bad := range []string{"{{", "}}", "%!", "<nil>", "<no value>", "%s", "%v", "\r", "\t"} {
		if strings.Contains(s, bad) {
			t.Errorf("script contains %q:\n%s", bad, s)
		}
	}
	for _, set := range regexp.MustCompile(`\$\{[^}]*\}?`).FindAllString(s, -1) {
		if !allowedSettings[set] {
			t.Errorf("script contains the setting %q:\n%s", set, s)
		}
	}
	for i, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if i > 0 && strings.TrimSpace(line) == "" {
			t.Errorf("script line %d is blank:\n%s", i+1, s)
		}
		if i > 0 && strings.HasPrefix(line, "#") && strings.HasPrefix(line, "#!") {
			t.Errorf("script line %d is a second shebang:\n%s", i+1, s)
		}
		for _, tok := range strings.Fields(line) {
			if strings.HasPrefix(line, "#") {
				break
			}
			if tok == ";" || tok == "&&" || (tok == "||" && !strings.Contains(line, "|| goto failed") && !strings.HasSuffix(line, "|| exit")) {
				t.Errorf("script line %d has a stray operator %q: %s", i+1, tok, line)
			}
		}
	}
}

// echoed is what a script prints on the console, its lines joined.
func echoed(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if t, ok := strings.CutPrefix(l, "echo "); ok {
			out = append(out, t)
		}
	}
	return strings.Join(out, " ")
}

var flatcar = Profile{
	Kernel:      "flatcar/vmlinuz",
	Initrds:     []string{"flatcar/initrd.cpio.gz"},
	Args:        []string{"console=ttyS0,115200n8", "flatcar.first_boot=1"},
	OwnIgnition: true,
}

var corral = Profile{
	Kernel:  "vmlinuz",
	Initrds: []string{"corral-initrd.img", "extra/modules.cpio"},
	Args:    []string{"console=tty0", "quiet"},
}

func mustSet(t *testing.T, s *Server, m Machine) {
	t.Helper()
	if err := s.Set(m); err != nil {
		t.Fatal(err)
	}
}

func TestBootScript(t *testing.T) {
	f := newFixture(t, &Server{})
	s := f.script(t, "/boot.ipxe")
	want := "chain --autofree " + f.http.URL + "/ipxe?mac=${mac:hexhyp}&uuid=${uuid} || goto failed\n"
	if !strings.Contains(s, want) {
		t.Errorf("boot.ipxe lacks %q:\n%s", want, s)
	}
	if !strings.Contains(s, "\n:failed\n") || !strings.HasSuffix(s, "exit\n") {
		t.Errorf("boot.ipxe doesn't fall back to the firmware when the chain fails:\n%s", s)
	}

	// Without BaseURL, the host the machine asked.
	s2 := &Server{}
	h := httptest.NewServer(s2)
	defer h.Close()
	resp, err := http.Get(h.URL + "/boot.ipxe")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), h.URL+"/ipxe?") {
		t.Errorf("without BaseURL, boot.ipxe doesn't use the request's host %s:\n%s", h.URL, b)
	}
}

func TestMachineScript(t *testing.T) {
	f := newFixture(t, &Server{})
	mustSet(t, f.srv, Machine{Name: "core-1", MAC: "52:54:00:12:34:56", Profile: corral, Ignition: []byte(`{"ignition":{}}`)})
	mustSet(t, f.srv, Machine{Name: "flatcar-1", MAC: "52:54:00:00:00:02", Group: "fc", Profile: flatcar, Ignition: []byte(`{}`)})
	base := f.http.URL

	got := f.script(t, "/ipxe?mac=52-54-00-12-34-56&uuid=")
	want := "kernel " + base + "/assets/vmlinuz initrd=corral-initrd.img initrd=modules.cpio console=tty0 quiet" +
		" corral.config=" + base + "/ignition?mac=52:54:00:12:34:56 corral.report=" + base + "/report?mac=52:54:00:12:34:56\n" +
		"initrd --name corral-initrd.img " + base + "/assets/corral-initrd.img\n" +
		"initrd --name modules.cpio " + base + "/assets/extra/modules.cpio\n" +
		"boot\n"
	if !strings.HasSuffix(got, want) {
		t.Errorf("core-1's script:\n%s\nwant it to end with:\n%s", got, want)
	}
	if strings.Contains(got, "ignition.config.url") {
		t.Errorf("a Corral-initramfs profile got ignition.config.url:\n%s", got)
	}

	got = f.script(t, "/ipxe?mac=525400000002")
	want = "kernel " + base + "/assets/flatcar/vmlinuz initrd=initrd.cpio.gz console=ttyS0,115200n8 flatcar.first_boot=1" +
		" ignition.config.url=" + base + "/ignition?mac=52:54:00:00:00:02 ignition.platform.id=metal" +
		" corral.report=" + base + "/report?mac=52:54:00:00:00:02\n" +
		"initrd --name initrd.cpio.gz " + base + "/assets/flatcar/initrd.cpio.gz\n" +
		"boot\n"
	if !strings.HasSuffix(got, want) {
		t.Errorf("flatcar-1's script:\n%s\nwant it to end with:\n%s", got, want)
	}
	if strings.Contains(got, "corral.config=") {
		t.Errorf("an own-Ignition profile got corral.config:\n%s", got)
	}

	// The URLs in the script are the server's: follow them.
	code, body, h := f.get(t, "/ignition?mac=52:54:00:00:00:02")
	if code != 200 || body != "{}" || !strings.Contains(h.Get("Content-Type"), "ignition+json") {
		t.Errorf("/ignition: %d %q %q", code, body, h.Get("Content-Type"))
	}
}

func TestConfigs(t *testing.T) {
	f := newFixture(t, &Server{})
	mustSet(t, f.srv, Machine{Name: "ign", MAC: "02:00:00:00:00:01", Profile: corral, Ignition: []byte(`{"ignition":{"version":"3.4.0"}}`)})
	mustSet(t, f.srv, Machine{Name: "cc", MAC: "02:00:00:00:00:02", Profile: corral, CloudConfig: []byte("#cloud-config\nhostname: cc\n")})

	if code, body, h := f.get(t, "/ignition?mac=02:00:00:00:00:01"); code != 200 || body != `{"ignition":{"version":"3.4.0"}}` || h.Get("Cache-Control") != "no-store" {
		t.Errorf("/ignition: %d %q %v", code, body, h)
	}
	if code, body, h := f.get(t, "/cloud-config?mac=02-00-00-00-00-02"); code != 200 || body != "#cloud-config\nhostname: cc\n" || !strings.HasPrefix(h.Get("Content-Type"), "text/cloud-config") {
		t.Errorf("/cloud-config: %d %q %v", code, body, h)
	}
	if code, body, _ := f.get(t, "/cloud-config?mac=02:00:00:00:00:01"); code != 404 || !strings.Contains(body, "machine ign has no cloud-config config") {
		t.Errorf("/cloud-config of an Ignition machine: %d %q", code, body)
	}
	if code, body, _ := f.get(t, "/ignition?mac=02:00:00:00:00:02"); code != 404 || !strings.Contains(body, "machine cc has no Ignition config") {
		t.Errorf("/ignition of a cloud-config machine: %d %q", code, body)
	}
	if code, body, _ := f.get(t, "/ignition"); code != 400 || !strings.Contains(body, "no mac=") {
		t.Errorf("/ignition without mac: %d %q", code, body)
	}
	if code, body, _ := f.get(t, "/ignition?mac=zz"); code != 400 || !strings.Contains(body, "malformed mac=") {
		t.Errorf("/ignition with a bad mac: %d %q", code, body)
	}
	// Wrong methods.
	resp, err := http.Post(f.http.URL+"/ignition?mac=02:00:00:00:00:01", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ignition: %d", resp.StatusCode)
	}

	// Set copies: the caller's slice changing later changes nothing served.
	ign := []byte(`{"a":1}`)
	mustSet(t, f.srv, Machine{Name: "ign", MAC: "02:00:00:00:00:01", Profile: corral, Ignition: ign})
	ign[2] = 'X'
	if _, body, _ := f.get(t, "/ignition?mac=02:00:00:00:00:01"); body != `{"a":1}` {
		t.Errorf("Set didn't copy the config: %q", body)
	}
	// Remove: the MAC is unknown again.
	f.srv.Remove("ign")
	if code, _, _ := f.get(t, "/ignition?mac=02:00:00:00:00:01"); code != 404 {
		t.Errorf("/ignition of a removed machine: %d", code)
	}
}

func TestNormalizeMAC(t *testing.T) {
	for _, in := range []string{"aa:bb:cc:dd:ee:0f", "AA:BB:CC:DD:EE:0F", "aa-bb-cc-dd-ee-0f", "AABBCCDDEE0F", "aabbccddee0f", "aabb.ccdd.ee0f", " aa:bb:cc:dd:ee:0f "} {
		got, err := NormalizeMAC(in)
		if err != nil || got != "aa:bb:cc:dd:ee:0f" {
			t.Errorf("NormalizeMAC(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:0f:11", "aa:bb-cc:dd:ee:0f", "aa::bb:cc:dd:ee0f", "aa:bb:cc:dd:ee:0g", "aa:bb:cc:dd:ee:0f:", ":aabbccddee0f", "${mac}"} {
		if got, err := NormalizeMAC(in); err == nil {
			t.Errorf("NormalizeMAC(%q) = %q, want an error", in, got)
		}
	}

	// Through HTTP: every form finds the machine, whatever form it was set in.
	f := newFixture(t, &Server{})
	mustSet(t, f.srv, Machine{Name: "m", MAC: "AA-BB-CC-DD-EE-0F", Profile: corral, Ignition: []byte("{}")})
	for _, q := range []string{"aa:bb:cc:dd:ee:0f", "AA:BB:CC:DD:EE:0F", "aa-bb-cc-dd-ee-0f", "AABBCCDDEE0F"} {
		if s := f.script(t, "/ipxe?mac="+q); !strings.Contains(s, "machine m,") {
			t.Errorf("/ipxe?mac=%s didn't find the machine:\n%s", q, s)
		}
		if code, _, _ := f.get(t, "/ignition?mac="+q); code != 200 {
			t.Errorf("/ignition?mac=%s: %d", q, code)
		}
	}
	// Two machines can't share a MAC, in whatever form.
	if err := f.srv.Set(Machine{Name: "other", MAC: "aabbccddee0f", Profile: corral}); err == nil {
		t.Error("Set accepted a second machine with the same MAC")
	}
}

func TestUUID(t *testing.T) {
	f := newFixture(t, &Server{})
	const uuid = "4c4c4544-0042-3510-8052-b4c04f4d4e31"
	mustSet(t, f.srv, Machine{Name: "pinned", MAC: "02:00:00:00:00:10", UUID: strings.ToUpper(uuid), Profile: corral, Ignition: []byte("{}")})

	s := f.script(t, "/ipxe?mac=02-00-00-00-00-10&uuid="+uuid)
	if !strings.Contains(s, "corral.config="+f.http.URL+"/ignition?mac=02:00:00:00:00:10&uuid="+uuid+" ") {
		t.Errorf("the machine's URLs don't carry its UUID:\n%s", s)
	}
	// Another machine with the same MAC (a moved NIC), or none reported.
	for _, q := range []string{"&uuid=00000000-0000-0000-0000-000000000001", "&uuid=", ""} {
		s := f.script(t, "/ipxe?mac=02-00-00-00-00-10"+q)
		if strings.Contains(s, "kernel") || !strings.Contains(echoed(s), "is machine pinned's") || !strings.Contains(echoed(s), "UUID") || !strings.HasSuffix(s, "exit\n") {
			t.Errorf("/ipxe with uuid %q booted or didn't say why:\n%s", q, s)
		}
	}
	if code, _, _ := f.get(t, "/ignition?mac=02:00:00:00:00:10&uuid="+uuid); code != 200 {
		t.Errorf("/ignition with the UUID: %d", code)
	}
	if code, _, _ := f.get(t, "/ignition?mac=02:00:00:00:00:10"); code != 404 {
		t.Errorf("/ignition without the UUID: %d", code)
	}
	if err := f.srv.Set(Machine{Name: "bad", MAC: "02:00:00:00:00:11", UUID: "not-a-uuid", Profile: corral}); err == nil {
		t.Error("Set accepted a malformed UUID")
	}
}

func TestUnknownMAC(t *testing.T) {
	f := newFixture(t, &Server{})
	mustSet(t, f.srv, Machine{Name: "known", MAC: "02:00:00:00:00:01", Profile: corral, Ignition: []byte("{}"), CloudConfig: []byte("#cloud-config\n")})

	s := f.script(t, "/ipxe?mac=DE-AD-BE-EF-00-01&uuid=4c4c4544-0042-3510-8052-b4c04f4d4e31")
	for _, want := range []string{"MAC de:ad:be:ef:00:01 is not in the cluster file", "add a machine with mac = de:ad:be:ef:00:01", "run provision up again", "Leaving network boot"} {
		if !strings.Contains(echoed(s), want) {
			t.Errorf("unknown-MAC script lacks %q:\n%s", want, s)
		}
	}
	if !strings.HasSuffix(s, "\nexit\n") {
		t.Errorf("unknown-MAC script doesn't end by exiting to the firmware:\n%s", s)
	}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n")[1:] {
		if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "echo") && line != "exit" {
			t.Errorf("unknown-MAC script does something besides printing and exiting: %q", line)
		}
	}
	for _, p := range []string{"/ignition?mac=de:ad:be:ef:00:01", "/cloud-config?mac=de:ad:be:ef:00:01"} {
		if code, body, _ := f.get(t, p); code != 404 || !strings.Contains(body, "de:ad:be:ef:00:01 is not in the cluster file") {
			t.Errorf("GET %s: %d %q", p, code, body)
		}
	}
	if code, body := f.report(t, "mac=de:ad:be:ef:00:01", `{"status":"booted"}`); code != 404 || !strings.Contains(body, "not in the cluster file") {
		t.Errorf("POST /report: %d %q", code, body)
	}
	warns := f.log.lines(slog.LevelWarn)
	if len(warns) != 1 || !strings.Contains(warns[0], "mac=de:ad:be:ef:00:01") || !strings.Contains(warns[0], "not in the cluster file") {
		t.Errorf("want one log line for the unknown MAC, got %d:\n%s", len(warns), strings.Join(warns, "\n"))
	}

	// A request without a MAC (iPXE with no NIC settings) is told so too.
	s = f.script(t, "/ipxe")
	if !strings.Contains(echoed(s), "no mac= parameter") || !strings.HasSuffix(s, "exit\n") {
		t.Errorf("/ipxe without a MAC:\n%s", s)
	}
	// Nothing from the request is written into the script as it was sent.
	s = f.script(t, "/ipxe?mac=${net0/mac}%0Aboot&uuid=${uuid}")
	if strings.Contains(s, "net0") || strings.Contains(s, "\nboot") {
		t.Errorf("the request's parameters reached the script:\n%s", s)
	}
}

func TestGroups(t *testing.T) {
	var mu sync.Mutex
	binds := map[string]string{}
	calls := 0
	srv := &Server{OnBind: func(name, mac string) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		binds[name] = mac
	}}
	f := newFixture(t, srv)
	if err := srv.SetGroups([]Group{
		{Name: "racks", Ranges: []MACRange{{First: "02:00:00:00:10:00", Last: "02-00-00-00-10-ff"}}},
		{Name: "any", Default: true},
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"rack-2", "rack-1"} { // declared out of order: bound by name
		mustSet(t, srv, Machine{Name: n, Group: "racks", Profile: corral, Ignition: []byte(`"` + n + `"`)})
	}
	mustSet(t, srv, Machine{Name: "spare-1", Group: "any", Profile: flatcar, Ignition: []byte(`"spare"`)})

	// Free slots answer nothing until bound.
	if code, _, _ := f.get(t, "/ignition?mac="); code != 400 {
		t.Errorf("/ignition with an empty MAC: %d", code)
	}

	// The first MAC of the range takes rack-1, concurrently asked many times.
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(f.http.URL + "/ipxe?mac=02-00-00-00-10-20")
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if s := f.script(t, "/ipxe?mac=02-00-00-00-10-20"); !strings.Contains(s, "machine rack-1 (group racks)") {
		t.Errorf("the first MAC in the range didn't get rack-1:\n%s", s)
	}
	if _, body, _ := f.get(t, "/ignition?mac=02:00:00:00:10:20"); body != `"rack-1"` {
		t.Errorf("rack-1's config: %q", body)
	}
	if s := f.script(t, "/ipxe?mac=02-00-00-00-10-21"); !strings.Contains(s, "machine rack-2 (group racks)") {
		t.Errorf("the second MAC in the range didn't get rack-2:\n%s", s)
	}
	// The group is full: the unknown-MAC answer says so, and binds nothing.
	s := f.script(t, "/ipxe?mac=02-00-00-00-10-22")
	if strings.Contains(s, "kernel") || !strings.Contains(echoed(s), "group racks, which has no free machine") {
		t.Errorf("a MAC of a full group:\n%s", s)
	}
	// A MAC outside the range goes to the default group.
	if s := f.script(t, "/ipxe?mac=0a:00:00:00:00:01"); !strings.Contains(s, "machine spare-1 (group any)") || !strings.Contains(s, "ignition.config.url") {
		t.Errorf("a MAC outside the ranges didn't get the default group's slot:\n%s", s)
	}
	if s := f.script(t, "/ipxe?mac=0a:00:00:00:00:02"); !strings.Contains(echoed(s), "group any, which has no free machine") {
		t.Errorf("a second MAC for a full default group:\n%s", s)
	}

	mu.Lock()
	want := map[string]string{"rack-1": "02:00:00:00:10:20", "rack-2": "02:00:00:00:10:21", "spare-1": "0a:00:00:00:00:01"}
	if calls != 3 || fmt.Sprint(binds) != fmt.Sprint(want) {
		t.Errorf("OnBind called %d times with %v, want once each: %v", calls, binds, want)
	}
	mu.Unlock()

	// Setting a bound slot again, still without a MAC (a re-render), keeps
	// its binding; setting it with the MAC (the caller's record) too.
	mustSet(t, srv, Machine{Name: "rack-1", Group: "racks", Profile: corral, Ignition: []byte(`"new"`)})
	if _, body, _ := f.get(t, "/ignition?mac=02:00:00:00:10:20"); body != `"new"` {
		t.Errorf("a re-set slot lost its binding: %q", body)
	}
	mustSet(t, srv, Machine{Name: "rack-2", MAC: "02:00:00:00:10:21", Group: "racks", Profile: corral, Ignition: []byte(`"r2"`)})
	if _, body, _ := f.get(t, "/ignition?mac=02:00:00:00:10:21"); body != `"r2"` {
		t.Errorf("rack-2 by its recorded MAC: %q", body)
	}
	if calls != 3 {
		t.Errorf("OnBind called again: %d", calls)
	}

	for _, bad := range [][]Group{
		{{Name: "x", Ranges: []MACRange{{First: "02:00:00:00:00:09", Last: "02:00:00:00:00:01"}}}},
		{{Name: "x", Ranges: []MACRange{{First: "nope", Last: "02:00:00:00:00:01"}}}},
		{{Name: "x"}, {Name: "x"}},
		{{Name: "bad name"}},
	} {
		if err := srv.SetGroups(bad); err == nil {
			t.Errorf("SetGroups(%v) accepted", bad)
		}
	}
}

func TestInstallOnce(t *testing.T) {
	var mu sync.Mutex
	record := map[string]time.Time{}
	srv := &Server{OnInstalled: func(name string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		record[name] = at
	}}
	f := newFixture(t, srv)
	mustSet(t, srv, Machine{Name: "disk-1", MAC: "02:00:00:00:00:31", Profile: flatcar, Ignition: []byte("{}"), InstallToDisk: true})
	mustSet(t, srv, Machine{Name: "ram-1", MAC: "02:00:00:00:00:32", Profile: corral, Ignition: []byte("{}")})

	if s := f.script(t, "/ipxe?mac=02:00:00:00:00:31"); !strings.Contains(s, "kernel ") || strings.Contains(s, "sanboot") {
		t.Fatalf("before installing, the installer:\n%s", s)
	}
	if code, body := f.report(t, "mac=02:00:00:00:00:31", `{"status":"installed"}`); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, body)
	}
	mu.Lock()
	at, ok := record["disk-1"]
	mu.Unlock()
	if !ok || at.IsZero() || time.Since(at) > time.Minute {
		t.Fatalf("OnInstalled not called with the time: %v", record)
	}
	s := f.script(t, "/ipxe?mac=02:00:00:00:00:31")
	if !strings.Contains(s, "\nsanboot --no-describe --drive 0x80") || strings.Contains(s, "kernel ") || !strings.Contains(s, "reinstalled") {
		t.Errorf("after installing, not the local boot:\n%s", s)
	}
	// A second report changes nothing.
	f.report(t, "mac=02:00:00:00:00:31", `{"status":"installed"}`)
	mu.Lock()
	if !record["disk-1"].Equal(at) {
		t.Errorf("a second report changed the record: %v", record)
	}
	mu.Unlock()

	// A machine that doesn't install is never told to boot from disk.
	f.report(t, "mac=02:00:00:00:00:32", `{"status":"installed"}`)
	if s := f.script(t, "/ipxe?mac=02:00:00:00:00:32"); strings.Contains(s, "sanboot") {
		t.Errorf("a RAM machine was sent to its disk:\n%s", s)
	}

	// The record survives a restart through the caller's Installed.
	srv2 := &Server{Installed: map[string]time.Time{"disk-1": at}}
	f2 := newFixture(t, srv2)
	mustSet(t, srv2, Machine{Name: "disk-1", MAC: "02:00:00:00:00:31", Profile: flatcar, InstallToDisk: true})
	if s := f2.script(t, "/ipxe?mac=02:00:00:00:00:31"); !strings.Contains(s, "sanboot") {
		t.Errorf("after a restart, not the local boot:\n%s", s)
	}

	// Reprovision: the installer again, and the caller told.
	srv.Reprovision("disk-1")
	if s := f.script(t, "/ipxe?mac=02:00:00:00:00:31"); !strings.Contains(s, "kernel ") || strings.Contains(s, "sanboot") {
		t.Errorf("after Reprovision, not the installer:\n%s", s)
	}
	mu.Lock()
	if a, ok := record["disk-1"]; !ok || !a.IsZero() {
		t.Errorf("Reprovision didn't tell the caller: %v", record)
	}
	mu.Unlock()
}

func TestReports(t *testing.T) {
	var mu sync.Mutex
	var statuses []string
	srv := &Server{OnStatus: func(name, status string) {
		mu.Lock()
		defer mu.Unlock()
		statuses = append(statuses, name+"="+status)
	}}
	var _ providers.Reporter = srv
	f := newFixture(t, srv)
	mustSet(t, srv, Machine{Name: "core-1", MAC: "02:00:00:00:00:41", Profile: corral})

	for _, st := range []string{"booted", "joined"} {
		if code, body := f.report(t, "mac=02-00-00-00-00-41", `{"status":"`+st+`"}`); code != http.StatusNoContent {
			t.Errorf("report %s: %d %s", st, code, body)
		}
	}
	var log strings.Builder
	for i := range 60 {
		fmt.Fprintf(&log, "line %d\n", i)
	}
	body := fmt.Sprintf(`{"status":"error","error":"clusterd: cannot reach 10.0.0.2:2379","log":%q}`, log.String())
	if code, b := f.report(t, "mac=02:00:00:00:00:41", body); code != http.StatusNoContent {
		t.Fatalf("report error: %d %s", code, b)
	}
	select {
	case r := <-srv.Reports():
		var be *BootError
		if r.Node != "core-1" || !errors.As(r.Err, &be) {
			t.Fatalf("report: %+v", r)
		}
		if be.Message != "clusterd: cannot reach 10.0.0.2:2379" || len(be.Log) != maxLogLines || be.Log[0] != "line 10" || be.Log[maxLogLines-1] != "line 59" {
			t.Errorf("BootError: %q, %d lines: %q…%q", be.Message, len(be.Log), be.Log[0], be.Log[len(be.Log)-1])
		}
		msg := r.Err.Error()
		if !strings.HasPrefix(msg, "core-1: clusterd: cannot reach 10.0.0.2:2379") || !strings.Contains(msg, "\n\tline 59") {
			t.Errorf("error text: %s", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report on Reports()")
	}
	mu.Lock()
	if got := strings.Join(statuses, " "); got != "core-1=booted core-1=joined core-1=error" {
		t.Errorf("OnStatus: %s", got)
	}
	mu.Unlock()

	for _, bad := range []string{`{"status":"exploded"}`, `not json`, ``} {
		if code, _ := f.report(t, "mac=02:00:00:00:00:41", bad); code != http.StatusBadRequest {
			t.Errorf("report %q: %d", bad, code)
		}
	}
	if code, _ := f.report(t, "", `{"status":"booted"}`); code != http.StatusBadRequest {
		t.Errorf("report without a MAC: %d", code)
	}

	// Nobody reading: the handler never blocks; the overflow is logged.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range reportBuffer + 3 {
			f.report(t, "mac=02:00:00:00:00:41", `{"status":"error","error":"again"}`)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("report handler blocked on a full channel")
	}
	dropped := 0
	for _, l := range f.log.lines(slog.LevelError) {
		if strings.Contains(l, "report dropped") {
			dropped++
		}
	}
	if dropped != 3 || len(srv.Reports()) != reportBuffer {
		t.Errorf("%d dropped reports logged, %d buffered; want 3, %d", dropped, len(srv.Reports()), reportBuffer)
	}
}

func TestAssets(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 300_000)
	rand.Read(data)
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(data)
	hexSum := hex.EncodeToString(sum[:])
	srv := &Server{Assets: map[string]string{"vmlinuz": kernel, "flatcar/vmlinuz": kernel, "missing": filepath.Join(dir, "nope"), "dir": dir}}
	f := newFixture(t, srv)

	for _, name := range []string{"vmlinuz", "flatcar/vmlinuz"} {
		code, body, h := f.get(t, "/assets/"+name)
		if code != 200 || body != string(data) {
			t.Errorf("GET %s: %d, %d bytes", name, code, len(body))
		}
		if h.Get(SHA512Header) != hexSum || !strings.HasPrefix(h.Get("Repr-Digest"), "sha-512=:") {
			t.Errorf("GET %s: sum headers %q %q", name, h.Get(SHA512Header), h.Get("Repr-Digest"))
		}
		if h.Get("Content-Type") != "application/octet-stream" || h.Get("Accept-Ranges") != "bytes" {
			t.Errorf("GET %s: headers %v", name, h)
		}
		code, body, _ = f.get(t, "/assets/"+name+".sha512")
		if code != 200 || body != hexSum+"  vmlinuz\n" {
			t.Errorf("GET %s.sha512: %d %q", name, code, body)
		}
	}

	// A range, as a resumed download asks.
	req, _ := http.NewRequest("GET", f.http.URL+"/assets/vmlinuz", nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, data[1000:2000]) || resp.Header.Get(SHA512Header) != hexSum {
		t.Errorf("range: %d, %d bytes, %q", resp.StatusCode, len(b), resp.Header.Get("Content-Range"))
	}
	// Unchanged since: 304.
	req, _ = http.NewRequest("GET", f.http.URL+"/assets/vmlinuz", nil)
	req.Header.Set("If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-Modified-Since: %d", resp.StatusCode)
	}
	// HEAD: the size and the sum, without the body.
	resp, err = http.Head(f.http.URL + "/assets/vmlinuz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) || resp.Header.Get(SHA512Header) != hexSum {
		t.Errorf("HEAD: %d %d %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}

	// The file changes: so does its sum.
	data2 := append(data, 'x')
	if err := os.WriteFile(kernel, data2, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(kernel, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	sum2 := sha512.Sum512(data2)
	if _, _, h := f.get(t, "/assets/vmlinuz"); h.Get(SHA512Header) != hex.EncodeToString(sum2[:]) {
		t.Errorf("the sum didn't follow the file's change")
	}

	for path, want := range map[string]int{"/assets/nothing": 404, "/assets/nothing.sha512": 404, "/assets/../go.mod": 404, "/assets/missing": 500, "/assets/dir": 500} {
		if code, _, _ := f.get(t, path); code != want {
			t.Errorf("GET %s: %d, want %d", path, code, want)
		}
	}
}

// TestConcurrent uses the server from many goroutines at once, for -race.
func TestConcurrent(t *testing.T) {
	srv := &Server{}
	f := newFixture(t, srv)
	srv.SetGroups([]Group{{Name: "g", Default: true}})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 20 {
				name := fmt.Sprintf("m-%d-%d", i, j)
				srv.Set(Machine{Name: name, MAC: fmt.Sprintf("02:00:00:00:%02x:%02x", i, j), Profile: corral, Ignition: []byte("{}")})
				srv.Set(Machine{Name: "slot-" + name, Group: "g", Profile: corral})
				if j%3 == 0 {
					srv.Remove(name)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for j := range 20 {
				for _, p := range []string{"/ipxe?mac=02:00:00:00:%02x:%02x", "/ignition?mac=02:00:00:00:%02x:%02x", "/ipxe?mac=0a:00:00:00:%02x:%02x"} {
					resp, err := http.Get(f.http.URL + fmt.Sprintf(p, i, j))
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				f.report(t, fmt.Sprintf("mac=02:00:00:00:%02x:%02x", i, j), `{"status":"booted"}`)
			}
		}()
	}
	wg.Wait()
}
