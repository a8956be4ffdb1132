package pxe

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/corral-dev/corral/providers"
)

// Profile is how a kind of machine boots: the names of its assets (keys of
// Server.Assets) and its kernel's own arguments. For Flatcar, add
// "flatcar.first_boot=1" (Fedora CoreOS: "ignition.firstboot") to Args so
// that its Ignition runs.
type Profile struct {
	Kernel  string
	Initrds []string
	// Args are the kernel's arguments, before the ones the server adds.
	// iPXE expands ${setting} in them, e.g. ${net0/ip}.
	Args []string
	// OwnIgnition is for OSes that run Ignition themselves (Flatcar, Fedora
	// CoreOS): the kernel is given ignition.config.url= and
	// ignition.platform.id=metal rather than Corral's corral.config=.
	OwnIgnition bool
}

// Machine is one machine the server boots.
type Machine struct {
	Name string
	// MAC is the address of the NIC the machine boots from, in any form
	// NormalizeMAC takes. An empty MAC makes the machine a free slot of its
	// Group, bound to the first unknown MAC the group takes.
	MAC string
	// UUID, when set, must match the SMBIOS UUID iPXE reports as well as the
	// MAC, so that a NIC moved to another machine doesn't take its identity.
	UUID    string
	Group   string
	Profile Profile
	// Ignition and CloudConfig are the machine's rendered configs
	// (templates.Render), served at /ignition and /cloud-config; nil means
	// the machine has none in that format.
	Ignition, CloudConfig []byte
	// InstallToDisk machines install themselves and then report
	// "installed": from then on they are told to boot from their disk.
	InstallToDisk bool
}

// Group is a fleet of identical machines, declared as free slots (Machines
// with its Name as Group and no MAC): an unknown MAC within one of its
// Ranges, or, for a Default group, any unknown MAC within no group's
// ranges, is bound to its first free slot in name order.
type Group struct {
	Name    string
	Ranges  []MACRange
	Default bool
}

// Report statuses, as machines POST them to /report.
const (
	StatusBooted    = "booted"    // the initramfs (or the OS) is up and has fetched its config
	StatusInstalled = "installed" // an InstallToDisk machine has written itself to its disk
	StatusJoined    = "joined"    // clusterd has joined the cluster
	StatusError     = "error"     // booting failed: Error and Log say why
)

// reportBuffer is how many error reports wait for a reader of Reports before
// further ones are dropped (with a log line) rather than block a handler.
const reportBuffer = 256

// maxLogLines is how many of a failed machine's last log lines its error keeps.
const maxLogLines = 50

// Server is the boot server: an http.Handler serving iPXE scripts, configs,
// assets and reports to the machines it is given with Set. Set its fields
// before its first use; its methods are safe for concurrent use.
type Server struct {
	// BaseURL is how machines reach the server, e.g. "http://10.0.0.1:8080".
	// "" means the Host of each request, as the machine asked for it.
	BaseURL string
	// Assets maps asset names (a Profile's Kernel and Initrds, the clusterd
	// binary) to local file paths, served at /assets/NAME.
	Assets map[string]string
	// Log receives one line per event worth knowing; nil means slog.Default().
	Log *slog.Logger

	// Installed is when each InstallToDisk machine reported "installed", as
	// the caller recorded it through OnInstalled in an earlier run.
	Installed map[string]time.Time
	// OnInstalled is called (outside the handler's locks) when a machine's
	// installation is recorded; the zero time means Reprovision cleared it.
	OnInstalled func(name string, at time.Time)
	// OnBind is called when a free slot is bound to a MAC, for the caller to
	// record (and Set the machine with that MAC in later runs).
	OnBind func(name, mac string)
	// OnStatus is called with every report's status ("booted", "installed",
	// "joined", "error"), for a progress display.
	OnStatus func(name, status string)

	once     sync.Once
	mux      *http.ServeMux
	reports  chan providers.Report
	mu       sync.RWMutex
	machines map[string]*entry // by name
	byMAC    map[uint64]*entry
	groups   []group
	install  map[string]time.Time

	warnMu sync.Mutex
	warned map[string]time.Time // unknown MACs already logged, and when

	sumMu sync.Mutex
	sums  map[string]*assetSum // by file path
}

// entry is a Machine as the server keeps it.
type entry struct {
	m      Machine // MAC normalised
	mac    uint64
	hasMAC bool
	uuid   string // normalised
	bound  bool   // MAC bound by this server to a free slot
}

