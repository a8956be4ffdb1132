package awsnode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/corral-dev/corral/clusterd/store"
)

// slot is the content of members/<i>: the voter that holds it.
type slot struct {
	Instance string    `json:"instance"`
	IP       string    `json:"ip"`
	Time     time.Time `json:"time"`
	// Mode is the role the holder took with it: init only for the
	// instance that created slot 0 while the cluster did not exist yet;
	// join for the other voters, including one that reclaimed slot 0.
	// A restarted holder takes the same role again.
	Mode store.Mode `json:"mode"`
}

// seen is a slot as read, with the ETag a reclaim is conditional on.
type seen struct {
	slot
	index int
	etag  string
}

// maxConflicts bounds how often one slot is re-read after S3 answered a
// conditional write with 409 ConditionalRequestConflict (another write to
// the same key in flight); it always settles within a few tries.
const maxConflicts = 5

// elect gives this instance its role: its own slot if it holds one; else
// the first free slot it manages to create (If-None-Match: *); else the
// first slot of a terminated instance it manages to overwrite (If-Match on
// the ETag it read, so of two instances reclaiming one slot only one
// wins); else it is a client. It returns the slot (-1 for a client), the
// role and the other voters' IPs, slot 0 first.
func (n *node) elect(ctx context.Context) (int, store.Mode, []string, error) {
	var others []seen
	for i := 0; i < n.opts.EtcdMembers; i++ {
		s, won, err := n.claimFree(ctx, i)
		if err != nil {
			return 0, "", nil, err
		}
		if won {
			return n.result(ctx, s, others)
		}
		others = append(others, s)
	}
	// Every slot is held; take over one whose instance is gone.
	dead, err := n.deadInstances(ctx, others)
	if err != nil {
		return 0, "", nil, err
	}
	var live []seen
	for _, s := range others {
		if !dead[s.Instance] {
			live = append(live, s)
		}
	}
	for _, s := range others {
		if !dead[s.Instance] {
			continue
		}
		mine := n.newSlot(store.ModeJoin)
		ok, err := n.put(ctx, s.index, mine, s.etag)
		if err != nil {
			return 0, "", nil, err
		}
		if ok {
			n.opts.Log.Info("aws bootstrap: reclaimed the slot of a terminated instance", "slot", s.index, "was", s.Instance)
			return s.index, store.ModeJoin, ips(live), nil
		}
	}
	return -1, store.ModeClient, ips(live), nil
}

// claimFree reads slot i and, when it is free, tries to create it. It
// returns the slot as it stands and whether it is this instance's (held
// before, or created now).
func (n *node) claimFree(ctx context.Context, i int) (seen, bool, error) {
	for try := 0; ; try++ {
		s, exists, err := n.read(ctx, i)
		if err != nil {
			return seen{}, false, err
		}
		if exists {
			return s, s.Instance == n.self.Instance, nil
		}
		mode := store.ModeJoin
		if i == 0 {
			mode = store.ModeInit
		}
		mine := n.newSlot(mode)
		ok, err := n.put(ctx, i, mine, "")
		if errors.Is(err, errConflict) && try < maxConflicts {
			continue
		}
		if err != nil {
			return seen{}, false, err
		}
		if ok {
			return seen{slot: mine, index: i}, true, nil
		}
		// Taken by another instance since the read: read whose it is.
	}
}

// result completes a won slot: the other voters are the slots read before
// it plus any after it that are taken by now.
func (n *node) result(ctx context.Context, mine seen, before []seen) (int, store.Mode, []string, error) {
	servers := ips(before)
	for i := mine.index + 1; i < n.opts.EtcdMembers; i++ {
		s, exists, err := n.read(ctx, i)
		if err != nil {
			return 0, "", nil, err
		}
		if exists && s.Instance != n.self.Instance {
			servers = append(servers, s.IP)
		}
	}
	return mine.index, mine.Mode, servers, nil
}

func (n *node) newSlot(mode store.Mode) slot {
	return slot{Instance: n.self.Instance, IP: n.self.IP, Time: time.Now().UTC(), Mode: mode}
}

func (n *node) slotKey(i int) string { return n.opts.Prefix + membersPath + strconv.Itoa(i) }

