package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/vishvananda/netlink"
)

// awsvpcType is the lease BackendType this backend serves (flannel's name).
const awsvpcType = "aws-vpc"

// AWSMaxRoutes is AWS's default limit of routes per VPC route table. Each
// machine's subnet is one route, so the aws-vpc backend carries at most
// this many machines; larger clusters use vxlan.
const AWSMaxRoutes = 50

// awsvpcTimeout bounds each Start, Sync and Close: the Backend interface
// has no context, and a hung AWS call must not stall the overlay forever.
const awsvpcTimeout = time.Minute

// AWSVPCConfig is what the aws-vpc backend needs beyond the lease: the EC2
// API (with the instance role's credentials), this instance and the route
// tables to keep.
type AWSVPCConfig struct {
	EC2        *ec2.Client
	InstanceID string
	// RouteTables are the VPC route tables that carry the overlay. Empty
	// means every route table of the instance's VPC tagged
	// corral:cluster=<the instance's own corral:cluster tag>, the tag
	// provision puts on the cluster's resources.
	RouteTables []string
	// Prepare, when set, runs once in Start before anything else: clusterd
	// disables the instance's source/destination check there, without
	// which EC2 drops the overlay's packets.
	Prepare func(context.Context) error
}

// awsvpcData is the BackendData an aws-vpc lease carries: the instance the
// VPC routes the lease's subnet to.
type awsvpcData struct {
	InstanceID string `json:"InstanceID"`
}

// awsvpcBackend is flannel's aws-vpc backend: no encapsulation and no
// devices; each machine's subnet is a route in the VPC route table(s) whose
// target is the machine's instance, and packets to other subnets leave by
// the default route for the VPC to deliver. Every machine keeps the whole
// table equal to the leases, so the table heals whichever machines are up;
// machines whose views of the leases differ for a moment converge on their
// next Sync, since every lease change triggers one everywhere.
type awsvpcBackend struct {
	h   *netlink.Handle
	cfg AWSVPCConfig

	mu      sync.Mutex
	started bool
	local   Local
	tables  []string
}

// NewAWSVPC returns the aws-vpc backend; h is the handle for the overlay's
// namespace (used only to read the underlay's MTU).
func NewAWSVPC(h *netlink.Handle, cfg AWSVPCConfig) Backend {
	return &awsvpcBackend{h: h, cfg: cfg}
}

// Start prepares the instance, finds the route tables, and publishes this
// machine's instance id; the MTU is the underlay's, as nothing is added to
// the packets.
func (b *awsvpcBackend) Start(local Local) (json.RawMessage, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.cfg.EC2 == nil || b.cfg.InstanceID == "":
		return nil, 0, errors.New("aws-vpc: no EC2 client or instance id: this backend runs only on EC2 instances whose clusterd was started with --aws-bootstrap")
	case !local.Network.IsValid() || !local.Subnet.IsValid() || !local.Network.Contains(local.Subnet.Addr()):
		return nil, 0, fmt.Errorf("aws-vpc: subnet %s is not inside the overlay network %s", local.Subnet, local.Network)
	}
	underlay, err := routesLinkByName(b.h, awsvpcType, "underlay device", local.Underlay)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), awsvpcTimeout)
	defer cancel()
	if b.cfg.Prepare != nil {
		if err := b.cfg.Prepare(ctx); err != nil {
			return nil, 0, fmt.Errorf("aws-vpc: %w", err)
		}
	}
	tables := b.cfg.RouteTables
	if len(tables) == 0 {
		if tables, err = b.findTables(ctx); err != nil {
			return nil, 0, err
		}
	}
	data, err := json.Marshal(awsvpcData{InstanceID: b.cfg.InstanceID})
	if err != nil {
		return nil, 0, err
	}
	b.local, b.tables, b.started = local, tables, true
	return data, underlay.Attrs().MTU, nil
}

