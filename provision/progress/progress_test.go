package progress

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Piped, every change of status is one line, in order; a repeat is not.
func TestPlainLines(t *testing.T) {
	var b bytes.Buffer
	d := New(&b, false)
	d.Set("node core-1", "creating", "")
	d.Set("node core-2", "creating", "")
	d.Set("node core-1", "creating", "")
	d.Set("node core-1", "joined", "10.77.0.11")
	d.Printf("network ready\n")
	got := regexp.MustCompile(`\(\s*\d+\.\ds\)`).ReplaceAllString(b.String(), "(T)")
	want := "  node core-1            creating  (T)\n" +
		"  node core-2            creating  (T)\n" +
		"  node core-1            joined    (T)  10.77.0.11\n" +
		"network ready\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// On a terminal the block of items is redrawn in place: each redraw moves
// up over the lines drawn before, and a note printed in between stays.
func TestLiveRedraw(t *testing.T) {
	var b bytes.Buffer
	d := New(&b, true)
	d.Set("a", "creating", "")
	d.Set("b", "creating", "")
	d.Printf("note\n")
	d.Set("a", "joined", "")
	out := b.String()
	for _, want := range []string{"\x1b[1A\x1b[J", "\x1b[2A\x1b[Jnote\n", "\x1b[2A\x1b[J  a "} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in %q", want, out)
		}
	}
	if last := out[strings.LastIndex(out, "\x1b[J")+3:]; !strings.Contains(last, "joined") || !strings.Contains(last, "  b ") {
		t.Errorf("last redraw is not the whole block: %q", last)
	}
}

// Parallel steps report at once without tearing lines.
func TestConcurrentSet(t *testing.T) {
	var b bytes.Buffer
	d := New(&b, false)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				d.Set(string(rune('a'+i)), "creating", "")
				d.Set(string(rune('a'+i)), "booting", "")
			}
		})
	}
	wg.Wait()
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		if !regexp.MustCompile(`^  [a-h] +(creating|booting) +\(\s*\d+\.\ds\)$`).MatchString(l) {
			t.Fatalf("torn line %q", l)
		}
	}
}
