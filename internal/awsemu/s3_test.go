package awsemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// s3RecordingHandler records the headers of every request to the wrapped
// handler.
type s3RecordingHandler struct {
	h  http.Handler
	mu sync.Mutex
	rq []http.Header
}

func (r *s3RecordingHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.rq = append(r.rq, req.Header.Clone())
	r.mu.Unlock()
	r.h.ServeHTTP(w, req)
}

func (r *s3RecordingHandler) headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.rq...)
}

// newS3TestClient serves the S3 emulator over TLS (the SDK sends trailing
// checksums with aws-chunked encoding only over HTTPS).
func newS3TestClient(t *testing.T) (*s3.Client, *s3RecordingHandler) {
	t.Helper()
	rec := &s3RecordingHandler{h: New(Options{})}
	srv := httptest.NewTLSServer(rec)
	t.Cleanup(srv.Close)
	c := s3.NewFromConfig(svcTestConfig(srv.URL, srv.Client()), func(o *s3.Options) { o.UsePathStyle = true })
	return c, rec
}

func s3StatusOf(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func s3CreateTestBucket(t *testing.T, c *s3.Client, name string) {
	t.Helper()
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{
		Bucket:                    aws.String(name),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintUsWest2},
	}); err != nil {
		t.Fatal(err)
	}
}

func TestS3BucketConfiguration(t *testing.T) {
	ctx := context.Background()
	c, _ := newS3TestClient(t)

	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("corral-nolocation")})
	wantCode(t, err, "IllegalLocationConstraintException")
	s3CreateTestBucket(t, c, "corral-state")
	_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{
		Bucket:                    aws.String("corral-state"),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintUsWest2},
	})
	var owned *s3types.BucketAlreadyOwnedByYou
	if !errors.As(err, &owned) {
		t.Fatalf("duplicate CreateBucket: want BucketAlreadyOwnedByYou, got %v", err)
	}
	hb, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("corral-state")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(hb.BucketRegion) != "us-west-2" {
		t.Errorf("bucket region = %q", aws.ToString(hb.BucketRegion))
	}
	_, err = c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("corral-missing")})
	var nf *s3types.NotFound
	if !errors.As(err, &nf) || s3StatusOf(err) != http.StatusNotFound {
		t.Fatalf("HeadBucket(missing): want NotFound, got %v", err)
	}

	// Lifecycle.
	_, err = c.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: aws.String("corral-state")})
	wantCode(t, err, "NoSuchLifecycleConfiguration")
	if _, err := c.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
		Bucket: aws.String("corral-state"),
		LifecycleConfiguration: &s3types.BucketLifecycleConfiguration{Rules: []s3types.LifecycleRule{{
			ID:         aws.String("expire-snapshots"),
			Status:     s3types.ExpirationStatusEnabled,
			Filter:     &s3types.LifecycleRuleFilter{Prefix: aws.String("snapshots/")},
			Expiration: &s3types.LifecycleExpiration{Days: aws.Int32(7)},
		}}},
	}); err != nil {
		t.Fatal(err)
	}
	lc, err := c.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: aws.String("corral-state")})
	if err != nil {
		t.Fatal(err)
	}
	if len(lc.Rules) != 1 {
		t.Fatalf("rules = %+v", lc.Rules)
	}
	r := lc.Rules[0]
	if aws.ToString(r.ID) != "expire-snapshots" || r.Status != s3types.ExpirationStatusEnabled ||
		r.Filter == nil || aws.ToString(r.Filter.Prefix) != "snapshots/" || r.Expiration == nil || aws.ToInt32(r.Expiration.Days) != 7 {
		t.Errorf("rule = %+v", r)
	}

	// Tags.
	_, err = c.GetBucketTagging(ctx, &s3.GetBucketTaggingInput{Bucket: aws.String("corral-state")})
	wantCode(t, err, "NoSuchTagSet")
	if _, err := c.PutBucketTagging(ctx, &s3.PutBucketTaggingInput{
		Bucket:  aws.String("corral-state"),
		Tagging: &s3types.Tagging{TagSet: []s3types.Tag{{Key: aws.String("corral:cluster"), Value: aws.String("c1")}}},
	}); err != nil {
		t.Fatal(err)
	}
	tg, err := c.GetBucketTagging(ctx, &s3.GetBucketTaggingInput{Bucket: aws.String("corral-state")})
	if err != nil {
		t.Fatal(err)
	}
	if len(tg.TagSet) != 1 || aws.ToString(tg.TagSet[0].Key) != "corral:cluster" || aws.ToString(tg.TagSet[0].Value) != "c1" {
		t.Errorf("tags = %+v", tg.TagSet)
	}

	// Public access block.
	_, err = c.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: aws.String("corral-state")})
	wantCode(t, err, "NoSuchPublicAccessBlockConfiguration")
	if _, err := c.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{
		Bucket: aws.String("corral-state"),
		PublicAccessBlockConfiguration: &s3types.PublicAccessBlockConfiguration{
			BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true), BlockPublicPolicy: aws.Bool(true), RestrictPublicBuckets: aws.Bool(true),
		},
	}); err != nil {
		t.Fatal(err)
	}
	pab, err := c.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: aws.String("corral-state")})
	if err != nil {
		t.Fatal(err)
	}
	if p := pab.PublicAccessBlockConfiguration; !aws.ToBool(p.BlockPublicAcls) || !aws.ToBool(p.IgnorePublicAcls) ||
		!aws.ToBool(p.BlockPublicPolicy) || !aws.ToBool(p.RestrictPublicBuckets) {
		t.Errorf("public access block = %+v", p)
	}

	_, err = c.PutBucketTagging(ctx, &s3.PutBucketTaggingInput{Bucket: aws.String("corral-missing"), Tagging: &s3types.Tagging{TagSet: []s3types.Tag{}}})
	wantCode(t, err, "NoSuchBucket")
	if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("corral-state")}); err != nil {
		t.Fatal(err)
	}
}

