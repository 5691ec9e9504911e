//go:build linux

package relay

import (
	"container/heap"
	"errors"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// Directions, indexing sess.dir. A direction's source is sess.fd[d] and
	// its destination sess.fd[1-d]; fd index 0 is the client, 1 the backend.
	dirToBackend = 0
	dirToClient  = 1

	// maxRounds is how many pipe fills one direction gets per turn before
	// the worker serves other sessions (at 256 KiB pipes, up to 4 MiB).
	maxRounds = 16

	// wakeTag marks the eventfd's epoll registration; sessions use their
	// slot index (>= 0) in the same field.
	wakeTag = -1

	spliceFlags        = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
	epollEvents uint32 = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	epollIn     uint32 = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	epollOut    uint32 = unix.EPOLLOUT | unix.EPOLLHUP | unix.EPOLLERR
)

func sideOf(fdIndex int) Side {
	if fdIndex == 0 {
		return SideClient
	}
	return SideBackend
}

type pipeFDs struct{ r, w int }

var noPipe = pipeFDs{-1, -1}

// direction is one way of a session. Everything but n belongs to the worker.
type direction struct {
	pipe   pipeFDs // noPipe unless data is in flight
	inPipe int     // bytes in pipe; never refill while > 0
	eof    bool    // the source returned EOF
	shut   bool    // shutdown(destination, SHUT_WR) done
	n      atomic.Int64
}

// sess is a session as its worker sees it. Only h.kicked and dir[].n are
// touched by other goroutines.
type sess struct {
	h      Handle
	fd     [2]int
	rd, wr [2]bool // edge-triggered readiness, cleared on EAGAIN
	held   bool    // HoldClient was asked (and its delay, if any, has run out or is running)
	dir    [2]direction
	// pre holds the login leftovers (Session.ToBackend, ToClient) still to write, by
	// direction; nil once both are written, so that an idle session does not keep two
	// slice headers: the struct stays in the 176-byte size class (224 with them).
	pre     *[2][]byte
	done    func(Stats)
	hold    func() time.Duration
	holdAt  int64 // unix nanoseconds the client side may be closed at; 0 when not held
	slot    int32
	queued  bool // on the worker's run queue
	closed  bool
	endedBy Side
	t       *tlsState // nil for a plain session (spliced)
}

type counters struct {
	sessions, pipesInUse, pipesIdle, prefixBytes atomic.Int64
	pipesCreated, resizeFailed, panics           atomic.Int64
	tlsBufs                                      atomic.Int64
}

type worker struct {
	r          *Relay
	epfd, evfd int
	pipeSize   int
	maxIdle    int
	onPanic    func(any, []byte)
	pollf      *os.File     // epfd in Go's netpoller, once run starts
	cpu        atomic.Int64 // CPU nanoseconds spent serving, counted only when accountCPU is set

	// Owned by the worker goroutine.
	slots      []*sess // by slot index, the epoll data of both fds
	free       []int32
	runq, runx []*sess // sessions that used up their turn
	idle       []pipeFDs
	bufs       [][]byte // empty TLS-path buffers, at most maxIdleBufs
	holds      holdHeap // sessions whose client side waits to be closed
	inx, kickx []*sess  // spare queue slices, swapped with the inbox
	ev         unix.EpollEvent
	readBuf    [8]byte

	mu          sync.Mutex
	inbox       []*sess
	kicks       []*sess
	wakePending bool
	stopping    bool
	wakeBuf     [8]byte

	ctr counters
	_   [64]byte // keep the next worker's hot fields off this cache line
}

func newWorker(r *Relay, cfg *Config) (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, &OpError{SideProxy, "epoll_create", err}
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, &OpError{SideProxy, "eventfd", err}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd), Pad: wakeTag}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return nil, &OpError{SideProxy, "epoll_ctl", err}
	}
	w := &worker{
		r:        r,
		epfd:     epfd,
		evfd:     evfd,
		pipeSize: cfg.PipeSize,
		maxIdle:  cfg.MaxIdlePipes,
		onPanic:  cfg.OnPanic,
	}
	w.wakeBuf[0] = 1 // eventfd adds a native-endian uint64; 1 on little endian, 1<<56 elsewhere, either wakes
	return w, nil
}

// enqueue hands a session to the worker; false once the worker stops.
func (w *worker) enqueue(s *sess) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return false
	}
	w.ctr.sessions.Add(1)
	w.ctr.prefixBytes.Add(int64(len(s.prefix(0)) + len(s.prefix(1))))
	w.inbox = append(w.inbox, s)
	w.wakeLocked()
	return true
}

