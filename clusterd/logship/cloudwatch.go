package logship

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
)

// CloudWatchSink puts each stream in a log stream of one CloudWatch Logs
// group, creating the stream (and the group) the first time.
type CloudWatchSink struct {
	client *cloudwatchlogs.Client
	group  string
	mu     sync.Mutex // guards ready
	ready  map[string]bool
}

// NewCloudWatchSink returns a sink into group through client.
func NewCloudWatchSink(client *cloudwatchlogs.Client, group string) *CloudWatchSink {
	return &CloudWatchSink{client: client, group: group, ready: map[string]bool{}}
}

// DialCloudWatch makes a client from the standard chain: credentials from
// the environment, shared files or the instance role; the region from
// region, else AWS_REGION or the shared config, else the instance's
// metadata; the endpoint from AWS_ENDPOINT_URL if set. The SDK retries
// throttling with backoff; the shipper retries whatever still fails.
func DialCloudWatch(ctx context.Context, region, group string) (*CloudWatchSink, error) {
	opts := []func(*config.LoadOptions) error{config.WithEC2IMDSRegion()}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("logship: AWS configuration for CloudWatch Logs: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("logship: no AWS region for CloudWatch Logs: set region in the logs block or AWS_REGION on the machines")
	}
	return NewCloudWatchSink(cloudwatchlogs.NewFromConfig(cfg), group), nil
}

// Ship puts events into the log stream named stream.
func (c *CloudWatchSink) Ship(ctx context.Context, stream string, events []Event) error {
	if err := c.ensureStream(ctx, stream); err != nil {
		return err
	}
	in := &cloudwatchlogs.PutLogEventsInput{
		LogGroupName:  &c.group,
		LogStreamName: &stream,
		LogEvents:     make([]types.InputLogEvent, len(events)),
	}
	for i, ev := range events {
		in.LogEvents[i] = types.InputLogEvent{Message: aws.String(ev.Message), Timestamp: aws.Int64(ev.Time.UnixMilli())}
	}
	_, err := c.client.PutLogEvents(ctx, in)
	var missing *types.ResourceNotFoundException
	if errors.As(err, &missing) {
		// Deleted behind our back: create it again on the next try.
		c.mu.Lock()
		delete(c.ready, stream)
		c.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("logship: PutLogEvents to %s/%s: %w", c.group, stream, err)
	}
	// Events too old or too new for CloudWatch are reported, not failed;
	// sending them again would not help.
	return nil
}

// ensureStream creates the log stream, and the group if it is missing.
// Either existing already is fine.
func (c *CloudWatchSink) ensureStream(ctx context.Context, stream string) error {
	c.mu.Lock()
	ok := c.ready[stream]
	c.mu.Unlock()
	if ok {
		return nil
	}
	create := func() error {
		_, err := c.client.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: &c.group, LogStreamName: &stream})
		return err
	}
	err := create()
	var missing *types.ResourceNotFoundException
	if errors.As(err, &missing) {
		_, err = c.client.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: &c.group})
		if err = ignoreExists(err); err == nil {
			err = create()
		}
	}
	if err = ignoreExists(err); err != nil {
		return fmt.Errorf("logship: creating log stream %s in group %s: %w", stream, c.group, err)
	}
	c.mu.Lock()
	c.ready[stream] = true
	c.mu.Unlock()
	return nil
}

func ignoreExists(err error) error {
	var exists *types.ResourceAlreadyExistsException
	if errors.As(err, &exists) {
		return nil
	}
	return err
}

// Close does nothing: the client holds no resources that need releasing.
func (c *CloudWatchSink) Close() error { return nil }

// String names the sink.
func (c *CloudWatchSink) String() string { return "cloudwatch:" + c.group }
