package awsemu

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// s3Namespace is the XML namespace of S3 documents.
const s3Namespace = "http://s3.amazonaws.com/doc/2006-03-01/"

// s3MaxObjectSize bounds what a single PutObject may upload to the emulator.
const s3MaxObjectSize = 256 << 20

// s3Service emulates the S3 REST API (path-style addressing) for the bucket
// and object operations Corral uses.
type s3Service struct {
	mu      sync.Mutex
	account string // the emulated account id, owner of every bucket
	region  string // the region of requests without a credential scope
	now     func() time.Time
	buckets map[string]*s3Bucket
}

type s3Bucket struct {
	name, region string
	created      time.Time
	objects      map[string]*s3Object
	lifecycle    []byte // the configuration document as given
	tags         []s3Tag
	hasTags      bool
	publicAccess *s3PublicAccessBlock
}

type s3Object struct {
	data            []byte
	etag            string // quoted
	contentType     string
	contentEncoding string
	cacheControl    string
	modified        time.Time
	metadata        http.Header // x-amz-meta-* headers
	checksums       map[string]string
}

type s3Tag struct {
	Key   string `xml:"Key"`
	Value string `xml:"Value"`
}

type s3Tagging struct {
	XMLName xml.Name `xml:"Tagging"`
	Xmlns   string   `xml:"xmlns,attr,omitempty"`
	TagSet  []s3Tag  `xml:"TagSet>Tag"`
}

type s3PublicAccessBlock struct {
	XMLName               xml.Name `xml:"PublicAccessBlockConfiguration"`
	Xmlns                 string   `xml:"xmlns,attr,omitempty"`
	BlockPublicAcls       bool     `xml:"BlockPublicAcls"`
	IgnorePublicAcls      bool     `xml:"IgnorePublicAcls"`
	BlockPublicPolicy     bool     `xml:"BlockPublicPolicy"`
	RestrictPublicBuckets bool     `xml:"RestrictPublicBuckets"`
}

type s3LifecycleConfiguration struct {
	Rules []struct {
		ID     string  `xml:"ID"`
		Status string  `xml:"Status"`
		Prefix *string `xml:"Prefix"`
		Filter *struct {
			Prefix *string `xml:"Prefix"`
		} `xml:"Filter"`
		Expiration *struct {
			Days                      int    `xml:"Days"`
			Date                      string `xml:"Date"`
			ExpiredObjectDeleteMarker *bool  `xml:"ExpiredObjectDeleteMarker"`
		} `xml:"Expiration"`
		NoncurrentVersionExpiration    *struct{}  `xml:"NoncurrentVersionExpiration"`
		AbortIncompleteMultipartUpload *struct{}  `xml:"AbortIncompleteMultipartUpload"`
		Transitions                    []struct{} `xml:"Transition"`
		NoncurrentVersionTransitions   []struct{} `xml:"NoncurrentVersionTransition"`
	} `xml:"Rule"`
}

// newS3 returns an S3 emulator for the given account and default region.
func newS3(account, region string) *s3Service {
	return &s3Service{account: account, region: region, now: time.Now, buckets: map[string]*s3Bucket{}}
}

// s3Error is an S3 error response.
type s3Error struct {
	status        int
	code, message string
	bucket, key   string
	condition     string
}

func (e *s3Error) Error() string { return e.code + ": " + e.message }