func (w *worker) kick(s *sess) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return // Close ends it, or already has
	}
	w.kicks = append(w.kicks, s)
	w.wakeLocked()
}

func (w *worker) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopping {
		w.stopping = true
		w.wakeLocked()
	}
}

// wakeLocked writes the eventfd at most once per drain. It runs under mu, and
// the worker closes the eventfd only after setting stopping under mu, so a
// write never reaches a closed (or reused) fd number.
func (w *worker) wakeLocked() {
	if w.wakePending {
		return
	}
	w.wakePending = true
	for {
		_, err := unix.Write(w.evfd, w.wakeBuf[:])
		if err != unix.EINTR {
			return // EAGAIN means the counter is at its max: already readable
		}
	}
}

// accountCPU makes workers count the CPU time they spend serving (worker.cpu), for
// benchmarks and tests: two clock_gettime calls per wakeup, so off in production.
var accountCPU bool

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

func (w *worker) run() {
	defer w.r.wg.Done()
	// The worker parks in Go's netpoller (its epoll fd is readable when a session
	// has events), not in a blocking epoll_wait of its own: a thread blocked in a
	// syscall keeps its P, and with every P so held the runtime's sysmon keeps
	// taking them back and handing them on, waking every 20 µs (a fifth of the CPU
	// of a login at 1,000/s, by perf). An idle worker so holds neither P nor thread.
	if err := unix.SetNonblock(w.epfd, true); err != nil {
		w.shutdown(&OpError{SideProxy, "epoll_wait", err}, nil)
		return
	}
	w.pollf = os.NewFile(uintptr(w.epfd), "relay-epoll")
	rc, err := w.pollf.SyscallConn()
	if err != nil {
		w.shutdown(&OpError{SideProxy, "epoll_wait", err}, nil)
		return
	}
	events := make([]unix.EpollEvent, 256)
	var (
		stop     bool
		pending  []*sess
		fatal    error
		deadline int64 // the read deadline set for the first hold; 0 = none
	)
	serve := func(uintptr) bool {
		if accountCPU {
			// Counted only when the goroutine stayed on one thread: a thread's CPU clock
			// says nothing across a move to another.
			t0, tid := threadCPU(), unix.Gettid()
			defer func() {
				if unix.Gettid() == tid {
					w.cpu.Add(int64(threadCPU() - t0))
				}
			}()
		}
		for {
			n, err := unix.EpollWait(w.epfd, events, 0)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				fatal = &OpError{SideProxy, "epoll_wait", err}
				return true
			}
			woke := false
			for i := range events[:n] {
				ev := &events[i]
				if ev.Pad == wakeTag {
					woke = true
					continue
				}
				w.onEvent(ev)
			}
			w.runQueued()
			w.releaseHolds()
			if woke {
				if pending, stop = w.takeInbox(); stop {
					return true
				}
			}
			if len(w.holds) > 0 && (deadline == 0 || w.holds[0].holdAt < deadline) {
				return true // set the deadline for the new first hold
			}
			if n == 0 && len(w.runq) == 0 {
				return false // nothing ready: park until the epoll fd is readable
			}
		}
	}
	for {
		deadline = 0
		if len(w.holds) > 0 {
			deadline = w.holds[0].holdAt
			_ = w.pollf.SetReadDeadline(time.Unix(0, deadline))
		} else {
			_ = w.pollf.SetReadDeadline(time.Time{})
		}
		err := rc.Read(serve)
		switch {
		case stop:
			w.shutdown(ErrClosed, pending)
			return
		case fatal != nil:
			w.shutdown(fatal, nil)
			return
		case err != nil && !errors.Is(err, os.ErrDeadlineExceeded):
			w.shutdown(&OpError{SideProxy, "epoll_wait", err}, nil)
			return
		}
		w.releaseHolds()
	}
}

// takeInbox registers new sessions and applies kicks. When stopping it
// returns the new sessions unregistered, for shutdown to end.
func (w *worker) takeInbox() (pending []*sess, stop bool) {
	for {
		_, err := unix.Read(w.evfd, w.readBuf[:])
		if err != unix.EINTR {
			break
		}
	}
	w.mu.Lock()
	w.wakePending = false
	in, kicks, stop := w.inbox, w.kicks, w.stopping
	w.inbox, w.kicks = w.inx[:0], w.kickx[:0]
	w.mu.Unlock()
	if stop {
		return in, true
	}
	for _, s := range in {
		w.register(s)
	}
	for _, s := range kicks {
		if !s.closed {
			w.finish(s, SideProxy, ErrKicked, false)
		}
	}
	clear(in)
	clear(kicks)
	w.inx, w.kickx = in[:0], kicks[:0]
	return nil, false
}

