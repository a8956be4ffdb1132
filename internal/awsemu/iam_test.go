package awsemu

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

// svcTestConfig is an SDK configuration pointed at an emulated service.
func svcTestConfig(endpoint string, client *http.Client) aws.Config {
	cfg := TestConfig(endpoint)
	cfg.HTTPClient = client
	cfg.RetryMaxAttempts = 1
	cfg.Retryer = func() aws.Retryer { return aws.NopRetryer{} }
	return cfg
}

func newIAMTestClient(t *testing.T) (*iam.Client, *iamService) {
	t.Helper()
	// Served through the Emulator, so dispatch by signing name is covered.
	e := New(Options{})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return iam.NewFromConfig(svcTestConfig(srv.URL, srv.Client())), e.iam
}

const iamTestTrust = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`
const iamTestPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject"],"Resource":"arn:aws:s3:::corral-test/*"}]}`

func TestIAMRolePolicyProfileLifecycle(t *testing.T) {
	ctx := context.Background()
	c, _ := newIAMTestClient(t)

	cr, err := c.CreateRole(ctx, &iam.CreateRoleInput{
		RoleName:                 aws.String("corral-node"),
		Path:                     aws.String("/corral/"),
		AssumeRolePolicyDocument: aws.String(iamTestTrust),
		Tags:                     []iamtypes.Tag{{Key: aws.String("corral:cluster"), Value: aws.String("c1")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := aws.ToString(cr.Role.Arn), "arn:aws:iam::123456789012:role/corral/corral-node"; got != want {
		t.Errorf("arn = %s, want %s", got, want)
	}
	if cr.Role.CreateDate == nil || aws.ToString(cr.Role.RoleId) == "" {
		t.Errorf("role lacks CreateDate/RoleId: %+v", cr.Role)
	}
	_, err = c.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("CORRAL-NODE"), AssumeRolePolicyDocument: aws.String(iamTestTrust)})
	var exists *iamtypes.EntityAlreadyExistsException
	if !errors.As(err, &exists) {
		t.Fatalf("duplicate CreateRole: want EntityAlreadyExists, got %v", err)
	}
	_, err = c.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("bad"), AssumeRolePolicyDocument: aws.String("{not json")})
	wantCode(t, err, "MalformedPolicyDocument")
	if _, err := c.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("other"), AssumeRolePolicyDocument: aws.String(iamTestTrust)}); err != nil {
		t.Fatal(err)
	}

	gr, err := c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("corral-node")})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := url.QueryUnescape(aws.ToString(gr.Role.AssumeRolePolicyDocument))
	if err != nil || doc != iamTestTrust {
		t.Errorf("AssumeRolePolicyDocument = %q (%v), want %q", doc, err, iamTestTrust)
	}
	if len(gr.Role.Tags) != 1 || aws.ToString(gr.Role.Tags[0].Key) != "corral:cluster" {
		t.Errorf("tags = %+v", gr.Role.Tags)
	}

	lr, err := c.ListRoles(ctx, &iam.ListRolesInput{PathPrefix: aws.String("/corral/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(lr.Roles) != 1 || aws.ToString(lr.Roles[0].RoleName) != "corral-node" || lr.IsTruncated {
		t.Errorf("ListRoles(/corral/) = %+v", lr.Roles)
	}
	all, err := c.ListRoles(ctx, &iam.ListRolesInput{MaxItems: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Roles) != 1 || !all.IsTruncated || all.Marker == nil {
		t.Errorf("ListRoles(MaxItems=1) = %d roles, truncated %v", len(all.Roles), all.IsTruncated)
	}

	if _, err := c.TagRole(ctx, &iam.TagRoleInput{RoleName: aws.String("corral-node"), Tags: []iamtypes.Tag{
		{Key: aws.String("corral:cluster"), Value: aws.String("c2")}, {Key: aws.String("team"), Value: aws.String("infra")},
	}}); err != nil {
		t.Fatal(err)
	}
	tags, err := c.ListRoleTags(ctx, &iam.ListRoleTagsInput{RoleName: aws.String("corral-node")})
	if err != nil {
		t.Fatal(err)
	}
	if len(tags.Tags) != 2 || aws.ToString(tags.Tags[0].Value) != "c2" || aws.ToString(tags.Tags[1].Key) != "team" {
		t.Errorf("ListRoleTags = %+v", tags.Tags)
	}

	// Inline policy.
	if _, err := c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{
		RoleName: aws.String("corral-node"), PolicyName: aws.String("bucket"), PolicyDocument: aws.String(iamTestPolicy),
	}); err != nil {
		t.Fatal(err)
	}
	gp, err := c.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("corral-node"), PolicyName: aws.String("bucket")})
	if err != nil {
		t.Fatal(err)
	}
	if doc, _ := url.QueryUnescape(aws.ToString(gp.PolicyDocument)); doc != iamTestPolicy {
		t.Errorf("policy document = %q", doc)
	}
	lp, err := c.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String("corral-node")})
	if err != nil {
		t.Fatal(err)
	}
	if len(lp.PolicyNames) != 1 || lp.PolicyNames[0] != "bucket" {
		t.Errorf("ListRolePolicies = %v", lp.PolicyNames)
	}
	_, err = c.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("corral-node"), PolicyName: aws.String("nope")})
	var noEntity *iamtypes.NoSuchEntityException
	if !errors.As(err, &noEntity) {
		t.Fatalf("GetRolePolicy(nope): want NoSuchEntity, got %v", err)
	}

	// Instance profile.
	cp, err := c.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("corral-node"), Path: aws.String("/corral/")})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(cp.InstanceProfile.Arn); got != "arn:aws:iam::123456789012:instance-profile/corral/corral-node" {
		t.Errorf("profile arn = %s", got)
	}
	_, err = c.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("corral-node")})
	wantCode(t, err, "EntityAlreadyExists")
	if _, err := c.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{
		InstanceProfileName: aws.String("corral-node"), RoleName: aws.String("corral-node"),
	}); err != nil {
		t.Fatal(err)
	}
	_, err = c.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{
		InstanceProfileName: aws.String("corral-node"), RoleName: aws.String("other"),
	})
	wantCode(t, err, "LimitExceeded")
	_, err = c.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{
		InstanceProfileName: aws.String("missing"), RoleName: aws.String("other"),
	})
	wantCode(t, err, "NoSuchEntity")
	gip, err := c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("corral-node")})
	if err != nil {
		t.Fatal(err)
	}
	if len(gip.InstanceProfile.Roles) != 1 || aws.ToString(gip.InstanceProfile.Roles[0].RoleName) != "corral-node" {
		t.Errorf("profile roles = %+v", gip.InstanceProfile.Roles)
	}
	lpr, err := c.ListInstanceProfilesForRole(ctx, &iam.ListInstanceProfilesForRoleInput{RoleName: aws.String("corral-node")})
	if err != nil {
		t.Fatal(err)
	}
	if len(lpr.InstanceProfiles) != 1 {
		t.Errorf("ListInstanceProfilesForRole = %+v", lpr.InstanceProfiles)
	}
	lip, err := c.ListInstanceProfiles(ctx, &iam.ListInstanceProfilesInput{PathPrefix: aws.String("/other/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(lip.InstanceProfiles) != 0 {
		t.Errorf("ListInstanceProfiles(/other/) = %+v", lip.InstanceProfiles)
	}

	// Teardown in the wrong order is refused.
	_, err = c.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String("corral-node")})
	var conflict *iamtypes.DeleteConflictException
	if !errors.As(err, &conflict) {
		t.Fatalf("DeleteRole with policy: want DeleteConflict, got %v", err)
	}
	if _, err := c.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String("corral-node"), PolicyName: aws.String("bucket")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String("corral-node")})
	wantCode(t, err, "DeleteConflict")
	_, err = c.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: aws.String("corral-node")})
	wantCode(t, err, "DeleteConflict")

	_, err = c.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: aws.String("corral-node"), RoleName: aws.String("other")})
	wantCode(t, err, "NoSuchEntity")
	if _, err := c.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: aws.String("corral-node"), RoleName: aws.String("corral-node")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: aws.String("corral-node")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String("corral-node")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("corral-node")})
	if !errors.As(err, &noEntity) {
		t.Fatalf("GetRole after delete: want NoSuchEntity, got %v", err)
	}
	_, err = c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("corral-node")})
	wantCode(t, err, "NoSuchEntity")
	_, err = c.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String("corral-node")})
	wantCode(t, err, "NoSuchEntity")
}

