package awsemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// logsTargetPrefix prefixes X-Amz-Target for CloudWatch Logs operations.
const logsTargetPrefix = "Logs_20140328."

// logsService emulates CloudWatch Logs (JSON 1.1 protocol) for log groups,
// log streams and events.
type logsService struct {
	mu      sync.Mutex
	account string // the emulated account id, for ARNs
	region  string // the region of requests without a credential scope
	now     func() time.Time
	groups  map[string]*logsGroup // by name
}

type logsGroup struct {
	name, region   string
	account        string
	created        time.Time
	retentionDays  int32 // 0: never expire
	kmsKeyID       string
	logGroupClass  string
	tags           map[string]string
	streams        map[string]*logsStream
	storedBytesSum int64
}

type logsStream struct {
	name          string
	created       time.Time
	events        []logsEvent
	lastIngestion time.Time
	seq           int64
}

type logsEvent struct {
	Timestamp     int64  `json:"timestamp"`
	Message       string `json:"message"`
	IngestionTime int64  `json:"ingestionTime"`
}

// newLogs returns a CloudWatch Logs emulator for the given account and
// default region.
func newLogs(account, region string) *logsService {
	return &logsService{account: account, region: region, now: time.Now, groups: map[string]*logsGroup{}}
}

// logsError is a CloudWatch Logs error response.
type logsError struct {
	code, message string
}

func (e *logsError) Error() string { return e.code + ": " + e.message }

func logsErr(code, format string, args ...any) *logsError {
	return &logsError{code: code, message: fmt.Sprintf(format, args...)}
}

func logsInvalid(format string, args ...any) *logsError {
	return logsErr("InvalidParameterException", format, args...)
}

func logsMillis(t time.Time) int64 { return t.UnixMilli() }

type logsAction func(s *logsService, region string, body []byte) (any, *logsError)

var logsActions map[string]logsAction

func init() {
	logsActions = map[string]logsAction{
		"CreateLogGroup":        (*logsService).createLogGroup,
		"DescribeLogGroups":     (*logsService).describeLogGroups,
		"DeleteLogGroup":        (*logsService).deleteLogGroup,
		"PutRetentionPolicy":    (*logsService).putRetentionPolicy,
		"DeleteRetentionPolicy": (*logsService).deleteRetentionPolicy,
		"TagResource":           (*logsService).tagResource,
		"UntagResource":         (*logsService).untagResource,
		"ListTagsForResource":   (*logsService).listTagsForResource,
		"CreateLogStream":       (*logsService).createLogStream,
		"DescribeLogStreams":    (*logsService).describeLogStreams,
		"DeleteLogStream":       (*logsService).deleteLogStream,
		"PutLogEvents":          (*logsService).putLogEvents,
		"GetLogEvents":          (*logsService).getLogEvents,
	}
}

func (s *logsService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amzn-Requestid", newRequestID())
	if r.Method != http.MethodPost {
		s.writeError(w, http.StatusBadRequest, logsErr("UnknownOperationException", "Only POST is supported"))
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), logsTargetPrefix)
	action, known := logsActions[op]
	if !ok || !known {
		s.writeError(w, http.StatusBadRequest, logsErr("UnknownOperationException", "Unknown operation %q", r.Header.Get("X-Amz-Target")))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		s.writeError(w, http.StatusBadRequest, logsErr("SerializationException", "reading body: %v", err))
		return
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	s.mu.Lock()
	out, lerr := action(s, regionOf(r, s.region), body)
	s.mu.Unlock()
	if lerr != nil {
		s.writeError(w, http.StatusBadRequest, lerr)
		return
	}
	if out == nil {
		out = struct{}{}
	}
	writeJSON11(w, http.StatusOK, out)
}

func (s *logsService) writeError(w http.ResponseWriter, status int, e *logsError) {
	w.Header().Set("X-Amzn-Errortype", e.code)
	writeJSON11(w, status, map[string]string{"__type": e.code, "message": e.message})
}

func logsDecode(body []byte, v any) *logsError {
	if err := json.Unmarshal(body, v); err != nil {
		return logsErr("SerializationException", "could not decode request: %v", err)
	}
	return nil
}

