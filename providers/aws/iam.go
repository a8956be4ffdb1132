package aws

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

// policyName is the nodes' role's inline policy.
const policyName = "corral-node"

// trustPolicy lets EC2 instances assume the nodes' role.
const trustPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`

type statement struct {
	Effect    string         `json:"Effect"`
	Action    []string       `json:"Action"`
	Resource  []string       `json:"Resource"`
	Condition map[string]any `json:"Condition,omitempty"`
}

// nodePolicy is exactly what clusterd needs, scoped where IAM allows:
// listing instances (peer discovery; Describe* cannot be scoped), the
// cluster's bucket and log group; with the aws-vpc overlay also the routes
// of the cluster's route tables and the source/destination check of the
// cluster's instances, both limited by the corral:cluster tag.
//
// In the bucket, nodes read and write their bootstrap material and voter
// slots (bootstrap/awsnode) and etcd snapshots (clusterd/backup, under
// backups/). Only backup pruning deletes, so DeleteObject is limited to
// backups/. ListBucket serves backup's listing, and also makes a missing
// key answer NoSuchKey rather than AccessDenied. The log shipper
// (clusterd/logship) creates the group when it is missing, then its
// streams.
func (r *run) nodePolicy() string {
	sp := &r.s.spec
	bucket := "arn:aws:s3:::" + sp.bucketName(r.account)
	logs := fmt.Sprintf("arn:aws:logs:%s:%s:log-group:%s", sp.Region, r.account, sp.logGroup())
	ec2arn := fmt.Sprintf("arn:aws:ec2:%s:%s:", sp.Region, r.account)
	ownTag := map[string]any{"StringEquals": map[string]string{"ec2:ResourceTag/" + tagCluster: sp.Cluster}}
	st := []statement{
		{Effect: "Allow", Action: []string{"ec2:DescribeInstances"}, Resource: []string{"*"}},
		{Effect: "Allow", Action: []string{"s3:ListBucket"}, Resource: []string{bucket}},
		{Effect: "Allow", Action: []string{"s3:GetObject", "s3:PutObject"}, Resource: []string{bucket + "/*"}},
		{Effect: "Allow", Action: []string{"s3:DeleteObject"}, Resource: []string{bucket + "/" + backupPrefix + "*"}},
		// IAM names a log group either way, with and without ":*".
		{Effect: "Allow", Action: []string{"logs:CreateLogGroup"}, Resource: []string{logs, logs + ":*"}},
		{Effect: "Allow", Action: []string{"logs:CreateLogStream", "logs:PutLogEvents"}, Resource: []string{logs + ":*"}},
	}
	if sp.AWSVPC {
		st = append(st,
			statement{Effect: "Allow", Action: []string{"ec2:DescribeRouteTables"}, Resource: []string{"*"}},
			statement{Effect: "Allow", Action: []string{"ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:DeleteRoute"},
				Resource: []string{ec2arn + "route-table/*"}, Condition: ownTag},
			statement{Effect: "Allow", Action: []string{"ec2:ModifyInstanceAttribute"},
				Resource: []string{ec2arn + "instance/*"}, Condition: ownTag},
		)
	}
	b, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": st})
	return string(b)
}

// sameDocument reports whether two policy documents (have possibly
// URL-encoded, as IAM returns them) say the same.
func sameDocument(have, want string) bool {
	if d, err := url.QueryUnescape(have); err == nil {
		have = d
	}
	var a, b any
	if json.Unmarshal([]byte(have), &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	return reflect.DeepEqual(a, b)
}

func iamTags(tags map[string]string) []iamtypes.Tag {
	var out []iamtypes.Tag
	for _, t := range ec2Tags(tags) {
		out = append(out, iamtypes.Tag{Key: t.Key, Value: t.Value})
	}
	return out
}

// iamRole converges the nodes' role, its inline policy and the instance
// profile that carries it, then waits until IAM answers for the profile.
func (r *run) iamRole(ctx context.Context) error {
	sp, c := &r.s.spec, r.s.iam
	name := sp.name("node")
	res := fmt.Sprintf("iam role %q", name)
	role, err := c.GetRole(ctx, &iam.GetRoleInput{RoleName: &name})
	switch {
	case isCode(err, "NoSuchEntity"):
		r.note(Create, res, "assumed by ec2.amazonaws.com, policy "+policyName)
		if r.apply {
			_, err = c.CreateRole(ctx, &iam.CreateRoleInput{
				RoleName: &name, AssumeRolePolicyDocument: aws.String(trustPolicy),
				Description: aws.String("Corral cluster " + sp.Cluster + ": nodes"), Tags: iamTags(sp.tags(name, "")),
			})
			if err != nil {
				return wrap("create iam role", name, err)
			}
		}
	case err != nil:
		return wrap("get iam role", name, err)
	default:
		if !sameDocument(aws.ToString(role.Role.AssumeRolePolicyDocument), trustPolicy) {
			r.note(Drift, res, "trust policy is not ec2.amazonaws.com's alone")
			if r.apply {
				_, err := c.UpdateAssumeRolePolicy(ctx, &iam.UpdateAssumeRolePolicyInput{RoleName: &name, PolicyDocument: aws.String(trustPolicy)})
				if err != nil {
					return wrap("update trust policy of iam role", name, err)
				}
			}
		} else {
			r.note(Keep, res, "")
		}
	}
	if err := r.rolePolicy(ctx, name, role != nil); err != nil {
		return err
	}
	return r.instanceProfile(ctx, name)
}

func (r *run) rolePolicy(ctx context.Context, role string, roleExists bool) error {
	c := r.s.iam
	res := fmt.Sprintf("iam policy %q of role %q", policyName, role)
	want := r.nodePolicy()
	if roleExists {
		have, err := c.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: &role, PolicyName: aws.String(policyName)})
		switch {
		case isCode(err, "NoSuchEntity"):
			r.note(Drift, res, "missing")
		case err != nil:
			return wrap("get iam policy of role", role, err)
		case sameDocument(aws.ToString(have.PolicyDocument), want):
			r.note(Keep, res, "")
			return nil
		default:
			r.note(Update, res, "document differs from what clusterd needs")
		}
	} else {
		r.note(Create, res, "")
	}
	if !r.apply {
		return nil
	}
	_, err := c.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: &role, PolicyName: aws.String(policyName), PolicyDocument: &want})
	return wrap("put iam policy "+policyName+" of role", role, err)
}

func (r *run) instanceProfile(ctx context.Context, name string) error {
	c := r.s.iam
	res := fmt.Sprintf("instance profile %q", name)
	p, err := c.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: &name})
	switch {
	case isCode(err, "NoSuchEntity"):
		r.note(Create, res, "with role "+name)
		if !r.apply {
			return nil
		}
		_, err := c.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: &name, Tags: iamTags(r.s.spec.tags(name, ""))})
		if err != nil {
			return wrap("create instance profile", name, err)
		}
		if _, err := c.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: &name, RoleName: &name}); err != nil {
			return wrap("add role to instance profile", name, err)
		}
	case err != nil:
		return wrap("get instance profile", name, err)
	default:
		hasRole := false
		for _, role := range p.InstanceProfile.Roles {
			hasRole = hasRole || aws.ToString(role.RoleName) == name
		}
		if hasRole {
			r.note(Keep, res, "")
			return nil
		}
		r.note(Drift, res, "does not carry role "+name)
		if !r.apply {
			return nil
		}
		for _, role := range p.InstanceProfile.Roles {
			if _, err := c.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: &name, RoleName: role.RoleName}); err != nil {
				return wrap("remove role from instance profile", name, err)
			}
		}
		if _, err := c.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: &name, RoleName: &name}); err != nil {
			return wrap("add role to instance profile", name, err)
		}
	}
	err = iam.NewInstanceProfileExistsWaiter(c, func(o *iam.InstanceProfileExistsWaiterOptions) {
		o.MinDelay = r.s.waitMin(o.MinDelay)
	}).Wait(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: &name}, r.s.waitMax())
	return wrap("wait for instance profile", name, err)
}