func TestS3ConditionalPut(t *testing.T) {
	ctx := context.Background()
	c, _ := newS3TestClient(t)
	s3CreateTestBucket(t, c, "corral-state")

	// Two nodes race to create the election key: exactly one wins.
	const racers = 2
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.PutObject(ctx, &s3.PutObjectInput{
				Bucket: aws.String("corral-state"), Key: aws.String("cluster/initial-member"),
				Body: strings.NewReader(fmt.Sprintf("node-%d", i)), IfNoneMatch: aws.String("*"),
			})
		}()
	}
	wg.Wait()
	winners := 0
	for _, err := range errs {
		if err == nil {
			winners++
			continue
		}
		wantCode(t, err, "PreconditionFailed")
		if s3StatusOf(err) != http.StatusPreconditionFailed {
			t.Errorf("status = %d, want 412", s3StatusOf(err))
		}
	}
	if winners != 1 {
		t.Fatalf("%d winners, want 1 (errors %v)", winners, errs)
	}

	got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("cluster/initial-member")})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if !strings.HasPrefix(string(body), "node-") {
		t.Errorf("body = %q", body)
	}
	etag := aws.ToString(got.ETag)

	// If-Match: a stale ETag loses, the current one wins.
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("cluster/initial-member"),
		Body: strings.NewReader("x"), IfMatch: aws.String(`"0123456789abcdef0123456789abcdef"`)})
	wantCode(t, err, "PreconditionFailed")
	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("cluster/initial-member"),
		Body: strings.NewReader("node-9"), IfMatch: aws.String(etag)})
	if err != nil {
		t.Fatal(err)
	}
	if want := `"` + fmt.Sprintf("%x", s3TestMD5([]byte("node-9"))) + `"`; aws.ToString(put.ETag) != want {
		t.Errorf("ETag = %s, want %s", aws.ToString(put.ETag), want)
	}
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("absent"),
		Body: strings.NewReader("x"), IfMatch: aws.String(etag)})
	wantCode(t, err, "NoSuchKey")

	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("absent")})
	var nsk *s3types.NoSuchKey
	if !errors.As(err, &nsk) {
		t.Fatalf("GetObject(absent): want NoSuchKey, got %v", err)
	}
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("absent")})
	if s3StatusOf(err) != http.StatusNotFound {
		t.Fatalf("HeadObject(absent): want 404, got %v", err)
	}
}

