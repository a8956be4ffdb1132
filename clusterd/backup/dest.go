package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Destination is where snapshots are kept.
type Destination interface {
	// Put stores the file at path under name and returns where it went
	// (a path or an s3:// URL).
	Put(ctx context.Context, name, path string) (string, error)
	// List returns the names of what is stored, this package's or not.
	List(ctx context.Context) ([]string, error)
	// Delete removes the named snapshot.
	Delete(ctx context.Context, name string) error
	// String describes the destination, e.g. "dir:/var/backups/corral".
	String() string
}

// Open returns the destination that s names. S3 clients come from the
// standard chain (environment, shared files, instance role; the endpoint
// from AWS_ENDPOINT_URL if set); a bare "s3" asks STS for the account
// that names the cluster's bucket.
func Open(ctx context.Context, s Settings) (Destination, error) {
	t, err := ParseDestination(s.Destination, s.Cluster)
	if err != nil {
		return nil, err
	}
	if t.Kind == Dir {
		return DirDestination(t.Path), nil
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithEC2IMDSRegion()}
	if s.Region != "" {
		opts = append(opts, awsconfig.WithRegion(s.Region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("backup: AWS configuration for S3: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("backup: no AWS region for S3: set AWS_REGION on the machines, or region in the backup block")
	}
	if t.Bucket == "" {
		id, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			return nil, fmt.Errorf("backup: finding the account that names the cluster's bucket: %w", err)
		}
		t.Bucket = ClusterBucket(s.Cluster, aws.ToString(id.Account), cfg.Region)
	}
	// A custom endpoint (an emulator, LocalStack) serves buckets by path.
	pathStyle := os.Getenv("AWS_ENDPOINT_URL") != "" || os.Getenv("AWS_ENDPOINT_URL_S3") != ""
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = pathStyle })
	return &S3Destination{Client: client, Bucket: t.Bucket, Prefix: t.Prefix}, nil
}

// ClusterBucket is the name the AWS provider gives the cluster's bucket:
// <cluster>-<account>-<region> (providers/aws names it the same way).
func ClusterBucket(cluster, account, region string) string {
	return cluster + "-" + account + "-" + region
}

// DirDestination keeps snapshots in a directory.
type DirDestination string

// Put copies the file in under a temporary name, syncs it and renames it:
// a reader never sees half a snapshot under a snapshot's name.
func (d DirDestination) Put(_ context.Context, name, path string) (string, error) {
	dir := string(d)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	final := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	err = copyInto(tmp, path)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), final)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("backup: writing %s: %w", final, err)
	}
	// The rename is durable once the directory is synced.
	if df, err := os.Open(dir); err == nil {
		df.Sync()
		df.Close()
	}
	return final, nil
}

func copyInto(dst *os.File, path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = dst.ReadFrom(src)
	return err
}

// List returns the directory's file names; a missing directory is empty.
func (d DirDestination) List(context.Context) ([]string, error) {
	ents, err := os.ReadDir(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Delete removes the named file.
func (d DirDestination) Delete(_ context.Context, name string) error {
	return os.Remove(filepath.Join(string(d), name))
}

// String is the destination as a backup block names it.
func (d DirDestination) String() string { return Dir + ":" + string(d) }

// S3Destination keeps snapshots as objects under a prefix of a bucket.
type S3Destination struct {
	Client *s3.Client
	Bucket string
	Prefix string // ends in "/", or is empty
}

// Put uploads the file as <prefix><name>.
func (d *S3Destination) Put(ctx context.Context, name, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	key := d.Prefix + name
	_, err = d.Client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &d.Bucket, Key: &key, Body: f, ContentLength: aws.Int64(st.Size()),
		ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		return "", fmt.Errorf("backup: uploading s3://%s/%s: %w", d.Bucket, key, err)
	}
	return "s3://" + d.Bucket + "/" + key, nil
}

// List returns the names of the objects directly under the prefix.
func (d *S3Destination) List(ctx context.Context) ([]string, error) {
	var out []string
	p := s3.NewListObjectsV2Paginator(d.Client, &s3.ListObjectsV2Input{Bucket: &d.Bucket, Prefix: &d.Prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("backup: listing s3://%s/%s: %w", d.Bucket, d.Prefix, err)
		}
		for _, o := range page.Contents {
			if name := strings.TrimPrefix(aws.ToString(o.Key), d.Prefix); !strings.Contains(name, "/") {
				out = append(out, name)
			}
		}
	}
	return out, nil
}

// Delete removes <prefix><name>.
func (d *S3Destination) Delete(ctx context.Context, name string) error {
	key := d.Prefix + name
	if _, err := d.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.Bucket, Key: &key}); err != nil {
		return fmt.Errorf("backup: deleting s3://%s/%s: %w", d.Bucket, key, err)
	}
	return nil
}

// String is the bucket and prefix as an s3:// URL.
func (d *S3Destination) String() string { return "s3://" + d.Bucket + "/" + d.Prefix }

// Fetch downloads the snapshot at an s3://bucket/key URL (as Put returns
// it) into a new file in dir, and returns the file's path. The client
// comes from the same chain as Open's; region may be empty.
func Fetch(ctx context.Context, url, region, dir string) (string, error) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(url, "s3://"), "/")
	if !strings.HasPrefix(url, "s3://") || bucket == "" || key == "" {
		return "", fmt.Errorf("backup: %q is not an s3://bucket/key URL", url)
	}
	d, err := Open(ctx, Settings{Destination: "s3://" + bucket, Region: region})
	if err != nil {
		return "", err
	}
	obj, err := d.(*S3Destination).Client.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return "", fmt.Errorf("backup: downloading %s: %w", url, err)
	}
	defer obj.Body.Close()
	f, err := os.CreateTemp(dir, ".corral-fetched-*.db")
	if err != nil {
		return "", fmt.Errorf("backup: %w", err)
	}
	_, err = f.ReadFrom(obj.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("backup: downloading %s: %w", url, err)
	}
	return f.Name(), nil
}