// shutdown ends every session, closes the pool and the worker's fds.
func (w *worker) shutdown(err error, pending []*sess) {
	w.mu.Lock()
	w.stopping = true
	pending = append(pending, w.inbox...)
	w.inbox, w.kicks = nil, nil
	w.mu.Unlock()
	for _, s := range pending {
		w.finish(s, SideProxy, err, false)
	}
	for _, s := range w.slots {
		if s != nil {
			w.finish(s, SideProxy, err, false)
		}
	}
	w.slots, w.free, w.runq, w.runx = nil, nil, nil, nil
	for _, p := range w.idle {
		closePipe(p)
		w.ctr.pipesIdle.Add(-1)
	}
	w.idle, w.bufs = nil, nil
	if w.pollf != nil {
		w.pollf.Close() // it owns epfd
	} else {
		unix.Close(w.epfd)
	}
	unix.Close(w.evfd)
}

func (w *worker) register(s *sess) {
	defer w.recoverSession(s)
	var idx int32
	if n := len(w.free); n > 0 {
		idx = w.free[n-1]
		w.free = w.free[:n-1]
	} else {
		idx = int32(len(w.slots))
		w.slots = append(w.slots, nil)
	}
	w.slots[idx] = s
	s.slot = idx
	// No initial readiness: registering an edge-triggered fd reports its
	// current state at once.
	for i, fd := range s.fd {
		w.ev = unix.EpollEvent{Events: epollEvents, Fd: int32(fd), Pad: idx}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &w.ev); err != nil {
			w.finish(s, SideProxy, &OpError{sideOf(i), "epoll_ctl", err}, false)
			return
		}
	}
	if s.t != nil {
		// crypto/tls may already hold records or plaintext (read during the handshake or
		// the login), and Raw bytes Fed before the hand-off: the socket's edge may never
		// come for them. Read a TLS side once now.
		for i, t := range s.t.side {
			if t != nil {
				s.rd[i] = true
			}
		}
		s.queued = true
		w.runq = append(w.runq, s)
	}
}

func (w *worker) onEvent(ev *unix.EpollEvent) {
	if ev.Pad < 0 || int(ev.Pad) >= len(w.slots) {
		return
	}
	s := w.slots[ev.Pad]
	if s == nil {
		return // ended earlier in this batch; slots are reused only between batches
	}
	var i int
	switch int(ev.Fd) {
	case s.fd[0]:
		i = 0
	case s.fd[1]:
		i = 1
	default:
		return
	}
	e := ev.Events
	// HUP and ERR mark both ways ready so the next syscall surfaces the state.
	if e&epollIn != 0 {
		s.rd[i] = true
	}
	if e&epollOut != 0 {
		s.wr[i] = true
	}
	errFD := -1
	if e&unix.EPOLLERR != 0 {
		errFD = i
	}
	w.serve(s, errFD)
}

