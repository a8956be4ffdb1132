// Package awsboot boots the instances of the AWS emulator (internal/awsemu)
// for real, for end-to-end tests: every instance the emulator launches
// (RunInstances or an Auto Scaling group) becomes a network namespace on
// the test host with the instance's private IP, on a bridge that plays the
// VPC, and runs the boot program (internal/awsboot/guest) there, which
// fetches the instance's user data from its metadata service and boots it
// as Ignition: files, then the enabled systemd services. Terminating the
// instance kills everything in its namespace and removes it.
//
// The bridge's address is the VPC's first address plus one (10.1.0.1 for
// 10.1.0.0/16): the VPC router's address, which AWS reserves in the subnet
// that holds it, so no instance ever gets it. On it the harness serves
//
//   - the instance metadata service, one listener for all instances that
//     tells them apart by the caller's address, as the real one does;
//   - the emulator's API (S3, EC2, Auto Scaling …), so instances use the
//     AWS SDK with their role's credentials from the metadata service.
//
// The boot program and its units get AWS_EC2_METADATA_SERVICE_ENDPOINT,
// AWS_ENDPOINT_URL and AWS_REGION pointing there.
package awsboot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/awsboot/guest"
	"github.com/corral-dev/corral/internal/awsemu"
	"github.com/corral-dev/corral/internal/corralbin"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/providers/local"
)

// Options configure a Booter.
type Options struct {
	// VPC is the CIDR of the emulated VPC the instances are launched in
	// (the one given to CreateVpc). Required; FreeVPC picks one.
	VPC netip.Prefix
	// Binary is the corral binary that runs as each instance's boot
	// program; default the binary under test (corralbin.Path: $CORRAL_BIN,
	// or one built for this test process).
	Binary string
	// Dir holds a directory per instance (see Instance.Dir); default a
	// test temporary directory. It must not be under a directory the boot
	// program overlays (guest.Overlaid: /etc, /var …).
	Dir string
	// StopGrace is how long a terminated instance's boot program has to
	// stop its units after SIGTERM, before everything in the instance is
	// killed; default 5s.
	StopGrace time.Duration
}

// Booter boots the instances of one emulator. Create it with New (then
// pass OnLaunch and OnTerminate to awsemu.Options and call Attach) or with
// Start, which does all three.
type Booter struct {
	t      testing.TB
	opts   Options
	id     string // random, names the bridge and the namespaces
	bridge string
	gw     netip.Addr

	emu     *awsemu.Emulator
	imdsURL string
	apiURL  string
	servers []*http.Server

	opMu sync.Mutex // serialises launches, terminations and the cleanup

	mu        sync.Mutex // guards the fields below
	closed    bool
	instances map[string]*Instance
	byIP      map[netip.Addr]string   // running instances by private IP
	imds      map[string]http.Handler // metadata service by instance id
}

// Instance is one booted instance, as the harness sees it.
type Instance struct {
	ID        string
	IP        netip.Addr
	Namespace string // its network namespace (ip netns exec works on it)
	HostVeth  string // the host side of its veth pair, on the bridge
	// Dir is its directory on the host: console.log (the boot program's
	// and the units' output) and overlay/<etc|var|…>/upper, where
	// whatever the instance wrote under those directories lands.
	Dir string
	// Console is the path of its console log, Dir/console.log.
	Console string
	// PID is the boot program's process id.
	PID int
	// Terminated is set once the instance's processes and namespace are gone.
	Terminated bool
	// Err is why the instance could not be booted, if it could not; the
	// test is failed with it too.
	Err error

	exited chan struct{} // closed when the boot program has exited
}

// Start starts an emulator with opts whose instances b boots, serves it on
// loopback and attaches b to it. Everything is removed when the test ends:
// the emulator is closed first, then the instances, then the bridge.
func Start(t testing.TB, bootOpts Options, emuOpts awsemu.Options) (b *Booter, e *awsemu.Emulator, url string) {
	t.Helper()
	b = New(t, bootOpts)
	emuOpts.OnLaunch, emuOpts.OnTerminate = b.OnLaunch, b.OnTerminate
	e = awsemu.New(emuOpts)
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() }) // before b's cleanup: no launch can come after it
	b.Attach(e)
	return b, e, url
}

