package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/corral-dev/corral/bootstrap/awsnode/awsnodetest"
	"github.com/vishvananda/netlink"
)

var awsvpcNetwork = netip.MustParsePrefix("10.244.0.0/16")

// awsvpcRoutes returns the route table's routes as destination -> target
// (instance id, or gateway id).
func awsvpcRoutes(t *testing.T, c *awsnodetest.Cloud) map[string]string {
	t.Helper()
	out, err := c.EC2.DescribeRouteTables(context.Background(), &ec2.DescribeRouteTablesInput{RouteTableIds: []string{c.RouteTable}})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, r := range out.RouteTables[0].Routes {
		m[aws.ToString(r.DestinationCidrBlock)] = aws.ToString(r.InstanceId) + aws.ToString(r.GatewayId)
	}
	return m
}

func awsvpcPeer(subnet, instance string) Peer {
	d, _ := json.Marshal(awsvpcData{InstanceID: instance})
	return Peer{Subnet: netip.MustParsePrefix(subnet), PublicIP: netip.MustParseAddr("10.0.1.200"), BackendType: awsvpcType, BackendData: d}
}

// awsvpcStart starts the backend for instance self with subnet 10.244.1.0/24,
// finding the route table by its tag; the underlay is lo (only its MTU is
// read).
func awsvpcStart(t *testing.T, c *awsnodetest.Cloud, self string, prepared *int) Backend {
	t.Helper()
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	b := NewAWSVPC(h, AWSVPCConfig{EC2: c.EC2, InstanceID: self, Prepare: func(context.Context) error { *prepared++; return nil }})
	data, mtu, err := b.Start(Local{Network: awsvpcNetwork, Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		PublicIP: netip.MustParseAddr("10.0.1.4"), Underlay: "lo"})
	if err != nil {
		t.Fatal(err)
	}
	lo, _ := h.LinkByName("lo")
	if string(data) != `{"InstanceID":"`+self+`"}` || mtu != lo.Attrs().MTU {
		t.Errorf("Start published %s with MTU %d; want the instance id and lo's MTU %d", data, mtu, lo.Attrs().MTU)
	}
	return b
}

func TestAWSVPCKeepsTheRouteTableEqualToTheLeases(t *testing.T) {
	c := awsnodetest.New(t)
	ins := c.Launch(t, 4)
	ctx := context.Background()
	// A route of another network to an instance: not the overlay's, so
	// never touched, like the default and local routes.
	if _, err := c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &c.RouteTable,
		DestinationCidrBlock: aws.String("192.168.0.0/24"), InstanceId: &ins[3].ID}); err != nil {
		t.Fatal(err)
	}
	// A stale overlay route, left by a machine that is gone.
	if _, err := c.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &c.RouteTable,
		DestinationCidrBlock: aws.String("10.244.9.0/24"), InstanceId: &ins[3].ID}); err != nil {
		t.Fatal(err)
	}
	fixed := map[string]string{"10.0.0.0/16": "local", "0.0.0.0/0": c.Gateway, "192.168.0.0/24": ins[3].ID}
	expect := func(what string, overlay map[string]string) {
		t.Helper()
		want := maps.Clone(fixed)
		maps.Copy(want, overlay)
		if got := awsvpcRoutes(t, c); !maps.Equal(got, want) {
			t.Errorf("%s: routes %v, want %v", what, got, want)
		}
	}

	prepared := 0
	b := awsvpcStart(t, c, ins[0].ID, &prepared)
	if prepared != 1 {
		t.Errorf("Prepare ran %d times in Start, want once", prepared)
	}
	peers := []Peer{awsvpcPeer("10.244.2.0/24", ins[1].ID), awsvpcPeer("10.244.3.0/24", ins[2].ID),
		{Subnet: netip.MustParsePrefix("10.244.4.0/24"), BackendType: "vxlan"}} // another backend's lease: not ours to route
	if err := b.Sync(peers); err != nil {
		t.Fatal(err)
	}
	expect("3 leases", map[string]string{"10.244.1.0/24": ins[0].ID, "10.244.2.0/24": ins[1].ID, "10.244.3.0/24": ins[2].ID})

	// A lease gone: its route goes.
	if err := b.Sync(peers[:1]); err != nil {
		t.Fatal(err)
	}
	expect("a lease gone", map[string]string{"10.244.1.0/24": ins[0].ID, "10.244.2.0/24": ins[1].ID})

	// A lease moved to another instance: its route is replaced.
	if err := b.Sync([]Peer{awsvpcPeer("10.244.2.0/24", ins[2].ID)}); err != nil {
		t.Fatal(err)
	}
	expect("a lease moved", map[string]string{"10.244.1.0/24": ins[0].ID, "10.244.2.0/24": ins[2].ID})

	// A Sync that changes nothing makes no mutating call.
	before := len(c.Emu.Calls())
	if err := b.Sync([]Peer{awsvpcPeer("10.244.2.0/24", ins[2].ID)}); err != nil {
		t.Fatal(err)
	}
	for _, call := range c.Emu.Calls()[before:] {
		if call.Mutating {
			t.Errorf("a Sync with nothing to change called %s", call.Action)
		}
	}

	// Close removes this machine's own route only.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	expect("closed", map[string]string{"10.244.2.0/24": ins[2].ID})
}