type group struct {
	Group
	ranges []macRange
}

func (s *Server) init() {
	s.once.Do(func() {
		s.reports = make(chan providers.Report, reportBuffer)
		s.machines = map[string]*entry{}
		s.byMAC = map[uint64]*entry{}
		s.install = map[string]time.Time{}
		for k, v := range s.Installed {
			if !v.IsZero() {
				s.install[k] = v
			}
		}
		s.warned = map[string]time.Time{}
		s.sums = map[string]*assetSum{}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /boot.ipxe", s.handleBoot)
		mux.HandleFunc("GET /ipxe", s.handleIPXE)
		mux.HandleFunc("GET /ignition", s.handleConfig)
		mux.HandleFunc("GET /cloud-config", s.handleConfig)
		mux.HandleFunc("GET /assets/{name...}", s.handleAsset)
		mux.HandleFunc("POST /report", s.handleReport)
		s.mux = mux
	})
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// ServeHTTP serves the boot endpoints: GET /boot.ipxe, /ipxe, /ignition,
// /cloud-config, /assets/NAME[.sha512], and POST /report.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	s.mux.ServeHTTP(w, r)
}

// Serve serves HTTP on l until ctx is done, then shuts down gracefully.
// It returns nil once stopped by ctx.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	err := hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return err
}

// Reports delivers the machines' "error" reports, each as a Report whose
// Err is a *BootError. The channel is buffered and never closed; reports
// arriving while it is full are dropped with a log line.
func (s *Server) Reports() <-chan providers.Report {
	s.init()
	return s.reports
}

var _ providers.Reporter = (*Server)(nil)

// checkWord refuses what would break an iPXE script or a kernel command
// line if written into one: control characters, and (unless spaces) spaces.
func checkWord(what, v string, spaces bool) error {
	for _, c := range v {
		if unicode.IsControl(c) || (!spaces && unicode.IsSpace(c)) {
			return fmt.Errorf("pxe: %s %q contains %q", what, v, c)
		}
	}
	return nil
}

// checkName refuses names that couldn't be written as they are on a
// machine's console or in a script: letters, digits, '.', '_', '-' only.
func checkName(what, v string) error {
	if v == "" {
		return fmt.Errorf("pxe: %s has no name", what)
	}
	for _, c := range v {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("pxe: %s name %q: only letters, digits, '.', '_' and '-' are allowed", what, v)
		}
	}
	return nil
}

// Set adds the machine, or replaces the one of the same name. Setting a
// free slot (no MAC) that the server has bound keeps its binding.
func (s *Server) Set(m Machine) error {
	s.init()
	if err := checkName("machine", m.Name); err != nil {
		return err
	}
	if m.Group != "" {
		if err := checkName("group", m.Group); err != nil {
			return err
		}
	}
	e := &entry{}
	if m.MAC != "" {
		v, err := macValue(m.MAC)
		if err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
		e.mac, e.hasMAC = v, true
		m.MAC = formatMAC(v)
	} else if m.Group == "" {
		return fmt.Errorf("pxe: machine %s has neither a MAC nor a group to take one from", m.Name)
	}
	if m.UUID != "" {
		u, ok := normalizeUUID(m.UUID)
		if !ok {
			return fmt.Errorf("pxe: machine %s: malformed UUID %q", m.Name, m.UUID)
		}
		e.uuid = u
		m.UUID = formatUUID(u)
	}
	p := m.Profile
	if p.Kernel == "" {
		return fmt.Errorf("pxe: machine %s: its profile names no kernel", m.Name)
	}
	for _, a := range append([]string{p.Kernel}, p.Initrds...) {
		if err := checkWord("asset name", a, false); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
	}
	for _, a := range p.Args {
		if err := checkWord("kernel argument", a, true); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
	}
	m.Profile.Initrds = slices.Clone(p.Initrds)
	m.Profile.Args = slices.Clone(p.Args)
	m.Ignition = bytes.Clone(m.Ignition)
	m.CloudConfig = bytes.Clone(m.CloudConfig)
	e.m = m

	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.machines[m.Name]
	if !e.hasMAC && old != nil && old.bound && old.m.Group == m.Group {
		e.mac, e.hasMAC, e.bound = old.mac, true, true
		e.m.MAC = old.m.MAC
	}
	if e.hasMAC {
		if o := s.byMAC[e.mac]; o != nil && o.m.Name != m.Name {
			return fmt.Errorf("pxe: machine %s: MAC %s is already machine %s's", m.Name, m.MAC, o.m.Name)
		}
	}
	if old != nil && old.hasMAC {
		delete(s.byMAC, old.mac)
	}
	s.machines[m.Name] = e
	if e.hasMAC {
		s.byMAC[e.mac] = e
	}
	return nil
}

