package aws

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// backupRule is the lifecycle rule that expires etcd snapshots.
const backupRule = "corral-backups-expiry"

// bucket converges the backup bucket: private, tagged, objects under
// backups/ expiring after BackupExpirationDays.
func (r *run) bucket(ctx context.Context) error {
	sp, c := &r.s.spec, r.s.s3
	name := sp.bucketName(r.account)
	r.out.Bucket = name
	res := fmt.Sprintf("s3 bucket %q", name)
	_, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &name})
	exists := true
	switch {
	case isCode(err, "NotFound", "NoSuchBucket"):
		exists = false
	case isCode(err, "Forbidden", "AccessDenied", "403"):
		return fmt.Errorf("s3 bucket %q exists but this account cannot use it (another account owns the name): %w", name, wrap("head bucket", name, err))
	case err != nil:
		return wrap("head bucket", name, err)
	}
	if !exists {
		r.note(Create, res, fmt.Sprintf("private, backups/ expire after %d days", sp.BackupExpirationDays))
		if !r.apply {
			return nil
		}
		in := &s3.CreateBucketInput{Bucket: &name}
		if sp.Region != "us-east-1" { // us-east-1 refuses its own name as a constraint
			in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(sp.Region)}
		}
		if _, err := c.CreateBucket(ctx, in); err != nil {
			return wrap("create s3 bucket", name, err)
		}
		if err := s3.NewBucketExistsWaiter(c, func(o *s3.BucketExistsWaiterOptions) {
			o.MinDelay = r.s.waitMin(o.MinDelay)
		}).Wait(ctx, &s3.HeadBucketInput{Bucket: &name}, r.s.waitMax()); err != nil {
			return wrap("wait for s3 bucket", name, err)
		}
	}
	var details []string
	for _, part := range []func(context.Context, string, bool) (string, error){r.bucketPrivate, r.bucketTags, r.bucketLifecycle} {
		d, err := part(ctx, name, exists)
		if err != nil {
			return err
		}
		if d != "" {
			details = append(details, d)
		}
	}
	switch {
	case !exists:
	case len(details) > 0:
		r.note(Drift, res, joinDetails(details))
	default:
		r.note(Keep, res, "")
	}
	return nil
}

// bucketPrivate blocks every form of public access to the bucket.
func (r *run) bucketPrivate(ctx context.Context, name string, exists bool) (string, error) {
	c := r.s.s3
	if exists {
		out, err := c.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: &name})
		if err != nil && !isCode(err, "NoSuchPublicAccessBlockConfiguration") {
			return "", wrap("get public access block of s3 bucket", name, err)
		}
		if err == nil {
			b := out.PublicAccessBlockConfiguration
			if aws.ToBool(b.BlockPublicAcls) && aws.ToBool(b.BlockPublicPolicy) && aws.ToBool(b.IgnorePublicAcls) && aws.ToBool(b.RestrictPublicBuckets) {
				return "", nil
			}
		}
	}
	if r.apply {
		t := aws.Bool(true)
		_, err := c.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{Bucket: &name, PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{
			BlockPublicAcls: t, BlockPublicPolicy: t, IgnorePublicAcls: t, RestrictPublicBuckets: t,
		}})
		if err != nil {
			return "", wrap("block public access to s3 bucket", name, err)
		}
	}
	return "public access not blocked", nil
}

func (r *run) bucketTags(ctx context.Context, name string, exists bool) (string, error) {
	c := r.s.s3
	want := r.s.spec.tags(name, "")
	if exists {
		out, err := c.GetBucketTagging(ctx, &s3.GetBucketTaggingInput{Bucket: &name})
		if err != nil && !isCode(err, "NoSuchTagSet") {
			return "", wrap("get tags of s3 bucket", name, err)
		}
		have := map[string]string{}
		if err == nil {
			for _, t := range out.TagSet {
				have[aws.ToString(t.Key)] = aws.ToString(t.Value)
			}
		}
		if containsAll(have, want) {
			return "", nil
		}
		maps.Copy(have, want) // keep the user's own tags
		want = have
	}
	if r.apply {
		var set []s3types.Tag
		for _, t := range ec2Tags(want) {
			set = append(set, s3types.Tag{Key: t.Key, Value: t.Value})
		}
		if _, err := c.PutBucketTagging(ctx, &s3.PutBucketTaggingInput{Bucket: &name, Tagging: &s3types.Tagging{TagSet: set}}); err != nil {
			return "", wrap("tag s3 bucket", name, err)
		}
	}
	return "tags " + tagCluster + "/Name missing", nil
}

