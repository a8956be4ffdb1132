// Package awsemu is an in-process emulator of the AWS APIs corral uses to
// build clusters, for tests. It speaks the real wire protocols (EC2 and AWS
// Query over form-encoded POST with XML replies, JSON 1.1, S3 REST), so
// tests drive the real aws-sdk-go-v2 clients against it instead of
// stubbing them:
//
//	e := awsemu.New(awsemu.Options{StateDelay: 100 * time.Millisecond})
//	url, err := e.Start()
//	defer e.Close()
//	cfg := aws.Config{Region: "us-west-2", BaseEndpoint: &url,
//		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
//	client := ec2.NewFromConfig(cfg) // s3: set Options.UsePathStyle
//
// (or set AWS_ENDPOINT_URL to url and use config.LoadDefaultConfig).
// Requests are routed by the signing name in the SigV4 credential scope
// (Authorization header, or X-Amz-Credential of presigned URLs);
// signatures are not verified and unsigned requests go to S3.
//
// Operations supported, per service (signing name):
//
//   - ec2: DescribeRegions, DescribeAvailabilityZones (zones a-d of the
//     region); CreateVpc, DescribeVpcs, DeleteVpc, ModifyVpcAttribute,
//     DescribeVpcAttribute; CreateSubnet, DescribeSubnets, DeleteSubnet,
//     ModifySubnetAttribute; CreateInternetGateway, AttachInternetGateway,
//     DetachInternetGateway, DeleteInternetGateway, DescribeInternetGateways;
//     CreateRouteTable, AssociateRouteTable, DisassociateRouteTable,
//     DeleteRouteTable, DescribeRouteTables, CreateRoute, ReplaceRoute,
//     DeleteRoute (gateway or instance targets; RouteAlreadyExists; 50
//     routes per table, then RouteLimitExceeded); CreateSecurityGroup,
//     DescribeSecurityGroups, DeleteSecurityGroup,
//     Authorize/RevokeSecurityGroupIngress/Egress; CreateTags, DeleteTags,
//     DescribeTags; CreateLaunchTemplate, CreateLaunchTemplateVersion,
//     DescribeLaunchTemplates, DescribeLaunchTemplateVersions ($Latest,
//     $Default), ModifyLaunchTemplate (default version),
//     DeleteLaunchTemplate; RunInstances, DescribeInstances,
//     TerminateInstances, ModifyInstanceAttribute (SourceDestCheck, groups),
//     DescribeInstanceAttribute; DescribeImages (a seeded catalogue: Flatcar
//     stable/beta/alpha for x86_64 and arm64 owned by FlatcarOwner, and one
//     Amazon Linux image); DescribeInstanceTypes (unknown types are refused
//     at launch with InvalidParameterValue); ImportKeyPair, DescribeKeyPairs,
//     DeleteKeyPair (an unknown KeyName at launch is InvalidKeyPair.NotFound).
//     Deleting a VPC, subnet or security group still used by an instance or
//     load balancer is a DependencyViolation. Instances are pending, then
//     running, after Options.StateDelay (shutting-down, then terminated,
//     likewise); an instance profile younger than SetInstanceProfileDelay is
//     refused at launch.
//   - autoscaling: CreateAutoScalingGroup (launch templates only; with
//     TargetGroupARNs), UpdateAutoScalingGroup, DescribeAutoScalingGroups,
//     DeleteAutoScalingGroup, SetDesiredCapacity,
//     TerminateInstanceInAutoScalingGroup, DescribeAutoScalingInstances,
//     CreateOrUpdateTags, DeleteTags, AttachLoadBalancerTargetGroups,
//     DetachLoadBalancerTargetGroups, DescribeLoadBalancerTargetGroups.
//     Groups launch and terminate instances to keep their desired capacity,
//     balanced over their subnets, and keep their target groups' targets in
//     step; a desired capacity outside min/max is a ValidationError.
//   - elasticloadbalancing (ELBv2, 2015-12-01): CreateLoadBalancer
//     (application or network, internal or internet-facing; provisioning,
//     then active after StateDelay), DescribeLoadBalancers,
//     DeleteLoadBalancer, CreateTargetGroup (instance targets),
//     DescribeTargetGroups, DeleteTargetGroup, ModifyTargetGroupAttributes,
//     DescribeTargetGroupAttributes, CreateListener (one forward default
//     action), DescribeListeners, DeleteListener, RegisterTargets,
//     DeregisterTargets, DescribeTargetHealth (running targets of a target
//     group behind a listener are healthy), AddTags, DescribeTags,
//     RemoveTags.
//   - iam: CreateRole, GetRole, DeleteRole, ListRoles, TagRole, UntagRole,
//     ListRoleTags, PutRolePolicy, GetRolePolicy, DeleteRolePolicy,
//     ListRolePolicies, CreateInstanceProfile, GetInstanceProfile,
//     DeleteInstanceProfile, AddRoleToInstanceProfile,
//     RemoveRoleFromInstanceProfile, ListInstanceProfiles,
//     ListInstanceProfilesForRole.
//   - s3 (path-style): ListBuckets, CreateBucket, HeadBucket, DeleteBucket,
//     GetBucketLocation, ListObjectsV2, Put/Get/DeleteBucketLifecycle(Configuration),
//     Put/Get/DeleteBucketTagging, Put/Get/DeletePublicAccessBlock,
//     PutObject (conditional If-Match/If-None-Match, checksums, aws-chunked
//     uploads), GetObject (ranges), HeadObject, DeleteObject, DeleteObjects.
//   - logs: CreateLogGroup, DescribeLogGroups, DeleteLogGroup,
//     PutRetentionPolicy, DeleteRetentionPolicy, TagResource, UntagResource,
//     ListTagsForResource, CreateLogStream, DescribeLogStreams,
//     DeleteLogStream, PutLogEvents, GetLogEvents.
//   - sts: GetCallerIdentity.
//
// For end-to-end tests, Options.OnLaunch and Options.OnTerminate report
// every instance the emulator starts or terminates (as an Instance), so a
// test can boot each one as a local node, and IMDS serves an instance's
// metadata service (IMDSv2) with its user data and role credentials.
//
// SetThrottle makes a fraction of calls fail with each protocol's real
// throttling error (RequestLimitExceeded for EC2, Throttling for Query
// APIs, ThrottlingException for JSON, SlowDown 503 for S3), which the SDK's
// retryer retries; SetLatency delays every call; Calls records every call.
package awsemu