// Remove forgets the machine: it is then an unknown MAC. Its installation
// record, if any, is kept (see Reprovision).
func (s *Server) Remove(name string) {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.machines[name]; e != nil {
		if e.hasMAC && s.byMAC[e.mac] == e {
			delete(s.byMAC, e.mac)
		}
		delete(s.machines, name)
	}
}

// SetGroups declares the groups, replacing those declared before.
func (s *Server) SetGroups(groups []Group) error {
	s.init()
	var gs []group
	seen := map[string]bool{}
	for _, g := range groups {
		if err := checkName("group", g.Name); err != nil {
			return err
		}
		if seen[g.Name] {
			return fmt.Errorf("pxe: group %s declared twice", g.Name)
		}
		seen[g.Name] = true
		ng := group{Group: g}
		ng.Ranges = slices.Clone(g.Ranges)
		for _, r := range g.Ranges {
			pr, err := r.parse()
			if err != nil {
				return fmt.Errorf("group %s: %w", g.Name, err)
			}
			ng.ranges = append(ng.ranges, pr)
		}
		gs = append(gs, ng)
	}
	s.mu.Lock()
	s.groups = gs
	s.mu.Unlock()
	return nil
}

// Reprovision clears the machine's installation record: it is installed
// again at its next network boot.
func (s *Server) Reprovision(name string) {
	s.init()
	s.mu.Lock()
	_, had := s.install[name]
	delete(s.install, name)
	s.mu.Unlock()
	if had {
		s.log().Info("pxe: machine will be installed again at its next network boot", "machine", name)
		if s.OnInstalled != nil {
			s.OnInstalled(name, time.Time{})
		}
	}
}

// miss is why a request found no machine.
type miss struct {
	mac, uuid string // normalised, as far as they parse
	bad       string // the request itself is malformed
	declared  string // the machine with this MAC, when its UUID differs
	full      string // the group the MAC belongs to, with no free slot
}

// lookup finds the machine a request's mac= and uuid= parameters name,
// binding a free slot when bind is set. The second result says why not.
func (s *Server) lookup(r *http.Request, bind bool) (Machine, *miss) {
	q := r.URL.Query()
	rawMAC, rawUUID := q.Get("mac"), q.Get("uuid")
	v, err := macValue(rawMAC)
	if err != nil {
		if rawMAC == "" {
			return Machine{}, &miss{bad: "no mac= parameter"}
		}
		return Machine{}, &miss{bad: "malformed mac= parameter"}
	}
	ms := &miss{mac: formatMAC(v)}
	uuid, _ := normalizeUUID(rawUUID)
	ms.uuid = uuid

	s.mu.RLock()
	e := s.byMAC[v]
	var m Machine
	if e != nil {
		m = e.m
	}
	s.mu.RUnlock()
	if e != nil {
		if e.uuid != "" && e.uuid != uuid {
			ms.declared = m.Name
			return Machine{}, ms
		}
		return m, nil
	}
	if !bind {
		return Machine{}, ms
	}

	s.mu.Lock()
	if e = s.byMAC[v]; e != nil { // bound meanwhile
		m = e.m
		s.mu.Unlock()
		if e.uuid != "" && e.uuid != uuid {
			ms.declared = m.Name
			return Machine{}, ms
		}
		return m, nil
	}
	var cands []string
	for _, g := range s.groups {
		for _, rg := range g.ranges {
			if rg.first <= v && v <= rg.last {
				cands = append(cands, g.Name)
				break
			}
		}
	}
	// A MAC within a group's range is that group's: when the group is
	// full it is not taken by a default group instead.
	if len(cands) == 0 {
		for _, g := range s.groups {
			if g.Default {
				cands = append(cands, g.Name)
			}
		}
	}
	var slot *entry
	for _, g := range cands {
		for _, c := range s.machines {
			if c.m.Group == g && !c.hasMAC && (c.uuid == "" || c.uuid == uuid) &&
				(slot == nil || cmp.Less(c.m.Name, slot.m.Name)) {
				slot = c
			}
		}
		if slot != nil {
			break
		}
	}
	if slot == nil {
		s.mu.Unlock()
		if len(cands) > 0 {
			ms.full = cands[0]
		}
		return Machine{}, ms
	}
	slot.mac, slot.hasMAC, slot.bound = v, true, true
	slot.m.MAC = formatMAC(v)
	s.byMAC[v] = slot
	m = slot.m
	s.mu.Unlock()
	s.log().Info("pxe: bound a machine of its group to a new MAC", "machine", m.Name, "group", m.Group, "mac", m.MAC)
	if s.OnBind != nil {
		s.OnBind(m.Name, m.MAC)
	}
	return m, nil
}

