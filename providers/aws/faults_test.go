package aws

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/corral-dev/corral/internal/awsemu"
)

var scopeRE = regexp.MustCompile(`Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request`)

// front serves the emulator through answer, which may answer a request
// itself (AWS behaviour the emulator lacks) by returning true.
func front(t *testing.T, answer func(w http.ResponseWriter, service, action string, form url.Values) bool) (*awsemu.Emulator, string) {
	t.Helper()
	awsemu.SetTestEnv(t)
	e := awsemu.New(awsemu.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		service := ""
		if m := scopeRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			service = m[1]
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		if service != "s3" && answer(w, service, form.Get("Action"), form) {
			return
		}
		e.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	importKey(t, srv.URL)
	return e, srv.URL
}

func ec2Error(w http.ResponseWriter, code, msg string) {
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>req-1</RequestID></Response>`, code, msg)
}

func queryError(w http.ResponseWriter, code, msg string) {
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>req-1</RequestId></ErrorResponse>`, code, msg)
}

// TestInstanceProfileEventualConsistency: EC2 and Auto Scaling refuse the
// new instance profile for a while, as AWS does right after IAM created
// it, in their own words; Apply retries through it.
func TestInstanceProfileEventualConsistency(t *testing.T) {
	var mu sync.Mutex
	refused := map[string]int{}
	_, url := front(t, func(w http.ResponseWriter, service, action string, _ url.Values) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case service == "ec2" && action == "CreateLaunchTemplate" && refused[action] < 3:
			refused[action]++
			ec2Error(w, "InvalidParameterValue", "Value (demo-node) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name")
			return true
		case service == "autoscaling" && action == "CreateAutoScalingGroup" && refused[action] < 2:
			refused[action]++
			queryError(w, "ValidationError", "Invalid IamInstanceProfile: demo-node")
			return true
		}
		return false
	})
	s, log := newStack(t, testSpec(url))
	if _, err := s.Apply(context.Background()); err != nil {
		t.Fatalf("apply: %v\nlog:\n%s", err, log)
	}
	if refused["CreateLaunchTemplate"] != 3 || refused["CreateAutoScalingGroup"] != 2 {
		t.Errorf("refusals served: %v", refused)
	}
	if !strings.Contains(log.String(), `instance profile "demo-node" not yet visible to EC2`) {
		t.Errorf("log does not say why it waits:\n%s", log)
	}
	if _, err := s.Instances(context.Background(), "core"); err != nil {
		t.Error(err)
	}
}

// TestInstanceProfileNeverVisible: the retry is bounded, and the error
// names the operation, the resource and AWS's code.
func TestInstanceProfileNeverVisible(t *testing.T) {
	_, url := front(t, func(w http.ResponseWriter, service, action string, _ url.Values) bool {
		if service == "ec2" && action == "CreateLaunchTemplate" {
			ec2Error(w, "InvalidParameterValue", "Invalid IAM Instance Profile name")
			return true
		}
		return false
	})
	spec := testSpec(url)
	s, err := New(context.Background(), spec, Options{WaitDelay: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, ProfileWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Apply(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), `create launch template "demo-`) || !strings.Contains(err.Error(), ": InvalidParameterValue: Invalid IAM Instance Profile name") {
		t.Errorf("apply: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("gave up after %v; the bound is 1 s", d)
	}
}

// TestFlatcarImage: "flatcar-stable" is the newest Flatcar stable AMI of
// the instance type's architecture, from Flatcar's account (the emulator
// seeds a few releases per channel and architecture).
func TestFlatcarImage(t *testing.T) {
	e, endpoint := emu(t)
	spec := testSpec(endpoint)
	spec.Groups[0].Image = "flatcar-stable"
	spec.Groups[1].Image, spec.Groups[1].InstanceType = "flatcar-stable", "t4g.small"
	s, _ := newStack(t, spec)
	plan := must[[]Change](t)(s.Plan(context.Background()))
	if !slices.Contains(plan, Change{Create, `launch template "demo-core"`, "ami-0f1a7ca4000000003 t3.small"}) {
		t.Errorf("plan does not name core's image: %v", plan)
	}
	must[Outputs](t)(s.Apply(context.Background()))
	described := 0
	for _, c := range e.Calls() {
		if c.Action == "DescribeImages" {
			described++
		}
	}
	if described != 4 { // per plan and apply, once per architecture
		t.Errorf("DescribeImages called %d times, want 4", described)
	}
	ctx := context.Background()
	for group, want := range map[string]string{"core": "ami-0f1a7ca4000000003", "worker": "ami-0f1a7ca4000000004"} {
		v := must[*ec2.DescribeLaunchTemplateVersionsOutput](t)(newClients(endpoint).ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
			LaunchTemplateName: aws.String("demo-" + group), Versions: []string{"$Latest"}}))
		if got := aws.ToString(v.LaunchTemplateVersions[0].LaunchTemplateData.ImageId); got != want {
			t.Errorf("%s launches %s, want the newest stable %s", group, got, want)
		}
	}
}

