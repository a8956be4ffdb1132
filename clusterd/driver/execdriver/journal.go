package execdriver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// Units' output goes through a logger process rather than through a pipe
// that clusterd reads. A unit outlives clusterd (see the package
// documentation); if clusterd held the read end of its stdout, the unit's
// next write after clusterd died would raise SIGPIPE and kill it. The
// logger is this same binary, re-executed under another name by
// /proc/self/exe: it runs in a session of its own, reads the pipe that
// every command of one unit activation writes to, stamps each line with
// the time and appends it to <dir>/<unit>.log. It exits when the last
// writer closes the pipe, i.e. when the unit's processes and the
// activation are gone, whichever comes later.

// loggerArg0 is the argv[0] under which the binary acts as a logger.
const loggerArg0 = "corral-execdriver-logger"

// maxJournalSize is the size at which a journal is rotated to <unit>.log.1
// (one old generation is kept), so that a chatty unit cannot fill the disk.
const maxJournalSize = 16 << 20

// timeFormat prefixes every journal line.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

// maxLine is the longest line kept whole; longer ones are split, as
// journald splits them.
const maxLine = 64 << 10

func init() {
	// Any binary that links this package (clusterd, its tests) can serve as
	// the logger. Nothing else runs with this argv[0].
	if len(os.Args) == 2 && os.Args[0] == loggerArg0 {
		os.Exit(runLogger(os.Args[1], os.Stdin))
	}
}

// runLogger copies r to the journal at path, line by line.
func runLogger(path string, r io.Reader) int {
	// The logger must outlive terminals and clusterd; only an explicit
	// SIGTERM or SIGKILL, or the end of its input, stops it.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	j := &journalFile{path: path, max: maxJournalSize, tee: teeFor(path)}
	defer j.close()
	if err := copyLines(r, j); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", loggerArg0, err)
		return 1
	}
	return 0
}

// copyLines reads lines from r and writes each to j.
func copyLines(r io.Reader, j *journalFile) error {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if werr := j.writeLine(bytes.TrimSuffix(line, []byte{'\n'})); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// journalFile appends stamped lines to a journal, rotating it when it grows
// past max.
type journalFile struct {
	path string
	max  int64
	f    *os.File
	size int64
	buf  []byte
	// tee offers each line to clusterd's log shipper; it never blocks.
	tee func(t time.Time, line []byte)
}

func (j *journalFile) open() error {
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	j.f, j.size = f, st.Size()
	return nil
}

// writeLine writes one line with one write(2), so that lines from several
// writers (two loggers across a clusterd restart, the driver's own
// messages) never interleave within a line.
func (j *journalFile) writeLine(line []byte) error {
	if j.f == nil {
		if err := j.open(); err != nil {
			return err
		}
	}
	now := time.Now()
	j.buf = append(j.buf[:0], now.Format(timeFormat)...)
	j.buf = append(j.buf, ' ')
	j.buf = append(j.buf, line...)
	j.buf = append(j.buf, '\n')
	n, err := j.f.Write(j.buf)
	j.size += int64(n)
	if err != nil {
		return err
	}
	if j.tee != nil {
		j.tee(now, line)
	}
	if j.max > 0 && j.size > j.max {
		j.rotate()
	}
	return nil
}

// rotate moves the journal to path.1 unless another writer already has,
// and reopens it.
func (j *journalFile) rotate() {
	if cur, err := os.Stat(j.path); err == nil {
		if mine, err := j.f.Stat(); err == nil && os.SameFile(cur, mine) {
			os.Rename(j.path, j.path+".1")
		}
	}
	j.f.Close()
	j.f = nil
}

func (j *journalFile) close() {
	if j.f != nil {
		j.f.Close()
	}
}

// appendJournal writes one stamped line to the journal at path: the
// driver's own messages ("Main process exited …"), as systemd puts its own
// in a unit's journal.
func appendJournal(path, msg string) error {
	j := &journalFile{path: path, tee: teeFor(path)}
	defer j.close()
	return j.writeLine([]byte(msg))
}

// logPipe is the write end of a logger's input, shared by every command of
// one activation.
type logPipe struct {
	w    *os.File
	done chan struct{} // closed when the logger has exited; nil if there is no logger
}

// startLogger starts a logger for the journal at path. If the logger cannot
// be started (no /proc, say), output is appended to the journal directly,
// without timestamps, rather than lost.
func startLogger(path string) (*logPipe, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{loggerArg0, path},
		Stdin:       r,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	c.Env = []string{}
	// TZ for the timestamps; GORACE so that a race-enabled build (tests)
	// can tell the logger not to linger a second at exit.
	for _, k := range []string{"TZ", "GORACE"} {
		if v, ok := os.LookupEnv(k); ok {
			c.Env = append(c.Env, k+"="+v)
		}
	}
	err = c.Start()
	r.Close()
	if err != nil {
		w.Close()
		f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if ferr != nil {
			return nil, errors.Join(err, ferr)
		}
		return &logPipe{w: f}, nil
	}
	lp := &logPipe{w: w, done: make(chan struct{})}
	go func() {
		c.Wait()
		close(lp.done)
	}()
	return lp, nil
}

// close closes the activation's end of the pipe and gives the logger a
// moment to write what it has, so that a journal read right after a unit
// stops holds its last words. A unit process that escaped its group may
// keep the pipe open; the logger then lives on and the wait is cut short.
func (lp *logPipe) close() {
	lp.w.Close()
	if lp.done == nil {
		return
	}
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-lp.done:
	case <-t.C:
	}
}

