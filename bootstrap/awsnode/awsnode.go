// Package awsnode gives an EC2 instance its place in a Corral cluster with
// nothing but the user data every instance of an Auto Scaling group shares:
// it learns who it is from the instance metadata service (IMDSv2), fetches
// the bootstrap material provision left in the cluster's S3 bucket, and
// elects its role (the initial etcd member, a joining voter, or a client)
// with S3 conditional writes, so that exactly one cluster forms even when
// every instance boots at once, without any external discovery service.
//
// Layout under the bootstrap prefix (s3://<bucket>/<prefix>/):
//
//	ca.crt       the cluster CA certificate (PEM), uploaded by provision
//	ca.key       the cluster CA key (PEM), uploaded by provision
//	token        the join token ("CRL1::sha256:<hex>::<secret>"), uploaded by provision
//	members/<i>  voter slot i, 0 <= i < etcd_members, written by clusterd:
//	             {"instance":"i-…","ip":"10.1.1.12","time":"2026-…Z"}
package awsnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/store"
)

// DefaultEtcdMembers is how many instances become voting etcd members
// when Options.EtcdMembers is 0 (the cluster block's etcd_members default).
const DefaultEtcdMembers = 3

// Object names under Options.Prefix.
const (
	KeyCACert   = "ca.crt"
	KeyCAKey    = "ca.key"
	KeyToken    = "token"
	membersPath = "members/"
)

// DefaultNotFoundGrace is how old a slot must be before an instance that
// DescribeInstances does not know makes it reclaimable. EC2 is eventually
// consistent: an instance launched a moment ago may not be listed yet, and
// taking its slot then would give two instances one role.
const DefaultNotFoundGrace = 10 * time.Minute

// Options says where the bootstrap material is and how many voters the
// cluster has.
type Options struct {
	// Bucket and Prefix locate the bootstrap material; Prefix may be
	// empty, and a trailing "/" is optional.
	Bucket, Prefix string
	// EtcdMembers is the number of voting etcd members (slots);
	// DefaultEtcdMembers when 0.
	EtcdMembers int
	// DataDir is clusterd's data directory: the initial member's CA lands
	// in <DataDir>/bootstrap/.
	DataDir string
	// AWS is the SDK configuration for S3 and EC2. Nil means the standard
	// chain (environment, shared files, the instance role). An empty
	// Region is filled in from the instance identity.
	AWS *aws.Config
	// IMDSEndpoint overrides the metadata service's address; "" means the
	// SDK's default, which honours AWS_EC2_METADATA_SERVICE_ENDPOINT.
	IMDSEndpoint string
	// NotFoundGrace: DefaultNotFoundGrace when 0.
	NotFoundGrace time.Duration
	Log           *slog.Logger
}

// Identity is what an instance needs to start clusterd: the fields of the
// daemon's Config that the command line would otherwise give.
type Identity struct {
	// Name is the instance id. Every instance of an Auto Scaling group
	// gets the same user data, so no per-node name can be handed in; the
	// instance id is the one name that is unique, stable for the
	// instance's life and known to both sides (provision maps its node
	// names to instance ids by the instances' tags).
	Name    string
	IP      net.IP
	Zone    string
	Region  string
	Mode    store.Mode
	Servers []string // IPs of the voters to join or use, never this instance's own
	Token   pki.Token
	CAFiles pki.Files // ModeInit only: the cluster CA, written to DataDir
	Slot    int       // the voter slot held, or -1 for a client
}

// node is one Discover run's clients and settings.
type node struct {
	opts Options
	s3   *s3.Client
	ec2  *ec2.Client
	self slot
}