// findTables returns the route tables of this instance's VPC that carry
// its corral:cluster tag.
func (b *awsvpcBackend) findTables(ctx context.Context) ([]string, error) {
	const tag = "corral:cluster"
	out, err := b.cfg.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{b.cfg.InstanceID}})
	if err != nil {
		return nil, fmt.Errorf("aws-vpc: describing this instance %s: %w", b.cfg.InstanceID, err)
	}
	var vpc, cluster string
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			vpc = aws.ToString(in.VpcId)
			for _, t := range in.Tags {
				if aws.ToString(t.Key) == tag {
					cluster = aws.ToString(t.Value)
				}
			}
		}
	}
	if vpc == "" || cluster == "" {
		return nil, fmt.Errorf("aws-vpc: instance %s has no VPC or no %s tag, so its cluster's route table can't be found; launch it with provision, or give the route tables (clusterd --aws-route-tables)",
			b.cfg.InstanceID, tag)
	}
	rts, err := b.cfg.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: []ec2types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpc}}, {Name: aws.String("tag:" + tag), Values: []string{cluster}}}})
	if err != nil {
		return nil, fmt.Errorf("aws-vpc: finding the route tables of %s=%s in %s: %w", tag, cluster, vpc, err)
	}
	var ids []string
	for _, rt := range rts.RouteTables {
		ids = append(ids, aws.ToString(rt.RouteTableId))
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("aws-vpc: VPC %s has no route table tagged %s=%s; run provision up, or give the route tables (clusterd --aws-route-tables)", vpc, tag, cluster)
	}
	slices.Sort(ids)
	return ids, nil
}

// Sync makes the routes inside the overlay network, in every route table,
// exactly this machine's and the aws-vpc peers' subnets, each to its
// instance. Routes outside the overlay network (the VPC's local route, the
// default route) are never touched. Past AWSMaxRoutes leases it fails,
// before any AWS call.
func (b *awsvpcBackend) Sync(peers []Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return errors.New("aws-vpc: Sync called before Start")
	}
	var errs []error
	want := map[netip.Prefix]string{b.local.Subnet.Masked(): b.cfg.InstanceID}
	leases := 1
	for _, p := range peers {
		if p.BackendType != awsvpcType {
			continue
		}
		leases++
		var d awsvpcData
		if err := json.Unmarshal(p.BackendData, &d); err != nil || d.InstanceID == "" {
			errs = append(errs, fmt.Errorf("aws-vpc: the lease of %s (machine %s) has no instance id in its BackendData (%s)", p.Subnet, p.PublicIP, p.BackendData))
			continue
		}
		if !b.local.Network.Contains(p.Subnet.Addr()) {
			errs = append(errs, fmt.Errorf("aws-vpc: the lease %s of instance %s is outside the overlay network %s", p.Subnet, d.InstanceID, b.local.Network))
			continue
		}
		want[p.Subnet.Masked()] = d.InstanceID
	}
	if leases > AWSMaxRoutes {
		return fmt.Errorf("aws-vpc: the cluster has %d subnet leases, one route each, but a VPC route table holds at most %d routes: "+
			"use backend \"vxlan\" in the network block for clusters of more than %d machines", leases, AWSMaxRoutes, AWSMaxRoutes)
	}
	ctx, cancel := context.WithTimeout(context.Background(), awsvpcTimeout)
	defer cancel()
	out, err := b.cfg.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: b.tables})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("aws-vpc: reading the route tables %v: %w", b.tables, err))...)
	}
	for _, rt := range out.RouteTables {
		errs = append(errs, b.syncTable(ctx, rt, want))
	}
	return errors.Join(errs...)
}

