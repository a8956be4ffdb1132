//go:build linux

package join

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reservePort binds a TCP socket to a free loopback port without listening
// on it, so connections to the port are refused, and no one else can take
// it, until listen is called.
func reservePort(t *testing.T) (addr string, listen func() net.Listener) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "reserved port")
	t.Cleanup(func() { f.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	return addr, func() net.Listener {
		if err := syscall.Listen(fd, syscall.SOMAXCONN); err != nil {
			t.Fatal(err)
		}
		ln, err := net.FileListener(f) // a duplicate of fd; f is closed at cleanup
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
}

func TestRequestWaitsForServer(t *testing.T) {
	c := newCluster(t)
	addr, listen := reservePort(t)

	failed := make(chan error, 1)
	r := requester{minDelay: time.Millisecond, maxDelay: 20 * time.Millisecond, timeout: 10 * time.Second,
		retrying: func(_ string, err error) {
			select {
			case failed <- err:
			default:
			}
		}}
	type result struct {
		m   *Material
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := r.request(testContext(t), []string{addr}, c.token, nodeRequest)
		done <- result{m, err}
	}()

	// Start the member only once an attempt has found nothing listening.
	select {
	case err := <-failed:
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("first attempt failed with %v, want connection refused", err)
		}
	case res := <-done:
		t.Fatalf("Request returned before any attempt failed: %v", res.err)
	}
	m := c.serve(t, listen(), nil)

	res := <-done
	if res.err != nil {
		t.Fatalf("Request: %v", res.err)
	}
	if m.signs.Load() != 1 {
		t.Errorf("server received %d sign requests, want 1", m.signs.Load())
	}
}

func TestRequestGivesUpWhenContextEnds(t *testing.T) {
	c := newCluster(t)
	addr, _ := reservePort(t)
	r := defaultRequester
	r.minDelay = time.Millisecond

	ctx, cancel := context.WithCancel(t.Context())
	r.retrying = func(string, error) { cancel() } // give up after the first failure
	_, err := r.request(ctx, []string{addr}, c.token, nodeRequest)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), addr) {
		t.Errorf("err = %v, want the cancellation and the connection refusal from %s", err, addr)
	}
}
