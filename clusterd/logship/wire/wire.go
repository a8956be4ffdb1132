// Package wire carries unit output lines from the execdriver's logger
// processes to clusterd's log shipper, over a unix stream socket that the
// loggers write without ever waiting. A logger is a process of its own (so
// units outlive clusterd), so the tee from the journal into the shipper
// crosses a process boundary. A non-blocking socket lets the writer give up
// at once (EAGAIN) when the reader lags, instead of blocking the unit; a
// stream socket rather than datagrams because its kernel buffer is sized in
// bytes (SO_SNDBUF), not in a handful of datagrams (net.unix.max_dgram_qlen,
// 10 by default), so a burst of lines is not dropped while clusterd's
// reader waits for a CPU.
package wire

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// MaxText bounds the text of one record: the logger splits lines at 64 KiB.
const MaxText = 64 << 10

// maxSunPath is the longest path a unix socket address holds (sun_path
// is 108 bytes with its NUL).
const maxSunPath = 107

// Addr is the socket address for the shipper socket at path: the path
// itself, or, when the path is too long for sun_path, a name in the
// abstract namespace derived from it. Both ends call Addr, so they agree.
func Addr(path string) string {
	if len(path) <= maxSunPath {
		return path
	}
	sum := sha256.Sum256([]byte(path))
	return "@corral-logship-" + hex.EncodeToString(sum[:12])
}

// Line is one line of a unit's output.
type Line struct {
	Unit string
	Time time.Time
	// Dropped counts the lines this sender dropped (socket full) since
	// its last record got through, so the shipper's counter covers them.
	Dropped uint64
	Text    []byte
}

// Encode appends l as a record to buf:
// "<unixnano> <dropped> <len> <unit>\n<text>".
func Encode(buf []byte, l Line) []byte {
	if len(l.Text) > MaxText {
		l.Text = l.Text[:MaxText]
	}
	buf = strconv.AppendInt(buf, l.Time.UnixNano(), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, l.Dropped, 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(len(l.Text)), 10)
	buf = append(buf, ' ')
	buf = append(buf, l.Unit...)
	buf = append(buf, '\n')
	return append(buf, l.Text...)
}

// Reader reads the records of one connection.
type Reader struct {
	r    *bufio.Reader
	text []byte
}

// NewReader reads records from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Next returns the next record; its Text is valid until the next call.
// It returns io.EOF at the end of the stream.
func (rd *Reader) Next() (Line, error) {
	head, err := rd.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && len(head) == 0 {
			return Line{}, io.EOF
		}
		return Line{}, fmt.Errorf("logship record header: %w", err)
	}
	f := bytes.SplitN(bytes.TrimSuffix(head, []byte{'\n'}), []byte{' '}, 4)
	if len(f) != 4 || len(f[3]) == 0 {
		return Line{}, fmt.Errorf("logship record header %q: want \"<unixnano> <dropped> <len> <unit>\"", head)
	}
	ns, err1 := strconv.ParseInt(string(f[0]), 10, 64)
	dropped, err2 := strconv.ParseUint(string(f[1]), 10, 64)
	n, err3 := strconv.Atoi(string(f[2]))
	if err := errors.Join(err1, err2, err3); err != nil || n < 0 || n > MaxText {
		return Line{}, fmt.Errorf("logship record header %q: bad number (%v)", head, err)
	}
	l := Line{Unit: string(f[3]), Time: time.Unix(0, ns), Dropped: dropped}
	rd.text = append(rd.text[:0], make([]byte, n)...)
	if _, err := io.ReadFull(rd.r, rd.text); err != nil {
		return Line{}, fmt.Errorf("logship record text: %w", err)
	}
	l.Text = rd.text
	return l, nil
}

// redialEvery limits connection attempts while no shipper listens, so a
// unit's every line does not cost a failed connect.
const redialEvery = time.Second

// sendBuffer is the socket buffer asked for: room for a burst while
// clusterd's reader is busy (capped by net.core.wmem_max).
const sendBuffer = 4 << 20

// Sender sends lines to a shipper socket without blocking. It is safe for
// concurrent use.
type Sender struct {
	addr string

	mu       sync.Mutex // guards everything below
	fd       int        // -1 while not connected
	lastDial time.Time
	pending  []byte // the unsent tail of a record cut short by a full socket
	buf      []byte
	dropped  uint64
}

// NewSender returns a Sender to the shipper socket at path. It connects on
// the first Send, and again after the shipper went away.
func NewSender(path string) *Sender { return &Sender{addr: Addr(path), fd: -1} }

// Send offers l to the shipper and returns at once. When no shipper
// listens (shipping is off, or clusterd is restarting), the line is only in
// the journal and nothing is counted; when the shipper's socket is full,
// the line is dropped and counted, and the count travels with the next
// line that gets through.
func (s *Sender) Send(l Line) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 && !s.dial() {
		return
	}
	if len(s.pending) > 0 {
		n := s.write(s.pending)
		if n < 0 {
			return
		}
		if s.pending = s.pending[n:]; len(s.pending) > 0 {
			s.dropped++
			return
		}
	}
	l.Dropped = s.dropped
	s.buf = Encode(s.buf[:0], l)
	switch n := s.write(s.buf); {
	case n == 0:
		s.dropped++
	case n > 0:
		s.dropped = 0 // reported in this record's header
		s.pending = append(s.pending[:0], s.buf[n:]...)
	}
}

// write writes what of b the socket takes now and returns how much: 0 if
// the socket is full, -1 if the shipper went away (the connection, and a
// record it cut short, are dropped; the next Send dials again).
func (s *Sender) write(b []byte) int {
	n, err := syscall.SendmsgN(s.fd, b, nil, nil, syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL)
	switch {
	case n > 0:
		return n
	case err == nil, errors.Is(err, syscall.EAGAIN):
		return 0
	}
	syscall.Close(s.fd)
	s.fd, s.pending = -1, nil
	return -1
}

// dial connects to the shipper, at most once per redialEvery.
func (s *Sender) dial() bool {
	if time.Since(s.lastDial) < redialEvery {
		return false
	}
	s.lastDial = time.Now()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: s.addr}); err != nil {
		syscall.Close(fd)
		return false
	}
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, sendBuffer)
	s.fd = fd
	return true
}

// Listen opens the shipper socket at path, replacing a stale one left by
// an earlier clusterd.
func Listen(path string) (*net.UnixListener, error) {
	addr := Addr(path)
	if addr == path {
		_ = syscall.Unlink(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("logship: listening on %s: %w", path, err)
	}
	return ln, nil
}