var logsGroupNameRE = regexp.MustCompile(`^[\.\-_/#A-Za-z0-9]{1,512}$`)
var logsStreamNameRE = regexp.MustCompile(`^[^:*]{1,512}$`)

// groupIn is the log group a request that names only one
// ({"logGroupName": ...}) is about.
func (s *logsService) groupIn(body []byte) (*logsGroup, *logsError) {
	var in struct {
		LogGroupName string `json:"logGroupName"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	return s.group(in.LogGroupName)
}

func (s *logsService) group(name string) (*logsGroup, *logsError) {
	if name == "" {
		return nil, logsInvalid("1 validation error detected: Value null at 'logGroupName' failed to satisfy constraint: Member must not be null")
	}
	g, ok := s.groups[name]
	if !ok {
		return nil, logsErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	return g, nil
}

// groupByIdentifier resolves a log group name or ARN.
func (s *logsService) groupByIdentifier(name, identifier string) (*logsGroup, *logsError) {
	if name == "" && identifier != "" {
		name = identifier
		if strings.HasPrefix(identifier, "arn:") {
			g, err := s.groupByARN(identifier)
			return g, err
		}
	}
	return s.group(name)
}

func (g *logsGroup) arn() string {
	return "arn:aws:logs:" + g.region + ":" + g.account + ":log-group:" + g.name
}

// groupByARN resolves arn:aws:logs:REGION:ACCOUNT:log-group:NAME[:*].
func (s *logsService) groupByARN(arn string) (*logsGroup, *logsError) {
	parts := strings.SplitN(arn, ":", 7)
	if len(parts) != 7 || parts[0] != "arn" || parts[2] != "logs" || parts[5] != "log-group" || parts[6] == "" {
		return nil, logsInvalid("Invalid resource ARN %s", arn)
	}
	name := strings.TrimSuffix(parts[6], ":*")
	if strings.Contains(name, ":log-stream:") {
		return nil, logsInvalid("Tagging is only supported on log groups: %s", arn)
	}
	g, ok := s.groups[name]
	if !ok || parts[3] != g.region || parts[4] != g.account {
		return nil, logsErr("ResourceNotFoundException", "The specified resource does not exist.")
	}
	return g, nil
}

func logsValidateTags(tags map[string]string) *logsError {
	if len(tags) > 50 {
		return logsInvalid("A log group can have at most 50 tags")
	}
	for k, v := range tags {
		if k == "" || len(k) > 128 || len(v) > 256 || strings.HasPrefix(k, "aws:") {
			return logsInvalid("Invalid tag key or value: %q", k)
		}
	}
	return nil
}

func (s *logsService) createLogGroup(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupName  string            `json:"logGroupName"`
		KmsKeyID      string            `json:"kmsKeyId"`
		Tags          map[string]string `json:"tags"`
		LogGroupClass string            `json:"logGroupClass"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	if !logsGroupNameRE.MatchString(in.LogGroupName) {
		return nil, logsInvalid("1 validation error detected: Value '%s' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+", in.LogGroupName)
	}
	if err := logsValidateTags(in.Tags); err != nil {
		return nil, err
	}
	switch in.LogGroupClass {
	case "":
		in.LogGroupClass = "STANDARD"
	case "STANDARD", "INFREQUENT_ACCESS", "DELIVERY":
	default:
		return nil, logsInvalid("Invalid logGroupClass %s", in.LogGroupClass)
	}
	if _, ok := s.groups[in.LogGroupName]; ok {
		return nil, logsErr("ResourceAlreadyExistsException", "The specified log group already exists")
	}
	tags := map[string]string{}
	for k, v := range in.Tags {
		tags[k] = v
	}
	s.groups[in.LogGroupName] = &logsGroup{
		name: in.LogGroupName, region: region, account: s.account, created: s.now(), kmsKeyID: in.KmsKeyID,
		logGroupClass: in.LogGroupClass, tags: tags, streams: map[string]*logsStream{},
	}
	return nil, nil
}

type logsGroupJSON struct {
	LogGroupName      string `json:"logGroupName"`
	CreationTime      int64  `json:"creationTime"`
	RetentionInDays   *int32 `json:"retentionInDays,omitempty"`
	MetricFilterCount int    `json:"metricFilterCount"`
	Arn               string `json:"arn"`
	LogGroupArn       string `json:"logGroupArn"`
	StoredBytes       int64  `json:"storedBytes"`
	KmsKeyID          string `json:"kmsKeyId,omitempty"`
	LogGroupClass     string `json:"logGroupClass"`
}

// logsPage applies nextToken/limit pagination (tokens are offsets) to n
// items.
func logsPage(token string, limit, maxLimit, n int) (start, end int, next string, err *logsError) {
	if limit == 0 {
		limit = maxLimit
	}
	if limit < 0 || limit > maxLimit {
		return 0, 0, "", logsInvalid("1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value less than or equal to %d", limit, maxLimit)
	}
	if token != "" {
		v, perr := strconv.Atoi(token)
		if perr != nil || v < 0 || v > n {
			return 0, 0, "", logsInvalid("The specified nextToken is invalid.")
		}
		start = v
	}
	end = min(start+limit, n)
	if end < n {
		next = strconv.Itoa(end)
	}
	return start, end, next, nil
}

func (s *logsService) describeLogGroups(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupNamePrefix  string `json:"logGroupNamePrefix"`
		LogGroupNamePattern string `json:"logGroupNamePattern"`
		NextToken           string `json:"nextToken"`
		Limit               int    `json:"limit"`
		LogGroupClass       string `json:"logGroupClass"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	if in.LogGroupNamePrefix != "" && in.LogGroupNamePattern != "" {
		return nil, logsInvalid("LogGroupNamePrefix and LogGroupNamePattern are mutually exclusive parameters.")
	}
	var groups []*logsGroup
	for _, g := range s.groups {
		if !strings.HasPrefix(g.name, in.LogGroupNamePrefix) {
			continue
		}
		if in.LogGroupNamePattern != "" && !strings.Contains(strings.ToLower(g.name), strings.ToLower(in.LogGroupNamePattern)) {
			continue
		}
		if in.LogGroupClass != "" && g.logGroupClass != in.LogGroupClass {
			continue
		}
		groups = append(groups, g)
	}
	slices.SortFunc(groups, func(a, b *logsGroup) int { return strings.Compare(a.name, b.name) })
	start, end, next, err := logsPage(in.NextToken, in.Limit, 50, len(groups))
	if err != nil {
		return nil, err
	}
	out := struct {
		LogGroups []logsGroupJSON `json:"logGroups"`
		NextToken string          `json:"nextToken,omitempty"`
	}{LogGroups: []logsGroupJSON{}, NextToken: next}
	for _, g := range groups[start:end] {
		j := logsGroupJSON{
			LogGroupName: g.name, CreationTime: logsMillis(g.created), Arn: g.arn() + ":*",
			LogGroupArn: g.arn(), StoredBytes: g.storedBytesSum, KmsKeyID: g.kmsKeyID, LogGroupClass: g.logGroupClass,
		}
		if g.retentionDays != 0 {
			d := g.retentionDays
			j.RetentionInDays = &d
		}
		out.LogGroups = append(out.LogGroups, j)
	}
	return out, nil
}

func (s *logsService) deleteLogGroup(region string, body []byte) (any, *logsError) {
	g, err := s.groupIn(body)
	if err != nil {
		return nil, err
	}
	delete(s.groups, g.name)
	return nil, nil
}

// logsRetentionDays are the values PutRetentionPolicy accepts.
var logsRetentionDays = []int32{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

func (s *logsService) putRetentionPolicy(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupName    string `json:"logGroupName"`
		RetentionInDays int32  `json:"retentionInDays"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	if !slices.Contains(logsRetentionDays, in.RetentionInDays) {
		return nil, logsInvalid("1 validation error detected: Value '%d' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: %v", in.RetentionInDays, logsRetentionDays)
	}
	g, err := s.group(in.LogGroupName)
	if err != nil {
		return nil, err
	}
	g.retentionDays = in.RetentionInDays
	return nil, nil
}

func (s *logsService) deleteRetentionPolicy(region string, body []byte) (any, *logsError) {
	g, err := s.groupIn(body)
	if err != nil {
		return nil, err
	}
	g.retentionDays = 0
	return nil, nil
}

func (s *logsService) tagResource(region string, body []byte) (any, *logsError) {
	var in struct {
		ResourceArn string            `json:"resourceArn"`
		Tags        map[string]string `json:"tags"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	g, err := s.groupByARN(in.ResourceArn)
	if err != nil {
		return nil, err
	}
	merged := map[string]string{}
	for k, v := range g.tags {
		merged[k] = v
	}
	for k, v := range in.Tags {
		merged[k] = v
	}
	if err := logsValidateTags(merged); err != nil {
		return nil, err
	}
	g.tags = merged
	return nil, nil
}

func (s *logsService) untagResource(region string, body []byte) (any, *logsError) {
	var in struct {
		ResourceArn string   `json:"resourceArn"`
		TagKeys     []string `json:"tagKeys"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	g, err := s.groupByARN(in.ResourceArn)
	if err != nil {
		return nil, err
	}
	for _, k := range in.TagKeys {
		delete(g.tags, k)
	}
	return nil, nil
}

func (s *logsService) listTagsForResource(region string, body []byte) (any, *logsError) {
	var in struct {
		ResourceArn string `json:"resourceArn"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	g, err := s.groupByARN(in.ResourceArn)
	if err != nil {
		return nil, err
	}
	tags := map[string]string{}
	for k, v := range g.tags {
		tags[k] = v
	}
	return map[string]any{"tags": tags}, nil
}

func (s *logsService) createLogStream(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupName  string `json:"logGroupName"`
		LogStreamName string `json:"logStreamName"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	if !logsStreamNameRE.MatchString(in.LogStreamName) {
		return nil, logsInvalid("1 validation error detected: Value '%s' at 'logStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]*", in.LogStreamName)
	}
	g, err := s.group(in.LogGroupName)
	if err != nil {
		return nil, err
	}
	if _, ok := g.streams[in.LogStreamName]; ok {
		return nil, logsErr("ResourceAlreadyExistsException", "The specified log stream already exists")
	}
	g.streams[in.LogStreamName] = &logsStream{name: in.LogStreamName, created: s.now()}
	return nil, nil
}

func (s *logsService) stream(groupName, groupIdentifier, streamName string) (*logsGroup, *logsStream, *logsError) {
	g, err := s.groupByIdentifier(groupName, groupIdentifier)
	if err != nil {
		return nil, nil, err
	}
	if streamName == "" {
		return nil, nil, logsInvalid("1 validation error detected: Value null at 'logStreamName' failed to satisfy constraint: Member must not be null")
	}
	st, ok := g.streams[streamName]
	if !ok {
		return nil, nil, logsErr("ResourceNotFoundException", "The specified log stream does not exist.")
	}
	return g, st, nil
}

func (s *logsService) deleteLogStream(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupName  string `json:"logGroupName"`
		LogStreamName string `json:"logStreamName"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	g, st, err := s.stream(in.LogGroupName, "", in.LogStreamName)
	if err != nil {
		return nil, err
	}
	delete(g.streams, st.name)
	return nil, nil
}

func (s *logsService) describeLogStreams(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupName        string `json:"logGroupName"`
		LogGroupIdentifier  string `json:"logGroupIdentifier"`
		LogStreamNamePrefix string `json:"logStreamNamePrefix"`
		OrderBy             string `json:"orderBy"`
		Descending          bool   `json:"descending"`
		NextToken           string `json:"nextToken"`
		Limit               int    `json:"limit"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	if in.OrderBy == "LastEventTime" && in.LogStreamNamePrefix != "" {
		return nil, logsInvalid("Cannot order by LastEventTime with a logStreamNamePrefix.")
	}
	if in.OrderBy != "" && in.OrderBy != "LogStreamName" && in.OrderBy != "LastEventTime" {
		return nil, logsInvalid("Invalid orderBy %s", in.OrderBy)
	}
	g, err := s.groupByIdentifier(in.LogGroupName, in.LogGroupIdentifier)
	if err != nil {
		return nil, err
	}
	var streams []*logsStream
	for _, st := range g.streams {
		if strings.HasPrefix(st.name, in.LogStreamNamePrefix) {
			streams = append(streams, st)
		}
	}
	lastEvent := func(st *logsStream) int64 {
		if len(st.events) == 0 {
			return 0
		}
		return st.events[len(st.events)-1].Timestamp
	}
	slices.SortFunc(streams, func(a, b *logsStream) int {
		c := 0
		if in.OrderBy == "LastEventTime" {
			c = int(min(max(lastEvent(a)-lastEvent(b), -1), 1))
		}
		if c == 0 {
			c = strings.Compare(a.name, b.name)
		}
		if in.Descending {
			c = -c
		}
		return c
	})
	start, end, next, err := logsPage(in.NextToken, in.Limit, 50, len(streams))
	if err != nil {
		return nil, err
	}
	type streamJSON struct {
		LogStreamName       string `json:"logStreamName"`
		CreationTime        int64  `json:"creationTime"`
		FirstEventTimestamp *int64 `json:"firstEventTimestamp,omitempty"`
		LastEventTimestamp  *int64 `json:"lastEventTimestamp,omitempty"`
		LastIngestionTime   *int64 `json:"lastIngestionTime,omitempty"`
		UploadSequenceToken string `json:"uploadSequenceToken"`
		Arn                 string `json:"arn"`
		StoredBytes         int64  `json:"storedBytes"`
	}
	out := struct {
		LogStreams []streamJSON `json:"logStreams"`
		NextToken  string       `json:"nextToken,omitempty"`
	}{LogStreams: []streamJSON{}, NextToken: next}
	for _, st := range streams[start:end] {
		j := streamJSON{
			LogStreamName: st.name, CreationTime: logsMillis(st.created),
			UploadSequenceToken: logsSequenceToken(st.seq),
			Arn:                 g.arn() + ":log-stream:" + st.name,
		}
		if n := len(st.events); n > 0 {
			first, last, ing := st.events[0].Timestamp, st.events[n-1].Timestamp, logsMillis(st.lastIngestion)
			j.FirstEventTimestamp, j.LastEventTimestamp, j.LastIngestionTime = &first, &last, &ing
		}
		out.LogStreams = append(out.LogStreams, j)
	}
	return out, nil
}

func logsSequenceToken(seq int64) string {
	return fmt.Sprintf("%056d", seq+1)
}

func (s *logsService) putLogEvents(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupName  string `json:"logGroupName"`
		LogStreamName string `json:"logStreamName"`
		LogEvents     []struct {
			Timestamp *int64  `json:"timestamp"`
			Message   *string `json:"message"`
		} `json:"logEvents"`
		SequenceToken string `json:"sequenceToken"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	if len(in.LogEvents) == 0 || len(in.LogEvents) > 10000 {
		return nil, logsInvalid("1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length between 1 and 10000")
	}
	g, st, err := s.stream(in.LogGroupName, "", in.LogStreamName)
	if err != nil {
		return nil, err
	}
	// Sequence tokens are ignored, as they are by the real service now.
	now := s.now()
	nowMs := logsMillis(now)
	type rejectedJSON struct {
		TooNewLogEventStartIndex *int `json:"tooNewLogEventStartIndex,omitempty"`
		TooOldLogEventEndIndex   *int `json:"tooOldLogEventEndIndex,omitempty"`
		ExpiredLogEventEndIndex  *int `json:"expiredLogEventEndIndex,omitempty"`
	}
	var rejected rejectedJSON
	var batch []logsEvent
	var size int
	prev := int64(-1 << 62)
	for i, ev := range in.LogEvents {
		if ev.Timestamp == nil || ev.Message == nil {
			return nil, logsInvalid("1 validation error detected: Value null at 'logEvents.%d.member' failed to satisfy constraint: Member must not be null", i+1)
		}
		if *ev.Timestamp < prev {
			return nil, logsInvalid("Log events in a single PutLogEvents request must be in chronological order.")
		}
		prev = *ev.Timestamp
		size += len(*ev.Message) + 26
		switch {
		case *ev.Timestamp > nowMs+2*3600*1000:
			if rejected.TooNewLogEventStartIndex == nil {
				idx := i
				rejected.TooNewLogEventStartIndex = &idx
			}
			continue
		case *ev.Timestamp < nowMs-14*24*3600*1000:
			idx := i
			rejected.TooOldLogEventEndIndex = &idx
			continue
		case g.retentionDays != 0 && *ev.Timestamp < nowMs-int64(g.retentionDays)*24*3600*1000:
			idx := i
			rejected.ExpiredLogEventEndIndex = &idx
			continue
		}
		batch = append(batch, logsEvent{Timestamp: *ev.Timestamp, Message: *ev.Message, IngestionTime: nowMs})
	}
	if size > 1048576 {
		return nil, logsInvalid("Upload too large: %d bytes exceeds limit of 1048576", size)
	}
	if len(batch) > 0 {
		st.events = append(st.events, batch...)
		// Keep events ordered by timestamp across batches.
		slices.SortStableFunc(st.events, func(a, b logsEvent) int {
			return int(min(max(a.Timestamp-b.Timestamp, -1), 1))
		})
		st.lastIngestion = now
		for _, ev := range batch {
			g.storedBytesSum += int64(len(ev.Message))
		}
	}
	st.seq++
	out := map[string]any{"nextSequenceToken": logsSequenceToken(st.seq)}
	if rejected != (rejectedJSON{}) {
		out["rejectedLogEventsInfo"] = rejected
	}
	return out, nil
}

func (s *logsService) getLogEvents(region string, body []byte) (any, *logsError) {
	var in struct {
		LogGroupName       string `json:"logGroupName"`
		LogGroupIdentifier string `json:"logGroupIdentifier"`
		LogStreamName      string `json:"logStreamName"`
		StartTime          *int64 `json:"startTime"`
		EndTime            *int64 `json:"endTime"`
		NextToken          string `json:"nextToken"`
		Limit              int    `json:"limit"`
		StartFromHead      bool   `json:"startFromHead"`
	}
	if err := logsDecode(body, &in); err != nil {
		return nil, err
	}
	_, st, err := s.stream(in.LogGroupName, in.LogGroupIdentifier, in.LogStreamName)
	if err != nil {
		return nil, err
	}
	limit := in.Limit
	if limit == 0 {
		limit = 10000
	}
	if limit < 0 || limit > 10000 {
		return nil, logsInvalid("1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 10000", limit)
	}
	// Select the events in [startTime, endTime).
	var events []logsEvent
	for _, ev := range st.events {
		if in.StartTime != nil && ev.Timestamp < *in.StartTime {
			continue
		}
		if in.EndTime != nil && ev.Timestamp >= *in.EndTime {
			continue
		}
		events = append(events, ev)
	}
	// Tokens are "f/<n>" (read forward from index n) and "b/<n>" (read
	// backward ending before index n), relative to the selection.
	n := len(events)
	var start, end int
	switch {
	case in.NextToken != "":
		dir, idx, ok := strings.Cut(in.NextToken, "/")
		pos, perr := strconv.Atoi(idx)
		if !ok || perr != nil || pos < 0 || pos > n || (dir != "f" && dir != "b") {
			return nil, logsInvalid("The specified nextToken is invalid.")
		}
		if dir == "f" {
			start, end = pos, min(pos+limit, n)
		} else {
			start, end = max(pos-limit, 0), pos
		}
	case in.StartFromHead:
		start, end = 0, min(limit, n)
	default:
		start, end = max(n-limit, 0), n
	}
	page := slices.Clone(events[start:end])
	if page == nil {
		page = []logsEvent{}
	}
	return map[string]any{
		"events":            page,
		"nextForwardToken":  "f/" + strconv.Itoa(end),
		"nextBackwardToken": "b/" + strconv.Itoa(start),
	}, nil
}