func TestS3ListAndDelete(t *testing.T) {
	ctx := context.Background()
	c, _ := newS3TestClient(t)
	s3CreateTestBucket(t, c, "corral-state")
	keys := []string{"members/a", "members/b", "members/c", "members/d", "members/e", "snapshots/1", "top"}
	for _, k := range keys {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("corral-state"), Key: aws.String(k), Body: strings.NewReader(k)}); err != nil {
			t.Fatal(err)
		}
	}
	var listed []string
	pages := 0
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String("corral-state"), Prefix: aws.String("members/"), MaxKeys: aws.Int32(2)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range out.Contents {
			listed = append(listed, aws.ToString(o.Key))
			if aws.ToInt64(o.Size) != int64(len(aws.ToString(o.Key))) || o.LastModified == nil || aws.ToString(o.ETag) == "" {
				t.Errorf("object = %+v", o)
			}
		}
	}
	if strings.Join(listed, ",") != "members/a,members/b,members/c,members/d,members/e" || pages != 3 {
		t.Errorf("listed %v in %d pages", listed, pages)
	}
	root, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("corral-state"), Delimiter: aws.String("/")})
	if err != nil {
		t.Fatal(err)
	}
	var prefixes []string
	for _, cp := range root.CommonPrefixes {
		prefixes = append(prefixes, aws.ToString(cp.Prefix))
	}
	if strings.Join(prefixes, ",") != "members/,snapshots/" || len(root.Contents) != 1 || aws.ToString(root.Contents[0].Key) != "top" {
		t.Errorf("delimiter listing: prefixes %v, contents %d", prefixes, len(root.Contents))
	}

	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("corral-state")})
	wantCode(t, err, "BucketNotEmpty")

	var ids []s3types.ObjectIdentifier
	for _, k := range keys[:6] {
		ids = append(ids, s3types.ObjectIdentifier{Key: aws.String(k)})
	}
	del, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String("corral-state"), Delete: &s3types.Delete{Objects: ids}})
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Deleted) != 6 || len(del.Errors) != 0 {
		t.Errorf("DeleteObjects: %d deleted, errors %+v", len(del.Deleted), del.Errors)
	}
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("top")}); err != nil {
		t.Fatal(err)
	}
	// Deleting an absent key succeeds, as in S3.
	if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("top")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String("corral-state")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("corral-state")})
	var nsb *s3types.NoSuchBucket
	if !errors.As(err, &nsb) {
		t.Fatalf("ListObjectsV2 after delete: want NoSuchBucket, got %v", err)
	}
}

// s3OnlyReader hides everything but Read, so the SDK sees an unseekable
// stream and must stream it (aws-chunked with a trailing checksum).
type s3OnlyReader struct{ r io.Reader }