// Journal writes the unit's last lines (all of them if lines < 0, none if
// 0) to w and, if follow, everything appended after them until ctx ends,
// when it returns nil. The journal outlives the unit: a stopped unit's
// journal can still be read.
func (d *Driver) Journal(ctx context.Context, name string, lines int, follow bool, w io.Writer) error {
	if err := checkName(name); err != nil {
		return err
	}
	path := d.journalPath(name)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		d.mu.Lock()
		_, known := d.units[name]
		d.mu.Unlock()
		if !known {
			return fmt.Errorf("execdriver: no journal for unit %s: it has never run here", name)
		}
		// Known but silent so far: there is nothing to show yet.
		if f, err = os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o640); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	defer func() { f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	end := st.Size()
	if lines != 0 {
		if err := writeTail(path, f, end, lines, w); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	return followJournal(ctx, path, f, end, w)
}

// writeTail writes the last n lines (all if n < 0) of the journal whose
// current file f is end bytes long, reaching into the rotated path.1 when
// the current file holds fewer.
func writeTail(path string, f *os.File, end int64, n int, w io.Writer) error {
	off, found, err := tailOffset(f, end, n)
	if err != nil {
		return err
	}
	if n < 0 || found < n {
		if old, err := os.Open(path + ".1"); err == nil {
			st, err := old.Stat()
			if err == nil {
				rest := -1
				if n >= 0 {
					rest = n - found
				}
				var oldOff int64
				if oldOff, _, err = tailOffset(old, st.Size(), rest); err == nil {
					_, err = io.Copy(w, io.NewSectionReader(old, oldOff, st.Size()-oldOff))
				}
			}
			old.Close()
			if err != nil {
				return err
			}
		}
	}
	_, err = io.Copy(w, io.NewSectionReader(f, off, end-off))
	return err
}

// tailOffset finds where the last n lines of f[:end] start (0 if n < 0),
// reading backwards in blocks, and how many lines it found there.
func tailOffset(f *os.File, end int64, n int) (int64, int, error) {
	if n < 0 || end == 0 {
		return 0, 0, nil
	}
	const block = 32 << 10
	buf := make([]byte, block)
	found := 0
	for pos := end; pos > 0; {
		size := min(int64(block), pos)
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil && !errors.Is(err, io.EOF) {
			return 0, 0, err
		}
		for i := size - 1; i >= 0; i-- {
			// A newline starts the line after it; the final one ends the
			// last line and starts nothing.
			if buf[i] != '\n' || pos+i == end-1 {
				continue
			}
			if found++; found == n {
				return pos + i + 1, found, nil
			}
		}
	}
	return 0, found + 1, nil // the first line has no newline before it
}

// followPoll is how often a followed journal is checked for new lines.
// Appends come from other processes (the loggers), so there is no event in
// this process to wait for; tail -F polls too when it cannot use inotify.
const followPoll = 100 * time.Millisecond

// followJournal copies what is appended to the journal after off, whole
// lines only, until ctx ends; it follows the journal across rotation.
func followJournal(ctx context.Context, path string, f *os.File, off int64, w io.Writer) error {
	t := time.NewTicker(followPoll)
	defer t.Stop()
	buf := make([]byte, 64<<10)
	var pending []byte
	cur := f
	defer func() {
		if cur != f {
			cur.Close()
		}
	}()
	for {
		// Copy whatever is there now.
		for {
			n, err := cur.ReadAt(buf, off)
			if n > 0 {
				off += int64(n)
				pending = append(pending, buf[:n]...)
				if i := bytes.LastIndexByte(pending, '\n'); i >= 0 {
					if _, werr := w.Write(pending[:i+1]); werr != nil {
						return werr
					}
					pending = append(pending[:0], pending[i+1:]...)
				}
			}
			if err != nil || n < len(buf) {
				break
			}
		}
		// Rotated? The old file is drained above; carry on with the new one.
		if st, err := os.Stat(path); err == nil {
			if mine, err := cur.Stat(); err == nil && !os.SameFile(st, mine) {
				if nf, err := os.Open(path); err == nil {
					if cur != f {
						cur.Close()
					}
					cur, off = nf, 0
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
