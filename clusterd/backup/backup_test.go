package backup

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/corral-dev/corral/internal/awsemu"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// snapshotOf puts n keys under /test/ and takes a snapshot into dir.
func snapshotOf(t *testing.T, cli *clientv3.Client, n int, dir string) *Info {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if _, err := cli.Put(ctx, fmt.Sprintf("/test/k%03d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/test/k000"); err != nil {
		t.Fatal(err)
	}
	var seen int64
	info, err := Take(ctx, cli, dir, func(b int64) { seen = b })
	if err != nil {
		t.Fatal(err)
	}
	if seen != info.Size {
		t.Errorf("progress last said %d bytes, the file has %d", seen, info.Size)
	}
	return info
}

func TestTakeVerifyAndRead(t *testing.T) {
	cli := etcdtest.Start(t)
	info := snapshotOf(t, cli, 20, t.TempDir())
	resp, err := cli.Get(context.Background(), "/test/k005")
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision != resp.Header.Revision {
		t.Errorf("snapshot revision %d, cluster at %d", info.Revision, resp.Header.Revision)
	}
	b, _ := os.ReadFile(info.Path)
	if sum := fmt.Sprintf("%x", sha256.Sum256(b)); sum != info.SHA256 || int64(len(b)) != info.Size {
		t.Errorf("info says sha256 %s size %d, the file is %s size %d", info.SHA256, info.Size, sum, len(b))
	}
	keys, err := ReadKeys(info.Path, "/test/")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 19 || string(keys["/test/k019"]) != "v19" || keys["/test/k000"] != nil {
		t.Errorf("ReadKeys: %d keys, k019=%q, k000 present=%v; want 19, v19, false", len(keys), keys["/test/k019"], keys["/test/k000"] != nil)
	}
}

// TestVerifyRejects: each way a snapshot can be damaged is refused, and
// the error names the problem.
func TestVerifyRejects(t *testing.T) {
	cli := etcdtest.Start(t)
	dir := t.TempDir()
	good, err := os.ReadFile(snapshotOf(t, cli, 5, dir).Path)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0xff
	// Data that is not a database, with a correct trailer: only opening
	// it can tell.
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = byte(i)
	}
	junkSum := sha256.Sum256(junk)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"flipped":   {flipped, "corrupt: sha256 mismatch"},
		"truncated": {good[:len(good)-100], "no sha256 trailer"},
		"empty":     {nil, "no sha256 trailer"},
		"junk":      {append(junk, junkSum[:]...), "does not open as an etcd database"},
	}
	for name, tc := range cases {
		p := filepath.Join(dir, name+".db")
		if err := os.WriteFile(p, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: Verify = %v; want an error naming %s and saying %q", name, err, p, tc.want)
		}
		if _, err := RestoreMember(p, filepath.Join(dir, name+".etcd"), "m", "http://127.0.0.1:2380", "tok"); err == nil {
			t.Errorf("%s: RestoreMember accepted a damaged snapshot", name)
		}
	}
}

// TestPrune keeps the newest N of this cluster's snapshots and touches
// nothing else in the destination.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var ours []string
	for i := range 6 {
		ours = append(ours, Name("prod", base.Add(time.Duration(i)*time.Hour), int64(100+i)))
	}
	others := []string{Name("prod-eu", base, 1), "notes.txt", "prod-latest.db"}
	for _, n := range append(slices.Clone(ours), others...) {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deleted, err := Prune(context.Background(), DirDestination(dir), "prod", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 4 {
		t.Errorf("deleted %v, want the 4 oldest", deleted)
	}
	left, _ := DirDestination(dir).List(context.Background())
	want := append(slices.Clone(ours[4:]), others...)
	slices.Sort(left)
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}

func TestParseDestination(t *testing.T) {
	for dest, want := range map[string]Target{
		"dir:/var/backups/":   {Kind: Dir, Path: "/var/backups"},
		"s3":                  {Kind: S3, Prefix: "backups/prod/"},
		"s3://b":              {Kind: S3, Bucket: "b"},
		"s3://b/some/prefix/": {Kind: S3, Bucket: "b", Prefix: "some/prefix/"},
	} {
		if got, err := ParseDestination(dest, "prod"); err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", dest, got, err, want)
		}
	}
	for dest, want := range map[string]string{
		"dir:relative": "absolute directory",
		"s3://":        "name the bucket",
		"ftp://x":      `want "dir:<absolute directory>"`,
	} {
		if _, err := ParseDestination(dest, "prod"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", dest, err, want)
		}
	}
}

