// Package lines turns a stream of writes into whole lines: the output of a
// child process, passed on a line at a time (to a log, with a prefix) so
// that lines of concurrent streams never mix mid-line.
package lines

import (
	"bytes"
	"sync"
)

// maxLine bounds what is held waiting for a newline: a longer line is
// passed on in pieces.
const maxLine = 64 << 10

// Writer is an io.Writer that calls Line with each whole line written to
// it, without its newline (or "\r\n"). It is safe for concurrent use.
type Writer struct {
	Line func(string)

	mu  sync.Mutex
	buf []byte
}

func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.Line(string(bytes.TrimRight(w.buf[:i], "\r")))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxLine {
		w.Line(string(w.buf))
		w.buf = nil
	}
	return len(p), nil
}

// Flush passes on what is left after the last newline, if anything.
func (w *Writer) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.Line(string(w.buf))
		w.buf = nil
	}
}
