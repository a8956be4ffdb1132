package awsemu

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	logstypes "github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs/types"
)

// xmlDecodeForTest decodes an XML response body.
func xmlDecodeForTest(resp *http.Response, v any) error {
	return xml.NewDecoder(resp.Body).Decode(v)
}

// jsonDecodeForTest decodes a JSON response body.
func jsonDecodeForTest(resp *http.Response, v any) error {
	return json.NewDecoder(resp.Body).Decode(v)
}

func newLogsTestClient(t *testing.T) *cloudwatchlogs.Client {
	t.Helper()
	srv := httptest.NewServer(New(Options{}))
	t.Cleanup(srv.Close)
	return cloudwatchlogs.NewFromConfig(svcTestConfig(srv.URL, srv.Client()))
}

func TestLogsGroupsStreamsEvents(t *testing.T) {
	ctx := context.Background()
	c := newLogsTestClient(t)
	group := "/corral/c1/etcd"

	if _, err := c.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{
		LogGroupName: aws.String(group), Tags: map[string]string{"corral:cluster": "c1"},
	}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: aws.String(group)})
	var exists *logstypes.ResourceAlreadyExistsException
	if !errors.As(err, &exists) {
		t.Fatalf("duplicate CreateLogGroup: want ResourceAlreadyExistsException, got %v", err)
	}
	if _, err := c.CreateLogGroup(ctx, &cloudwatchlogs.CreateLogGroupInput{LogGroupName: aws.String("/other")}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.PutRetentionPolicy(ctx, &cloudwatchlogs.PutRetentionPolicyInput{LogGroupName: aws.String(group), RetentionInDays: aws.Int32(8)}); err == nil {
		t.Fatal("retention of 8 days accepted")
	} else {
		wantCode(t, err, "InvalidParameterException")
	}
	if _, err := c.PutRetentionPolicy(ctx, &cloudwatchlogs.PutRetentionPolicyInput{LogGroupName: aws.String(group), RetentionInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.PutRetentionPolicy(ctx, &cloudwatchlogs.PutRetentionPolicyInput{LogGroupName: aws.String("/nope"), RetentionInDays: aws.Int32(7)})
	var notFound *logstypes.ResourceNotFoundException
	if !errors.As(err, &notFound) {
		t.Fatalf("PutRetentionPolicy(/nope): want ResourceNotFoundException, got %v", err)
	}

	dg, err := c.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String("/corral/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(dg.LogGroups) != 1 {
		t.Fatalf("DescribeLogGroups(/corral/) = %d groups", len(dg.LogGroups))
	}
	lg := dg.LogGroups[0]
	if aws.ToString(lg.LogGroupName) != group || aws.ToInt32(lg.RetentionInDays) != 7 || aws.ToInt64(lg.CreationTime) == 0 {
		t.Errorf("group = %+v", lg)
	}
	wantARN := "arn:aws:logs:us-west-2:123456789012:log-group:" + group
	if aws.ToString(lg.LogGroupArn) != wantARN || aws.ToString(lg.Arn) != wantARN+":*" {
		t.Errorf("arns = %s, %s", aws.ToString(lg.LogGroupArn), aws.ToString(lg.Arn))
	}

	if _, err := c.TagResource(ctx, &cloudwatchlogs.TagResourceInput{ResourceArn: lg.LogGroupArn, Tags: map[string]string{"team": "infra"}}); err != nil {
		t.Fatal(err)
	}
	tags, err := c.ListTagsForResource(ctx, &cloudwatchlogs.ListTagsForResourceInput{ResourceArn: lg.LogGroupArn})
	if err != nil {
		t.Fatal(err)
	}
	if len(tags.Tags) != 2 || tags.Tags["corral:cluster"] != "c1" || tags.Tags["team"] != "infra" {
		t.Errorf("tags = %v", tags.Tags)
	}
	_, err = c.ListTagsForResource(ctx, &cloudwatchlogs.ListTagsForResourceInput{ResourceArn: aws.String("arn:aws:logs:us-west-2:123456789012:log-group:/nope")})
	wantCode(t, err, "ResourceNotFoundException")

	// Streams and events.
	for _, s := range []string{"node-b", "node-a"} {
		if _, err := c.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String(group), LogStreamName: aws.String(s)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.CreateLogStream(ctx, &cloudwatchlogs.CreateLogStreamInput{LogGroupName: aws.String(group), LogStreamName: aws.String("node-a")})
	wantCode(t, err, "ResourceAlreadyExistsException")
	ds, err := c.DescribeLogStreams(ctx, &cloudwatchlogs.DescribeLogStreamsInput{LogGroupName: aws.String(group), LogStreamNamePrefix: aws.String("node-")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.LogStreams) != 2 || aws.ToString(ds.LogStreams[0].LogStreamName) != "node-a" {
		t.Fatalf("DescribeLogStreams = %+v", ds.LogStreams)
	}

	now := time.Now().UnixMilli()
	var events []logstypes.InputLogEvent
	for i, m := range []string{"one", "two", "three"} {
		events = append(events, logstypes.InputLogEvent{Timestamp: aws.Int64(now + int64(i)), Message: aws.String(m)})
	}
	pr, err := c.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String("node-a"), LogEvents: events})
	if err != nil {
		t.Fatal(err)
	}
	if pr.RejectedLogEventsInfo != nil {
		t.Errorf("rejected: %+v", pr.RejectedLogEventsInfo)
	}
	_, err = c.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String("node-a"),
		LogEvents: []logstypes.InputLogEvent{
			{Timestamp: aws.Int64(now + 10), Message: aws.String("late")},
			{Timestamp: aws.Int64(now + 5), Message: aws.String("early")},
		}})
	wantCode(t, err, "InvalidParameterException")
	_, err = c.PutLogEvents(ctx, &cloudwatchlogs.PutLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String("missing"), LogEvents: events})
	wantCode(t, err, "ResourceNotFoundException")

	all, err := c.GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String("node-a"), StartFromHead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range all.Events {
		msgs = append(msgs, aws.ToString(e.Message))
		if aws.ToInt64(e.IngestionTime) == 0 {
			t.Errorf("event without ingestion time: %+v", e)
		}
	}
	if strings.Join(msgs, ",") != "one,two,three" {
		t.Errorf("events = %v", msgs)
	}

	// Forward paging with a limit, ending when the token repeats.
	var paged []string
	token := (*string)(nil)
	for range 5 {
		out, err := c.GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{
			LogGroupName: aws.String(group), LogStreamName: aws.String("node-a"),
			StartFromHead: aws.Bool(true), Limit: aws.Int32(2), NextToken: token,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range out.Events {
			paged = append(paged, aws.ToString(e.Message))
		}
		if token != nil && aws.ToString(out.NextForwardToken) == aws.ToString(token) {
			break
		}
		token = out.NextForwardToken
	}
	if strings.Join(paged, ",") != "one,two,three" {
		t.Errorf("paged events = %v", paged)
	}

	// The tail (no StartFromHead) returns the newest events.
	tail, err := c.GetLogEvents(ctx, &cloudwatchlogs.GetLogEventsInput{LogGroupName: aws.String(group), LogStreamName: aws.String("node-a"), Limit: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(tail.Events) != 1 || aws.ToString(tail.Events[0].Message) != "three" {
		t.Errorf("tail = %+v", tail.Events)
	}

	ds, err = c.DescribeLogStreams(ctx, &cloudwatchlogs.DescribeLogStreamsInput{LogGroupName: aws.String(group), OrderBy: logstypes.OrderByLastEventTime, Descending: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if st := ds.LogStreams[0]; aws.ToString(st.LogStreamName) != "node-a" || aws.ToInt64(st.LastEventTimestamp) != now+2 {
		t.Errorf("newest stream = %+v", st)
	}

	if _, err := c.DeleteLogGroup(ctx, &cloudwatchlogs.DeleteLogGroupInput{LogGroupName: aws.String(group)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeLogStreams(ctx, &cloudwatchlogs.DescribeLogStreamsInput{LogGroupName: aws.String(group)})
	if !errors.As(err, &notFound) {
		t.Fatalf("DescribeLogStreams after delete: want ResourceNotFoundException, got %v", err)
	}
	_, err = c.DeleteLogGroup(ctx, &cloudwatchlogs.DeleteLogGroupInput{LogGroupName: aws.String(group)})
	wantCode(t, err, "ResourceNotFoundException")
}

func TestLogsErrorWireFormat(t *testing.T) {
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader(`{"logGroupName":"/nope"}`))
	req.Header.Set("X-Amz-Target", "Logs_20140328.DeleteLogGroup")
	req.Header.Set("Authorization", scopeAuth("logs"))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	if err := jsonDecodeForTest(resp, &body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest || body.Type != "ResourceNotFoundException" || body.Message == "" ||
		resp.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		t.Errorf("status %d, content type %q, body %+v", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
