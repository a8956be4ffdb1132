package logship

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestBatchLimits checks that batches keep to PutLogEvents' limits: event
// count, bytes with the per-event overhead, and the 24-hour span.
func TestBatchLimits(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		fill func(st *stream)
		want int
	}{
		{"count", func(st *stream) {
			for range MaxBatchEvents + 5 {
				st.appendLocked(t0, "x")
			}
		}, MaxBatchEvents},
		{"bytes", func(st *stream) {
			// 1000-byte messages cost 1026 bytes each: 1021 fit in 1 MiB.
			for range 2000 {
				st.appendLocked(t0, strings.Repeat("y", 1000))
			}
		}, MaxBatchBytes / (1000 + EventOverhead)},
		{"span", func(st *stream) {
			st.appendLocked(t0, "a")
			st.appendLocked(t0.Add(23*time.Hour), "b")
			st.appendLocked(t0.Add(25*time.Hour), "c")
		}, 2},
		{"all", func(st *stream) {
			st.appendLocked(t0, "a")
		}, 1},
	}
	for _, c := range cases {
		st := &stream{}
		c.fill(st)
		if got := len(st.batchLocked()); got != c.want {
			t.Errorf("%s: batch of %d events, want %d", c.name, got, c.want)
		}
	}
}

// TestTimesNeverGoBackwards: a batch must be in time order, so a line
// stamped a little earlier than the one before it takes that one's time.
func TestTimesNeverGoBackwards(t *testing.T) {
	st := &stream{}
	t0 := time.Now()
	st.appendLocked(t0, "a")
	st.appendLocked(t0.Add(-time.Millisecond), "b")
	st.appendLocked(t0.Add(time.Millisecond), "c")
	if !st.queue[1].Time.Equal(t0) || !st.queue[2].Time.Equal(t0.Add(time.Millisecond)) {
		t.Errorf("times %v, %v, %v", st.queue[0].Time, st.queue[1].Time, st.queue[2].Time)
	}
}

func TestParseDestination(t *testing.T) {
	for _, c := range []struct{ in, kind, target, err string }{
		{"cloudwatch", CloudWatch, "/corral/prod", ""},
		{"cloudwatch:/my/group", CloudWatch, "/my/group", ""},
		{"cloudwatch:bad group", "", "", "CloudWatch Logs group name"},
		{"file:/var/log/corral/", File, "/var/log/corral", ""},
		{"file:relative", "", "", "absolute directory"},
		{"syslog", "", "", `want "cloudwatch"`},
	} {
		kind, target, err := ParseDestination(c.in, "prod")
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want one containing %q", c.in, err, c.err)
		case c.err == "" && (err != nil || kind != c.kind || target != c.target):
			t.Errorf("%q: got %q %q %v, want %q %q", c.in, kind, target, err, c.kind, c.target)
		}
	}
}

// discard is a sink that stores nothing.
type discard struct{}

func (discard) Ship(context.Context, string, []Event) error { return nil }
func (discard) Close() error                                { return nil }
func (discard) String() string                              { return "discard" }

// BenchmarkAdd is what a producer pays per line (clusterd's log, the
// units' reader), the worker shipping in batches beside it.
func BenchmarkAdd(b *testing.B) {
	sh := New(discard{}, Options{Flush: 10 * time.Millisecond, QueueLines: 1 << 20, QueueBytes: 1 << 30})
	defer sh.Close()
	msg := strings.Repeat("y", 100)
	for b.Loop() {
		sh.Add("s", time.Now(), msg)
	}
	b.ReportMetric(float64(sh.Dropped()["s"]), "dropped")
}