// TestAWSVPCPolicy: with the aws-vpc overlay the nodes may change the
// cluster's routes and source/destination checks, limited to its tag.
func TestAWSVPCPolicy(t *testing.T) {
	_, endpoint := emu(t)
	spec := testSpec(endpoint)
	spec.AWSVPC = true
	s, _ := newStack(t, spec)
	must[Outputs](t)(s.Apply(context.Background()))
	pol := must[*iam.GetRolePolicyOutput](t)(newClients(endpoint).iam.GetRolePolicy(context.Background(), &iam.GetRolePolicyInput{
		RoleName: aws.String("demo-node"), PolicyName: aws.String(policyName)}))
	doc, _ := url.QueryUnescape(aws.ToString(pol.PolicyDocument))
	for _, want := range []string{"ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:DeleteRoute", "ec2:DescribeRouteTables", "ec2:ModifyInstanceAttribute",
		"arn:aws:ec2:us-west-2:123456789012:route-table/*", `"ec2:ResourceTag/corral:cluster":"demo"`} {
		if !strings.Contains(doc, want) {
			t.Errorf("policy lacks %s: %s", want, doc)
		}
	}
}

// TestMissingKeyPair: a key pair that does not exist is an error at plan
// time that says how to fix it, not instances that never launch.
func TestMissingKeyPair(t *testing.T) {
	_, endpoint := emu(t)
	spec := testSpec(endpoint)
	spec.KeyPair = "nobody-key"
	s, _ := newStack(t, spec)
	_, err := s.Plan(context.Background())
	if err == nil || !strings.Contains(err.Error(), `key pair "nobody-key" does not exist in us-west-2: import your public key`) {
		t.Errorf("plan with a missing key pair: %v", err)
	}
}

// TestDeployHookPortRule: the nodes open the deploy hook's port, as the
// file sets it, to the load balancers; without a deploy_hook block, no
// rule names it.
func TestDeployHookPortRule(t *testing.T) {
	for _, port := range []int{8443, 0} {
		_, endpoint := emu(t)
		spec := testSpec(endpoint)
		spec.DeployHookPort = port
		s, _ := newStack(t, spec)
		out := must[Outputs](t)(s.Apply(context.Background()))
		sgs := must[*ec2.DescribeSecurityGroupsOutput](t)(newClients(endpoint).ec2.DescribeSecurityGroups(context.Background(),
			&ec2.DescribeSecurityGroupsInput{Filters: s.byName("demo-nodes")}))
		lbs := must[*ec2.DescribeSecurityGroupsOutput](t)(newClients(endpoint).ec2.DescribeSecurityGroups(context.Background(),
			&ec2.DescribeSecurityGroupsInput{Filters: s.byName("demo-lb")}))
		ids := map[string]string{aws.ToString(lbs.SecurityGroups[0].GroupId): "demo-lb"}
		var hook []string
		for _, r := range flatten(sgs.SecurityGroups[0].IpPermissions, ids) {
			if r.from == 8443 || r.from == 9443 {
				hook = append(hook, r.String())
			}
		}
		want := []string{"tcp 8443 from group demo-lb"}
		if port == 0 {
			want = nil
		}
		if !slices.Equal(hook, want) {
			t.Errorf("deploy hook port %d: rules %v, want %v", port, hook, want)
		}
		// The hook is reached through an internet-facing network load
		// balancer that passes its TLS through, open to the world on the
		// load balancers' group.
		var open bool
		for _, r := range flatten(lbs.SecurityGroups[0].IpPermissions, ids) {
			open = open || r.String() == "tcp 8443 from 0.0.0.0/0"
		}
		_, hasLB := out.LoadBalancers["deploy"]
		if port == 0 {
			if open || hasLB {
				t.Errorf("no deploy hook: load balancer %v, lb group open on 8443 %v", hasLB, open)
			}
			continue
		}
		if !open || !hasLB {
			t.Errorf("deploy hook on 8443: load balancer %v (outputs %v), lb group open on 8443 %v", hasLB, out.LoadBalancers, open)
		}
		c := newClients(endpoint).elb
		lb := must[*elb.DescribeLoadBalancersOutput](t)(c.DescribeLoadBalancers(context.Background(), &elb.DescribeLoadBalancersInput{Names: []string{"demo-deploy"}}))
		if got := lb.LoadBalancers[0]; got.Type != elbtypes.LoadBalancerTypeEnumNetwork || got.Scheme != elbtypes.LoadBalancerSchemeEnumInternetFacing {
			t.Errorf("demo-deploy is %s %s, want an internet-facing network load balancer", got.Scheme, got.Type)
		}
		ls := must[*elb.DescribeListenersOutput](t)(c.DescribeListeners(context.Background(), &elb.DescribeListenersInput{LoadBalancerArn: lb.LoadBalancers[0].LoadBalancerArn}))
		if len(ls.Listeners) != 1 || aws.ToInt32(ls.Listeners[0].Port) != 8443 || ls.Listeners[0].Protocol != elbtypes.ProtocolEnumTcp {
			t.Errorf("demo-deploy listeners: %+v, want one TCP listener on 8443", ls.Listeners)
		}
	}
}