// serve pumps both directions. errFD >= 0 names a socket that reported
// EPOLLERR: if pumping did not surface it (a stalled direction makes no
// syscall on that socket), SO_ERROR does, so a reset never goes unnoticed.
func (w *worker) serve(s *sess, errFD int) {
	defer w.recoverSession(s)
	if testHookServe != nil {
		testHookServe()
	}
	more := false
	for d := range s.dir {
		var m bool
		if s.t == nil {
			m = w.pumpDir(s, d)
		} else {
			m = w.pumpTLSDir(s, d)
		}
		more = more || m
		if s.closed {
			return
		}
	}
	if errFD >= 0 {
		v, err := unix.GetsockoptInt(s.fd[errFD], unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && v != 0 {
			err = syscall.Errno(v)
		}
		if err != nil {
			w.fail(s, sideOf(errFD), "socket", err)
			return
		}
	}
	if s.dir[0].shut && s.dir[1].shut {
		w.finish(s, SideNone, nil, false)
		return
	}
	if more && !s.queued {
		s.queued = true
		w.runq = append(w.runq, s)
	}
}

func (w *worker) runQueued() {
	q := w.runq
	w.runq = w.runx[:0]
	for i, s := range q {
		q[i] = nil
		s.queued = false
		if !s.closed {
			w.serve(s, -1)
		}
	}
	w.runx = q[:0]
}

// prefix is what is left of direction d's login leftovers.
func (s *sess) prefix(d int) []byte {
	if s.pre == nil {
		return nil
	}
	return s.pre[d]
}

// setPrefix sets what is left of direction d's leftovers; once both are written, the
// caller's buffers and the holder go.
func (s *sess) setPrefix(d int, p []byte) {
	if s.pre == nil {
		return
	}
	if len(p) == 0 {
		p = nil
	}
	s.pre[d] = p
	if s.pre[0] == nil && s.pre[1] == nil {
		s.pre = nil
	}
}

// pumpDir moves what it can one way; true when it stopped with work left
// (its turn was used up).
func (w *worker) pumpDir(s *sess, d int) (more bool) {
	src, dst := d, 1-d
	dr := &s.dir[d]
	for round := 0; ; round++ {
		// 1. The prefix goes first.
		for p := s.prefix(d); len(p) > 0; p = s.prefix(d) {
			if !s.wr[dst] {
				return false
			}
			n, err := unix.Write(s.fd[dst], p)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				if err == unix.EAGAIN {
					s.wr[dst] = false
					return false
				}
				w.fail(s, sideOf(dst), "write", err)
				return false
			}
			s.setPrefix(d, p[n:])
			dr.n.Add(int64(n))
			w.ctr.prefixBytes.Add(-int64(n))
		}

		// 2. Drain the pipe.
		for dr.inPipe > 0 {
			if !s.wr[dst] {
				return false
			}
			n, err := unix.Splice(dr.pipe.r, nil, s.fd[dst], nil, dr.inPipe, spliceFlags)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				if err == unix.EAGAIN {
					s.wr[dst] = false
					return false
				}
				w.fail(s, sideOf(dst), "write", err)
				return false
			}
			if n <= 0 {
				w.fail(s, SideProxy, "splice", io.ErrNoProgress)
				return false
			}
			dr.inPipe -= int(n)
			dr.n.Add(int64(n))
		}
		// 3. An empty pipe goes back at once: idle sessions hold none.
		if dr.pipe.r >= 0 {
			w.putPipe(dr.pipe)
			dr.pipe = noPipe
		}
		// 4. Pass the FIN on once everything before it is delivered (towards the
		// client, after the hold HoldClient asks for, if any).
		if dr.eof {
			if d == dirToClient && !s.held && s.hold != nil {
				s.held = true
				if delay := s.hold(); delay > 0 {
					s.holdAt = time.Now().Add(delay).UnixNano()
					heap.Push(&w.holds, s)
					return false
				}
			}
			if d == dirToClient && s.holdAt != 0 {
				return false // still held
			}
			if !dr.shut {
				if err := shutdownWrite(s.fd[dst]); err != nil {
					w.fail(s, sideOf(dst), "shutdown", err)
					return false
				}
				dr.shut = true
			}
			return false
		}
		// 5. Refill, only now that the pipe is empty (the backpressure).
		if !s.rd[src] {
			return false
		}
		if round == maxRounds {
			return true
		}
		p, err := w.getPipe()
		if err != nil {
			w.fail(s, SideProxy, "pipe", err)
			return false
		}
		n, err := unix.Splice(s.fd[src], nil, p.w, nil, w.pipeSize, spliceFlags)
		if err != nil || n <= 0 {
			w.putPipe(p) // still empty
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// The pipe was empty, so EAGAIN means the socket is drained.
			s.rd[src] = false
			return false
		case err != nil:
			w.fail(s, sideOf(src), "read", err)
			return false
		case n <= 0:
			dr.eof = true
			if s.endedBy == SideNone {
				s.endedBy = sideOf(src)
			}
			continue
		}
		dr.pipe, dr.inPipe = p, int(n)
	}
}

func (w *worker) fail(s *sess, side Side, op string, err error) {
	w.finish(s, side, &OpError{side, op, err}, false)
}

