package scheduler

import (
	"fmt"
	"testing"

	"github.com/corral-dev/corral/clusterd/unitstore"
)

// BenchmarkDecide times one scheduling decision at the size of bench's
// target, 1,000 machines and 10,000 units (ten services, each of whose
// instances conflicts with the others): the first pass, with every unit
// to place, and a later pass, with every unit where the first put it.
func BenchmarkDecide(b *testing.B) {
	const nm, services = 1000, 10
	units := map[string]string{}
	for k := range services {
		tpl := fmt.Sprintf("[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nConflicts=svc%d@*\n", k)
		for i := 1; i <= nm; i++ {
			units[fmt.Sprintf("svc%d@%d.service", k, i)] = tpl
		}
	}
	ms := machines(nm, nil)
	b.Run("first", func(b *testing.B) {
		s := snapshot(b, units)
		for b.Loop() {
			if p := decide(s, ms, nil); len(p.placement) != len(units) {
				b.Fatalf("%d placements", len(p.placement))
			}
		}
	})
	b.Run("steady", func(b *testing.B) {
		s := snapshot(b, units)
		for m, as := range decide(s, ms, nil).assign {
			s.Assigned[m] = map[string]unitstore.Assignment{}
			for name, a := range as {
				s.Assigned[m][name] = a
			}
		}
		for b.Loop() {
			decide(s, ms, nil)
		}
	})
}
