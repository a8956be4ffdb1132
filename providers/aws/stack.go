// Package aws builds and converges a Corral cluster's AWS infrastructure
// with aws-sdk-go-v2 directly, no CloudFormation: the VPC and its network,
// security groups, the nodes' IAM role, the backup bucket and log group,
// per node group a launch template and an Auto Scaling group, and the load
// balancers. It is the stack of chapter 8 of CoreOS in Action, made
// idempotent: every resource is found again by its tags (corral:cluster,
// Name, corral:group), Plan says what Apply would change without changing
// anything, Apply changes only what differs, and Destroy finds everything by
// tag, with no state at all.
package aws

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/sync/errgroup"
)

// Options tunes a Stack.
type Options struct {
	// Log receives one progress line per change made; nil discards them.
	Log io.Writer
	// MaxAttempts is how often a throttled or failed call is tried; 10 by
	// default, so that throttling converges.
	MaxAttempts int
	// MaxBackoff caps the delay between attempts; the SDK's 20 s by default.
	MaxBackoff time.Duration
	// WaitDelay is the shortest delay between a waiter's polls; the SDK's
	// per-waiter default (5 to 15 s) when zero. Tests against the emulator
	// lower it.
	WaitDelay time.Duration
	// ProfileWait bounds how long launch templates and Auto Scaling groups
	// are retried while a new instance profile is not yet visible to EC2
	// (IAM is eventually consistent); 2 minutes by default.
	ProfileWait time.Duration
	// BeforeGroups, when set, is called by Apply once the bucket, the
	// role and the network exist and before any launch template or Auto
	// Scaling group is touched: what instances fetch at boot (their
	// binary, the bootstrap material) must be in the bucket before the
	// first of them launches, since Ignition fails a boot on a missing
	// file rather than waiting for it.
	BeforeGroups func(ctx context.Context) error
}

// Stack is one cluster's AWS infrastructure.
type Stack struct {
	spec Spec
	opts Options

	ec2  *ec2.Client
	asg  *autoscaling.Client
	elb  *elb.Client
	iam  *iam.Client
	s3   *s3.Client
	logs *cloudwatchlogs.Client
	sts  *sts.Client

	logMu     sync.Mutex
	accountMu sync.Mutex
	account   string
}

// New returns the Stack of spec. It loads the AWS configuration the
// standard way (environment, shared config and credentials files with
// spec.Profile, SSO, IMDS), in spec.Region; spec.Endpoint, or the
// environment's AWS_ENDPOINT_URL, overrides every service's endpoint. It
// makes no call to AWS.
func New(ctx context.Context, spec Spec, opts Options) (*Stack, error) {
	spec = spec.clone()
	if err := spec.prepare(); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 10
	}
	if opts.ProfileWait == 0 {
		opts.ProfileWait = 2 * time.Minute
	}
	load := []func(*config.LoadOptions) error{
		config.WithRegion(spec.Region),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opts.MaxAttempts
				if opts.MaxBackoff > 0 {
					o.MaxBackoff = opts.MaxBackoff
					o.Backoff = retry.NewExponentialJitterBackoff(opts.MaxBackoff)
				}
				// The client-side retry quota would give up on a heavily
				// throttled run long before MaxAttempts; backoff alone
				// paces the retries.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if spec.Profile != "" {
		load = append(load, config.WithSharedConfigProfile(spec.Profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration (region %s, profile %q): %w", spec.Region, spec.Profile, err)
	}
	if spec.Endpoint != "" {
		cfg.BaseEndpoint = aws.String(spec.Endpoint)
	}
	// A custom endpoint (an emulator, LocalStack) serves buckets by path,
	// not as <bucket>.<host>.
	pathStyle := cfg.BaseEndpoint != nil || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
	return &Stack{
		spec: spec, opts: opts,
		ec2:  ec2.NewFromConfig(cfg),
		asg:  autoscaling.NewFromConfig(cfg),
		elb:  elb.NewFromConfig(cfg),
		iam:  iam.NewFromConfig(cfg),
		s3:   s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = pathStyle }),
		logs: cloudwatchlogs.NewFromConfig(cfg),
		sts:  sts.NewFromConfig(cfg),
	}, nil
}

// clone copies s deeply enough that prepare's defaults never reach the
// caller's slices.
func (s Spec) clone() Spec {
	s.Zones = append([]string(nil), s.Zones...)
	if s.Subnets != nil {
		s.Subnets = append([]netip.Prefix(nil), s.Subnets...)
	}
	groups := make([]Group, len(s.Groups))
	for i, g := range s.Groups {
		g.Volumes = append([]Volume(nil), g.Volumes...)
		g.LoadBalancers = append([]LoadBalancer(nil), g.LoadBalancers...)
		groups[i] = g
	}
	s.Groups = groups
	return s
}

// logf writes one progress line.
func (s *Stack) logf(format string, args ...any) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fmt.Fprintf(s.opts.Log, format+"\n", args...)
}

// accountID returns the caller's account id (it names the bucket and
// scopes the policy), asking STS once.
func (s *Stack) accountID(ctx context.Context) (string, error) {
	s.accountMu.Lock()
	defer s.accountMu.Unlock()
	if s.account != "" {
		return s.account, nil
	}
	out, err := s.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", wrap("get caller identity", "sts", err)
	}
	s.account = aws.ToString(out.Account)
	return s.account, nil
}

