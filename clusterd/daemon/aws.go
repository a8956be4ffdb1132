package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/corral-dev/corral/bootstrap/awsnode"
	"github.com/corral-dev/corral/clusterd/backup"
	"github.com/corral-dev/corral/clusterd/overlay/backend"
	"github.com/spf13/cobra"
)

// AWSConfig starts clusterd on an EC2 instance of an Auto Scaling group,
// whose user data (the same for every instance) can't name the node: the
// node discovers its name, address, role and join material instead (see
// bootstrap/awsnode).
type AWSConfig struct {
	// Bootstrap is "s3://<bucket>/<prefix>", where provision put ca.crt,
	// ca.key and token; "" means not on AWS.
	Bootstrap string
	// EtcdMembers is the number of voting members (the cluster's
	// etcd_members); 0 means awsnode.DefaultEtcdMembers.
	EtcdMembers int
	// RouteTables are the aws-vpc backend's route tables; empty means the
	// ones tagged with the cluster, found from the instance's own tags.
	RouteTables []string
	// SDK is the AWS configuration; nil means the standard chain
	// (environment, the instance role). Tests point it at an emulator.
	SDK *aws.Config
	// IMDSEndpoint overrides the metadata service's address; "" means
	// the SDK default (and AWS_EC2_METADATA_SERVICE_ENDPOINT).
	IMDSEndpoint string
}

// awsIdentityFile, in the data dir, holds the discovered identity: a
// restarted clusterd is the same node without asking S3 again.
const awsIdentityFile = "aws-identity.json"

// awsDiscoveredFlags are the flags --aws-bootstrap discovers; giving both
// would leave two answers to one question.
var awsDiscoveredFlags = []string{"name", "ip", "mode", "servers", "token", "token-file", "ca-cert", "ca-key"}

// awsFlags adds the AWS flags to cmd.
func awsFlags(cmd *cobra.Command, c *AWSConfig) {
	f := cmd.Flags()
	f.StringVar(&c.Bootstrap, "aws-bootstrap", "", "on EC2: s3://<bucket>/<prefix> of the bootstrap material; the node then discovers its name (the instance id), IP, role, servers and token")
	f.IntVar(&c.EtcdMembers, "etcd-members", awsnode.DefaultEtcdMembers, "with --aws-bootstrap: how many instances become voting etcd members")
	f.StringSliceVar(&c.RouteTables, "aws-route-tables", nil, "overlay backend aws-vpc: the VPC route tables to keep (default: those tagged with the instance's corral:cluster)")
}

// awsFlagConflicts refuses flags that --aws-bootstrap discovers.
func awsFlagConflicts(cmd *cobra.Command) error {
	for _, name := range awsDiscoveredFlags {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("--%s: --aws-bootstrap discovers it; remove --%s from the command line", name, name)
		}
	}
	return nil
}

// awsBootstrap fills in the node's identity from the saved file, or on
// the first start from awsnode.Discover, and enables the aws-vpc backend.
func (c *Config) awsBootstrap(ctx context.Context) error {
	path := filepath.Join(c.DataDir, awsIdentityFile)
	id, err := awsnode.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		if id, err = c.awsDiscover(ctx); err != nil {
			return err
		}
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return err
		}
		if err := id.Save(path); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	c.Name, c.IP, c.Mode, c.Servers, c.Token, c.CAFiles = id.Name, id.IP, id.Mode, id.Servers, id.Token, id.CAFiles
	c.Log = c.Log.With("instance", c.Name)

	sdk, err := awsnode.Config(ctx, c.AWS.SDK, id.Region)
	if err != nil {
		return err
	}
	client := ec2.NewFromConfig(sdk)
	instance := id.Name
	c.Overlay.AWSVPC = &backend.AWSVPCConfig{EC2: client, InstanceID: instance, RouteTables: c.AWS.RouteTables,
		Prepare: func(ctx context.Context) error { return awsnode.DisableSourceDestCheck(ctx, client, instance) }}
	return nil
}

func (c *Config) awsDiscover(ctx context.Context) (awsnode.Identity, error) {
	t, err := backup.ParseDestination(c.AWS.Bootstrap, "")
	if err != nil || t.Kind != backup.S3 || t.Bucket == "" {
		return awsnode.Identity{}, fmt.Errorf("--aws-bootstrap %q: want s3://<bucket>/<prefix>, e.g. s3://demo-123456789012-us-west-2/corral/demo/bootstrap", c.AWS.Bootstrap)
	}
	return awsnode.Discover(ctx, awsnode.Options{Bucket: t.Bucket, Prefix: t.Prefix, EtcdMembers: c.AWS.EtcdMembers,
		DataDir: c.DataDir, AWS: c.AWS.SDK, IMDSEndpoint: c.AWS.IMDSEndpoint, Log: c.Log})
}
