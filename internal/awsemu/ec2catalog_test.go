package awsemu

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// sshPublicKey returns a fresh ed25519 key in authorized_keys format.
func sshPublicKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var blob []byte
	for _, field := range [][]byte{[]byte("ssh-ed25519"), pub} {
		blob = binary.BigEndian.AppendUint32(blob, uint32(len(field)))
		blob = append(blob, field...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " test@corral"
}

func TestEC2CatalogAndKeyPairs(t *testing.T) {
	ctx := context.Background()
	_, cfg := startEmu(t, Options{})
	c := ec2.NewFromConfig(cfg)
	n := buildNetwork(t, ctx, c)

	azs := must(c.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{}))(t).AvailabilityZones
	var zones []string
	for _, z := range azs {
		zones = append(zones, *z.ZoneName)
	}
	if fmt.Sprint(zones) != "[us-west-2a us-west-2b us-west-2c us-west-2d]" {
		t.Errorf("zones %v", zones)
	}

	// "flatcar-stable" resolves to the newest stable image of the owner.
	imgs := must(c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{FlatcarOwner}, Filters: []ec2types.Filter{
		{Name: aws.String("name"), Values: []string{"Flatcar-stable-*"}},
		{Name: aws.String("architecture"), Values: []string{"x86_64"}}}}))(t).Images
	if len(imgs) != 2 {
		t.Fatalf("stable x86_64 images: %+v", imgs)
	}
	sort.Slice(imgs, func(i, j int) bool { return *imgs[i].CreationDate > *imgs[j].CreationDate })
	if *imgs[0].Name != "Flatcar-stable-4230.2.3-hvm" || imgs[0].State != ec2types.ImageStateAvailable || *imgs[0].OwnerId != FlatcarOwner {
		t.Errorf("latest stable: %+v", imgs[0])
	}
	if other := must(c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}}))(t).Images; len(other) != 1 {
		t.Errorf("amazon images: %d", len(other))
	}

	its := must(c.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []ec2types.InstanceType{ec2types.InstanceTypeT3Small}}))(t).InstanceTypes
	if len(its) != 1 || *its[0].VCpuInfo.DefaultVCpus != 2 || *its[0].MemoryInfo.SizeInMiB != 2048 {
		t.Errorf("t3.small: %+v", its)
	}
	for typ, want := range map[string]string{"t4g.small": "arm64", "m6gd.large": "arm64", "c7gn.large": "arm64", "g4dn.xlarge": "x86_64", "m5d.2xlarge": "x86_64"} {
		its := must(c.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []ec2types.InstanceType{ec2types.InstanceType(typ)}}))(t).InstanceTypes
		if len(its) != 1 || string(its[0].ProcessorInfo.SupportedArchitectures[0]) != want {
			t.Errorf("%s: %+v", typ, its)
		}
	}
	if x := must(c.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []ec2types.InstanceType{"t3.xlarge", "t3.2xlarge"}}))(t).InstanceTypes; len(x) != 2 || *x[0].VCpuInfo.DefaultVCpus+*x[1].VCpuInfo.DefaultVCpus != 12 {
		t.Errorf("t3 xlarge sizes: %+v", x)
	}
	runIn := func(mod func(*ec2.RunInstancesInput)) (*ec2.RunInstancesOutput, error) {
		in := &ec2.RunInstancesInput{ImageId: imgs[0].ImageId, InstanceType: ec2types.InstanceTypeT3Small,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &n.subnets[1]}
		mod(in)
		return c.RunInstances(ctx, in)
	}
	_, err := runIn(func(in *ec2.RunInstancesInput) { in.InstanceType = "t9.enormous" })
	wantCode(t, err, "InvalidParameterValue")
	_, err = runIn(func(in *ec2.RunInstancesInput) { in.ImageId = aws.String("flatcar-stable") })
	wantCode(t, err, "InvalidAMIID.Malformed")

	// Key pairs.
	pub := sshPublicKey(t)
	kp := must(c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("ops"), PublicKeyMaterial: []byte(pub)}))(t)
	if *kp.KeyName != "ops" || len(*kp.KeyFingerprint) != 47 {
		t.Errorf("import: %+v", kp)
	}
	_, err = c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("ops"), PublicKeyMaterial: []byte(pub)})
	wantCode(t, err, "InvalidKeyPair.Duplicate")
	_, err = c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("junk"), PublicKeyMaterial: []byte("not a key")})
	wantCode(t, err, "InvalidKey.Format")
	keys := must(c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"ops"}, IncludePublicKey: aws.Bool(true)}))(t).KeyPairs
	if len(keys) != 1 || *keys[0].KeyPairId != *kp.KeyPairId || *keys[0].PublicKey != pub || keys[0].KeyType != ec2types.KeyTypeEd25519 {
		t.Errorf("key pairs: %+v", keys)
	}
	_, err = c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"nope"}})
	wantCode(t, err, "InvalidKeyPair.NotFound")
	_, err = runIn(func(in *ec2.RunInstancesInput) { in.KeyName = aws.String("nope") })
	wantCode(t, err, "InvalidKeyPair.NotFound")
	run := must(runIn(func(in *ec2.RunInstancesInput) { in.KeyName = aws.String("ops") }))(t)
	id := *run.Instances[0].InstanceId
	if *run.Instances[0].KeyName != "ops" {
		t.Errorf("instance key %v", run.Instances[0].KeyName)
	}

	// Routes to instances, as the aws-vpc overlay backend makes them.
	must(c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &id, SourceDestCheck: &ec2types.AttributeBooleanValue{Value: aws.Bool(false)}}))(t)
	di := must(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}))(t)
	if *di.Reservations[0].Instances[0].SourceDestCheck {
		t.Error("DescribeInstances still reports SourceDestCheck true")
	}
	must(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("10.244.1.0/24"), InstanceId: &id}))(t)
	_, err = c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("10.244.1.0/24"), InstanceId: &id})
	wantCode(t, err, "RouteAlreadyExists")
	rt := must(c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{n.rtb}}))(t).RouteTables[0]
	found := false
	for _, r := range rt.Routes {
		found = found || (*r.DestinationCidrBlock == "10.244.1.0/24" && r.InstanceId != nil && *r.InstanceId == id && r.State == ec2types.RouteStateActive)
	}
	if !found {
		t.Errorf("instance route missing: %+v", rt.Routes)
	}
	// The table has local, 0.0.0.0/0 and one node route; fill it to 50.
	for i := 2; len(rt.Routes)+i-2 < maxRoutes; i++ {
		must(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String(fmt.Sprintf("10.244.%d.0/24", i)), InstanceId: &id}))(t)
	}
	_, err = c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("10.245.0.0/24"), InstanceId: &id})
	wantCode(t, err, "RouteLimitExceeded")
	must(c.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("10.244.1.0/24")}))(t)
	must(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("10.245.0.0/24"), InstanceId: &id}))(t)
	must(c.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("ops")}))(t)
	if left := must(c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{}))(t).KeyPairs; len(left) != 0 {
		t.Errorf("key pairs left: %+v", left)
	}
}

func TestInstanceProfilePropagationDelay(t *testing.T) {
	ctx := context.Background()
	e, cfg := startEmu(t, Options{})
	c := ec2.NewFromConfig(cfg)
	ic := iam.NewFromConfig(cfg)
	n := buildNetwork(t, ctx, c)
	const delay = 200 * time.Millisecond
	e.SetInstanceProfileDelay(delay)
	created := time.Now()
	must(ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("late")}))(t)
	run := func() error {
		_, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			SubnetId: &n.subnets[0], IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("late")}})
		return err
	}
	wantCode(t, run(), "InvalidParameterValue")
	deadline := time.Now().Add(10 * time.Second)
	for err := run(); err != nil; err = run() {
		wantCode(t, err, "InvalidParameterValue")
		if time.Now().After(deadline) {
			t.Fatal("instance profile never became usable")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	if took := time.Since(created); took < delay {
		t.Errorf("profile usable after %v, before the %v delay", took, delay)
	}
}
