package provision

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/corral-dev/corral/bootstrap/awsnode"
	awsprov "github.com/corral-dev/corral/providers/aws"
)

// awsSDK holds the SDK clients provision uses beside providers/aws's
// Stack: EC2 to find and claim a node's instance by its tags, S3 to upload
// the bootstrap material, STS for the account that names the bucket.
// They are configured as the Stack's are (region, profile, endpoint, and
// retries that outlast throttling).
type awsSDK struct {
	ec2 *ec2.Client
	s3  *s3.Client
	sts *sts.Client
}

// newAWSSDK loads the AWS configuration the standard way (environment,
// shared files with profile, SSO, IMDS) in region; endpoint, when set,
// wins over AWS_ENDPOINT_URL, which the SDK reads itself. Calls are
// retried as the Stack's are, with opts' MaxAttempts and MaxBackoff. No
// call is made.
func newAWSSDK(ctx context.Context, region, profile, endpoint string, opts awsprov.Options) (*awsSDK, error) {
	load := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(region),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cmp.Or(opts.MaxAttempts, 10)
				if opts.MaxBackoff > 0 {
					o.MaxBackoff = opts.MaxBackoff
					o.Backoff = retry.NewExponentialJitterBackoff(opts.MaxBackoff)
				}
				// The client-side retry quota would give up on a heavily
				// throttled run; backoff alone paces the retries.
				o.RateLimiter = ratelimit.None
			})
		}),
	}
	if profile != "" {
		load = append(load, awsconfig.WithSharedConfigProfile(profile))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("aws: loading the AWS configuration (region %s, profile %q): %w; check AWS_PROFILE, ~/.aws/config and the provider's profile", region, profile, err)
	}
	if endpoint != "" {
		cfg.BaseEndpoint = aws.String(endpoint)
	}
	return &awsSDK{ec2: ec2.NewFromConfig(cfg), s3: awsnode.NewS3(cfg), sts: sts.NewFromConfig(cfg)}, nil
}

// account is the caller's account id.
func (s *awsSDK) account(ctx context.Context) (string, error) {
	out, err := s.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", fmt.Errorf("aws: asking STS who the credentials belong to (are AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile set?): %w", err)
	}
	return aws.ToString(out.Account), nil
}

// shaMetadata is the object metadata key that records an upload's
// SHA-512, so that an unchanged object is not uploaded again.
const shaMetadata = "corral-sha512"

// upload puts an object of the bucket unless it is there already with
// the same content; it reports whether it wrote. body is read twice at
// most (to hash it and to send it), so it is a file or a byte slice.
func (s *awsSDK) upload(ctx context.Context, bucket, key string, open func() (io.ReadSeekCloser, error)) (bool, error) {
	f, err := open()
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha512.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return false, fmt.Errorf("aws: reading what goes to s3://%s/%s: %w", bucket, key, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	head, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
	if err == nil && head.Metadata[shaMetadata] == sum && aws.ToInt64(head.ContentLength) == size {
		return false, nil
	}
	if err != nil && !isNotFound(err) {
		return false, fmt.Errorf("aws: looking for s3://%s/%s: %w", bucket, key, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	_, err = s.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: f, ContentLength: aws.Int64(size),
		Metadata: map[string]string{shaMetadata: sum}})
	if err != nil {
		return false, fmt.Errorf("aws: uploading s3://%s/%s: %w", bucket, key, err)
	}
	return true, nil
}

// bytesObject opens b for upload.
func bytesObject(b []byte) func() (io.ReadSeekCloser, error) {
	return func() (io.ReadSeekCloser, error) { return nopCloser{bytes.NewReader(b)}, nil }
}

// fileObject opens the file at path for upload.
func fileObject(path string) func() (io.ReadSeekCloser, error) {
	return func() (io.ReadSeekCloser, error) { return os.Open(path) }
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

// isNotFound says whether err is S3's or EC2's "no such thing".
func isNotFound(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	c := ae.ErrorCode()
	return c == "NotFound" || c == "NoSuchKey" || strings.HasPrefix(c, "InvalidInstanceID.NotFound")
}
