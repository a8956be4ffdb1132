// Package guest is the boot program of an instance that internal/awsboot
// boots for real: what the machine image's init and Ignition would do on
// EC2, for a namespace on the test host. The harness starts it (the corral
// binary run as Arg0) in the instance's network namespace and in mount and
// UTS namespaces of its own; it then
//
//   - overlays the host's /etc, /opt, /var, /usr, /root, /home and /srv
//     with per-instance upper directories and mounts a fresh /run, so the
//     absolute paths of the user data work without touching the host;
//   - fetches the user data from the instance metadata service (IMDSv2, at
//     $AWS_EC2_METADATA_SERVICE_ENDPOINT) and applies it as Ignition
//     (bootstrap/netboot), fetching data:, http(s):// and s3:// sources,
//     the last with the instance role's credentials;
//   - starts the config's enabled .service units with clusterd's exec
//     driver (systemd's semantics: ExecStartPre, Restart=, RestartSec=,
//     Environment=, EnvironmentFile= …) and copies their output to the
//     console (its stdout);
//   - answers GET /status on <private IP>:StatusPort with a Status, so the
//     harness and other instances can tell when it has booted;
//   - on SIGTERM (an EC2 termination), stops the units and exits.
package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	ignition "github.com/coreos/ignition/v2/config/v3_4"
	"github.com/coreos/ignition/v2/config/v3_4/types"
	"github.com/corral-dev/corral/bootstrap/netboot"
	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/driver/execdriver"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/internal/lines"
	"golang.org/x/sys/unix"
)

// Arg0 is the name the corral binary is run under to be this program
// (cmd/provision dispatches on it, as it does on "clusterd").
const Arg0 = "awsboot-init"

// StatusPort is the TCP port of the status endpoint on the instance's
// private IP; no Corral daemon uses it.
const StatusPort = 8099

// UnitsDir is where the exec driver keeps the units' journals and run
// state, inside the instance (so in its /var overlay).
const UnitsDir = "/var/lib/awsboot/units"

// Overlaid are the host's top-level directories every instance sees
// through an overlay of its own: everything a config or a daemon writes
// under them stays in the instance. /tmp is shared with the host (the
// corral binary under test usually lives there) and /run is a fresh tmpfs.
var Overlaid = []string{"/etc", "/opt", "/var", "/usr", "/root", "/home", "/srv"}

// Phases of a boot, in Status.Phase.
const (
	PhaseBooting = "booting" // fetching and applying the user data
	PhaseRunning = "running" // the units are started
	PhaseError   = "error"   // the boot failed: Status.Error says why
)

// Status is what GET /status answers.
type Status struct {
	Instance string `json:"instance"`
	IP       string `json:"ip"`
	Phase    string `json:"phase"`
	Error    string `json:"error,omitempty"`
	// Units are the states of the units started, by name.
	Units map[string]driver.State `json:"units,omitempty"`
}

// Main runs the boot program; args are its command-line arguments after
// Arg0: the instance's state directory on the host, which holds the upper
// and work directories of the overlays. It returns when it is told to stop
// (SIGTERM or SIGINT), or at once if it can't make the instance's file
// system.
func Main(args []string) int {
	if len(args) != 1 || !filepath.IsAbs(args[0]) {
		fmt.Fprintf(os.Stderr, "usage: %s STATE-DIR (absolute): this program is started by internal/awsboot, in the namespaces of an emulated instance\n", Arg0)
		return 2
	}
	g := &guest{status: Status{Phase: PhaseBooting}}
	g.logf("%s starting (pid %d)", Arg0, os.Getpid())
	var err error
	if g.overlaid, err = privateMounts(args[0]); err != nil {
		g.logf("error: %v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := g.boot(ctx); err != nil {
		g.logf("error: %v", err)
		g.set(func(s *Status) { s.Phase, s.Error = PhaseError, err.Error() })
	}
	<-ctx.Done()
	g.logf("stopping")
	if g.drv != nil {
		if err := g.drv.Close(); err != nil {
			g.logf("stopping the units: %v", err)
		}
	}
	return 0
}

// guest is one boot.
type guest struct {
	overlaid []string // the directories the instance has its own view of

	logMu sync.Mutex

	mu     sync.Mutex
	status Status
	drv    *execdriver.Driver
	units  []string
}

// logf writes a line of the boot program's own to the console.
func (g *guest) logf(format string, args ...any) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	fmt.Fprintf(os.Stdout, "%s %s: %s\n", time.Now().UTC().Format("15:04:05.000"), Arg0, fmt.Sprintf(format, args...))
}