// New makes the VPC's bridge and registers the removal of everything b
// makes with t.Cleanup. It fails the test if namespaces can't be made here
// or if the VPC's CIDR overlaps a network of the host.
func New(t testing.TB, opts Options) *Booter {
	t.Helper()
	if err := hostnet.Check(); err != nil {
		t.Fatalf("awsboot needs network namespaces: %v (run the tests as root, as CI does)", err)
	}
	vpc := opts.VPC
	if !vpc.IsValid() || !vpc.Addr().Is4() || vpc.Bits() < 8 || vpc.Bits() > 28 || vpc != vpc.Masked() {
		t.Fatalf("awsboot: Options.VPC %q: want the VPC's IPv4 CIDR, /8 to /28, e.g. 10.1.0.0/16 (awsboot.FreeVPC picks a free one)", vpc)
	}
	if opts.Binary == "" {
		opts.Binary = corralbin.Path(t)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir() // before our cleanup is registered: removed after it
	}
	for _, dir := range guest.Overlaid {
		if rel, err := filepath.Rel(dir, opts.Dir); err == nil && !strings.HasPrefix(rel, "..") {
			t.Fatalf("awsboot: Options.Dir %s is under %s, which every instance overlays: pick a directory elsewhere (e.g. under /tmp)", opts.Dir, dir)
		}
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 5 * time.Second
	}
	var raw [4]byte
	rand.Read(raw[:])
	b := &Booter{t: t, opts: opts, id: hex.EncodeToString(raw[:]), gw: vpc.Addr().Next(),
		instances: map[string]*Instance{}, byIP: map[netip.Addr]string{}, imds: map[string]http.Handler{}}
	b.bridge = "awb" + b.id
	if over, err := hostnet.RoutesOverlapping(vpc, b.bridge); err != nil {
		t.Fatal(err)
	} else if len(over) > 0 {
		t.Fatalf("awsboot: the VPC %s overlaps the host's networks %v: pick another CIDR (awsboot.FreeVPC)", vpc, over)
	}
	t.Cleanup(b.cleanup)
	if err := hostnet.EnsureBridge(b.bridge, netip.PrefixFrom(b.gw, vpc.Bits())); err != nil {
		t.Fatalf("awsboot: bridge for the VPC %s: %v", vpc, err)
	}
	return b
}

// FreeVPC picks a /16 in 10.0.0.0/8 that no route of this host overlaps,
// so that tests running side by side get VPCs of their own.
func FreeVPC(t testing.TB) netip.Prefix {
	t.Helper()
	for range 50 {
		var raw [1]byte
		rand.Read(raw[:])
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 64 + raw[0]%190, 0, 0}), 16)
		if over, err := hostnet.RoutesOverlapping(p, ""); err == nil && len(over) == 0 {
			return p
		}
	}
	t.Fatal("awsboot: no free /16 in 10.64.0.0-10.253.0.0 on this host")
	return netip.Prefix{}
}