// Action is what Plan says Apply would do with a resource.
type Action string

// The actions. Update is a difference the file asks for (a new capacity, new
// user data); Drift is a difference made outside Corral (a rule added by
// hand, a route removed), which Apply puts back as the file says.
const (
	Keep   Action = "keep"
	Create Action = "create"
	Update Action = "update"
	Drift  Action = "drift"
)

// Change is one resource's outcome in Plan or Apply.
type Change struct {
	Action   Action
	Resource string // kind and name: `security group "demo-nodes"`
	Detail   string // one line: what differs, or "" for keep and create
}

// String is the change as Plan shows it: `update auto scaling group "demo-core": desired 3 → 4`.
func (c Change) String() string {
	if c.Detail == "" {
		return fmt.Sprintf("%s %s", c.Action, c.Resource)
	}
	return fmt.Sprintf("%s %s: %s", c.Action, c.Resource, c.Detail)
}

// Outputs is what Apply made, for provision's state and the user.
type Outputs struct {
	// LoadBalancers are the node groups' load balancers' DNS names, by the
	// load_balancer block's name.
	LoadBalancers map[string]string
	// EtcdDNS is the internal etcd load balancer's DNS name.
	EtcdDNS      string
	Bucket       string
	LogGroup     string
	VPCID        string
	SubnetIDs    []string // in the zones' order
	RouteTableID string
	// TemplateVersions is each group's latest launch template version.
	TemplateVersions map[string]int64
	// Replace lists the groups whose launch template got a new version in
	// this Apply: their running instances are of an older one and need a
	// rolling replacement (Instances, TerminateInstance).
	Replace []string
	// Changes are what Apply did, one per resource.
	Changes []Change
}

// run is one Plan or Apply: the ids found or made so far and the changes.
type run struct {
	s     *Stack
	apply bool

	mu      sync.Mutex
	changes []Change
	out     Outputs

	account string
	vpcID   string
	subnets []string // by zone; "" where it does not exist (plan)
	igwID   string
	lbSG    string
	nodesSG string
	images  map[string]string   // group → AMI id
	targets map[string][]string // group → target group ARNs
}

func (r *run) note(a Action, resource, detail string) {
	r.mu.Lock()
	r.changes = append(r.changes, Change{a, resource, detail})
	r.mu.Unlock()
	if r.apply && a != Keep {
		r.s.logf("%s", Change{a, resource, detail})
	}
}

// Plan reports, resource by resource, what Apply would do. It makes only
// read calls (Describe, Get, List, Head).
func (s *Stack) Plan(ctx context.Context) ([]Change, error) {
	r, err := s.converge(ctx, false)
	if err != nil {
		return nil, err
	}
	return r.changes, nil
}

// Apply creates what is missing, updates what differs and keeps what
// matches; nothing changed in the Spec or in AWS means no mutating call at
// all. Independent resources are made in parallel.
func (s *Stack) Apply(ctx context.Context) (Outputs, error) {
	r, err := s.converge(ctx, true)
	if err != nil {
		return Outputs{}, err
	}
	r.out.Changes = r.changes
	sort.Strings(r.out.Replace)
	return r.out, nil
}

// converge walks the whole stack in dependency order, in parallel where the
// order allows: IAM, storage, the network and image lookups at once; then
// security groups and load balancers; then each group's launch template
// and Auto Scaling group.
func (s *Stack) converge(ctx context.Context, apply bool) (*run, error) {
	r := &run{s: s, apply: apply, images: map[string]string{}, targets: map[string][]string{}}
	r.out.LoadBalancers = map[string]string{}
	r.out.TemplateVersions = map[string]int64{}
	var err error
	if r.account, err = s.accountID(ctx); err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.iamRole(gctx) })
	g.Go(func() error { return r.bucket(gctx) })
	g.Go(func() error { return r.logGroup(gctx) })
	g.Go(func() error { return r.resolveImages(gctx) })
	g.Go(func() error { return r.keyPair(gctx) })
	g.Go(func() error {
		if err := r.network(gctx); err != nil {
			return err
		}
		if err := r.securityGroups(gctx); err != nil {
			return err
		}
		return r.loadBalancers(gctx)
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if apply && s.opts.BeforeGroups != nil {
		if err := s.opts.BeforeGroups(ctx); err != nil {
			return nil, err
		}
	}
	g, gctx = errgroup.WithContext(ctx)
	for i := range s.spec.Groups {
		grp := &s.spec.Groups[i]
		g.Go(func() error {
			if err := r.launchTemplate(gctx, grp); err != nil {
				return err
			}
			return r.autoScalingGroup(gctx, grp)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	sort.SliceStable(r.changes, func(i, j int) bool { return r.changes[i].Resource < r.changes[j].Resource })
	return r, nil
}

// waitMin is a waiter's shortest delay between polls: Options.WaitDelay,
// or the waiter's own default def.
func (s *Stack) waitMin(def time.Duration) time.Duration {
	if s.opts.WaitDelay > 0 {
		return s.opts.WaitDelay
	}
	return def
}

// waitMax bounds every wait for a resource to become available or go away.
func (s *Stack) waitMax() time.Duration { return 15 * time.Minute }

// joinDetails joins the differences found in one resource into one line.
func joinDetails(d []string) string { return strings.Join(d, "; ") }