// finish closes a session and calls its Done. by is who ended it unless an
// EOF came first (SideProxy always wins: a kick or close is the proxy's).
// dirty means the session's state cannot be trusted (a panic): its pipes are
// closed rather than pooled.
func (w *worker) finish(s *sess, by Side, err error, dirty bool) {
	if s.closed {
		return
	}
	s.closed = true
	if by == SideProxy || s.endedBy == SideNone {
		s.endedBy = by
	}
	if s.t != nil {
		w.releaseTLS(s, dirty) // before the fds close: Raw must not touch a reused number
	}
	for _, fd := range s.fd {
		if s.slot >= 0 {
			unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, &w.ev)
		}
		unix.Close(fd)
	}
	for d := range s.dir {
		dr := &s.dir[d]
		if dr.pipe.r >= 0 {
			if dr.inPipe == 0 && !dirty {
				w.putPipe(dr.pipe)
			} else {
				// Leftover bytes belong to no one: never reuse this pipe.
				closePipe(dr.pipe)
				w.ctr.pipesInUse.Add(-1)
			}
			dr.pipe, dr.inPipe = noPipe, 0
		}
	}
	if s.pre != nil {
		w.ctr.prefixBytes.Add(-int64(len(s.pre[0]) + len(s.pre[1])))
		s.pre = nil
	}
	if s.slot >= 0 {
		w.slots[s.slot] = nil
		w.free = append(w.free, s.slot)
		s.slot = -1
	}
	w.ctr.sessions.Add(-1)
	done := s.done
	s.done = nil
	if done != nil {
		w.callDone(done, Stats{
			ToClient:  s.dir[dirToClient].n.Load(),
			ToBackend: s.dir[dirToBackend].n.Load(),
			EndedBy:   s.endedBy,
			Err:       err,
		})
	}
}

func (w *worker) callDone(done func(Stats), st Stats) {
	defer func() {
		if v := recover(); v != nil {
			w.ctr.panics.Add(1)
			w.reportPanic(v)
		}
	}()
	done(st)
}

// recoverSession is deferred around everything done for one session: a
// panic closes that session only, and the worker carries on.
func (w *worker) recoverSession(s *sess) {
	v := recover()
	if v == nil {
		return
	}
	w.ctr.panics.Add(1)
	w.reportPanic(v)
	w.finish(s, SideProxy, &PanicError{v}, true)
}

func (w *worker) reportPanic(v any) {
	if w.onPanic == nil {
		return
	}
	defer func() { recover() }()
	w.onPanic(v, debug.Stack())
}

func (w *worker) getPipe() (pipeFDs, error) {
	if n := len(w.idle); n > 0 {
		p := w.idle[n-1]
		w.idle = w.idle[:n-1]
		w.ctr.pipesIdle.Add(-1)
		w.ctr.pipesInUse.Add(1)
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return noPipe, err
	}
	// A pipe the kernel will not resize still works, at its default size
	// (64 KiB, or 8 KiB past the user's pipe quota): keep it and count it.
	if _, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, w.pipeSize); err != nil {
		w.ctr.resizeFailed.Add(1)
	}
	w.ctr.pipesCreated.Add(1)
	w.ctr.pipesInUse.Add(1)
	return pipeFDs{fds[0], fds[1]}, nil
}

// putPipe takes back an empty pipe.
func (w *worker) putPipe(p pipeFDs) {
	w.ctr.pipesInUse.Add(-1)
	if len(w.idle) < w.maxIdle {
		w.idle = append(w.idle, p)
		w.ctr.pipesIdle.Add(1)
		return
	}
	closePipe(p)
}

// shutdownWrite passes a FIN on. ENOTCONN means the peer has already reset the
// connection: nothing is left to deliver there, and the next read says how it ended.
func shutdownWrite(fd int) error {
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
		return err
	}
	return nil
}

func closePipe(p pipeFDs) {
	unix.Close(p.r)
	unix.Close(p.w)
}

// testHookServe, when set before New, runs at the start of every serve.
var testHookServe func()

// releaseHolds ends the holds whose time has come: the client gets its FIN now.
func (w *worker) releaseHolds() {
	now := time.Now().UnixNano()
	for len(w.holds) > 0 && w.holds[0].holdAt <= now {
		s := heap.Pop(&w.holds).(*sess)
		s.holdAt = 0
		if !s.closed {
			w.serve(s, -1)
		}
	}
}

// holdHeap orders held sessions by the time their client side may be closed.
type holdHeap []*sess

func (h holdHeap) Len() int           { return len(h) }
func (h holdHeap) Less(i, j int) bool { return h[i].holdAt < h[j].holdAt }
func (h holdHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *holdHeap) Push(x any)        { *h = append(*h, x.(*sess)) }
func (h *holdHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return s
}
