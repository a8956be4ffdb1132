// Package awsnodetest gives tests a small AWS account to boot instances in:
// the in-repo emulator (internal/awsemu) driven through the real SDK, a VPC
// tagged as a cluster's with a subnet, an internet gateway and a route
// table, the cluster's bucket, and for each launched instance an instance
// metadata service (IMDSv2) of its own, so that several "instances" can run
// in one test process.
package awsnodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/internal/awsemu"
)

// Cluster is the corral:cluster tag value of the VPC and route table.
const Cluster = "test"

// Cloud is one emulated account with one cluster's network.
type Cloud struct {
	Emu        *awsemu.Emulator
	URL        string     // the emulator's endpoint
	Config     aws.Config // static credentials, BaseEndpoint = URL
	EC2        *ec2.Client
	S3         *s3.Client
	VPC        string
	Subnet     string
	Gateway    string // the internet gateway, target of the default route
	RouteTable string // tagged corral:cluster=Cluster, with 0.0.0.0/0 via Gateway
	Bucket     string
}

// Instance is one launched instance and the URL of its own metadata service.
type Instance struct {
	ID, IP, Zone string
	IMDS         string
}

// New starts an emulator and builds the network; everything is torn down
// by t.Cleanup.
func New(t testing.TB) *Cloud {
	t.Helper()
	ctx := context.Background()
	e := awsemu.New(awsemu.Options{})
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	c := &Cloud{Emu: e, URL: url, Bucket: "test-bucket"}
	c.Config = awsemu.TestConfig(url)
	c.Config.Region = e.Region()
	c.EC2 = ec2.NewFromConfig(c.Config)
	c.S3 = s3.NewFromConfig(c.Config, func(o *s3.Options) { o.UsePathStyle = true })

	tags := func(rt ec2types.ResourceType) []ec2types.TagSpecification {
		return []ec2types.TagSpecification{{ResourceType: rt, Tags: []ec2types.Tag{{Key: aws.String("corral:cluster"), Value: aws.String(Cluster)}}}}
	}
	vpc, err := c.EC2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16"), TagSpecifications: tags(ec2types.ResourceTypeVpc)})
	if err != nil {
		t.Fatal(err)
	}
	c.VPC = *vpc.Vpc.VpcId
	sn, err := c.EC2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &c.VPC, CidrBlock: aws.String("10.0.1.0/24"),
		AvailabilityZone: aws.String(e.Region() + "a")})
	if err != nil {
		t.Fatal(err)
	}
	c.Subnet = *sn.Subnet.SubnetId
	igw, err := c.EC2.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{})
	if err != nil {
		t.Fatal(err)
	}
	c.Gateway = *igw.InternetGateway.InternetGatewayId
	if _, err := c.EC2.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: &c.Gateway, VpcId: &c.VPC}); err != nil {
		t.Fatal(err)
	}
	rt, err := c.EC2.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{VpcId: &c.VPC, TagSpecifications: tags(ec2types.ResourceTypeRouteTable)})
	if err != nil {
		t.Fatal(err)
	}
	c.RouteTable = *rt.RouteTable.RouteTableId
	if _, err := c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &c.RouteTable,
		DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: &c.Gateway}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EC2.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{RouteTableId: &c.RouteTable, SubnetId: &c.Subnet}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.S3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &c.Bucket,
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(e.Region())}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// Launch starts n instances in the subnet, each with its own metadata
// service: the emulator's (IMDSv2 only), served on a port of its own.
func (c *Cloud) Launch(t testing.TB, n int) []Instance {
	t.Helper()
	out, err := c.EC2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0"),
		MinCount: aws.Int32(int32(n)), MaxCount: aws.Int32(int32(n)), SubnetId: &c.Subnet,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{{Key: aws.String("corral:cluster"), Value: aws.String(Cluster)}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var ins []Instance
	for _, r := range out.Instances {
		in := Instance{ID: *r.InstanceId, IP: *r.PrivateIpAddress, Zone: *r.Placement.AvailabilityZone}
		srv := httptest.NewServer(c.Emu.IMDS(in.ID))
		t.Cleanup(srv.Close)
		in.IMDS = srv.URL
		ins = append(ins, in)
	}
	return ins
}

// Terminate terminates an instance; the emulator shows it terminated on
// the next read.
func (c *Cloud) Terminate(t testing.TB, id string) {
	t.Helper()
	if _, err := c.EC2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
}

// Upload puts the bootstrap material as provision does: a new CA and its
// token under prefix ("corral/test/bootstrap/").
func (c *Cloud) Upload(t testing.TB, prefix string) (*pki.CA, pki.Token) {
	t.Helper()
	ca, err := pki.NewCA(Cluster)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string][]byte{"ca.crt": ca.CertPEM(), "ca.key": key, "token": []byte(tok.String() + "\n")} {
		if _, err := c.S3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &c.Bucket, Key: aws.String(prefix + k),
			Body: bytes.NewReader(v)}); err != nil {
			t.Fatal(err)
		}
	}
	return ca, tok
}

// ServeIMDS serves a metadata service that describes in as given, and
// returns its URL: for tests whose instance must have an address other
// than the one EC2 gave it (a loopback address its etcd can listen on),
// which the emulator's own service would report. It serves the two IMDSv2
// paths an instance's identity needs: the
// session token (PUT /latest/api/token) and the instance identity document,
// which is refused without the token, as on an instance with IMDSv1
// disabled.
func (c *Cloud) ServeIMDS(t testing.TB, in Instance) string {
	const token = "imds-session-token"
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
			http.Error(w, "missing TTL", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		w.Write([]byte(token))
	})
	mux.HandleFunc("GET /latest/dynamic/instance-identity/document", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Aws-Ec2-Metadata-Token") != token {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"instanceId": in.ID, "privateIp": in.IP, "availabilityZone": in.Zone,
			"region": c.Emu.Region(), "accountId": c.Emu.AccountID(), "imageId": "ami-0123456789abcdef0", "instanceType": "t3.small",
			"architecture": "x86_64", "pendingTime": time.Now().UTC().Format(time.RFC3339), "version": "2017-09-30"})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}