func (o s3OnlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestS3LargeStreamedUpload(t *testing.T) {
	ctx := context.Background()
	c, rec := newS3TestClient(t)
	s3CreateTestBucket(t, c, "corral-state")
	data := make([]byte, 6<<20+12345)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	put, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String("corral-state"), Key: aws.String("snapshots/big"),
		Body: s3OnlyReader{bytes.NewReader(data)}, ContentLength: aws.Int64(int64(len(data))),
		ChecksumAlgorithm: s3types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := s3CRC32(data); aws.ToString(put.ChecksumCRC32) != want {
		t.Errorf("ChecksumCRC32 = %q, want %q", aws.ToString(put.ChecksumCRC32), want)
	}
	var sawChunked bool
	for _, h := range rec.headers() {
		if strings.Contains(h.Get("Content-Encoding"), "aws-chunked") && h.Get("X-Amz-Content-Sha256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" {
			sawChunked = true
		}
	}
	if !sawChunked {
		t.Error("the SDK did not use aws-chunked encoding with a trailing checksum")
	}

	// Unknown length too (HTTP chunked transfer of aws-chunked content).
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String("corral-state"), Key: aws.String("snapshots/big2"), Body: s3OnlyReader{bytes.NewReader(data)},
	}); err != nil {
		t.Fatalf("PutObject without a length: %v", err)
	}
	head2, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("snapshots/big2")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt64(head2.ContentLength) != int64(len(data)) || aws.ToString(head2.ETag) != aws.ToString(put.ETag) {
		t.Errorf("unknown-length upload stored %d bytes, ETag %s", aws.ToInt64(head2.ContentLength), aws.ToString(head2.ETag))
	}

	got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("snapshots/big"), ChecksumMode: s3types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(got.Body)
	got.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, data) {
		t.Fatalf("downloaded %d bytes differing from the %d uploaded", len(body), len(data))
	}
	if aws.ToString(got.ETag) != aws.ToString(put.ETag) || aws.ToInt64(got.ContentLength) != int64(len(data)) {
		t.Errorf("GetObject ETag %s (put %s), length %d", aws.ToString(got.ETag), aws.ToString(put.ETag), aws.ToInt64(got.ContentLength))
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("snapshots/big")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToInt64(head.ContentLength) != int64(len(data)) {
		t.Errorf("HeadObject length = %d", aws.ToInt64(head.ContentLength))
	}
	rng, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("corral-state"), Key: aws.String("snapshots/big"), Range: aws.String("bytes=10-19")})
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(rng.Body)
	rng.Body.Close()
	if !bytes.Equal(part, data[10:20]) {
		t.Errorf("range read = %x", part)
	}
}

func TestS3ChecksumVerification(t *testing.T) {
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	do := func(method, path string, body string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp := do("PUT", "/bk1", "", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20261123/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x"}); resp.StatusCode != 200 {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("CreateBucket in us-east-1: %d %s", resp.StatusCode, msg)
	}
	resp := do("PUT", "/bk1/k", "hello", map[string]string{"X-Amz-Checksum-Crc32": s3CRC32([]byte("other"))})
	var e struct {
		Code string `xml:"Code"`
	}
	if err := xmlDecodeForTest(resp, &e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || e.Code != "BadDigest" {
		t.Errorf("bad checksum: %d %s", resp.StatusCode, e.Code)
	}

	// Signed aws-chunked body with a trailer, as other clients send it.
	payload := "hello, chunked world"
	body := fmt.Sprintf("%x;chunk-signature=abc\r\n%s\r\n%x;chunk-signature=def\r\n%s\r\n0;chunk-signature=123\r\nx-amz-checksum-crc32:%s\r\nx-amz-trailer-signature:456\r\n\r\n",
		7, payload[:7], len(payload)-7, payload[7:], s3CRC32([]byte(payload)))
	resp = do("PUT", "/bk1/chunked", body, map[string]string{
		"Content-Encoding":             "aws-chunked",
		"X-Amz-Content-Sha256":         "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
		"X-Amz-Decoded-Content-Length": fmt.Sprint(len(payload)),
		"X-Amz-Trailer":                "x-amz-checksum-crc32",
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chunked PUT: %d", resp.StatusCode)
	}
	resp = do("GET", "/bk1/chunked", "", nil)
	got, _ := io.ReadAll(bufio.NewReader(resp.Body))
	if string(got) != payload || resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("GET chunked = %q (Content-Encoding %q)", got, resp.Header.Get("Content-Encoding"))
	}
	// A corrupted trailer is refused.
	bad := strings.Replace(body, s3CRC32([]byte(payload)), s3CRC32([]byte("nope")), 1)
	resp = do("PUT", "/bk1/chunked2", bad, map[string]string{"Content-Encoding": "aws-chunked", "X-Amz-Content-Sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("corrupted trailer: %d", resp.StatusCode)
	}
}

func s3TestMD5(b []byte) [16]byte { return md5.Sum(b) }
