// Package progress shows where a long run stands, item by item (a node:
// waiting, creating, booting, joined). On a terminal it keeps one line per
// item and redraws them in place; anywhere else (a pipe, a CI log) it
// prints one line per change of status, so the log reads as a history.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Display is one run's progress. It is safe for concurrent use: steps
// that run in parallel report to the same Display.
type Display struct {
	mu    sync.Mutex
	w     io.Writer
	live  bool // redraw in place
	start time.Time
	items []*item
	drawn int // lines drawn by the last redraw
}

type item struct {
	name, status, detail string
	at                   time.Duration
}

// New returns a Display writing to w, redrawing in place when live.
func New(w io.Writer, live bool) *Display {
	return &Display{w: w, live: live, start: time.Now()}
}

// IsTerminal reports whether w is a terminal that can take redraws (and
// colours): a character device that answers terminal ioctls, and TERM is
// not "dumb".
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Set gives an item its status (and a detail, such as an address or an
// error); the item is added on first use, in that order.
func (d *Display) Set(name, status, detail string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at := time.Since(d.start)
	var it *item
	for _, x := range d.items {
		if x.name == name {
			it = x
		}
	}
	if it == nil {
		it = &item{name: name}
		d.items = append(d.items, it)
	}
	if it.status == status && it.detail == detail {
		return
	}
	it.status, it.detail, it.at = status, detail, at
	if !d.live {
		fmt.Fprintln(d.w, line(it))
		return
	}
	d.redraw()
}

// Printf prints a line above the items (a note, a step that is not an
// item), keeping the items' block below it on a terminal.
func (d *Display) Printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live {
		d.erase()
	}
	fmt.Fprintf(d.w, format, args...)
	if d.live {
		d.drawn = 0
		d.redraw()
	}
}

// Done ends the display: the items' last lines stay, and nothing is
// redrawn after.
func (d *Display) Done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.items, d.drawn = nil, 0
}

func line(it *item) string {
	s := fmt.Sprintf("  %-22s %-9s (%4.1fs)", it.name, it.status, it.at.Seconds())
	if it.detail != "" {
		s += "  " + it.detail
	}
	return s
}

// erase moves the cursor to the top of the drawn block and clears it.
func (d *Display) erase() {
	if d.drawn > 0 {
		fmt.Fprintf(d.w, "\x1b[%dA\x1b[J", d.drawn)
	}
}

func (d *Display) redraw() {
	var b strings.Builder
	if d.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\x1b[J", d.drawn)
	}
	for _, it := range d.items {
		b.WriteString(line(it))
		b.WriteByte('\n')
	}
	io.WriteString(d.w, b.String())
	d.drawn = len(d.items)
}