func TestIAMErrorWireFormat(t *testing.T) {
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	form := url.Values{"Action": {"GetRole"}, "Version": {"2010-05-08"}, "RoleName": {"nope"}}
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", scopeAuth("iam"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Type    string `xml:"Error>Type"`
		Code    string `xml:"Error>Code"`
		Message string `xml:"Error>Message"`
	}
	if err := xmlDecodeForTest(resp, &e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound || e.Type != "Sender" || e.Code != "NoSuchEntity" || e.Message == "" {
		t.Errorf("status %d, error %+v", resp.StatusCode, e)
	}
}

func TestIAMInstanceProfileVisibilityDelay(t *testing.T) {
	ctx := context.Background()
	c, svc := newIAMTestClient(t)
	var mu sync.Mutex
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	svc.mu.Lock()
	svc.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	svc.mu.Unlock()
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	svc.SetInstanceProfileDelay(10 * time.Second)
	if svc.InstanceProfileVisible("p1") {
		t.Fatal("missing profile reported visible")
	}
	if _, err := c.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("p1")}); err != nil {
		t.Fatal(err)
	}
	if svc.InstanceProfileVisible("p1") {
		t.Fatal("new profile visible before the delay")
	}
	// IAM itself answers at once; only consumers such as EC2 lag.
	if _, err := c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("p1")}); err != nil {
		t.Fatal(err)
	}
	advance(9 * time.Second)
	if svc.InstanceProfileVisible("p1") {
		t.Fatal("profile visible after 9s of a 10s delay")
	}
	advance(time.Second)
	if !svc.InstanceProfileVisible("P1") {
		t.Fatal("profile not visible after the delay (names are case-insensitive)")
	}
	if _, err := c.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: aws.String("p1")}); err != nil {
		t.Fatal(err)
	}
	if svc.InstanceProfileVisible("p1") {
		t.Fatal("deleted profile reported visible")
	}

	// Without a delay profiles are visible immediately.
	svc.SetInstanceProfileDelay(0)
	if _, err := c.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("p2")}); err != nil {
		t.Fatal(err)
	}
	if !svc.InstanceProfileVisible("p2") {
		t.Fatal("profile not visible without a delay")
	}
}
