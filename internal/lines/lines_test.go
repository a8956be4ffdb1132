package lines

import (
	"slices"
	"strings"
	"testing"
)

func TestWriter(t *testing.T) {
	var got []string
	w := &Writer{Line: func(s string) { got = append(got, s) }}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\r\nthree"))
	if !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("got %q", got)
	}
	w.Flush()
	w.Flush()
	w.Write([]byte(strings.Repeat("x", maxLine+1)))
	if len(got) != 4 || got[2] != "three" || len(got[3]) != maxLine+1 {
		t.Fatalf("after flush and a long line: %d lines, %q", len(got), got[:3])
	}
}
