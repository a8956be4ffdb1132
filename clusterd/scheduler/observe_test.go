package scheduler

import (
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/unitstore"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	latencies []time.Duration
	failovers int
}

func (r *recorder) Placed(d time.Duration) { r.latencies = append(r.latencies, d) }
func (r *recorder) FailedOver(n int)       { r.failovers += n }

// apply writes a plan into the snapshot, as the engine's write does.
func apply(snap *unitstore.Snapshot, p *plan) {
	snap.Assigned = p.assign
}

func TestTrackerPlacementsAndFailovers(t *testing.T) {
	rec := &recorder{}
	tr := newTracker(rec)
	ms := machines(3, nil)
	snap := snapshot(t, map[string]string{"hello@1.service": hello, "hello@2.service": hello})

	// First pass: both units are placed; their clock started at the wake.
	woke := time.Now()
	tr.woke(woke)
	p := decide(snap, ms, nil)
	tr.decided(snap, p, nil)
	tr.written(woke.Add(40 * time.Millisecond))
	if len(rec.latencies) != 2 || rec.latencies[0] != 40*time.Millisecond || rec.failovers != 0 {
		t.Fatalf("first pass: latencies %v, failovers %d; want two of 40ms and none", rec.latencies, rec.failovers)
	}
	apply(snap, p)

	// A pass that changes nothing places nothing.
	tr.woke(time.Now())
	tr.decided(snap, decide(snap, ms, nil), nil)
	tr.written(time.Now())
	if len(rec.latencies) != 2 {
		t.Fatalf("an idle pass observed placements: %v", rec.latencies)
	}

	// A machine is lost and its grace period is over: its unit moves,
	// one failover; the unit that stayed is not counted.
	lost := placed(p)["hello@1.service"]
	var live = ms[:0:0]
	for _, m := range ms {
		if m.ID != lost {
			live = append(live, m)
		}
	}
	dead := map[string]bool{lost: true}
	tr.woke(time.Now())
	p2 := decide(snap, live, dead)
	tr.decided(snap, p2, dead)
	tr.written(time.Now())
	if rec.failovers != 1 || len(rec.latencies) != 3 {
		t.Fatalf("after losing %s: failovers %d, latencies %v; want 1 failover and a third placement", lost, rec.failovers, rec.latencies)
	}
	if placed(p2)["hello@1.service"] == lost {
		t.Fatal("the unit stayed on the lost machine")
	}

	// Without an observer the tracker does nothing (and does not panic).
	quiet := newTracker(nil)
	quiet.woke(time.Now())
	quiet.decided(snap, p2, dead)
	quiet.written(time.Now())
}
