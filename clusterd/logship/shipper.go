// Package logship ships the output of a machine's units, and clusterd's own
// log, off the machine: to a CloudWatch Logs group, or to files in a
// directory. Every stream (one per machine and unit, as the awslogs driver's
// awslogs-stream=%m-<unit> did) has a bounded in-memory queue that the
// producers append to without ever waiting; a worker per stream sends it to
// the sink in batches, once a second or as soon as a batch is full, and
// retries with backoff while the sink fails. When a queue is full, new lines
// are dropped and counted, and once the sink takes lines again a line
// "N lines dropped" marks the gap.
package logship

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"
)

// Event is one line of a stream.
type Event struct {
	Time    time.Time
	Message string
}

// Sink stores batches of events.
type Sink interface {
	// Ship stores events, in order, at the end of stream. An error means
	// the batch was not stored; the shipper sends it again later.
	Ship(ctx context.Context, stream string, events []Event) error
	// Close releases what the sink holds.
	Close() error
	// String names the destination, for logs.
	String() string
}

// Batch limits, CloudWatch's PutLogEvents limits: at most 10,000 events
// and 1 MiB, counting 26 bytes per event, spanning at most 24 hours. The
// file sink takes the same batches.
const (
	MaxBatchEvents = 10000
	MaxBatchBytes  = 1 << 20
	EventOverhead  = 26
	MaxBatchSpan   = 24 * time.Hour
	// MaxMessage bounds one event (CloudWatch's limit is 256 KiB including
	// the overhead); longer lines are cut.
	MaxMessage = 256<<10 - EventOverhead
)

// Defaults of Options.
const (
	DefaultQueueLines  = 10000
	DefaultQueueBytes  = 4 << 20
	DefaultFlush       = time.Second
	defaultMaxBackoff  = 30 * time.Second
	defaultShipTimeout = 30 * time.Second
)

// Options tunes a Shipper.
type Options struct {
	// QueueLines and QueueBytes bound each stream's queue (lines waiting
	// for the sink, including the batch being sent). Zero means the default.
	QueueLines int
	QueueBytes int
	// Flush is how long a line may wait for its batch to fill; default 1s.
	Flush time.Duration
	// MaxBackoff caps the wait between attempts while the sink fails.
	MaxBackoff time.Duration
	// ShipTimeout bounds one attempt, so a sink that stops answering
	// (a cut network) is seen as failing, and logged; default 30s.
	ShipTimeout time.Duration
	// Log receives the shipper's own messages (sink failures, drops).
	// It may be the log that a stream of this shipper carries.
	Log *slog.Logger
}

