package logship_test

import (
	"bufio"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/logship"
)

// TestFileSinkOneFilePerStream ships two units (under the real exec
// driver) and clusterd's own log (through LogHandler) to a file sink:
// one file per stream, each line stamped, nothing else in the directory.
func TestFileSinkOneFilePerStream(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "corral-logs")
	sink, err := logship.NewFileSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	sh := logship.New(sink, logship.Options{Log: testLog(t), Flush: 50 * time.Millisecond})
	t.Cleanup(func() { sh.Close() })
	d := execUnits(t, sh)
	startUnit(t, d, "one.service", "[Service]\nType=oneshot\nExecStart=/bin/echo first unit says hi\n")
	startUnit(t, d, "two.service", "[Service]\nType=oneshot\nExecStart=/bin/echo second unit says hi\n")
	clusterd := slog.New(logship.LogHandler(sh, logship.StreamName(machineID, "clusterd")))
	clusterd.Info("registering machine", "id", machineID)

	want := map[string]string{
		"one.service": "first unit says hi",
		"two.service": "second unit says hi",
		"clusterd":    `level=INFO msg="registering machine" id=` + machineID,
	}
	for name, line := range want {
		path := sink.Path(logship.StreamName(machineID, name))
		waitFor(t, name+"'s line in "+path, func() bool {
			b, _ := os.ReadFile(path)
			return strings.Contains(string(b), " "+line+"\n")
		})
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			stamp, _, _ := strings.Cut(l, " ")
			if _, err := time.Parse(logship.TimeFormat, stamp); err != nil {
				t.Errorf("%s: line %q does not start with a time: %v", path, l, err)
			}
			if strings.Contains(l, "says hi") && !strings.HasSuffix(l, " "+line) {
				t.Errorf("%s: line %q belongs to another stream", path, l)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	wantNames := []string{machineID + "-clusterd.log", machineID + "-one.service.log", machineID + "-two.service.log"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("files %q, want %q", names, wantNames)
	}
}

// TestSwitchSinkOff: with the sink taken away, lines are neither queued
// nor counted as dropped, and shipping resumes with a new sink.
func TestSwitchSinkOff(t *testing.T) {
	dir := t.TempDir()
	sink, err := logship.NewFileSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	sh := logship.New(nil, logship.Options{Log: testLog(t), QueueLines: 2, Flush: 20 * time.Millisecond})
	t.Cleanup(func() { sh.Close() })
	for range 5 {
		sh.Add("s", time.Now(), "nowhere")
	}
	if q, dr := sh.Queued("s"), sh.Dropped()["s"]; q != 0 || dr != 0 {
		t.Fatalf("without a sink: %d queued, %d dropped; want nothing", q, dr)
	}
	sh.SetSink(sink, 0, 0)
	sh.Add("s", time.Now(), "somewhere")
	waitFor(t, "the line in the file", func() bool {
		b, _ := os.ReadFile(sink.Path("s"))
		return strings.HasSuffix(string(b), " somewhere\n")
	})
	if b, _ := os.ReadFile(sink.Path("s")); strings.Contains(string(b), "nowhere") {
		t.Errorf("lines given while shipping was off were shipped: %q", b)
	}
}

// TestFileSinkOnAFIFO blocks the file sink for real: the stream's file is
// a FIFO that nobody reads, so the sink's open waits. The queue fills to
// its bound and drops, counting, while Add never waits; once a reader
// comes, the kept lines arrive in order, then the count of dropped ones.
func TestFileSinkOnAFIFO(t *testing.T) {
	dir := t.TempDir()
	sink, err := logship.NewFileSink(dir)
	if err != nil {
		t.Fatal(err)
	}
	const bound = 100
	sh := logship.New(sink, logship.Options{Log: testLog(t), QueueLines: bound, Flush: 10 * time.Millisecond})
	t.Cleanup(func() { sh.Close() })
	if err := syscall.Mkfifo(sink.Path("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	start := time.Now()
	for i := 1; i <= n; i++ {
		sh.Add("s", time.Now(), "line "+strconv.Itoa(i))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("%d Adds into a blocked sink took %v", n, took)
	}
	if q, d := sh.Queued("s"), sh.Dropped()["s"]; q != bound || d != n-bound {
		t.Fatalf("blocked: %d queued, %d dropped; want %d and %d", q, d, bound, n-bound)
	}
	f, err := os.Open(sink.Path("s")) // the reader: the sink's open returns
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.SetReadDeadline(time.Now().Add(failAfter))
	sc := bufio.NewScanner(f)
	for i := 1; i <= bound+1; i++ {
		if !sc.Scan() {
			t.Fatalf("reading the FIFO after %d lines: %v", i-1, sc.Err())
		}
		_, msg, _ := strings.Cut(sc.Text(), " ")
		want := "line " + strconv.Itoa(i)
		if i == bound+1 {
			want = logship.DroppedMessage(n - bound)
		}
		if msg != want {
			t.Fatalf("line %d from the FIFO: %q, want %q", i, msg, want)
		}
	}
}
