package awsemu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Options configures an Emulator.
type Options struct {
	// Region is the emulated region; default us-west-2.
	Region string
	// AccountID is the emulated account; default 123456789012.
	AccountID string
	// StateDelay is how long EC2 instances stay pending (and
	// shutting-down) before becoming running (terminated), and load
	// balancers provisioning before becoming active. Zero means the
	// transition is seen on the next read.
	StateDelay time.Duration
	// OnLaunch, if set, is called for every instance the emulator
	// launches (RunInstances or Auto Scaling), and OnTerminate for every
	// instance it starts terminating. They are called one at a time, in
	// the order the events happened, on a goroutine of their own, so they
	// may block and may call the emulator's APIs; Close waits for them.
	OnLaunch, OnTerminate func(Instance)
}

// Call is one request served by the Emulator.
type Call struct {
	Service   string
	Action    string
	Mutating  bool // anything but Describe*/List*/Get*/Head* (and S3 GET/HEAD)
	Throttled bool // answered with an injected throttling error
}

// Emulator serves the emulated AWS services over HTTP.
type Emulator struct {
	opts Options

	// mu guards all emulated service state; service handlers hold it
	// while executing an action.
	mu    sync.Mutex
	ec2   *ec2State
	asg   *asgState
	elb   *elbState
	hooks hooks

	// IAM, S3 and CloudWatch Logs keep their own locks: nothing in them
	// calls back into the state above.
	iam  *iamService
	s3   *s3Service
	logs *logsService

	regMu    sync.RWMutex
	services map[string]http.Handler

	logMu sync.Mutex
	calls []Call

	faultMu  sync.Mutex
	throttle float64
	latency  time.Duration

	ln  net.Listener
	srv *http.Server
}

// New returns an Emulator with all services built in this package registered.
func New(opts Options) *Emulator {
	if opts.Region == "" {
		opts.Region = DefaultRegion
	}
	if opts.AccountID == "" {
		opts.AccountID = "123456789012"
	}
	e := &Emulator{opts: opts, services: map[string]http.Handler{}}
	e.hooks.onLaunch, e.hooks.onTerminate = opts.OnLaunch, opts.OnTerminate
	e.iam = newIAM(opts.AccountID)
	e.s3 = newS3(opts.AccountID, opts.Region)
	e.logs = newLogs(opts.AccountID, opts.Region)
	e.Register("ec2", newEC2(e))
	e.Register("autoscaling", newAutoScaling(e))
	e.Register("elasticloadbalancing", newELBv2(e))
	e.Register("sts", newSTS(e))
	e.Register("iam", e.iam)
	e.Register("s3", e.s3)
	e.Register("logs", e.logs)
	return e
}

// Register installs h as the handler for requests signed for service (the
// signing name in the SigV4 credential scope, e.g. "ec2", "iam", "s3").
func (e *Emulator) Register(service string, h http.Handler) {
	e.regMu.Lock()
	defer e.regMu.Unlock()
	e.services[service] = h
}

// Region returns the emulated region.
func (e *Emulator) Region() string { return e.opts.Region }

// AccountID returns the emulated account id.
func (e *Emulator) AccountID() string { return e.opts.AccountID }