// line writes a unit's line to the console.
func (g *guest) line(s string) {
	g.logMu.Lock()
	defer g.logMu.Unlock()
	fmt.Fprintln(os.Stdout, s)
}

func (g *guest) set(f func(*Status)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(&g.status)
}

// privateMounts gives this mount namespace its own view of the overlaid
// directories and /run, and returns them. It refuses to run in the host's
// mount namespace, where it would shadow the host's /etc for everyone.
func privateMounts(state string) (mounted []string, err error) {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return nil, err
	}
	if init, err := os.Readlink("/proc/1/ns/mnt"); err == nil && init == self {
		return nil, fmt.Errorf("%s runs in the host's mount namespace: start it with CLONE_NEWNS (internal/awsboot does)", Arg0)
	}
	// Mounts made here must not propagate back to the host.
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return nil, fmt.Errorf("making / private: %w", err)
	}
	for _, dir := range Overlaid {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue // the host has none: the instance has none either
		}
		if under(state, dir) {
			return nil, fmt.Errorf("the instance's state directory %s is under %s, which is overlaid: put it elsewhere (e.g. under /tmp)", state, dir)
		}
		upper := filepath.Join(state, "overlay", strings.TrimPrefix(dir, "/"), "upper")
		work := filepath.Join(state, "overlay", strings.TrimPrefix(dir, "/"), "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
		opts := "lowerdir=" + dir + ",upperdir=" + upper + ",workdir=" + work
		if err := unix.Mount("overlay", dir, "overlay", 0, opts); err != nil {
			return nil, fmt.Errorf("overlaying %s (%s): %w", dir, opts, err)
		}
		mounted = append(mounted, dir)
	}
	// A fresh /run: the host's D-Bus and systemd sockets are not the
	// instance's (clusterd then picks its exec driver, as on a machine
	// without systemd), and /run/flannel is its own.
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return nil, fmt.Errorf("mounting a tmpfs on /run: %w", err)
	}
	return append(mounted, "/run"), nil
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// checkPaths refuses a config that writes outside the directories the
// instance has its own view of: applying it would write on the host.
func checkPaths(cfg types.Config, overlaid []string) error {
	paths := []string{netboot.UnitDir}
	for _, f := range cfg.Storage.Files {
		paths = append(paths, f.Path)
	}
	for _, d := range cfg.Storage.Directories {
		paths = append(paths, d.Path)
	}
	for _, l := range cfg.Storage.Links {
		paths = append(paths, l.Path)
	}
	for _, p := range paths {
		p = path.Clean("/" + p)
		if !slices.ContainsFunc(overlaid, func(dir string) bool { return under(p, dir) }) {
			return fmt.Errorf("%s is outside the directories an instance has of its own here (%s): writing it would change the host; "+
				"write under one of those (the host has no such directory, or awsboot does not overlay it)", p, strings.Join(overlaid, " "))
		}
	}
	return nil
}

// boot fetches and applies the user data and starts its units.
func (g *guest) boot(ctx context.Context) error {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("AWS configuration: %w", err)
	}
	md := imds.NewFromConfig(cfg)
	id, err := metadata(ctx, md, "instance-id")
	if err != nil {
		return err
	}
	ip, err := metadata(ctx, md, "local-ipv4")
	if err != nil {
		return err
	}
	g.set(func(s *Status) { s.Instance, s.IP = id, ip })
	g.logf("instance %s, private IP %s", id, ip)
	if err := g.serveStatus(ip); err != nil {
		return err
	}
	if host, err := metadata(ctx, md, "local-hostname"); err == nil {
		setHostname(host, g.logf)
	}

	out, err := md.GetUserData(ctx, &imds.GetUserDataInput{})
	if err != nil {
		return fmt.Errorf("fetching the user data from the instance metadata service: %w", err)
	}
	data, err := io.ReadAll(out.Content)
	out.Content.Close()
	if err != nil {
		return fmt.Errorf("reading the user data: %w", err)
	}
	g.logf("fetched the user data (%d bytes)", len(data))
	if bytes.HasPrefix(data, []byte("#cloud-config")) {
		return errors.New("user data: this is a cloud-config; awsboot boots Ignition configs only (as Corral's AWS node groups use)")
	}
	ign, err := netboot.ParseConfig(data)
	if err != nil {
		return fmt.Errorf("user data: %w", err)
	}
	fetch := Fetcher(s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = true // the emulator, and any S3 endpoint, serve it
		o.DisableLogOutputChecksumValidationSkipped = true
	}))
	if ign, err = Resolve(ctx, ign, fetch, 0); err != nil {
		return fmt.Errorf("user data: %w", err)
	}
	if err := checkPaths(ign, g.overlaid); err != nil {
		return fmt.Errorf("user data: %w", err)
	}
	if err := netboot.ApplyConfig(ctx, "/", ign, fetch, g.logf); err != nil {
		return err
	}
	g.logf("applied the user data: %d files, %d directories, %d links, %d units",
		len(ign.Storage.Files), len(ign.Storage.Directories), len(ign.Storage.Links), len(ign.Systemd.Units))
	// A hostname the config sets wins over the metadata's, as on EC2;
	// the host's own /etc/hostname, seen through the overlay, does not.
	if slices.ContainsFunc(ign.Storage.Files, func(f types.File) bool { return path.Clean(f.Path) == "/etc/hostname" }) {
		if h, err := os.ReadFile("/etc/hostname"); err == nil && strings.TrimSpace(string(h)) != "" {
			setHostname(strings.TrimSpace(string(h)), g.logf)
		}
	}
	return g.startUnits(ctx, ign)
}