// TestS3Destination stores, lists and prunes snapshots in the cluster's
// bucket ("s3") through the real SDK against the emulator, the bucket
// named by the account STS reports.
func TestS3Destination(t *testing.T) {
	e := awsemu.New(awsemu.Options{})
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	awsemu.SetTestEnv(t)
	t.Setenv("AWS_ENDPOINT_URL", url)
	t.Setenv("AWS_REGION", e.Region())
	ctx := context.Background()
	set := Settings{Cluster: "prod", Schedule: "1h", Keep: 2, Destination: "s3"}
	if _, err := Open(ctx, set); err != nil {
		t.Fatal(err)
	}
	d, err := Open(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	dest := d.(*S3Destination)
	if want := ClusterBucket("prod", e.AccountID(), e.Region()); dest.Bucket != want || dest.Prefix != "backups/prod/" {
		t.Fatalf("bucket %s prefix %s, want %s and backups/prod/", dest.Bucket, dest.Prefix, want)
	}
	if _, err := dest.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &dest.Bucket,
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(e.Region())}}); err != nil {
		t.Fatal(err)
	}
	// Someone else's object under the prefix survives pruning.
	other := "backups/prod/keep-me.txt"
	if _, err := dest.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: &dest.Bucket, Key: &other, Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	cli := etcdtest.Start(t)
	info := snapshotOf(t, cli, 3, t.TempDir())
	// Two older snapshots of this cluster, then one taken now: keep = 2
	// drops the oldest.
	var locs []string
	for _, age := range []time.Duration{2 * time.Hour, time.Hour} {
		loc, err := dest.Put(ctx, Name("prod", time.Now().Add(-age), info.Revision), info.Path)
		if err != nil {
			t.Fatal(err)
		}
		locs = append(locs, loc)
	}
	rec, err := Save(ctx, cli, set, dest, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	locs = append(locs, rec.Location)
	names, err := dest.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	want := []string{filepath.Base(locs[1]), filepath.Base(locs[2]), "keep-me.txt"}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("bucket holds %v, want %v", names, want)
	}
	// What was uploaded is the snapshot: it downloads and verifies.
	got, err := Fetch(ctx, locs[2], "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if v, err := Verify(got); err != nil || v.SHA256 != rec.SHA256 {
		t.Errorf("the downloaded snapshot: %+v, %v; want sha256 %s", v, err, rec.SHA256)
	}
	if _, err := Fetch(ctx, "s3://"+dest.Bucket+"/backups/prod/missing.db", "", t.TempDir()); err == nil || !strings.Contains(err.Error(), "missing.db") {
		t.Errorf("fetching a missing snapshot: %v; want an error naming it", err)
	}
}

// TestScheduler runs two machines' schedulers: one takes the snapshots,
// keeps the newest two, records each; when it stops, the other takes
// over.
func TestScheduler(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := context.Background()
	dir := t.TempDir()
	set, _ := json.Marshal(Settings{Cluster: "prod", Schedule: "1s", Keep: 2, Destination: "dir:" + dir})
	if _, err := cli.Put(ctx, SettingsKey, string(set)); err != nil {
		t.Fatal(err)
	}
	stops := map[string]context.CancelFunc{}
	done := make(chan struct{}, 2)
	for _, id := range []string{"m1", "m2"} {
		sctx, cancel := context.WithCancel(ctx)
		stops[id] = cancel
		s := &Scheduler{Client: cli, MachineID: id, Work: t.TempDir(), TTL: 2 * time.Second}
		go func() { s.Run(sctx); done <- struct{}{} }()
	}
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
		<-done
		<-done
	})
	// Watch the records: three successes from one machine.
	var recs []Record
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for wr := range cli.Watch(wctx, LastKey) {
		for _, ev := range wr.Events {
			var r Record
			json.Unmarshal(ev.Kv.Value, &r)
			recs = append(recs, r)
		}
		if len(recs) >= 3 {
			break
		}
	}
	if len(recs) < 3 {
		t.Fatalf("%d snapshots recorded within 30s, want 3", len(recs))
	}
	leader := recs[0].Machine
	for _, r := range recs {
		if r.Machine != leader {
			t.Errorf("snapshots by %s and %s: two machines acted", leader, r.Machine)
		}
		if r.Revision == 0 || r.Size == 0 || len(r.SHA256) != 64 {
			t.Errorf("incomplete record %+v", r)
		}
	}
	names, _ := DirDestination(dir).List(ctx)
	if len(names) > 2 {
		t.Errorf("keep = 2 but %d snapshots are kept: %v", len(names), names)
	}
	// The leader stops: the other machine takes the next one.
	stops[leader]()
	for wr := range cli.Watch(wctx, LastKey) {
		for _, ev := range wr.Events {
			var r Record
			json.Unmarshal(ev.Kv.Value, &r)
			if r.Machine != leader {
				return
			}
		}
	}
	t.Fatalf("no other machine took over from %s within 30s", leader)
}

// TestSchedulerFailure: a snapshot that can't be stored is recorded at
// FailedKey, saying why, and tried again the next period.
func TestSchedulerFailure(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	blocker := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	set, _ := json.Marshal(Settings{Cluster: "prod", Schedule: "1s", Keep: 2, Destination: "dir:" + blocker + "/backups"})
	if _, err := cli.Put(ctx, SettingsKey, string(set)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	s := &Scheduler{Client: cli, MachineID: "m1", Work: t.TempDir(), TTL: 2 * time.Second}
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	var fails []Record
	for wr := range cli.Watch(wctx, FailedKey) {
		for _, ev := range wr.Events {
			var r Record
			json.Unmarshal(ev.Kv.Value, &r)
			fails = append(fails, r)
		}
		if len(fails) >= 2 {
			break
		}
	}
	if len(fails) < 2 {
		t.Fatalf("%d failures recorded within 30s, want 2 (one per period)", len(fails))
	}
	if !strings.Contains(fails[0].Error, blocker) || fails[0].Machine != "m1" {
		t.Errorf("failure record %+v: want the error to name %s, and the machine", fails[0], blocker)
	}
	if gap := fails[1].Time.Sub(fails[0].Time); gap < 900*time.Millisecond {
		t.Errorf("retried after %v, want a period (1s)", gap)
	}
	if last, _, _ := ReadRecords(ctx, cli); last != nil {
		t.Errorf("a success recorded: %+v", last)
	}
}