// Start serves the Emulator on a loopback port and returns its base URL.
func (e *Emulator) Start() (string, error) {
	if e.srv != nil {
		return "", errors.New("awsemu: already started")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	e.ln = ln
	e.srv = &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	go e.srv.Serve(ln) //nolint:errcheck // returns on Close
	return "http://" + ln.Addr().String(), nil
}

// Close stops serving and waits for lifecycle callbacks in progress.
func (e *Emulator) Close() error {
	defer e.hooks.wait()
	if e.srv == nil {
		return nil
	}
	return e.srv.Close()
}

// SetThrottle makes the given fraction (0..1) of calls fail with the
// service's throttling error. Safe to call while serving.
func (e *Emulator) SetThrottle(fraction float64) {
	e.faultMu.Lock()
	e.throttle = fraction
	e.faultMu.Unlock()
}

// SetLatency delays every response by d. Safe to call while serving.
func (e *Emulator) SetLatency(d time.Duration) {
	e.faultMu.Lock()
	e.latency = d
	e.faultMu.Unlock()
}

// SetInstanceProfileDelay emulates IAM's eventual consistency: for d after
// an instance profile is created, EC2 refuses to launch instances with it
// (InvalidParameterValue: Invalid IAM Instance Profile name), as AWS does
// for a few seconds. Safe to call while serving.
func (e *Emulator) SetInstanceProfileDelay(d time.Duration) { e.iam.SetInstanceProfileDelay(d) }

// Calls returns a copy of the log of calls served so far.
func (e *Emulator) Calls() []Call {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return append([]Call(nil), e.calls...)
}

var scopeRE = regexp.MustCompile(`Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request`)

// scopeOf returns the region and signing name of r's SigV4 credential
// scope (Authorization header or presigned X-Amz-Credential); ok is false
// for unsigned requests.
func scopeOf(r *http.Request) (region, service string, ok bool) {
	if m := scopeRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		return m[1], m[2], true
	}
	if c := r.URL.Query().Get("X-Amz-Credential"); c != "" {
		if parts := strings.Split(c, "/"); len(parts) == 5 {
			return parts[2], parts[3], true
		}
	}
	return "", "", false
}

// serviceOf returns the signing name of r; unsigned requests are S3's.
func serviceOf(r *http.Request) string {
	if _, s, ok := scopeOf(r); ok {
		return s
	}
	return "s3"
}

// regionOf returns the region r was signed for, or def if it is unsigned.
func regionOf(r *http.Request, def string) string {
	if reg, _, ok := scopeOf(r); ok {
		return reg
	}
	return def
}

// actionOf names the operation of r for the call log.
func actionOf(service string, r *http.Request) (action string, mutating bool) {
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		action = t[strings.LastIndex(t, ".")+1:]
	} else if service == "s3" {
		action = r.Method + " " + r.URL.Path
		return action, r.Method != http.MethodGet && r.Method != http.MethodHead
	} else {
		action = r.Form.Get("Action")
	}
	for _, p := range []string{"Describe", "List", "Get", "Head"} {
		if strings.HasPrefix(action, p) {
			return action, false
		}
	}
	return action, true
}

// ServeHTTP dispatches r to the service named by its credential scope.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	service := serviceOf(r)
	if service != "s3" && r.Header.Get("X-Amz-Target") == "" {
		_ = r.ParseForm()
	}
	action, mutating := actionOf(service, r)

	e.faultMu.Lock()
	throttle, latency := e.throttle, e.latency
	e.faultMu.Unlock()
	if latency > 0 {
		time.Sleep(latency)
	}
	throttled := throttle > 0 && rand.Float64() < throttle
	e.logMu.Lock()
	e.calls = append(e.calls, Call{Service: service, Action: action, Mutating: mutating, Throttled: throttled})
	e.logMu.Unlock()
	if throttled {
		writeThrottle(w, service)
		return
	}

	e.regMu.RLock()
	h := e.services[service]
	e.regMu.RUnlock()
	if h == nil {
		writeQueryError(w, &apiError{http.StatusBadRequest, "Sender", "UnknownService",
			fmt.Sprintf("awsemu does not emulate service %q", service)})
		return
	}
	h.ServeHTTP(w, r)
}

// writeThrottle answers with the throttling error of service, as AWS does.
func writeThrottle(w http.ResponseWriter, service string) {
	const msg = "Rate exceeded"
	switch service {
	case "ec2":
		writeEC2Error(w, &apiError{http.StatusServiceUnavailable, "", "RequestLimitExceeded", "Request limit exceeded."})
	case "s3":
		writeXML(w, http.StatusServiceUnavailable, x("Error", xt("Code", "SlowDown"),
			xt("Message", "Please reduce your request rate."), xt("RequestId", newRequestID())))
	case "logs":
		writeJSON11(w, http.StatusBadRequest, map[string]string{"__type": "ThrottlingException", "message": msg})
	default:
		writeQueryError(w, &apiError{http.StatusBadRequest, "Sender", "Throttling", msg})
	}
}
