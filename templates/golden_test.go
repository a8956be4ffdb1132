package templates

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestGolden pins the rendered bytes of every fixture in both formats, so a
// change to what nodes boot with shows up as a reviewed diff.
func TestGolden(t *testing.T) {
	nodes := fixtures(t)
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		for _, f := range []Format{FormatIgnition, FormatCloudConfig} {
			t.Run(name+"/"+string(f), func(t *testing.T) {
				got, err := Render(nodes[name], f)
				if err != nil {
					t.Fatal(err)
				}
				golden := filepath.Join("testdata", name+"."+string(f)+".golden")
				if *update {
					if err := os.WriteFile(golden, got, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./templates -update to create it)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from the rendered output; if the change is meant, run go test ./templates -update and review the diff\ngot:\n%s", golden, got)
				}
			})
		}
	}
}

// TestDeterministic renders each fixture repeatedly (map iteration order
// differs from run to run in Go) and from a copy with the same contents.
func TestDeterministic(t *testing.T) {
	for name, n := range fixtures(t) {
		for _, f := range []Format{FormatIgnition, FormatCloudConfig} {
			first, err := Render(n, f)
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				again, err := Render(fixtures(t)[name], f)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(first, again) {
					t.Fatalf("%s/%s: two renders of the same node differ", name, f)
				}
			}
		}
	}
}