// syncTable makes one table's overlay routes equal to want.
func (b *awsvpcBackend) syncTable(ctx context.Context, rt ec2types.RouteTable, want map[netip.Prefix]string) error {
	id := aws.ToString(rt.RouteTableId)
	var errs []error
	have := map[netip.Prefix]ec2types.Route{}
	for _, r := range rt.Routes {
		dst, ok := b.overlayRoute(r)
		if !ok {
			continue
		}
		if _, wanted := want[dst]; !wanted {
			errs = append(errs, b.deleteRoute(ctx, id, dst))
			continue
		}
		have[dst] = r
	}
	dsts := make([]netip.Prefix, 0, len(want))
	for dst := range want {
		dsts = append(dsts, dst)
	}
	slices.SortFunc(dsts, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, dst := range dsts {
		target := want[dst]
		r, ok := have[dst]
		switch {
		case ok && aws.ToString(r.InstanceId) == target && r.State != ec2types.RouteStateBlackhole:
			continue
		case ok:
			errs = append(errs, b.replaceRoute(ctx, id, dst, target))
		default:
			_, err := b.cfg.EC2.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &id,
				DestinationCidrBlock: aws.String(dst.String()), InstanceId: &target})
			if awsvpcCode(err, "RouteAlreadyExists") {
				// Another machine's Sync made it since the read: make sure
				// it names the right instance.
				err = b.replaceRoute(ctx, id, dst, target)
			} else if err != nil {
				err = fmt.Errorf("aws-vpc: creating the route %s -> %s in %s: %w", dst, target, id, err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// overlayRoute returns the destination of r when it is a route this
// backend manages: an IPv4 route inside the overlay network that is not
// the VPC's local route. Anything else (the default route, a VPC or peering
// route, a route of another network) is left alone.
func (b *awsvpcBackend) overlayRoute(r ec2types.Route) (netip.Prefix, bool) {
	if aws.ToString(r.GatewayId) == "local" || r.DestinationCidrBlock == nil {
		return netip.Prefix{}, false
	}
	dst, err := netip.ParsePrefix(aws.ToString(r.DestinationCidrBlock))
	if err != nil || dst.Bits() < b.local.Network.Bits() || !b.local.Network.Contains(dst.Addr()) {
		return netip.Prefix{}, false
	}
	return dst.Masked(), true
}

func (b *awsvpcBackend) replaceRoute(ctx context.Context, table string, dst netip.Prefix, target string) error {
	_, err := b.cfg.EC2.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &table,
		DestinationCidrBlock: aws.String(dst.String()), InstanceId: &target})
	if err != nil {
		return fmt.Errorf("aws-vpc: pointing the route %s in %s at %s: %w", dst, table, target, err)
	}
	return nil
}

// deleteRoute removes a route; one already gone (another machine's Sync)
// is not an error.
func (b *awsvpcBackend) deleteRoute(ctx context.Context, table string, dst netip.Prefix) error {
	_, err := b.cfg.EC2.DeleteRoute(ctx, &ec2.DeleteRouteInput{RouteTableId: &table, DestinationCidrBlock: aws.String(dst.String())})
	if err != nil && !awsvpcCode(err, "InvalidRoute.NotFound") {
		return fmt.Errorf("aws-vpc: removing the route %s from %s: %w", dst, table, err)
	}
	return nil
}

// Close removes this machine's own route from every table, if it still
// points at this instance (a machine that took the subnet over keeps it).
func (b *awsvpcBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), awsvpcTimeout)
	defer cancel()
	out, err := b.cfg.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: b.tables})
	if err != nil {
		return fmt.Errorf("aws-vpc: reading the route tables %v: %w", b.tables, err)
	}
	own := b.local.Subnet.Masked()
	var errs []error
	for _, rt := range out.RouteTables {
		for _, r := range rt.Routes {
			if dst, ok := b.overlayRoute(r); ok && dst == own && aws.ToString(r.InstanceId) == b.cfg.InstanceID {
				errs = append(errs, b.deleteRoute(ctx, aws.ToString(rt.RouteTableId), dst))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Only now: a Close that failed can be retried.
	b.started = false
	return nil
}

// awsvpcCode reports whether err is the AWS API error code.
func awsvpcCode(err error, code string) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == code
}