// Discover finds out who this instance is and which role it has in the
// cluster; see the package comment for the S3 layout. Calling it again on
// the same instance (clusterd restarted, its data dir lost) returns the
// same role: the instance finds its own slot.
func Discover(ctx context.Context, opts Options) (Identity, error) {
	if opts.Bucket == "" {
		return Identity{}, errors.New("awsnode: no bucket: give the bootstrap location as s3://<bucket>/<prefix>")
	}
	if opts.EtcdMembers == 0 {
		opts.EtcdMembers = DefaultEtcdMembers
	}
	if opts.EtcdMembers < 1 {
		return Identity{}, fmt.Errorf("awsnode: etcd members is %d; it must be 1 or more (3, 5 or 7 is usual)", opts.EtcdMembers)
	}
	if opts.NotFoundGrace == 0 {
		opts.NotFoundGrace = DefaultNotFoundGrace
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Prefix = strings.Trim(opts.Prefix, "/"); opts.Prefix != "" {
		opts.Prefix += "/"
	}
	id, err := InstanceIdentity(ctx, opts.IMDSEndpoint)
	if err != nil {
		return Identity{}, err
	}
	cfg, err := Config(ctx, opts.AWS, id.Region)
	if err != nil {
		return Identity{}, err
	}
	n := &node{opts: opts, s3: NewS3(cfg), ec2: ec2.NewFromConfig(cfg),
		self: slot{Instance: id.Name, IP: id.IP.String()}}

	tokenPEM, err := n.get(ctx, KeyToken)
	if err != nil {
		return Identity{}, err
	}
	if id.Token, err = pki.ParseToken(string(tokenPEM)); err != nil {
		return Identity{}, fmt.Errorf("awsnode: %s: %w", n.url(KeyToken), err)
	}
	if id.Slot, id.Mode, id.Servers, err = n.elect(ctx); err != nil {
		return Identity{}, err
	}
	if id.Mode == store.ModeInit {
		if id.CAFiles, err = n.fetchCA(ctx, id.Token); err != nil {
			return Identity{}, err
		}
	}
	opts.Log.Info("aws bootstrap: role elected", "instance", id.Name, "ip", id.IP, "mode", id.Mode, "slot", id.Slot, "servers", id.Servers)
	return id, nil
}

// InstanceIdentity reads this instance's id, private IPv4, zone and region
// from the instance identity document, over IMDSv2 only (no fallback to
// the token-less v1, which instances should have disabled). endpoint ""
// means the SDK's default.
func InstanceIdentity(ctx context.Context, endpoint string) (Identity, error) {
	c := imds.New(imds.Options{Endpoint: endpoint, EnableFallback: aws.FalseTernary})
	doc, err := c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		return Identity{}, fmt.Errorf("awsnode: reading the instance identity from the metadata service (is this an EC2 instance with IMDSv2 enabled? AWS_EC2_METADATA_SERVICE_ENDPOINT overrides its address): %w", err)
	}
	ip := net.ParseIP(doc.PrivateIP).To4()
	switch {
	case doc.InstanceID == "":
		return Identity{}, errors.New("awsnode: the instance identity document has no instanceId")
	case ip == nil:
		return Identity{}, fmt.Errorf("awsnode: the instance identity document's privateIp %q is not an IPv4 address", doc.PrivateIP)
	case doc.Region == "":
		return Identity{}, errors.New("awsnode: the instance identity document has no region")
	}
	return Identity{Name: doc.InstanceID, IP: ip, Zone: doc.AvailabilityZone, Region: doc.Region, Slot: -1}, nil
}

// Config returns cfg (or the standard chain's configuration when nil) with
// region filled in when it has none.
func Config(ctx context.Context, cfg *aws.Config, region string) (aws.Config, error) {
	if cfg == nil {
		c, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			return aws.Config{}, fmt.Errorf("awsnode: loading the AWS configuration: %w", err)
		}
		cfg = &c
	}
	out := cfg.Copy()
	if out.Region == "" {
		out.Region = region
	}
	return out, nil
}

// NewS3 returns an S3 client for cfg. A custom endpoint (an emulator,
// LocalStack) serves buckets by path, not as <bucket>.<host>.
func NewS3(cfg aws.Config) *s3.Client {
	pathStyle := cfg.BaseEndpoint != nil || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
	return s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = pathStyle })
}

// url names an object of the bootstrap prefix in errors and logs.
func (n *node) url(key string) string {
	return "s3://" + n.opts.Bucket + "/" + n.opts.Prefix + key
}

