package netboot

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// consoleLog writes lines to the console and keeps the last ones for
// error reports.
type consoleLog struct {
	mu    sync.Mutex
	out   io.Writer
	lines []string
	max   int
}

func newConsoleLog(out io.Writer, max int) *consoleLog {
	return &consoleLog{out: out, max: max}
}

func (l *consoleLog) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.out, s)
	l.lines = append(l.lines, s)
	if len(l.lines) > l.max {
		l.lines = append(l.lines[:0], l.lines[len(l.lines)-l.max:]...)
	}
}

// Printf logs one line of the init's own.
func (l *consoleLog) Printf(format string, args ...any) {
	l.line(time.Now().UTC().Format("15:04:05.000") + " corral-init: " + fmt.Sprintf(format, args...))
}

// Tail is the last lines logged.
func (l *consoleLog) Tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}
