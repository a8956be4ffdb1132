package membership

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member is one etcd member as the survey saw it.
type Member struct {
	ID      uint64
	Name    string
	IP      string // from its peer URL
	Learner bool
	Healthy bool // answered a status request
}

// Survey is the cluster's etcd membership and which machines could be
// promoted, at one moment.
type Survey struct {
	Voters   []Member
	Learners []Member
	// Clients are the live machines that run no etcd member: the ones a
	// promotion can pick.
	Clients []registry.Machine
	// Desired is the configured voter count (0 if provision wrote none).
	Desired int
}

// statusTimeout bounds the health probe of one member: a dead member's
// address drops packets, and the survey must not hang on it.
const statusTimeout = 2 * time.Second

// Take surveys the cluster: the member list, each voter asked for its
// status, the live machines, and the settings.
func Take(ctx context.Context, c *clientv3.Client) (*Survey, error) {
	list, err := c.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing etcd members: %w", err)
	}
	s := &Survey{}
	if set, ok, err := GetSettings(ctx, c); err != nil {
		return nil, err
	} else if ok {
		s.Desired = set.Voters
	}
	inEtcd := map[string]bool{}
	for _, m := range list.Members {
		mm := Member{ID: m.ID, Name: m.Name, IP: PeerIP(m), Learner: m.IsLearner}
		inEtcd[mm.IP] = true
		if m.IsLearner {
			s.Learners = append(s.Learners, mm)
			continue
		}
		if len(m.ClientURLs) > 0 {
			sctx, cancel := context.WithTimeout(ctx, statusTimeout)
			st, err := c.Status(sctx, m.ClientURLs[0])
			cancel()
			mm.Healthy = err == nil && st.Leader != 0
		}
		s.Voters = append(s.Voters, mm)
	}
	ms, _, err := registry.List(ctx, c)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if !inEtcd[m.IP] {
			s.Clients = append(s.Clients, m)
		}
	}
	return s, nil
}

// PeerIP is the host of a member's first peer URL: the machine's address.
func PeerIP(m *etcdserverpb.Member) string {
	for _, u := range m.PeerURLs {
		if p, err := url.Parse(u); err == nil {
			return p.Hostname()
		}
	}
	return ""
}

// Voter returns the voter of that machine (matched by name or address).
func (s *Survey) Voter(m Machine) (Member, bool) {
	for _, v := range s.Voters {
		if v.Name == m.Name || (m.IP != "" && sameIP(v.IP, m.IP)) {
			return v, true
		}
	}
	return Member{}, false
}

func sameIP(a, b string) bool {
	x, y := net.ParseIP(a), net.ParseIP(b)
	return x != nil && x.Equal(y)
}

// Healthy counts the voters that answered.
func (s *Survey) Healthy() int {
	n := 0
	for _, v := range s.Voters {
		if v.Healthy {
			n++
		}
	}
	return n
}

// CheckRemoval says whether the machines can be removed, one after the
// other, with a client promoted after each voter's removal while the
// voters are fewer than configured and a client not being removed is left.
// It refuses, with what to do instead, a removal that would leave fewer
// voters than a quorum of the voters before it, or fewer healthy voters
// than a quorum of those after it.
func (s *Survey) CheckRemoval(remove []Machine) error {
	going := map[string]bool{}
	for _, m := range remove {
		going[m.IP] = true
	}
	promotable := 0
	for _, c := range s.Clients {
		if !going[c.IP] {
			promotable++
		}
	}
	voters, healthy := len(s.Voters), s.Healthy()
	var removed []string
	for _, m := range remove {
		v, ok := s.Voter(m)
		if !ok {
			continue // a client: the quorum does not count it
		}
		removed = append(removed, m.Name)
		left, leftHealthy := voters-1, healthy
		if v.Healthy {
			leftHealthy--
		}
		what := "removing " + strings.Join(removed, " and ")
		if left < Quorum(voters) {
			// Say it against the voters there are now when that holds
			// (removing 2 of 3), else against those before this step.
			of, ofWhat := len(s.Voters), "now"
			if left >= Quorum(of) {
				of, ofWhat = voters, "before it"
			}
			return fmt.Errorf("refusing to remove %s: the cluster has %d etcd voters, %d of them healthy; %s would leave %d, "+
				"fewer than a quorum (%d) of the %d voters %s, and no client machine is left to promote in between; "+
				"add machines first (raise desired_capacity and run `provision up`) so a client can be promoted, "+
				"then remove one voter at a time",
				strings.Join(names(remove), ", "), len(s.Voters), s.Healthy(), what, left, Quorum(of), of, ofWhat)
		}
		if leftHealthy < Quorum(left) {
			return fmt.Errorf("refusing to remove %s: the cluster has %d etcd voters, %d of them healthy; %s would leave %d voters "+
				"of which only %d healthy, short of their quorum of %d, and etcd would stop; bring the unhealthy voters back, "+
				"or remove them first (`clusterctl machine remove ID` for a machine that is gone for good)",
				strings.Join(names(remove), ", "), len(s.Voters), s.Healthy(), what, left, leftHealthy, Quorum(left))
		}
		voters, healthy = left, leftHealthy
		if promotable > 0 && voters < s.Desired {
			voters, healthy, promotable = voters+1, healthy+1, promotable-1
		}
	}
	return nil
}

func names(ms []Machine) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}