// read returns slot i, or exists false when nobody holds it.
func (n *node) read(ctx context.Context, i int) (seen, bool, error) {
	key := n.slotKey(i)
	out, err := n.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &n.opts.Bucket, Key: &key})
	if isCode(err, "NoSuchKey", "NotFound") {
		return seen{}, false, nil
	}
	if err != nil {
		return seen{}, false, fmt.Errorf("awsnode: reading voter slot %s: %w", n.url(membersPath+strconv.Itoa(i)), err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return seen{}, false, fmt.Errorf("awsnode: reading voter slot %s: %w", n.url(membersPath+strconv.Itoa(i)), err)
	}
	s := seen{index: i, etag: aws.ToString(out.ETag)}
	if err := json.Unmarshal(b, &s.slot); err != nil || s.Instance == "" {
		return seen{}, false, fmt.Errorf("awsnode: voter slot %s is not {\"instance\",\"ip\",\"time\"} JSON (%v): delete it so that a live instance can take it",
			n.url(membersPath+strconv.Itoa(i)), err)
	}
	if s.Mode == "" {
		s.Mode = store.ModeJoin
	}
	return s, true, nil
}

// errConflict is S3's 409 ConditionalRequestConflict: another conditional
// write to the key was in flight; read it again and retry.
var errConflict = errors.New("awsnode: conflicting conditional write")

// put writes s to slot i only if the slot does not exist (etag "") or
// still has etag. It reports false when the condition failed: another
// instance got there first.
func (n *node) put(ctx context.Context, i int, s slot, etag string) (bool, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return false, err
	}
	in := &s3.PutObjectInput{Bucket: &n.opts.Bucket, Key: aws.String(n.slotKey(i)), Body: bytes.NewReader(b),
		ContentType: aws.String("application/json")}
	if etag == "" {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.IfMatch = aws.String(etag)
	}
	_, err = n.s3.PutObject(ctx, in)
	switch {
	case err == nil:
		return true, nil
	case isCode(err, "PreconditionFailed"):
		return false, nil
	case isCode(err, "NoSuchKey") && etag != "":
		return false, nil // deleted by hand since the read; the next start sees it free
	case isCode(err, "ConditionalRequestConflict"):
		return false, errConflict
	}
	return false, fmt.Errorf("awsnode: writing voter slot %s (does the instance role allow s3:PutObject on it?): %w",
		n.url(membersPath+strconv.Itoa(i)), err)
}

// deadInstances returns which holders of slots are gone: terminated or
// shutting down, or unknown to EC2 for longer than NotFoundGrace after
// they took the slot (a newly launched instance can be unlisted briefly).
func (n *node) deadInstances(ctx context.Context, slots []seen) (map[string]bool, error) {
	if len(slots) == 0 {
		return nil, nil
	}
	ids := make([]string, len(slots))
	for i, s := range slots {
		ids[i] = s.Instance
	}
	// A filter, not InstanceIds: an unknown id fails the whole call.
	state := map[string]ec2types.InstanceStateName{}
	p := ec2.NewDescribeInstancesPaginator(n.ec2, &ec2.DescribeInstancesInput{
		Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: ids}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("awsnode: checking whether the voters %v still run (does the instance role allow ec2:DescribeInstances?): %w", ids, err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				if in.State != nil {
					state[aws.ToString(in.InstanceId)] = in.State.Name
				}
			}
		}
	}
	dead := map[string]bool{}
	for _, s := range slots {
		st, listed := state[s.Instance]
		switch {
		case st == ec2types.InstanceStateNameTerminated || st == ec2types.InstanceStateNameShuttingDown:
			dead[s.Instance] = true
		case !listed && time.Since(s.Time) > n.opts.NotFoundGrace:
			dead[s.Instance] = true
		}
	}
	return dead, nil
}

func ips(slots []seen) []string {
	var out []string
	for _, s := range slots {
		out = append(out, s.IP)
	}
	return out
}

// isCode reports whether err is an AWS API error with one of codes.
func isCode(err error, codes ...string) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	for _, c := range codes {
		if api.ErrorCode() == c {
			return true
		}
	}
	return false
}