func s3Err(status int, code, format string, args ...any) *s3Error {
	return &s3Error{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func s3NoSuchBucket(name string) *s3Error {
	e := s3Err(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist")
	e.bucket = name
	return e
}

func s3NoSuchKey(key string) *s3Error {
	e := s3Err(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
	e.key = key
	return e
}

func s3PreconditionFailed(condition string) *s3Error {
	e := s3Err(http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
	e.condition = condition
	return e
}

type s3ErrorXML struct {
	XMLName    xml.Name `xml:"Error"`
	Code       string   `xml:"Code"`
	Message    string   `xml:"Message"`
	BucketName string   `xml:"BucketName,omitempty"`
	Key        string   `xml:"Key,omitempty"`
	Condition  string   `xml:"Condition,omitempty"`
	RequestID  string   `xml:"RequestId"`
	HostID     string   `xml:"HostId"`
}

func (s *s3Service) writeError(w http.ResponseWriter, r *http.Request, e *s3Error) {
	reqID := w.Header().Get("X-Amz-Request-Id")
	if r.Method == http.MethodHead {
		w.WriteHeader(e.status)
		return
	}
	writeXMLValue(w, e.status, s3ErrorXML{
		Code: e.code, Message: e.message, BucketName: e.bucket, Key: e.key,
		Condition: e.condition, RequestID: reqID, HostID: "awsemu",
	})
}

func (s *s3Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amz-Request-Id", strings.ToUpper(strings.ReplaceAll(newRequestID(), "-", "")[:16]))
	w.Header().Set("X-Amz-Id-2", "awsemu")
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, hasKey := strings.Cut(path, "/")
	var err *s3Error
	switch {
	case bucket == "":
		if r.Method != http.MethodGet {
			err = s3Err(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
			break
		}
		err = s.listBuckets(w)
	case !hasKey || key == "":
		err = s.serveBucket(w, r, bucket)
	default:
		err = s.serveObject(w, r, bucket, key)
	}
	if err != nil {
		if err.bucket == "" && err.code == "NoSuchBucket" {
			err.bucket = bucket
		}
		s.writeError(w, r, err)
	}
}

func (s *s3Service) bucket(name string) (*s3Bucket, *s3Error) {
	b, ok := s.buckets[name]
	if !ok {
		return nil, s3NoSuchBucket(name)
	}
	return b, nil
}

// withBucket runs f on the bucket name under the lock: f reads or changes
// a bucket subresource (lifecycle, tags, public access block), so what f
// copies out is consistent.
func (s *s3Service) withBucket(name string, f func(b *s3Bucket)) *s3Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucket(name)
	if err != nil {
		return err
	}
	f(b)
	return nil
}

// updateBucket changes the bucket name with f, as withBucket, and answers
// status with no body, as S3's subresource PUTs and DELETEs do.
func (s *s3Service) updateBucket(w http.ResponseWriter, name string, status int, f func(b *s3Bucket)) *s3Error {
	if err := s.withBucket(name, f); err != nil {
		return err
	}
	w.WriteHeader(status)
	return nil
}

func (s *s3Service) serveBucket(w http.ResponseWriter, r *http.Request, name string) *s3Error {
	q := r.URL.Query()
	switch {
	case q.Has("lifecycle"):
		return s.bucketLifecycle(w, r, name)
	case q.Has("tagging"):
		return s.bucketTagging(w, r, name)
	case q.Has("publicAccessBlock"):
		return s.bucketPublicAccessBlock(w, r, name)
	case q.Has("delete") && r.Method == http.MethodPost:
		return s.deleteObjects(w, r, name)
	case q.Has("location") && r.Method == http.MethodGet:
		s.mu.Lock()
		b, err := s.bucket(name)
		s.mu.Unlock()
		if err != nil {
			return err
		}
		type locationXML struct {
			XMLName xml.Name `xml:"LocationConstraint"`
			Xmlns   string   `xml:"xmlns,attr"`
			Region  string   `xml:",chardata"`
		}
		region := b.region
		if region == "us-east-1" {
			region = ""
		}
		writeXMLValue(w, http.StatusOK, locationXML{Xmlns: s3Namespace, Region: region})
		return nil
	}
	switch r.Method {
	case http.MethodPut:
		return s.createBucket(w, r, name)
	case http.MethodHead:
		s.mu.Lock()
		b, err := s.bucket(name)
		s.mu.Unlock()
		if err != nil {
			return err
		}
		w.Header().Set("X-Amz-Bucket-Region", b.region)
		w.WriteHeader(http.StatusOK)
		return nil
	case http.MethodDelete:
		s.mu.Lock()
		defer s.mu.Unlock()
		b, err := s.bucket(name)
		if err != nil {
			return err
		}
		if len(b.objects) > 0 {
			e := s3Err(http.StatusConflict, "BucketNotEmpty", "The bucket you tried to delete is not empty")
			e.bucket = name
			return e
		}
		delete(s.buckets, name)
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodGet:
		if q.Get("list-type") == "2" {
			return s.listObjectsV2(w, r, name)
		}
		return s3Err(http.StatusNotImplemented, "NotImplemented", "Only ListObjectsV2 (list-type=2) is implemented")
	}
	return s3Err(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
}

var s3BucketNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

func (s *s3Service) createBucket(w http.ResponseWriter, r *http.Request, name string) *s3Error {
	if !s3BucketNameRE.MatchString(name) || strings.Contains(name, "..") {
		e := s3Err(http.StatusBadRequest, "InvalidBucketName", "The specified bucket is not valid.")
		e.bucket = name
		return e
	}
	body, _, err := s3ReadBody(r)
	if err != nil {
		return err
	}
	region := regionOf(r, s.region)
	constraint := ""
	if len(bytes.TrimSpace(body)) > 0 {
		var cfg struct {
			LocationConstraint string `xml:"LocationConstraint"`
		}
		if xerr := xml.Unmarshal(body, &cfg); xerr != nil {
			return s3Err(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
		}
		constraint = cfg.LocationConstraint
	}
	switch {
	case constraint == "" && region != "us-east-1":
		return s3Err(http.StatusBadRequest, "IllegalLocationConstraintException", "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to.")
	case constraint != "" && constraint != region:
		return s3Err(http.StatusBadRequest, "IllegalLocationConstraintException", "The %s location constraint is incompatible for the region specific endpoint this request was sent to.", constraint)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.buckets[name]; ok {
		e := s3Err(http.StatusConflict, "BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.")
		e.bucket = name
		return e
	}
	s.buckets[name] = &s3Bucket{name: name, region: region, created: s.now(), objects: map[string]*s3Object{}}
	w.Header().Set("Location", "/"+name)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *s3Service) listBuckets(w http.ResponseWriter) *s3Error {
	type bucketXML struct {
		Name         string `xml:"Name"`
		CreationDate string `xml:"CreationDate"`
		BucketRegion string `xml:"BucketRegion"`
	}
	type listXML struct {
		XMLName xml.Name    `xml:"ListAllMyBucketsResult"`
		Xmlns   string      `xml:"xmlns,attr"`
		Owner   string      `xml:"Owner>ID"`
		Buckets []bucketXML `xml:"Buckets>Bucket"`
	}
	s.mu.Lock()
	out := listXML{Xmlns: s3Namespace, Owner: s.account}
	for _, b := range s.buckets {
		out.Buckets = append(out.Buckets, bucketXML{Name: b.name, CreationDate: s3Time(b.created), BucketRegion: b.region})
	}
	s.mu.Unlock()
	slices.SortFunc(out.Buckets, func(a, b bucketXML) int { return strings.Compare(a.Name, b.Name) })
	writeXMLValue(w, http.StatusOK, out)
	return nil
}

func s3Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

type s3ContentXML struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Size         int    `xml:"Size"`
	StorageClass string `xml:"StorageClass"`
}

type s3ListV2XML struct {
	XMLName               xml.Name       `xml:"ListBucketResult"`
	Xmlns                 string         `xml:"xmlns,attr"`
	Name                  string         `xml:"Name"`
	Prefix                string         `xml:"Prefix"`
	Delimiter             string         `xml:"Delimiter,omitempty"`
	StartAfter            string         `xml:"StartAfter,omitempty"`
	ContinuationToken     string         `xml:"ContinuationToken,omitempty"`
	NextContinuationToken string         `xml:"NextContinuationToken,omitempty"`
	KeyCount              int            `xml:"KeyCount"`
	MaxKeys               int            `xml:"MaxKeys"`
	IsTruncated           bool           `xml:"IsTruncated"`
	Contents              []s3ContentXML `xml:"Contents"`
	CommonPrefixes        []s3PrefixXML  `xml:"CommonPrefixes"`
}

type s3PrefixXML struct {
	Prefix string `xml:"Prefix"`
}

func (s *s3Service) listObjectsV2(w http.ResponseWriter, r *http.Request, name string) *s3Error {
	q := r.URL.Query()
	out := s3ListV2XML{
		Xmlns: s3Namespace, Name: name, Prefix: q.Get("prefix"), Delimiter: q.Get("delimiter"),
		StartAfter: q.Get("start-after"), ContinuationToken: q.Get("continuation-token"), MaxKeys: 1000,
	}
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return s3Err(http.StatusBadRequest, "InvalidArgument", "Provided max-keys not an integer or within integer range")
		}
		out.MaxKeys = min(n, 1000)
	}
	after := out.StartAfter
	if out.ContinuationToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(out.ContinuationToken)
		if err != nil {
			return s3Err(http.StatusBadRequest, "InvalidArgument", "The continuation token provided is incorrect")
		}
		after = max(after, string(raw))
	}

	s.mu.Lock()
	b, err := s.bucket(name)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	keys := make([]string, 0, len(b.objects))
	for k := range b.objects {
		if strings.HasPrefix(k, out.Prefix) && k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	last := ""
	for _, k := range keys {
		if out.KeyCount >= out.MaxKeys {
			out.IsTruncated = true
			break
		}
		if out.Delimiter != "" {
			rest := k[len(out.Prefix):]
			if i := strings.Index(rest, out.Delimiter); i >= 0 {
				cp := out.Prefix + rest[:i+len(out.Delimiter)]
				if n := len(out.CommonPrefixes); n > 0 && out.CommonPrefixes[n-1].Prefix == cp {
					last = k
					continue
				}
				out.CommonPrefixes = append(out.CommonPrefixes, s3PrefixXML{Prefix: cp})
				out.KeyCount++
				last = k
				continue
			}
		}
		o := b.objects[k]
		out.Contents = append(out.Contents, s3ContentXML{
			Key: k, LastModified: s3Time(o.modified), ETag: o.etag, Size: len(o.data), StorageClass: "STANDARD",
		})
		out.KeyCount++
		last = k
	}
	s.mu.Unlock()
	if out.IsTruncated {
		// Skip everything under the last common prefix on the next page.
		if n := len(out.CommonPrefixes); n > 0 && strings.HasPrefix(last, out.CommonPrefixes[n-1].Prefix) {
			last = out.CommonPrefixes[n-1].Prefix + "\U0010FFFF"
		}
		out.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(last))
	}
	writeXMLValue(w, http.StatusOK, out)
	return nil
}

func (s *s3Service) serveObject(w http.ResponseWriter, r *http.Request, bucket, key string) *s3Error {
	if len(key) > 1024 {
		return s3Err(http.StatusBadRequest, "KeyTooLongError", "Your key is too long")
	}
	switch r.Method {
	case http.MethodPut:
		if r.Header.Get("X-Amz-Copy-Source") != "" {
			return s3Err(http.StatusNotImplemented, "NotImplemented", "CopyObject is not implemented")
		}
		if r.URL.Query().Has("uploadId") || r.URL.Query().Has("tagging") {
			return s3Err(http.StatusNotImplemented, "NotImplemented", "This object operation is not implemented")
		}
		return s.putObject(w, r, bucket, key)
	case http.MethodGet, http.MethodHead:
		return s.getObject(w, r, bucket, key)
	case http.MethodDelete:
		s.mu.Lock()
		defer s.mu.Unlock()
		b, err := s.bucket(bucket)
		if err != nil {
			return err
		}
		if o, ok := b.objects[key]; ok {
			if m := r.Header.Get("If-Match"); m != "" && m != "*" && !s3ETagMatch(m, o.etag) {
				return s3PreconditionFailed("If-Match")
			}
			delete(b.objects, key)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return s3Err(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
}

// s3ETagMatch reports whether an If-Match / If-None-Match header value (a
// comma-separated list of possibly quoted or weak ETags) names etag.
func s3ETagMatch(header, etag string) bool {
	for _, v := range strings.Split(header, ",") {
		v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
		if v == "*" || strings.Trim(v, `"`) == strings.Trim(etag, `"`) {
			return true
		}
	}
	return false
}

func (s *s3Service) putObject(w http.ResponseWriter, r *http.Request, bucket, key string) *s3Error {
	body, sums, err := s3ReadBody(r)
	if err != nil {
		return err
	}
	md5sum := md5.Sum(body)
	o := &s3Object{
		data:         body,
		etag:         `"` + hex.EncodeToString(md5sum[:]) + `"`,
		contentType:  r.Header.Get("Content-Type"),
		cacheControl: r.Header.Get("Cache-Control"),
		modified:     s.now().UTC().Truncate(time.Second),
		metadata:     http.Header{},
		checksums:    sums,
	}
	if o.contentType == "" {
		o.contentType = "binary/octet-stream"
	}
	var encs []string
	for _, e := range strings.Split(r.Header.Get("Content-Encoding"), ",") {
		if e = strings.TrimSpace(e); e != "" && e != "aws-chunked" {
			encs = append(encs, e)
		}
	}
	o.contentEncoding = strings.Join(encs, ",")
	for k, v := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-meta-") {
			o.metadata[k] = slices.Clone(v)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := s.bucket(bucket)
	if err != nil {
		return err
	}
	old, exists := b.objects[key]
	if v := r.Header.Get("If-None-Match"); v != "" {
		if strings.TrimSpace(v) != "*" {
			return s3Err(http.StatusNotImplemented, "NotImplemented", "A header you provided implies functionality that is not implemented")
		}
		if exists {
			return s3PreconditionFailed("If-None-Match")
		}
	}
	if v := r.Header.Get("If-Match"); v != "" {
		if !exists {
			return s3NoSuchKey(key)
		}
		if !s3ETagMatch(v, old.etag) {
			return s3PreconditionFailed("If-Match")
		}
	}
	b.objects[key] = o
	w.Header().Set("ETag", o.etag)
	w.Header().Set("X-Amz-Server-Side-Encryption", "AES256")
	for alg, v := range sums {
		w.Header().Set("X-Amz-Checksum-"+alg, v)
	}
	if len(sums) > 0 {
		w.Header().Set("X-Amz-Checksum-Type", "FULL_OBJECT")
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *s3Service) getObject(w http.ResponseWriter, r *http.Request, bucket, key string) *s3Error {
	s.mu.Lock()
	b, err := s.bucket(bucket)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	o, ok := b.objects[key]
	s.mu.Unlock()
	if !ok {
		return s3NoSuchKey(key)
	}
	// Objects are never mutated after being stored, so o can be read
	// without the lock.
	if v := r.Header.Get("If-Match"); v != "" && !s3ETagMatch(v, o.etag) {
		return s3PreconditionFailed("If-Match")
	}
	if v := r.Header.Get("If-None-Match"); v != "" && s3ETagMatch(v, o.etag) {
		w.Header().Set("ETag", o.etag)
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	h := w.Header()
	h.Set("ETag", o.etag)
	h.Set("Last-Modified", o.modified.Format(http.TimeFormat))
	h.Set("Content-Type", o.contentType)
	h.Set("Accept-Ranges", "bytes")
	h.Set("X-Amz-Server-Side-Encryption", "AES256")
	if o.contentEncoding != "" {
		h.Set("Content-Encoding", o.contentEncoding)
	}
	if o.cacheControl != "" {
		h.Set("Cache-Control", o.cacheControl)
	}
	for k, v := range o.metadata {
		h[k] = slices.Clone(v)
	}
	data := o.data
	status := http.StatusOK
	if rng := r.Header.Get("Range"); rng != "" {
		start, end, ok := s3ParseRange(rng, len(data))
		if !ok {
			e := s3Err(http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "The requested range is not satisfiable")
			return e
		}
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, len(data)))
		data = data[start:end]
		status = http.StatusPartialContent
	} else if strings.EqualFold(r.Header.Get("X-Amz-Checksum-Mode"), "ENABLED") && len(o.checksums) > 0 {
		for alg, v := range o.checksums {
			h.Set("X-Amz-Checksum-"+alg, v)
		}
		h.Set("X-Amz-Checksum-Type", "FULL_OBJECT")
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
	return nil
}

// s3ParseRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n" range
// and returns the half-open interval [start, end).
func s3ParseRange(v string, size int) (start, end int, ok bool) {
	spec, found := strings.CutPrefix(strings.TrimSpace(v), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.Atoi(b)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size, true
	}
	start, err := strconv.Atoi(a)
	if err != nil || start >= size {
		return 0, 0, false
	}
	end = size
	if b != "" {
		e, err := strconv.Atoi(b)
		if err != nil || e < start {
			return 0, 0, false
		}
		end = min(e+1, size)
	}
	return start, end, true
}

func (s *s3Service) deleteObjects(w http.ResponseWriter, r *http.Request, bucket string) *s3Error {
	body, sums, err := s3ReadBody(r)
	if err != nil {
		return err
	}
	if len(sums) == 0 && r.Header.Get("Content-Md5") == "" {
		return s3Err(http.StatusBadRequest, "InvalidRequest", "Missing required header for this request: Content-MD5 or x-amz-checksum-*")
	}
	var req struct {
		Objects []struct {
			Key string `xml:"Key"`
		} `xml:"Object"`
		Quiet bool `xml:"Quiet"`
	}
	if xerr := xml.Unmarshal(body, &req); xerr != nil || len(req.Objects) > 1000 {
		return s3Err(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
	}
	type deletedXML struct {
		Key string `xml:"Key"`
	}
	type resultXML struct {
		XMLName xml.Name     `xml:"DeleteResult"`
		Xmlns   string       `xml:"xmlns,attr"`
		Deleted []deletedXML `xml:"Deleted"`
	}
	out := resultXML{Xmlns: s3Namespace}
	s.mu.Lock()
	b, err := s.bucket(bucket)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	for _, obj := range req.Objects {
		delete(b.objects, obj.Key)
		if !req.Quiet {
			out.Deleted = append(out.Deleted, deletedXML{Key: obj.Key})
		}
	}
	s.mu.Unlock()
	writeXMLValue(w, http.StatusOK, out)
	return nil
}

func s3MalformedXML() *s3Error {
	return s3Err(http.StatusBadRequest, "MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema")
}

func (s *s3Service) bucketLifecycle(w http.ResponseWriter, r *http.Request, name string) *s3Error {
	switch r.Method {
	case http.MethodPut:
		body, _, err := s3ReadBody(r)
		if err != nil {
			return err
		}
		var cfg s3LifecycleConfiguration
		if xml.Unmarshal(body, &cfg) != nil || len(cfg.Rules) == 0 || len(cfg.Rules) > 1000 {
			return s3MalformedXML()
		}
		for _, rule := range cfg.Rules {
			if rule.Status != "Enabled" && rule.Status != "Disabled" {
				return s3MalformedXML()
			}
			if rule.Prefix != nil && rule.Filter != nil {
				return s3MalformedXML()
			}
			if rule.Expiration == nil && rule.NoncurrentVersionExpiration == nil &&
				rule.AbortIncompleteMultipartUpload == nil && len(rule.Transitions) == 0 &&
				len(rule.NoncurrentVersionTransitions) == 0 {
				return s3Err(http.StatusBadRequest, "InvalidRequest", "At least one action needs to be specified in a rule")
			}
			if e := rule.Expiration; e != nil && e.Days < 0 {
				return s3Err(http.StatusBadRequest, "InvalidArgument", "'Days' for Expiration action must be a positive integer")
			}
		}
		return s.updateBucket(w, name, http.StatusOK, func(b *s3Bucket) {
			b.lifecycle = body
		})
	case http.MethodGet:
		var doc []byte
		if err := s.withBucket(name, func(b *s3Bucket) {
			doc = b.lifecycle
		}); err != nil {
			return err
		}
		if doc == nil {
			e := s3Err(http.StatusNotFound, "NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist")
			e.bucket = name
			return e
		}
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(doc)
		return nil
	case http.MethodDelete:
		return s.updateBucket(w, name, http.StatusNoContent, func(b *s3Bucket) {
			b.lifecycle = nil
		})
	}
	return s3Err(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
}

func (s *s3Service) bucketTagging(w http.ResponseWriter, r *http.Request, name string) *s3Error {
	switch r.Method {
	case http.MethodPut:
		body, _, err := s3ReadBody(r)
		if err != nil {
			return err
		}
		var t s3Tagging
		if xml.Unmarshal(body, &t) != nil {
			return s3MalformedXML()
		}
		if len(t.TagSet) > 50 {
			return s3Err(http.StatusBadRequest, "InvalidTag", "Object tags cannot be greater than 50")
		}
		seen := map[string]bool{}
		for _, tg := range t.TagSet {
			if tg.Key == "" || len(tg.Key) > 128 || len(tg.Value) > 256 {
				return s3Err(http.StatusBadRequest, "InvalidTag", "The TagKey you have provided is invalid")
			}
			if seen[tg.Key] {
				return s3Err(http.StatusBadRequest, "InvalidTag", "Cannot provide multiple Tags with the same key")
			}
			seen[tg.Key] = true
		}
		return s.updateBucket(w, name, http.StatusNoContent, func(b *s3Bucket) {
			b.tags, b.hasTags = t.TagSet, true
		})
	case http.MethodGet:
		var tags []s3Tag
		has := false
		if err := s.withBucket(name, func(b *s3Bucket) {
			tags, has = slices.Clone(b.tags), b.hasTags
		}); err != nil {
			return err
		}
		if !has {
			e := s3Err(http.StatusNotFound, "NoSuchTagSet", "The TagSet does not exist")
			e.bucket = name
			return e
		}
		writeXMLValue(w, http.StatusOK, s3Tagging{Xmlns: s3Namespace, TagSet: tags})
		return nil
	case http.MethodDelete:
		return s.updateBucket(w, name, http.StatusNoContent, func(b *s3Bucket) {
			b.tags, b.hasTags = nil, false
		})
	}
	return s3Err(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
}

func (s *s3Service) bucketPublicAccessBlock(w http.ResponseWriter, r *http.Request, name string) *s3Error {
	switch r.Method {
	case http.MethodPut:
		body, _, err := s3ReadBody(r)
		if err != nil {
			return err
		}
		var cfg s3PublicAccessBlock
		if xml.Unmarshal(body, &cfg) != nil {
			return s3MalformedXML()
		}
		return s.updateBucket(w, name, http.StatusOK, func(b *s3Bucket) {
			cfg.Xmlns = s3Namespace
			b.publicAccess = &cfg
		})
	case http.MethodGet:
		var cfg *s3PublicAccessBlock
		if err := s.withBucket(name, func(b *s3Bucket) {
			if b.publicAccess != nil {
				c := *b.publicAccess
				cfg = &c
			}
		}); err != nil {
			return err
		}
		if cfg == nil {
			e := s3Err(http.StatusNotFound, "NoSuchPublicAccessBlockConfiguration", "The public access block configuration was not found")
			e.bucket = name
			return e
		}
		writeXMLValue(w, http.StatusOK, cfg)
		return nil
	case http.MethodDelete:
		return s.updateBucket(w, name, http.StatusNoContent, func(b *s3Bucket) {
			b.publicAccess = nil
		})
	}
	return s3Err(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.")
}

// s3ChecksumAlgorithms maps the suffix of x-amz-checksum-<alg> to a hash
// constructor. The canonical header casing (Crc32, Crc32c, …) is the key.
var s3ChecksumAlgorithms = map[string]func() hash.Hash{
	"Crc32":     func() hash.Hash { return crc32.NewIEEE() },
	"Crc32c":    func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) },
	"Crc64nvme": func() hash.Hash { return crc64.New(s3CRC64NVMETable) },
	"Sha1":      sha1.New,
	"Sha256":    sha256.New,
}

// s3CRC64NVMETable is the table for CRC-64/NVME (reflected polynomial).
var s3CRC64NVMETable = crc64.MakeTable(0x9a6c9329ac4bc9b5)

// s3ReadBody reads a request body, decoding aws-chunked content encoding
// (signed or unsigned chunks, with optional trailing headers), and verifies
// Content-MD5 and any x-amz-checksum-* value given as a header or trailer.
// It returns the payload and the verified checksums keyed by algorithm
// (canonical header suffix, e.g. "Crc32").
func s3ReadBody(r *http.Request) ([]byte, map[string]string, *s3Error) {
	chunked := strings.Contains(r.Header.Get("Content-Encoding"), "aws-chunked") ||
		strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-")
	reader := io.LimitReader(r.Body, s3MaxObjectSize+1<<20)
	var body []byte
	trailers := http.Header{}
	if chunked {
		var derr error
		body, derr = s3DecodeAWSChunked(bufio.NewReader(reader), trailers)
		if derr != nil {
			return nil, nil, s3Err(http.StatusBadRequest, "IncompleteBody", "The request body could not be decoded as aws-chunked: %v", derr)
		}
		if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n != len(body) {
				return nil, nil, s3Err(http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the X-Amz-Decoded-Content-Length HTTP header")
			}
		}
	} else {
		var rerr error
		body, rerr = io.ReadAll(reader)
		if rerr != nil {
			return nil, nil, s3Err(http.StatusBadRequest, "IncompleteBody", "Reading the request body failed: %v", rerr)
		}
		if r.ContentLength >= 0 && int64(len(body)) != r.ContentLength {
			return nil, nil, s3Err(http.StatusBadRequest, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header")
		}
	}
	if len(body) > s3MaxObjectSize {
		return nil, nil, s3Err(http.StatusBadRequest, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
	}
	if v := r.Header.Get("Content-Md5"); v != "" {
		sum := md5.Sum(body)
		if v != base64.StdEncoding.EncodeToString(sum[:]) {
			return nil, nil, s3Err(http.StatusBadRequest, "BadDigest", "The Content-MD5 you specified did not match what we received.")
		}
	}
	sums := map[string]string{}
	for _, h := range []http.Header{r.Header, trailers} {
		for k, v := range h {
			alg, ok := strings.CutPrefix(http.CanonicalHeaderKey(k), "X-Amz-Checksum-")
			if !ok || len(v) == 0 {
				continue
			}
			newHash, known := s3ChecksumAlgorithms[alg]
			if !known {
				if alg == "Algorithm" || alg == "Type" || alg == "Mode" {
					continue
				}
				return nil, nil, s3Err(http.StatusBadRequest, "InvalidRequest", "Unsupported checksum algorithm %s", alg)
			}
			hh := newHash()
			hh.Write(body)
			if got := base64.StdEncoding.EncodeToString(hh.Sum(nil)); got != v[0] {
				return nil, nil, s3Err(http.StatusBadRequest, "BadDigest", "The %s you specified did not match the calculated checksum.", strings.ToUpper(alg))
			}
			sums[strings.ToLower(alg)] = v[0]
		}
	}
	return body, sums, nil
}

// s3DecodeAWSChunked decodes an aws-chunked body:
//
//	<hex-size>[;chunk-signature=…]\r\n<data>\r\n … 0[;…]\r\n[<trailer>:<value>\r\n]…\r\n
//
// Trailing headers are added to trailers.
func s3DecodeAWSChunked(br *bufio.Reader, trailers http.Header) ([]byte, error) {
	var out bytes.Buffer
	readLine := func() (string, error) {
		line, err := br.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" {
				return "", io.ErrUnexpectedEOF
			}
			if !errors.Is(err, io.EOF) {
				return "", err
			}
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	for {
		line, err := readLine()
		if err != nil {
			return nil, err
		}
		sizeStr, _, _ := strings.Cut(line, ";")
		size, err := strconv.ParseUint(strings.TrimSpace(sizeStr), 16, 63)
		if err != nil {
			return nil, fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			break
		}
		if out.Len()+int(size) > s3MaxObjectSize {
			return nil, errors.New("body too large")
		}
		if _, err := io.CopyN(&out, br, int64(size)); err != nil {
			return nil, fmt.Errorf("short chunk: %w", err)
		}
		var crlf [2]byte
		if _, err := io.ReadFull(br, crlf[:]); err != nil || crlf != [2]byte{'\r', '\n'} {
			return nil, errors.New("chunk not terminated by CRLF")
		}
	}
	// Trailers, up to an empty line (or the end of the body).
	for {
		line, err := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if line != "" {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fmt.Errorf("bad trailer %q", line)
			}
			if !strings.EqualFold(strings.TrimSpace(k), "x-amz-trailer-signature") {
				trailers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
		if err != nil || line == "" {
			break
		}
	}
	return out.Bytes(), nil
}

// s3CRC32 returns the base64 CRC32 of data, as x-amz-checksum-crc32 carries it.
func s3CRC32(data []byte) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc32.ChecksumIEEE(data))
	return base64.StdEncoding.EncodeToString(b[:])
}
