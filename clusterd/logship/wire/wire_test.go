package wire

import (
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordsRoundTrip(t *testing.T) {
	t0 := time.Unix(1700000000, 123456789)
	lines := []Line{
		{Unit: "web@1.service", Time: t0, Text: []byte("hello world")},
		{Unit: "a.service", Time: t0, Dropped: 7, Text: []byte("")},
		{Unit: "b.service", Time: t0, Text: []byte("with\nnewline and \x00 bytes")},
	}
	var buf []byte
	for _, l := range lines {
		buf = Encode(buf, l)
	}
	rd := NewReader(strings.NewReader(string(buf)))
	for i, want := range lines {
		got, err := rd.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if got.Unit != want.Unit || !got.Time.Equal(want.Time) || got.Dropped != want.Dropped || string(got.Text) != string(want.Text) {
			t.Errorf("record %d: got %+v, want %+v", i, got, want)
		}
	}
	if _, err := rd.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last record: got %v, want EOF", err)
	}
	if _, err := NewReader(strings.NewReader("x y z u.service\nabc")).Next(); err == nil {
		t.Error("a header with bad numbers was accepted")
	}
}

func TestAddrTooLongForSunPath(t *testing.T) {
	short := "/run/clusterd/units/ship.sock"
	if Addr(short) != short {
		t.Errorf("Addr(%q) = %q, want the path", short, Addr(short))
	}
	long := "/" + strings.Repeat("d", 120) + "/ship.sock"
	if a := Addr(long); !strings.HasPrefix(a, "@") || a != Addr(long) {
		t.Errorf("Addr(long) = %q, want a stable abstract name", a)
	}
}

// TestSenderNeverBlocks fills the socket while nobody reads: Send returns
// every time, counts what the socket refused, and the count travels with
// the first record that gets through once the reader drains it.
func TestSenderNeverBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ship.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := NewSender(path)
	text := []byte(strings.Repeat("x", 4000))
	const n = 5000 // 20 MB: far beyond any socket buffer
	start := time.Now()
	for i := range n {
		s.Send(Line{Unit: "u.service", Time: time.Now(), Text: append([]byte(nil), append(text, byte('0'+i%10))...)})
	}
	s.mu.Lock()
	dropped := s.dropped
	s.mu.Unlock()
	if dropped == 0 {
		t.Fatalf("%d lines of 4 KB sent to a reader that never reads, none dropped", n)
	}
	t.Logf("%d sends in %v with nobody reading; %d dropped", n, time.Since(start), dropped)

	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	rd := NewReader(c)
	var got uint64
	var reported uint64
	done := make(chan struct{})
	go func() {
		// Read everything queued, then one more record that reports the drops.
		defer close(done)
		for {
			l, err := rd.Next()
			if err != nil {
				t.Errorf("reading: %v", err)
				return
			}
			if len(l.Text) != len(text)+1 && string(l.Text) != "after" {
				t.Errorf("record with %d bytes of text: framing broken", len(l.Text))
				return
			}
			got++
			reported += l.Dropped
			if string(l.Text) == "after" {
				return
			}
		}
	}()
	// The pending tail of a cut record goes first; keep offering "after"
	// until the reader has it.
	k := 0
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		s.Send(Line{Unit: "u.service", Time: time.Now(), Text: []byte("after")})
		k++
		select {
		case <-done:
			break wait
		case <-tick.C:
		}
	}
	// Every line before the "after" that got through was received or
	// counted; so were the "after"s refused before it.
	if accounted := got - 1 + reported; accounted < n || accounted > uint64(n+k-1) || reported == 0 {
		t.Errorf("received %d records reporting %d dropped: %d lines accounted for, want %d..%d", got, reported, accounted, n, n+k-1)
	}
}

// BenchmarkSend is the tee's cost per line in a logger, with a shipper
// reading and with none listening (shipping off).
func BenchmarkSend(b *testing.B) {
	text := []byte(strings.Repeat("x", 100))
	b.Run("shipper", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "ship.sock")
		ln, err := Listen(path)
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			rd := NewReader(c)
			for {
				if _, err := rd.Next(); err != nil {
					return
				}
			}
		}()
		s := NewSender(path)
		b.ResetTimer()
		for b.Loop() {
			s.Send(Line{Unit: "u.service", Time: time.Now(), Text: text})
		}
		b.StopTimer()
		b.ReportMetric(float64(s.dropped), "dropped")
	})
	b.Run("none", func(b *testing.B) {
		s := NewSender(filepath.Join(b.TempDir(), "ship.sock"))
		for b.Loop() {
			s.Send(Line{Unit: "u.service", Time: time.Now(), Text: text})
		}
	})
}