func (r *run) bucketLifecycle(ctx context.Context, name string, exists bool) (string, error) {
	c := r.s.s3
	days := int32(r.s.spec.BackupExpirationDays)
	detail := "no expiry of backups/"
	if exists {
		out, err := c.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: &name})
		if err != nil && !isCode(err, "NoSuchLifecycleConfiguration") {
			return "", wrap("get lifecycle of s3 bucket", name, err)
		}
		if err == nil {
			for _, rule := range out.Rules {
				if aws.ToString(rule.ID) != backupRule {
					continue
				}
				prefix := aws.ToString(rule.Prefix) //nolint:staticcheck // older rules use the top-level Prefix
				if rule.Filter != nil && rule.Filter.Prefix != nil {
					prefix = aws.ToString(rule.Filter.Prefix)
				}
				have := int32(0)
				if rule.Expiration != nil {
					have = aws.ToInt32(rule.Expiration.Days)
				}
				if prefix == "backups/" && have == days && rule.Status == s3types.ExpirationStatusEnabled && len(out.Rules) == 1 {
					return "", nil
				}
				detail = fmt.Sprintf("backups/ expire after %d days, the file says %d", have, days)
			}
		}
	}
	if r.apply {
		_, err := c.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
			Bucket: &name,
			LifecycleConfiguration: &s3types.BucketLifecycleConfiguration{Rules: []s3types.LifecycleRule{{
				ID:         aws.String(backupRule),
				Status:     s3types.ExpirationStatusEnabled,
				Filter:     &s3types.LifecycleRuleFilter{Prefix: aws.String("backups/")},
				Expiration: &s3types.LifecycleExpiration{Days: aws.Int32(days)},
			}}},
		})
		if err != nil {
			return "", wrap("set lifecycle of s3 bucket", name, err)
		}
	}
	return detail, nil
}

// containsAll reports whether have holds every key of want with its value.
func containsAll(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// logGroup converges the nodes' log group and its retention.
func (r *run) logGroup(ctx context.Context) error {
	sp, c := &r.s.spec, r.s.logs
	name := sp.logGroup()
	r.out.LogGroup = name
	res := fmt.Sprintf("log group %q", name)
	days := int32(sp.LogRetentionDays)
	out, err := c.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: &name})
	if err != nil {
		return wrap("describe log group", name, err)
	}
	for _, g := range out.LogGroups {
		if aws.ToString(g.LogGroupName) != name {
			continue
		}
		var details []string
		if have := aws.ToInt32(g.RetentionInDays); have != days {
			details = append(details, fmt.Sprintf("retention %d days, the file says %d", have, days))
			if r.apply {
				if _, err := c.PutRetentionPolicy(ctx, &cloudwatchlogs.PutRetentionPolicyInput{LogGroupName: &name, RetentionInDays: &days}); err != nil {
					return wrap("set retention of log group", name, err)
				}
			}
		}
		arn := aws.ToString(g.LogGroupArn)
		if arn == "" {
			arn = strings.TrimSuffix(aws.ToString(g.Arn), ":*")
		}
		tags, err := c.ListTagsForResource(ctx, &cloudwatchlogs.ListTagsForResourceInput{ResourceArn: &arn})
		if err != nil {
			return wrap("list tags of log group", name, err)
		}
		if want := sp.tags(name, ""); !containsAll(tags.Tags, want) {
			details = append(details, "tags "+tagCluster+"/Name missing")
			if r.apply {
				if _, err := c.TagResource(ctx, &cloudwatchlogs.TagResourceInput{ResourceArn: &arn, Tags: want}); err != nil {
					return wrap("tag log group", name, err)
				}
			}
		}
		if len(details) > 0 {
			r.note(Update, res, joinDetails(details))
		} else {
			r.note(Keep, res, "")
		}
		return nil
	}
	r.note(Create, res, fmt.Sprintf("retention %d days", days))
	if !r.apply {
		return nil
	}
	if _, err := c.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: &name, Tags: sp.tags(name, "")}); err != nil {
		return wrap("create log group", name, err)
	}
	_, err = c.PutRetentionPolicy(ctx, &cloudwatchlogs.PutRetentionPolicyInput{LogGroupName: &name, RetentionInDays: &days})
	return wrap("set retention of log group", name, err)
}