func (o *Options) defaults() {
	if o.QueueLines <= 0 {
		o.QueueLines = DefaultQueueLines
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.Flush <= 0 {
		o.Flush = DefaultFlush
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	if o.ShipTimeout <= 0 {
		o.ShipTimeout = defaultShipTimeout
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// Shipper sends streams of lines to a sink. Add never blocks; a Shipper
// without a sink (shipping is off) discards what it is given.
type Shipper struct {
	mu      sync.Mutex // guards the fields below
	opts    Options
	sink    Sink
	gen     int // counts SetSink calls, so a worker notices a switch
	streams map[string]*stream
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New returns a Shipper that sends to sink (nil: nothing yet). Call Close
// to flush and stop it.
func New(sink Sink, opts Options) *Shipper {
	opts.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Shipper{opts: opts, sink: sink, streams: map[string]*stream{}, ctx: ctx, cancel: cancel}
}

// stream is one stream's queue and counters.
type stream struct {
	name string
	wake chan struct{} // a full batch is waiting, or the sink changed

	mu      sync.Mutex // guards the fields below
	queue   []Event
	bytes   int
	last    time.Time // the newest event's time: times never go backwards
	gap     uint64    // lines dropped since the last marker was queued
	dropped uint64    // lines dropped, ever
	logged  uint64    // dropped, as last reported in the shipper's log
}

// Add appends a line to stream and returns at once: if the stream's queue
// is full, the line is dropped and counted. Times are made non-decreasing
// within a stream, since a sink needs each batch in time order and lines
// from several writers (the unit, the driver) may cross by a microsecond.
func (s *Shipper) Add(name string, t time.Time, msg string) {
	st := s.stream(name)
	if st == nil {
		return
	}
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	s.mu.Lock()
	lines, bytes := s.opts.QueueLines, s.opts.QueueBytes
	s.mu.Unlock()
	st.mu.Lock()
	full := false
	if len(st.queue) >= lines || st.bytes+len(msg) > bytes {
		st.gap++
		st.dropped++
	} else {
		st.markGapLocked(t)
		st.appendLocked(t, msg)
		full = len(st.queue) >= MaxBatchEvents || st.bytes+len(st.queue)*EventOverhead >= MaxBatchBytes
	}
	st.mu.Unlock()
	if full {
		st.poke()
	}
}

// AddDropped counts n lines of stream that were dropped before they
// reached the shipper (a logger's socket was full).
func (s *Shipper) AddDropped(name string, n uint64) {
	if st := s.stream(name); st != nil && n > 0 {
		st.mu.Lock()
		st.gap += n
		st.dropped += n
		st.mu.Unlock()
	}
}

func (st *stream) appendLocked(t time.Time, msg string) {
	if t.Before(st.last) {
		t = st.last
	}
	st.last = t
	st.queue = append(st.queue, Event{Time: t, Message: msg})
	st.bytes += len(msg)
}

// markGapLocked queues the "N lines dropped" line once there is room again
// after drops, where the gap is. It may take the queue one line past its
// bound: the marker is what tells a reader that lines are missing.
func (st *stream) markGapLocked(t time.Time) {
	if st.gap == 0 {
		return
	}
	st.appendLocked(t, DroppedMessage(st.gap))
	st.gap = 0
}

// DroppedMessage is the line that stands for n dropped lines.
func DroppedMessage(n uint64) string {
	return fmt.Sprintf("corral logship: %d lines dropped (the log queue was full)", n)
}

func (st *stream) poke() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// stream returns the named stream, starting its worker the first time, or
// nil when there is no sink.
func (s *Shipper) stream(name string) *stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sink == nil || s.ctx.Err() != nil {
		return nil
	}
	st, ok := s.streams[name]
	if !ok {
		st = &stream{name: name, wake: make(chan struct{}, 1)}
		s.streams[name] = st
		s.wg.Add(1)
		go s.work(st)
	}
	return st
}

// Dropped returns, by stream name, how many lines each stream has dropped
// since clusterd started (for metrics; counters only grow).
func (s *Shipper) Dropped() map[string]uint64 {
	s.mu.Lock()
	streams := maps.Clone(s.streams)
	s.mu.Unlock()
	out := make(map[string]uint64, len(streams))
	for name, st := range streams {
		st.mu.Lock()
		out[name] = st.dropped
		st.mu.Unlock()
	}
	return out
}

// Queued returns how many lines stream holds, waiting for the sink.
func (s *Shipper) Queued(name string) int {
	s.mu.Lock()
	st := s.streams[name]
	s.mu.Unlock()
	if st == nil {
		return 0
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.queue)
}

// SetSink switches to sink (nil: stop shipping), and the queue bounds to
// those of opts (zero: unchanged). Lines queued for the old sink go to the
// new one; with nil they are discarded. The old sink is closed.
func (s *Shipper) SetSink(sink Sink, queueLines, queueBytes int) {
	s.mu.Lock()
	old := s.sink
	s.sink = sink
	s.gen++
	if queueLines > 0 {
		s.opts.QueueLines = queueLines
	}
	if queueBytes > 0 {
		s.opts.QueueBytes = queueBytes
	}
	streams := maps.Clone(s.streams)
	s.mu.Unlock()
	for _, st := range streams {
		if sink == nil {
			st.mu.Lock()
			st.queue, st.bytes, st.gap = nil, 0, 0
			st.mu.Unlock()
		}
		st.poke()
	}
	if old != nil && old != sink {
		old.Close()
	}
}

// SetLog replaces the log the shipper reports to: one that itself ships
// to a stream of this shipper can only be made once the shipper exists.
func (s *Shipper) SetLog(log *slog.Logger) {
	s.mu.Lock()
	s.opts.Log = log
	s.mu.Unlock()
}

// closeWait bounds the final flush in Close.
const closeWait = 5 * time.Second

// Close sends what the queues hold (for at most a few seconds, so a dead
// sink cannot hold clusterd's exit), stops the workers and closes the sink.
// Lines added after Close are discarded.
func (s *Shipper) Close() error {
	s.mu.Lock()
	streams := maps.Clone(s.streams)
	sink, log := s.sink, s.opts.Log
	s.mu.Unlock()
	deadline := time.Now().Add(closeWait)
	for _, st := range streams {
		st.poke()
	}
	for time.Now().Before(deadline) && s.pending(streams) {
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline: there is no event for "all queues empty"
	}
	s.cancel()
	// A worker stuck in the sink (a write to a FIFO nobody reads, a hung
	// file system) is left behind rather than waited for forever.
	stopped := make(chan struct{})
	go func() { s.wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Until(deadline) + time.Second):
		log.Warn("log shipper: a sink did not return; exiting without it")
		return nil
	}
	if sink != nil {
		return sink.Close()
	}
	return nil
}

func (s *Shipper) pending(streams map[string]*stream) bool {
	for _, st := range streams {
		st.mu.Lock()
		n := len(st.queue)
		st.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// batchLocked returns the events at the head of the queue that make one
// batch within the sink's limits.
func (st *stream) batchLocked() []Event {
	size := 0
	for i, ev := range st.queue {
		size += len(ev.Message) + EventOverhead
		if i == MaxBatchEvents || size > MaxBatchBytes || ev.Time.Sub(st.queue[0].Time) > MaxBatchSpan {
			return st.queue[:i:i]
		}
	}
	return st.queue[:len(st.queue):len(st.queue)]
}

// work sends one stream's queue to the sink until the shipper closes.
func (s *Shipper) work(st *stream) {
	defer s.wg.Done()
	tick := time.NewTicker(s.opts.Flush)
	defer tick.Stop()
	backoff := time.Duration(0)
	failing := false
	for {
		s.mu.Lock()
		sink, gen, maxBackoff, timeout, log := s.sink, s.gen, s.opts.MaxBackoff, s.opts.ShipTimeout, s.opts.Log
		s.mu.Unlock()
		st.mu.Lock()
		batch := st.batchLocked()
		st.mu.Unlock()
		st.reportDrops(log)
		if len(batch) > 0 && sink != nil {
			ctx, cancel := context.WithTimeout(s.ctx, timeout)
			err := sink.Ship(ctx, st.name, batch)
			cancel()
			s.mu.Lock()
			switched := s.gen != gen
			s.mu.Unlock()
			switch {
			case switched:
				// The batch went to (or failed at) the old sink; the
				// queue now belongs to the new one. A batch stored twice
				// beats one lost.
				if err == nil {
					st.pop(len(batch))
				}
				backoff, failing = 0, false
				continue
			case err == nil:
				if failing {
					log.Info("log sink recovered", "stream", st.name, "sink", sink.String())
				}
				backoff, failing = 0, false
				if st.pop(len(batch)) {
					continue // more than a batch was waiting
				}
			case s.ctx.Err() != nil:
				return
			default:
				if !failing {
					log.Warn("log sink failing; lines wait in the queue and are dropped when it is full",
						"stream", st.name, "sink", sink.String(), "err", err)
				}
				failing = true
				backoff = min(max(2*backoff, 100*time.Millisecond), maxBackoff)
				select {
				case <-s.ctx.Done():
					return
				case <-st.wake: // a new sink, perhaps
				case <-time.After(backoff):
				}
				continue
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-st.wake:
		case <-tick.C:
		}
	}
}

// pop removes the first n events, which the sink stored; if lines were
// dropped meanwhile, it queues the marker for them, as the sink takes
// lines again. It reports whether a full batch is waiting.
func (st *stream) pop(n int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	n = min(n, len(st.queue)) // SetSink(nil) may have emptied it meanwhile
	for _, ev := range st.queue[:n] {
		st.bytes -= len(ev.Message)
	}
	st.queue = append(st.queue[:0], st.queue[n:]...)
	st.markGapLocked(st.last)
	return len(st.queue) >= MaxBatchEvents || st.bytes+len(st.queue)*EventOverhead >= MaxBatchBytes
}

// reportDrops writes newly dropped lines to the shipper's log. It runs in
// the worker, never under a lock: the log may be one of the streams.
func (st *stream) reportDrops(log *slog.Logger) {
	st.mu.Lock()
	d, prev := st.dropped, st.logged
	st.logged = d
	st.mu.Unlock()
	if d > prev {
		log.Warn("log queue full: lines dropped", "stream", st.name, "dropped", d-prev, "dropped_total", d)
	}
}
