package scheduler

import (
	"time"

	"github.com/corral-dev/corral/clusterd/unitstore"
)

// Observer is told what the engine does, for clusterd's metrics.
type Observer interface {
	// Placed reports one unit's scheduling latency: from the engine
	// seeing it want a machine (and one fit it) to its assignment being
	// written.
	Placed(latency time.Duration)
	// FailedOver reports units moved off lost machines by one pass.
	FailedOver(units int)
}

// tracker measures, across the passes of one leadership term, how long
// units wait for a machine. A unit's clock starts at the wake-up of the
// pass that first finds a machine for it: the change that made it
// schedulable (its start, a machine joining, a grace period ending) woke
// that pass. A unit that fits nowhere has no clock: it is not schedulable.
type tracker struct {
	obs  Observer
	wake time.Time // when the current pass was woken
	// placed are the units the last decided plan places anew, with when
	// their clock started; failovers, how many of them leave lost machines.
	placed    map[string]time.Time
	failovers int
}

func newTracker(obs Observer) *tracker { return &tracker{obs: obs} }

// woke records when a pass was woken (a change arrived, or a timer fired).
func (t *tracker) woke(now time.Time) { t.wake = now }

// decided notes which units the plan places that hold no assignment on a
// live machine now, and which of them leave a lost machine (dead).
func (t *tracker) decided(snap *unitstore.Snapshot, p *plan, dead map[string]bool) {
	if t.obs == nil {
		return
	}
	t.placed, t.failovers = map[string]time.Time{}, 0
	for _, units := range p.assign {
		for name := range units {
			if t.heldLive(snap, name, dead) {
				continue
			}
			t.placed[name] = t.wake
			if t.heldBy(snap, name, dead) {
				t.failovers++
			}
		}
	}
}

// heldLive reports whether a live machine (one not in dead) holds name.
func (t *tracker) heldLive(snap *unitstore.Snapshot, name string, dead map[string]bool) bool {
	for m, units := range snap.Assigned {
		if _, ok := units[name]; ok && !dead[m] {
			return true
		}
	}
	return false
}

// heldBy reports whether one of the dead machines holds name.
func (t *tracker) heldBy(snap *unitstore.Snapshot, name string, dead map[string]bool) bool {
	for m := range dead {
		if _, ok := snap.Assigned[m][name]; ok {
			return true
		}
	}
	return false
}

// written reports the placements of the plan that has just been written.
func (t *tracker) written(now time.Time) {
	if t.obs == nil {
		return
	}
	for _, since := range t.placed {
		t.obs.Placed(now.Sub(since))
	}
	if t.failovers > 0 {
		t.obs.FailedOver(t.failovers)
	}
	t.placed, t.failovers = nil, 0
}