func TestAWSVPCRefusesMoreLeasesThanARouteTableHolds(t *testing.T) {
	c := awsnodetest.New(t)
	ins := c.Launch(t, 2)
	prepared := 0
	b := awsvpcStart(t, c, ins[0].ID, &prepared)
	var peers []Peer
	for i := range AWSMaxRoutes { // with this machine's own: one too many
		peers = append(peers, awsvpcPeer(fmt.Sprintf("10.244.%d.0/24", 100+i), ins[1].ID))
	}
	before := len(c.Emu.Calls())
	err := b.Sync(peers)
	if err == nil || !strings.Contains(err.Error(), "51 subnet leases") || !strings.Contains(err.Error(), "at most 50 routes") ||
		!strings.Contains(err.Error(), `backend "vxlan"`) {
		t.Fatalf("51 leases: %v", err)
	}
	if calls := c.Emu.Calls()[before:]; len(calls) != 0 {
		t.Errorf("the refused Sync still called AWS: %+v", calls)
	}
	if got := awsvpcRoutes(t, c); len(got) != 2 {
		t.Errorf("routes after the refused Sync: %v", got)
	}
}

func TestAWSVPCStartErrors(t *testing.T) {
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	local := Local{Network: awsvpcNetwork, Subnet: netip.MustParsePrefix("10.244.1.0/24"), Underlay: "lo"}
	if _, _, err := NewAWSVPC(h, AWSVPCConfig{}).Start(local); err == nil || !strings.Contains(err.Error(), "--aws-bootstrap") {
		t.Errorf("no EC2 client: %v", err)
	}
	// An instance without the cluster tag can't find its route table.
	c := awsnodetest.New(t)
	out, err := c.EC2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0"),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &c.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	if _, _, err := NewAWSVPC(h, AWSVPCConfig{EC2: c.EC2, InstanceID: id}).Start(local); err == nil ||
		!strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "--aws-route-tables") {
		t.Errorf("untagged instance: %v", err)
	}
}

// Every machine keeps the whole table: machines syncing the same leases at
// once agree, without errors, whoever creates a route first.
func TestAWSVPCMachinesShareTheTable(t *testing.T) {
	c := awsnodetest.New(t)
	ins := c.Launch(t, 3)
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	subnets := []string{"10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"}
	want := map[string]string{"10.0.0.0/16": "local", "0.0.0.0/0": c.Gateway}
	var bs []Backend
	for i, in := range ins {
		b := NewAWSVPC(h, AWSVPCConfig{EC2: c.EC2, InstanceID: in.ID, RouteTables: []string{c.RouteTable}})
		if _, _, err := b.Start(Local{Network: awsvpcNetwork, Subnet: netip.MustParsePrefix(subnets[i]), Underlay: "lo"}); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
		want[subnets[i]] = in.ID
	}
	errs := make(chan error, len(bs)*3)
	for round := 0; round < 3; round++ {
		for i, b := range bs {
			var peers []Peer
			for j, in := range ins {
				if j != i {
					peers = append(peers, awsvpcPeer(subnets[j], in.ID))
				}
			}
			go func() { errs <- b.Sync(peers) }()
		}
	}
	for range len(bs) * 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := awsvpcRoutes(t, c); !maps.Equal(got, want) {
		t.Errorf("routes %v, want %v", got, want)
	}
}
