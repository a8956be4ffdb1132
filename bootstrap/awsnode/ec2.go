package awsnode

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DisableSourceDestCheck lets the instance send and receive packets that
// are neither from nor to its own address, which the aws-vpc overlay needs:
// the VPC routes a whole subnet of the overlay to the instance, and its
// containers answer from that subnet. clusterd does it itself at start,
// with the instance role (the CoreOS book used a boot-time unit for it).
func DisableSourceDestCheck(ctx context.Context, c *ec2.Client, instanceID string) error {
	_, err := c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
		InstanceId: aws.String(instanceID), SourceDestCheck: &ec2types.AttributeBooleanValue{Value: aws.Bool(false)}})
	if err != nil {
		return fmt.Errorf("awsnode: disabling the source/destination check of %s (does the instance role allow ec2:ModifyInstanceAttribute on it?): %w", instanceID, err)
	}
	return nil
}
