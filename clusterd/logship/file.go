package logship

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// FileSink writes each stream to <dir>/<stream>.log, one line per event:
// the event's time (RFC 3339, microseconds, UTC) and its message.
type FileSink struct {
	dir   string
	mu    sync.Mutex // guards files
	files map[string]*os.File
}

// NewFileSink returns a sink into dir, which it creates if need be.
func NewFileSink(dir string) (*FileSink, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("logship: file sink directory %q must be an absolute path", dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("logship: file sink: %w", err)
	}
	return &FileSink{dir: dir, files: map[string]*os.File{}}, nil
}

// Path is the file that holds stream.
func (f *FileSink) Path(stream string) string {
	return filepath.Join(f.dir, strings.ReplaceAll(stream, "/", "_")+".log")
}

// Ship appends events to the stream's file with one write, so a batch is
// never half there after a crash of the shipper alone.
func (f *FileSink) Ship(_ context.Context, stream string, events []Event) error {
	file, err := f.open(stream)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, ev := range events {
		b.WriteString(ev.Time.UTC().Format(TimeFormat))
		b.WriteByte(' ')
		b.WriteString(ev.Message)
		b.WriteByte('\n')
	}
	if _, err := file.WriteString(b.String()); err != nil {
		// Reopen next time: the file may have been removed or replaced.
		f.mu.Lock()
		delete(f.files, stream)
		f.mu.Unlock()
		file.Close()
		return fmt.Errorf("logship: writing %s: %w", file.Name(), err)
	}
	return nil
}

// TimeFormat starts every line of the file sink.
const TimeFormat = "2006-01-02T15:04:05.000000Z07:00"

func (f *FileSink) open(stream string) (*os.File, error) {
	f.mu.Lock()
	file := f.files[stream]
	f.mu.Unlock()
	if file != nil {
		return file, nil
	}
	// Opened without the lock: on a FIFO, open waits for a reader, and
	// must not hold up the other streams.
	file, err := os.OpenFile(f.Path(stream), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("logship: file sink: %w", err)
	}
	f.mu.Lock()
	f.files[stream] = file
	f.mu.Unlock()
	return file, nil
}

// Close closes the open files.
func (f *FileSink) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, file := range f.files {
		file.Close()
		delete(f.files, name)
	}
	return nil
}

// String names the sink.
func (f *FileSink) String() string { return "file:" + f.dir }