// maxConfigDepth bounds chains of referenced configs (a config that
// replaces itself would otherwise loop).
const maxConfigDepth = 10

// Resolve follows cfg's references to other configs as Ignition does:
// ignition.config.replace stands for the config it names (the pointer
// config provision's user data is when the full one is over EC2's 16 KiB);
// each of ignition.config.merge is merged in, in order. depth is how many
// references led here: 0 for the user data.
func Resolve(ctx context.Context, cfg types.Config, fetch netboot.Fetcher, depth int) (types.Config, error) {
	if depth > maxConfigDepth {
		return cfg, fmt.Errorf("more than %d configs referenced in a chain: does a config refer to itself?", maxConfigDepth)
	}
	if r := cfg.Ignition.Config.Replace; r.Source != nil {
		child, err := fetchConfig(ctx, r, fetch)
		if err != nil {
			return cfg, err
		}
		return Resolve(ctx, child, fetch, depth+1)
	}
	merges := cfg.Ignition.Config.Merge
	cfg.Ignition.Config.Merge = nil
	for _, r := range merges {
		child, err := fetchConfig(ctx, r, fetch)
		if err == nil {
			child, err = Resolve(ctx, child, fetch, depth+1)
		}
		if err != nil {
			return cfg, err
		}
		cfg = ignition.Merge(cfg, child)
	}
	return cfg, nil
}

// fetchConfig fetches and parses a referenced config. It goes through
// netboot.ApplyConfig, as the one file of a scratch config, so that the
// config is fetched, decompressed and checked against its hash exactly as
// files are.
func fetchConfig(ctx context.Context, r types.Resource, fetch netboot.Fetcher) (types.Config, error) {
	src := *r.Source
	if strings.HasPrefix(src, "data:") {
		src = "a data: URL"
	}
	dir, err := os.MkdirTemp("", "awsboot-config-")
	if err != nil {
		return types.Config{}, err
	}
	defer os.RemoveAll(dir)
	one := types.Config{Storage: types.Storage{Files: []types.File{{Node: types.Node{Path: "/config.ign"},
		FileEmbedded1: types.FileEmbedded1{Contents: r}}}}}
	if err := netboot.ApplyConfig(ctx, dir, one, fetch, nil); err != nil {
		return types.Config{}, fmt.Errorf("config referenced at %s: %w", src, err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.ign"))
	if err != nil {
		return types.Config{}, err
	}
	cfg, err := netboot.ParseConfig(data)
	if err != nil {
		return cfg, fmt.Errorf("config referenced at %s: %w", src, err)
	}
	return cfg, nil
}

// metadata reads one meta-data item.
func metadata(ctx context.Context, md *imds.Client, item string) (string, error) {
	out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: item})
	if err != nil {
		return "", fmt.Errorf("instance metadata %s (service at $AWS_EC2_METADATA_SERVICE_ENDPOINT=%q): %w",
			item, os.Getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"), err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	return strings.TrimSpace(string(b)), err
}

// setHostname sets the UTS namespace's host name to the first label of name,
// as EC2 images do with ip-10-1-0-4.<region>.compute.internal.
func setHostname(name string, logf netboot.Logf) {
	short, _, _ := strings.Cut(name, ".")
	if err := unix.Sethostname([]byte(short)); err != nil {
		logf("setting the host name %s: %v", short, err)
		return
	}
	logf("host name %s", short)
}

// Fetcher fetches the remote sources of an Ignition config: s3://bucket/key
// with client (as Ignition does on EC2, with the instance's role), anything
// else over HTTP(S).
func Fetcher(client *s3.Client) netboot.Fetcher {
	return func(ctx context.Context, src string) ([]byte, error) {
		if !strings.HasPrefix(src, "s3://") {
			return netboot.HTTPFetch(ctx, src)
		}
		bucket, key, err := ParseS3URL(src)
		if err != nil {
			return nil, err
		}
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w (the instance's credentials come from its instance profile's role: launch it with an IamInstanceProfile whose role may read the object)", src, err)
		}
		defer out.Body.Close()
		return io.ReadAll(out.Body)
	}
}

// ParseS3URL splits s3://bucket/key.
func ParseS3URL(src string) (bucket, key string, err error) {
	rest, ok := strings.CutPrefix(src, "s3://")
	bucket, key, _ = strings.Cut(rest, "/")
	if !ok || bucket == "" || key == "" {
		return "", "", fmt.Errorf("source %q: want s3://<bucket>/<key>", src)
	}
	return bucket, key, nil
}

// EnabledServices names the config's units that the machine would start
// at boot: enabled, not masked, services. Units that are enabled by name
// only (no contents, shipped by the image) are listed too: starting them
// fails clearly if the image has no such unit.
func EnabledServices(cfg types.Config) []string {
	var out []string
	for _, u := range cfg.Systemd.Units {
		if u.Enabled == nil || !*u.Enabled || (u.Mask != nil && *u.Mask) || !strings.HasSuffix(u.Name, ".service") {
			continue
		}
		out = append(out, u.Name)
	}
	sort.Strings(out)
	return out
}

// ReadUnit reads a unit as systemd would find it under dir: the unit file
// and its drop-ins (<name>.d/*.conf, in name order), later assignments
// coming after earlier ones.
func ReadUnit(dir, name string) (*unit.File, error) {
	p := filepath.Join(dir, name)
	src, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w (an enabled unit needs contents in the config, or in the image)", name, err)
	}
	dropins, _ := filepath.Glob(filepath.Join(dir, name+".d", "*.conf"))
	slices.Sort(dropins)
	for _, d := range dropins {
		b, err := os.ReadFile(d)
		if err != nil {
			return nil, err
		}
		src = append(append(src, '\n'), b...)
	}
	f, err := unit.Parse(p, src)
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", name, err)
	}
	return f, nil
}

