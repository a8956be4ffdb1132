package awsemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// receive waits for n lifecycle events on ch.
func receive(t *testing.T, ch <-chan Instance, n int) []Instance {
	t.Helper()
	var out []Instance
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case in := <-ch:
			out = append(out, in)
		case <-timeout:
			t.Fatalf("got %d of %d lifecycle events", len(out), n)
		}
	}
	return out
}

func TestLifecycleHooksAndIMDS(t *testing.T) {
	ctx := context.Background()
	launched, terminated := make(chan Instance, 16), make(chan Instance, 16)
	e, cfg := startEmu(t, Options{
		OnLaunch:    func(in Instance) { launched <- in },
		OnTerminate: func(in Instance) { terminated <- in },
	})
	c := ec2.NewFromConfig(cfg)
	ic := iam.NewFromConfig(cfg)
	as := autoscaling.NewFromConfig(cfg)
	n := buildNetwork(t, ctx, c)

	must(ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("corral-node"), AssumeRolePolicyDocument: aws.String(iamTestTrust)}))(t)
	prof := must(ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("corral-node")}))(t)
	must(ic.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String("corral-node"), RoleName: aws.String("corral-node")}))(t)

	ignition := `{"ignition":{"version":"3.4.0"}}`
	must(c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("nodes"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-0123456789abcdef0"),
			InstanceType: ec2types.InstanceTypeT3Small, SecurityGroupIds: []string{n.sg},
			UserData:           aws.String(base64.StdEncoding.EncodeToString([]byte(ignition))),
			IamInstanceProfile: &ec2types.LaunchTemplateIamInstanceProfileSpecificationRequest{Name: aws.String("corral-node")}}}))(t)
	must(as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("nodes"),
		LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("nodes"), Version: aws.String("$Latest")},
		MinSize:        aws.Int32(0), MaxSize: aws.Int32(3), DesiredCapacity: aws.Int32(2),
		VPCZoneIdentifier: aws.String(n.subnets[0] + "," + n.subnets[1]),
		Tags:              []astypes.Tag{{Key: aws.String("corral:cluster"), Value: aws.String("c1"), PropagateAtLaunch: aws.Bool(true)}}}))(t)

	got := receive(t, launched, 2)
	for _, in := range got {
		if string(in.UserData) != ignition || in.Tags["corral:cluster"] != "c1" || in.LaunchTemplateVersion != 1 ||
			in.IAMInstanceProfile != *prof.InstanceProfile.Arn || !strings.HasPrefix(in.PrivateIP, "10.0.") ||
			!slices.Contains(n.subnets[:2], in.SubnetID) || !strings.HasPrefix(in.Zone, "us-west-2") {
			t.Errorf("launched: %+v", in)
		}
	}

	// The instance's metadata service, read through the SDK's client.
	srv := httptest.NewServer(e.IMDS(got[0].ID))
	t.Cleanup(srv.Close)
	mc := imds.New(imds.Options{Endpoint: srv.URL})
	meta := func(path string) string {
		t.Helper()
		out := must(mc.GetMetadata(ctx, &imds.GetMetadataInput{Path: path}))(t)
		defer out.Content.Close()
		return string(must(io.ReadAll(out.Content))(t))
	}
	for path, want := range map[string]string{"instance-id": got[0].ID, "local-ipv4": got[0].PrivateIP,
		"placement/availability-zone": got[0].Zone, "placement/region": "us-west-2",
		"iam/security-credentials/": "corral-node"} {
		if v := meta(path); v != want {
			t.Errorf("meta-data/%s = %q, want %q", path, v, want)
		}
	}
	var creds struct{ Code, AccessKeyId, SecretAccessKey, Token, Expiration string }
	if err := json.Unmarshal([]byte(meta("iam/security-credentials/corral-node")), &creds); err != nil ||
		creds.Code != "Success" || !strings.HasPrefix(creds.AccessKeyId, "ASIA") || creds.Token == "" {
		t.Errorf("credentials %+v (%v)", creds, err)
	}
	ud := must(mc.GetUserData(ctx, &imds.GetUserDataInput{}))(t)
	if b := must(io.ReadAll(ud.Content))(t); string(b) != ignition {
		t.Errorf("user-data %q", b)
	}
	doc := must(mc.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{}))(t)
	if doc.InstanceID != got[0].ID || doc.Region != "us-west-2" || doc.AccountID != "123456789012" || doc.PrivateIP != got[0].PrivateIP {
		t.Errorf("identity document %+v", doc.InstanceIdentityDocument)
	}
	if r := must(mc.GetRegion(ctx, &imds.GetRegionInput{}))(t); r.Region != "us-west-2" {
		t.Errorf("region %q", r.Region)
	}
	// IMDSv1 (no token) is refused.
	resp := must(http.Get(srv.URL + "/latest/meta-data/instance-id"))(t)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("IMDSv1 read: status %d, want 401", resp.StatusCode)
	}

	// Scaling in terminates an instance; the hook sees it.
	must(as.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("nodes"), DesiredCapacity: aws.Int32(1)}))(t)
	gone := receive(t, terminated, 1)[0]
	if gone.ID != got[0].ID && gone.ID != got[1].ID {
		t.Errorf("terminated %s, not one of the group's instances", gone.ID)
	}
	must(c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{got[0].ID, got[1].ID}}))(t)
	receive(t, launched, 1) // the group replaces its instance
	receive(t, terminated, 1)
	e.WaitHooks()
	select {
	case in := <-terminated:
		t.Errorf("extra termination of %s", in.ID)
	default:
	}
}