// Attach serves e's metadata service and API on the bridge, for the
// instances. Launches before Attach fail (with the test).
func (b *Booter) Attach(e *awsemu.Emulator) {
	b.t.Helper()
	serve := func(h http.Handler) string {
		ln, err := net.Listen("tcp", net.JoinHostPort(b.gw.String(), "0"))
		if err != nil {
			b.t.Fatalf("awsboot: listening on the VPC's gateway %s: %v", b.gw, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln) //nolint:errcheck // returns on Close
		b.mu.Lock()
		b.servers = append(b.servers, srv)
		b.mu.Unlock()
		return "http://" + ln.Addr().String()
	}
	imdsURL, apiURL := serve(http.HandlerFunc(b.serveIMDS)), serve(e)
	b.mu.Lock()
	b.emu, b.imdsURL, b.apiURL = e, imdsURL, apiURL
	b.mu.Unlock()
}

// Gateway is the bridge's address, where the metadata service and the API
// are served.
func (b *Booter) Gateway() netip.Addr { return b.gw }

// Bridge is the name of the VPC's bridge.
func (b *Booter) Bridge() string { return b.bridge }

// IMDSEndpoint and APIEndpoint are the URLs the instances use (on the
// bridge; the host reaches them too).
func (b *Booter) IMDSEndpoint() string { b.mu.Lock(); defer b.mu.Unlock(); return b.imdsURL }

// APIEndpoint is the emulator's API as the instances reach it.
func (b *Booter) APIEndpoint() string { b.mu.Lock(); defer b.mu.Unlock(); return b.apiURL }

// NamespacePrefix starts the name of every namespace b makes.
func (b *Booter) NamespacePrefix() string { return "awsboot-" + b.id + "-" }

// serveIMDS answers a metadata request with the metadata service of the
// instance that has the caller's address, as EC2's does.
func (b *Booter) serveIMDS(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	ip, _ := netip.ParseAddr(host)
	b.mu.Lock()
	h := b.imds[b.byIP[ip]]
	b.mu.Unlock()
	if h == nil {
		http.Error(w, "awsboot: no running instance has the address "+host, http.StatusForbidden)
		return
	}
	h.ServeHTTP(w, r)
}

// OnLaunch boots an instance: pass it as awsemu.Options.OnLaunch. A
// failure fails the test and is kept in the Instance's Err.
func (b *Booter) OnLaunch(in awsemu.Instance) {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	closed, emu := b.closed, b.emu
	b.mu.Unlock()
	if closed {
		return
	}
	inst, err := b.launch(in, emu)
	if err != nil {
		err = fmt.Errorf("awsboot: booting instance %s (%s): %w", in.ID, in.PrivateIP, err)
		b.t.Error(err)
		if inst == nil {
			inst = &Instance{ID: in.ID, exited: closedChan()}
		}
		inst.Err = err
	}
	b.mu.Lock()
	b.instances[in.ID] = inst
	b.mu.Unlock()
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// launch makes the instance's namespace and starts its boot program.
func (b *Booter) launch(in awsemu.Instance, emu *awsemu.Emulator) (*Instance, error) {
	if emu == nil {
		return nil, errors.New("the Booter is not attached to the emulator: call Attach (or use awsboot.Start)")
	}
	ip, err := netip.ParseAddr(in.PrivateIP)
	if err != nil || !b.opts.VPC.Contains(ip) {
		return nil, fmt.Errorf("private IP %q is not in the VPC %s given in awsboot.Options.VPC", in.PrivateIP, b.opts.VPC)
	}
	if ip == b.gw {
		return nil, fmt.Errorf("private IP %s is the VPC router's address, reserved by AWS", ip)
	}
	ns := b.NamespacePrefix() + in.ID
	sum := sha256.Sum256([]byte(ns))
	inst := &Instance{ID: in.ID, IP: ip, Namespace: ns, HostVeth: "w" + hex.EncodeToString(sum[:])[:10],
		Dir: filepath.Join(b.opts.Dir, in.ID), exited: closedChan()}
	inst.Console = filepath.Join(inst.Dir, "console.log")
	if err := os.MkdirAll(inst.Dir, 0o755); err != nil {
		return inst, err
	}
	console, err := os.OpenFile(inst.Console, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return inst, err
	}
	defer console.Close()
	if err := hostnet.EnsureNode(hostnet.Node{Namespace: ns, HostVeth: inst.HostVeth, Bridge: b.bridge,
		Addr: netip.PrefixFrom(ip, b.opts.VPC.Bits()), Gateway: b.gw}); err != nil {
		return inst, fmt.Errorf("network: %w", err)
	}
	b.mu.Lock()
	b.byIP[ip] = in.ID
	b.imds[in.ID] = emu.IMDS(in.ID)
	b.mu.Unlock()
	env := []string{
		"PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + b.IMDSEndpoint(),
		"AWS_ENDPOINT_URL=" + b.APIEndpoint(),
		"AWS_REGION=" + emu.Region(),
	}
	if v, ok := os.LookupEnv("GORACE"); ok {
		env = append(env, "GORACE="+v)
	}
	cmd := &exec.Cmd{
		Path: b.opts.Binary, Args: []string{guest.Arg0, inst.Dir}, Env: env, Dir: "/",
		Stdout: console, Stderr: console,
		SysProcAttr: &syscall.SysProcAttr{
			Setsid: true,
			// Its own mount namespace (Go makes / private in it) for the
			// overlays, and its own host name.
			Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		},
	}
	if err := hostnet.Start(ns, cmd); err != nil {
		return inst, fmt.Errorf("starting the boot program %s: %w", b.opts.Binary, err)
	}
	inst.PID = cmd.Process.Pid
	exited := make(chan struct{})
	inst.exited = exited
	go func() {
		cmd.Wait()
		close(exited)
	}()
	return inst, nil
}

// OnTerminate stops an instance: pass it as awsemu.Options.OnTerminate.
// The boot program gets SIGTERM (it stops the units, as a shutdown
// would); after Options.StopGrace everything left in the instance's
// namespace is killed, and the namespace and its veth are removed.
func (b *Booter) OnTerminate(in awsemu.Instance) {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	inst := b.instances[in.ID]
	b.mu.Unlock()
	if inst == nil || inst.Terminated {
		return
	}
	if err := b.stop(inst); err != nil {
		b.t.Errorf("awsboot: terminating instance %s: %v", in.ID, err)
	}
}

// stop removes an instance from the host. The caller holds opMu.
func (b *Booter) stop(inst *Instance) error {
	b.mu.Lock()
	delete(b.byIP, inst.IP)
	delete(b.imds, inst.ID)
	b.mu.Unlock()
	if inst.PID != 0 {
		syscall.Kill(inst.PID, syscall.SIGTERM)
		select {
		case <-inst.exited:
		case <-time.After(b.opts.StopGrace):
		}
	}
	var errs []error
	if inst.Namespace != "" && hostnet.Exists(inst.Namespace) {
		// Units restart (Restart=always) as long as their supervisor
		// lives: kill until nothing is left.
		for round := 0; ; round++ {
			pids, err := hostnet.PIDs(inst.Namespace)
			if err != nil || len(pids) == 0 {
				errs = append(errs, err)
				break
			}
			if round == 10 {
				errs = append(errs, fmt.Errorf("processes %v of namespace %s survive SIGKILL", pids, inst.Namespace))
				break
			}
			if err := local.Stop(pids, 0); err != nil {
				errs = append(errs, err)
			}
		}
		errs = append(errs, hostnet.DeleteNamespace(inst.Namespace))
	}
	if inst.HostVeth != "" {
		errs = append(errs, hostnet.DeleteLink(inst.HostVeth))
	}
	<-inst.exited
	b.mu.Lock()
	inst.Terminated = true
	b.mu.Unlock()
	return errors.Join(errs...)
}

// cleanup stops every instance and removes the bridge; on failure it
// shows the end of each instance's console.
func (b *Booter) cleanup() {
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	b.closed = true
	var live []*Instance
	for _, inst := range b.instances {
		if !inst.Terminated {
			live = append(live, inst)
		}
	}
	servers := b.servers
	b.mu.Unlock()
	if b.t.Failed() {
		for _, inst := range b.Instances() {
			b.t.Logf("awsboot: console of %s (%s), last 40 lines:\n%s", inst.ID, inst.IP, b.tail(inst.ID, 40))
		}
	}
	for _, inst := range live {
		if err := b.stop(inst); err != nil {
			b.t.Errorf("awsboot: cleanup of instance %s: %v", inst.ID, err)
		}
	}
	for _, s := range servers {
		s.Close()
	}
	if err := hostnet.DeleteLink(b.bridge); err != nil {
		b.t.Errorf("awsboot: removing the bridge %s: %v", b.bridge, err)
	}
}

// Instances lists the instances launched so far, running or terminated,
// ordered by id.
func (b *Booter) Instances() []Instance {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Instance
	for _, inst := range b.instances {
		out = append(out, *inst)
	}
	slices.SortFunc(out, func(x, y Instance) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// Running lists the instances that are booted and not terminated.
func (b *Booter) Running() []Instance {
	var out []Instance
	for _, inst := range b.Instances() {
		if !inst.Terminated && inst.Err == nil {
			out = append(out, inst)
		}
	}
	return out
}

// Instance returns the instance id; ok is false if b never saw it launch.
func (b *Booter) Instance(id string) (inst Instance, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.instances[id]; p != nil {
		return *p, true
	}
	return Instance{}, false
}

// Console returns the instance's console log so far.
func (b *Booter) Console(id string) string {
	inst, _ := b.Instance(id)
	data, err := os.ReadFile(inst.Console)
	if err != nil {
		return fmt.Sprintf("(no console for %s: %v)", id, err)
	}
	return string(data)
}

// tail is the last n lines of the instance's console.
func (b *Booter) tail(id string, n int) string {
	lines := strings.Split(strings.TrimRight(b.Console(id), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Path is where the host sees the file the instance has at p: through
// /proc/<pid>/root, in the instance's own mount namespace (with its
// overlays), for as long as its boot program runs.
func (b *Booter) Path(id, p string) string {
	inst, _ := b.Instance(id)
	return filepath.Join("/proc", strconv.Itoa(inst.PID), "root", filepath.Clean("/"+p))
}

// ReadFile reads the file p as the instance sees it.
func (b *Booter) ReadFile(id, p string) ([]byte, error) { return os.ReadFile(b.Path(id, p)) }

// Status asks the instance's boot program how far it got (GET /status on
// <private IP>:guest.StatusPort, from the host).
func (b *Booter) Status(ctx context.Context, id string) (guest.Status, error) {
	return b.status(ctx, http.DefaultClient, id)
}

func (b *Booter) status(ctx context.Context, c *http.Client, id string) (guest.Status, error) {
	inst, ok := b.Instance(id)
	if !ok {
		return guest.Status{}, fmt.Errorf("awsboot: no instance %s was launched", id)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(inst.IP.String(), strconv.Itoa(guest.StatusPort)) + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return guest.Status{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return guest.Status{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return guest.Status{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return guest.DecodeStatus(resp.Body)
}

// StatusFrom asks instance id's boot program for its status from inside
// instance from's network namespace: one instance reaching another on
// its private IP.
func (b *Booter) StatusFrom(ctx context.Context, from, id string) (guest.Status, error) {
	return b.status(ctx, b.HTTPClient(from), id)
}

// HTTPClient returns a client whose connections are made from inside the
// instance's network namespace, as a process of the instance would make
// them.
func (b *Booter) HTTPClient(id string) *http.Client {
	inst, _ := b.Instance(id)
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = hostnet.Do(inst.Namespace, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// WaitBooted waits up to timeout for the instance to have applied its user
// data and for every unit it started to be active; it fails the test,
// with the instance's console, if the boot fails or time runs out.
func (b *Booter) WaitBooted(id string, timeout time.Duration) guest.Status {
	b.t.Helper()
	return b.Wait(id, timeout, "booted with every unit active", func(s guest.Status) bool {
		if s.Phase != guest.PhaseRunning {
			return false
		}
		for _, u := range s.Units {
			if u.Active != "active" {
				return false
			}
		}
		return true
	})
}

// Wait polls the instance's status until cond holds, for up to timeout,
// and fails the test (with the instance's console) if it never does or
// the boot fails.
func (b *Booter) Wait(id string, timeout time.Duration, what string, cond func(guest.Status) bool) guest.Status {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last guest.Status
	var lastErr error
	for {
		inst, ok := b.Instance(id)
		if ok && inst.Err != nil {
			b.t.Fatalf("instance %s: %v", id, inst.Err)
		}
		if ok && !inst.Terminated && isClosed(inst.exited) {
			b.t.Fatalf("instance %s: its boot program exited\nconsole:\n%s", id, b.tail(id, 40))
		}
		if ok {
			last, lastErr = b.Status(context.Background(), id)
			if lastErr == nil && cond(last) {
				return last
			}
			if lastErr == nil && last.Phase == guest.PhaseError {
				b.t.Fatalf("instance %s failed to boot: %s\nconsole:\n%s", id, last.Error, b.tail(id, 40))
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("instance %s: not %s after %s (last status %+v, error %v)\nconsole:\n%s",
				id, what, timeout, last, lastErr, b.tail(id, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