// startUnits starts the enabled services with the exec driver, with the
// instance's AWS settings as their default environment (on EC2 the SDK
// finds the metadata service at its fixed address; here it is wherever
// the harness serves it).
func (g *guest) startUnits(ctx context.Context, cfg types.Config) error {
	logger := slog.New(slog.NewTextHandler(&lines.Writer{Line: func(s string) { g.line("execdriver: " + s) }}, nil))
	drv, err := execdriver.New(UnitsDir, logger)
	if err != nil {
		return err
	}
	drv.Env = map[string]string{}
	for _, k := range []string{"AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_REGION"} {
		if v := os.Getenv(k); v != "" {
			drv.Env[k] = v
		}
	}
	g.mu.Lock()
	g.drv = drv
	g.mu.Unlock()
	names := EnabledServices(cfg)
	var errs []error
	for _, name := range names {
		f, err := ReadUnit(path.Join("/", netboot.UnitDir), name)
		if err == nil {
			err = drv.Start(ctx, name, f)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		g.logf("started %s", name)
		g.mu.Lock()
		g.units = append(g.units, name)
		g.mu.Unlock()
		go g.follow(ctx, drv, name)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	g.set(func(s *Status) { s.Phase = PhaseRunning })
	g.logf("booted: %d units started (%s)", len(names), strings.Join(names, ", "))
	return nil
}

// follow copies a unit's journal to the console, each line prefixed with
// the unit's name.
func (g *guest) follow(ctx context.Context, drv *execdriver.Driver, name string) {
	w := &lines.Writer{Line: func(s string) { g.line(name + ": " + s) }}
	if err := drv.Journal(ctx, name, -1, true, w); err != nil && ctx.Err() == nil {
		g.logf("following %s: %v", name, err)
	}
	w.Flush()
}

// serveStatus answers GET /status on ip:StatusPort.
func (g *guest) serveStatus(ip string) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(StatusPort)))
	if err != nil {
		return fmt.Errorf("status endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(g.snapshot())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // runs until the process exits
	return nil
}

// snapshot is the current Status, with the units' states.
func (g *guest) snapshot() Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.status
	if g.drv != nil {
		states := g.drv.States()
		s.Units = map[string]driver.State{}
		for _, u := range g.units {
			s.Units[u] = states[u]
		}
	}
	return s
}

// DecodeStatus reads a Status from a GET /status answer.
func DecodeStatus(r io.Reader) (Status, error) {
	var s Status
	b, err := io.ReadAll(r)
	if err != nil {
		return s, err
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil {
		return s, fmt.Errorf("status %q: %w", b, err)
	}
	return s, nil
}
