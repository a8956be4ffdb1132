package netboot

import (
	"errors"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper waits for every child of PID 1: the processes it started, whose
// exits it hands back, and the orphans the kernel reparents to it (the
// exec driver's units when clusterd restarts), which it just reaps. Nothing
// else in the init may wait for processes: os/exec's Wait would race it.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
	stop    func() // for tests: the init's reaper runs for ever
}

func newReaper() *reaper {
	r := &reaper{waiting: map[int]chan unix.WaitStatus{}}
	ch := make(chan os.Signal, 32)
	quit := make(chan struct{})
	signal.Notify(ch, unix.SIGCHLD)
	r.stop = func() {
		signal.Stop(ch)
		close(quit)
	}
	go func() {
		r.reap()
		for {
			select {
			case <-ch:
				r.reap()
			case <-quit:
				return
			}
		}
	}()
	return r
}

func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.mu.Lock()
		c := r.waiting[pid]
		delete(r.waiting, pid)
		r.mu.Unlock()
		if c != nil {
			c <- ws
		}
	}
}

// start starts a process and returns the channel its exit status comes on.
func (r *reaper) start(argv []string, attr *os.ProcAttr) (int, <-chan unix.WaitStatus, error) {
	// Holding the lock across the start means the child can't be reaped
	// before it is registered.
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(argv[0], argv, attr)
	if err != nil {
		return 0, nil, err
	}
	c := make(chan unix.WaitStatus, 1)
	r.waiting[p.Pid] = c
	pid := p.Pid
	p.Release()
	return pid, c, nil
}