// get reads one bootstrap object; its absence is an error that says who
// should have put it there.
func (n *node) get(ctx context.Context, key string) ([]byte, error) {
	out, err := n.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &n.opts.Bucket, Key: aws.String(n.opts.Prefix + key)})
	if err != nil {
		if isCode(err, "NoSuchKey", "NotFound") {
			return nil, fmt.Errorf("awsnode: %s does not exist: provision uploads it before launching instances; run provision up again", n.url(key))
		}
		return nil, fmt.Errorf("awsnode: reading %s (does the instance role allow s3:GetObject on it?): %w", n.url(key), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("awsnode: reading %s: %w", n.url(key), err)
	}
	return b, nil
}

// fetchCA writes the cluster CA to the data dir for the initial member,
// after checking that it is the CA the token pins.
func (n *node) fetchCA(ctx context.Context, tok pki.Token) (pki.Files, error) {
	certPEM, err := n.get(ctx, KeyCACert)
	if err != nil {
		return pki.Files{}, err
	}
	keyPEM, err := n.get(ctx, KeyCAKey)
	if err != nil {
		return pki.Files{}, err
	}
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		return pki.Files{}, fmt.Errorf("awsnode: %s and %s: %w", n.url(KeyCACert), n.url(KeyCAKey), err)
	}
	if ca.Hash() != tok.CAHash {
		return pki.Files{}, fmt.Errorf("awsnode: the CA in %s is %s but the token in %s pins %s: provision uploaded material of two different clusters; run provision up again",
			n.url(KeyCACert), ca.Hash(), n.url(KeyToken), tok.CAHash)
	}
	if n.opts.DataDir == "" {
		return pki.Files{}, errors.New("awsnode: no data dir to write the cluster CA to")
	}
	dir := filepath.Join(n.opts.DataDir, "bootstrap")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pki.Files{}, fmt.Errorf("awsnode: %w", err)
	}
	f := pki.Files{CA: filepath.Join(dir, KeyCACert), Key: filepath.Join(dir, KeyCAKey)}
	for path, b := range map[string][]byte{f.CA: certPEM, f.Key: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return pki.Files{}, fmt.Errorf("awsnode: writing the cluster CA: %w", err)
		}
	}
	return f, nil
}

// Save writes id to path (mode 0600: it holds the join token), so that a
// restarted clusterd starts as the same node without discovering again.
func (id Identity) Save(path string) error {
	b, err := json.MarshalIndent(savedIdentity{Name: id.Name, IP: id.IP.String(), Zone: id.Zone, Region: id.Region,
		Mode: id.Mode, Servers: id.Servers, Token: id.Token.String(), CACert: id.CAFiles.CA, CAKey: id.CAFiles.Key, Slot: id.Slot}, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("awsnode: saving the identity: %w", err)
	}
	return os.Rename(tmp, path)
}

// Load reads an identity Save wrote; an error wrapping fs.ErrNotExist
// means there is none yet.
func Load(path string) (Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Identity{}, err
	}
	var s savedIdentity
	if err := json.Unmarshal(b, &s); err != nil {
		return Identity{}, fmt.Errorf("awsnode: %s: %w (delete it to discover the identity again)", path, err)
	}
	id := Identity{Name: s.Name, IP: net.ParseIP(s.IP), Zone: s.Zone, Region: s.Region, Servers: s.Servers,
		CAFiles: pki.Files{CA: s.CACert, Key: s.CAKey}, Slot: s.Slot}
	if id.Mode, err = store.ParseMode(string(s.Mode)); err != nil {
		return Identity{}, fmt.Errorf("awsnode: %s: mode: %w", path, err)
	}
	if id.Token, err = pki.ParseToken(s.Token); err != nil {
		return Identity{}, fmt.Errorf("awsnode: %s: %w", path, err)
	}
	if id.Name == "" || id.IP == nil {
		return Identity{}, fmt.Errorf("awsnode: %s: no name or ip (delete it to discover the identity again)", path)
	}
	return id, nil
}

// savedIdentity is the file form of Identity.
type savedIdentity struct {
	Name    string     `json:"name"`
	IP      string     `json:"ip"`
	Zone    string     `json:"zone,omitempty"`
	Region  string     `json:"region,omitempty"`
	Mode    store.Mode `json:"mode"`
	Servers []string   `json:"servers,omitempty"`
	Token   string     `json:"token"`
	CACert  string     `json:"ca_cert,omitempty"`
	CAKey   string     `json:"ca_key,omitempty"`
	Slot    int        `json:"slot"`
}