// warnUnknown logs one line for a request that found no machine, once a
// minute per MAC at most: a machine the firmware retries forever would
// otherwise fill the log.
func (s *Server) warnUnknown(r *http.Request, ms *miss) {
	if ms.bad != "" {
		s.log().Warn("pxe: malformed request", "path", r.URL.Path, "problem", ms.bad, "from", r.RemoteAddr)
		return
	}
	now := time.Now()
	s.warnMu.Lock()
	last, seen := s.warned[ms.mac]
	if !seen || now.Sub(last) >= time.Minute {
		if len(s.warned) >= 4096 {
			clear(s.warned)
		}
		s.warned[ms.mac] = now
	}
	s.warnMu.Unlock()
	if seen && now.Sub(last) < time.Minute {
		return
	}
	args := []any{"mac", ms.mac, "path", r.URL.Path, "from", r.RemoteAddr}
	if ms.uuid != "" {
		args = append(args, "uuid", formatUUID(ms.uuid))
	}
	switch {
	case ms.declared != "":
		s.log().Warn("pxe: a machine's UUID doesn't match the one declared for its MAC: not booting it", append(args, "machine", ms.declared)...)
	case ms.full != "":
		s.log().Warn("pxe: a machine of a full group asked to boot: add a slot to the group", append(args, "group", ms.full)...)
	default:
		s.log().Warn("pxe: a machine not in the cluster file asked to boot", args...)
	}
}

// missText is what a request that found no machine is told, for a person.
func (ms *miss) text() string {
	switch {
	case ms.bad != "":
		return "Corral boot server: " + ms.bad
	case ms.declared != "":
		u := "none"
		if ms.uuid != "" {
			u = formatUUID(ms.uuid)
		}
		return fmt.Sprintf("Corral boot server: MAC %s is machine %s's in the cluster file, but this machine's UUID (%s) is not the one declared for it. Correct the machine's uuid in the cluster file, or remove it, and run provision up again.", ms.mac, ms.declared, u)
	case ms.full != "":
		return fmt.Sprintf("Corral boot server: MAC %s belongs to group %s, which has no free machine left. Add a machine to the group in the cluster file (or this MAC as a machine of its own) and run provision up again.", ms.mac, ms.full)
	}
	return fmt.Sprintf("Corral boot server: MAC %s is not in the cluster file. To boot this machine, add a machine with mac = %s (or a group whose MAC range includes it) to the cluster file and run provision up again.", ms.mac, ms.mac)
}

// base is the server's URL as machines reach it, without a trailing slash.
func (s *Server) base(r *http.Request) string {
	if s.BaseURL != "" {
		return strings.TrimRight(s.BaseURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// known looks up the machine a config or report request is from, and
// answers a malformed (400) or unknown (404) one itself, saying why.
func (s *Server) known(w http.ResponseWriter, r *http.Request) (Machine, bool) {
	m, ms := s.lookup(r, false)
	if ms == nil {
		return m, true
	}
	s.warnUnknown(r, ms)
	code := http.StatusNotFound
	if ms.bad != "" {
		code = http.StatusBadRequest
	}
	http.Error(w, ms.text(), code)
	return Machine{}, false
}

func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) {
	m, ok := s.known(w, r)
	if !ok {
		return
	}
	var body []byte
	var format, ctype string
	if r.URL.Path == "/ignition" {
		body, format, ctype = m.Ignition, "Ignition", "application/vnd.coreos.ignition+json"
	} else {
		body, format, ctype = m.CloudConfig, "cloud-config", "text/cloud-config; charset=utf-8"
	}
	if body == nil {
		s.log().Warn("pxe: a machine asked for a config it has none of", "machine", m.Name, "format", format)
		http.Error(w, fmt.Sprintf("Corral boot server: machine %s has no %s config (its profile boots with the other format)", m.Name, format), http.StatusNotFound)
		return
	}
	s.log().Debug("pxe: config served", "machine", m.Name, "format", format)
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}
