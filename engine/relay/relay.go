//go:build linux

package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"doorman/engine/tlsio"
)

// Defaults, set here and nowhere else.
const (
	DefaultPipeSize      = 256 << 10
	DefaultMaxIdlePipes  = 64
	DefaultNotSentLowat  = 128 << 10
	DefaultBackendRcvBuf = 128 << 10
)

// Errors carried in Stats.Err or returned by Add.
var (
	// ErrClosed is returned by Add after Close, and is the Stats.Err of the
	// sessions that Close ended.
	ErrClosed = errors.New("relay: closed")
	// ErrKicked is the Stats.Err of a session ended by Handle.Kick.
	ErrKicked = errors.New("relay: kicked")
)

// Config sizes a Relay. The zero value is usable.
type Config struct {
	// Workers is the number of epoll workers; 0 means runtime.NumCPU().
	Workers int
	// PipeSize is the capacity asked for each pooled pipe (F_SETPIPE_SZ); 0
	// means 256 KiB. It is also the most one splice moves, and the most a
	// stalled direction pins in the kernel. When the kernel refuses the size
	// (EPERM past fs.pipe-user-pages-soft for an unprivileged user, or above
	// fs.pipe-max-size) the pipe is kept at its default size and
	// Counters.PipesResizeFailed counts it.
	PipeSize int
	// MaxIdlePipes caps the empty pipes each worker keeps for reuse; 0 means
	// 64 per worker. Pipes returned beyond the cap are closed.
	MaxIdlePipes int
	// NotSentLowat is TCP_NOTSENT_LOWAT, set on the client socket when a
	// session is added: the most its send queue holds beyond what is in flight
	// to the client. Without it the kernel lets that queue grow to tcp_wmem's
	// maximum (4 MiB by default) whenever the client stops reading, and a
	// client that sends one FETCH and reads nothing pins it all. 0 means
	// 128 KiB; -1 leaves the system's setting (net.ipv4.tcp_notsent_lowat,
	// unlimited by default).
	NotSentLowat int
	// BackendRcvBuf is SO_RCVBUF, set on the backend socket when a session is
	// added. While the client does not read, the relay stops reading the
	// backend, and what the backend keeps sending waits in this buffer, which
	// the kernel otherwise autotunes up to tcp_rmem's maximum (several MiB
	// after a fast download). Setting it turns that autotuning off for the
	// socket; the kernel doubles the value (for its bookkeeping) and caps it
	// at net.core.rmem_max. It also bounds one session's download rate to
	// about the buffer per backend round trip. 0 means 128 KiB; -1 leaves
	// the kernel's autotuning.
	BackendRcvBuf int
	// OnPanic, if set, is called (from the worker) with the value of a panic
	// recovered while serving a session or running its Done. The session is
	// closed and the worker keeps running. It must not panic itself.
	OnPanic func(v any, stack []byte)
}

// Side names an end of a session, for Stats.EndedBy and OpError.Side.
type Side uint8

const (
	SideNone Side = iota
	SideClient
	SideBackend
	SideProxy
)

func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideBackend:
		return "backend"
	case SideProxy:
		return "proxy"
	}
	return "none"
}

// Stats is what a Session's Done receives.
type Stats struct {
	// Bytes delivered each way, prefixes included; plaintext bytes on a TLS
	// side (counted once their records are written to the socket).
	ToClient, ToBackend int64
	// EndedBy is the side whose EOF, reset or error came first; SideProxy
	// when the relay ended it (Kick, Close, a failed pipe or epoll call, a
	// recovered panic).
	EndedBy Side
	// Err is nil when both directions ended with a clean EOF. Otherwise an
	// *OpError wrapping the errno, ErrKicked, ErrClosed, or a *PanicError.
	Err error
}

// OpError is a syscall failure that ended a session.
type OpError struct {
	Side Side // the socket's side; SideProxy for pipe, splice-accounting and epoll_wait failures
	// "read" (into a pipe or buffer; on a TLS side, a socket error under the record layer),
	// "write" (prefix, out of a pipe or buffer, a TLS side's queued records), "tls" (what
	// crypto/tls refused: a bad record, an alert, EOF inside a record), "shutdown",
	// "socket" (SO_ERROR), "pipe", "epoll_ctl", "epoll_wait", "splice"; from Add,
	// "setsockopt" (Config.NotSentLowat or BackendRcvBuf refused)
	Op  string
	Err error // the errno, or crypto/tls's error for "tls"
}

func (e *OpError) Error() string {
	return "relay: " + e.Op + " " + e.Side.String() + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// PanicError is the Stats.Err of a session whose serving panicked.
type PanicError struct{ Value any }

func (e *PanicError) Error() string { return fmt.Sprintf("relay: panic: %v", e.Value) }

// Session is one login's pair of sockets, handed to Add.
type Session struct {
	// ClientFD and BackendFD are connected, non-blocking TCP sockets.
	// Ownership passes to the relay when Add succeeds: it closes them. No
	// other fd may share their open file descriptions (gnet's originals must
	// be closed, which also takes them out of gnet's epoll set), or closing
	// after a kick or an error would not reach the peers.
	ClientFD, BackendFD int
	// ToClient and ToBackend are bytes already read during login that must
	// reach the other side before anything spliced. The relay keeps the
	// slices until they are written; the caller must not modify them.
	ToClient, ToBackend []byte
	// ClientTLS and BackendTLS, when set, say that side speaks TLS: the relay reads and writes
	// plaintext through Conn, whose Raw is in tlsio FD mode over ClientFD / BackendFD.
	// The handshake must be complete. From Add on only the relay uses them; it closes Raw
	// (not Conn) with the fds, and sends no close_notify when it kicks.
	// Prefixes go through Conn. A session with either side TLS is relayed through
	// userspace buffers, not spliced.
	ClientTLS, BackendTLS *TLS
	// HoldClient, if set, is asked once when the backend has ended its side and
	// everything it sent has reached the client: the client's side is then closed
	// only after the duration it returns (Dovecot's login_proxy_max_disconnect_delay,
	// which spreads the reconnects when a backend dies). It runs on the worker's
	// thread and must return at once. The hold ends early if the client sends
	// something (the write to the closed backend fails) or the session is kicked.
	HoldClient func() time.Duration
	// Done is called exactly once, from a worker goroutine, after both fds
	// are closed. It runs on the worker's thread: it must return quickly
	// (hand the Stats to a channel or a logger; never block, never call
	// Relay.Close). It may call Add and Kick. May be nil.
	Done func(Stats)
}

// TLS is one side's record layer, handed over after its handshake.
type TLS struct {
	Conn *tls.Conn   // plaintext is read and written here
	Raw  *tlsio.Conn // Conn's transport, in tlsio.FD mode over the side's fd
}

// Relay is a set of workers, made by New. Its methods are safe for
// concurrent use.
type Relay struct {
	workers []*worker
	next    atomic.Uint32
	wg      sync.WaitGroup

	closeOnce sync.Once
	closed    atomic.Bool

	notSentLowat, backendRcvBuf int // -1: not set
}

// New starts the workers.
func New(cfg Config) (*Relay, error) {
	if cfg.Workers < 0 || cfg.PipeSize < 0 || cfg.MaxIdlePipes < 0 {
		return nil, errors.New("relay: negative Workers, PipeSize or MaxIdlePipes")
	}
	if cfg.NotSentLowat < -1 || cfg.BackendRcvBuf < -1 {
		return nil, errors.New("relay: NotSentLowat or BackendRcvBuf below -1")
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.PipeSize == 0 {
		cfg.PipeSize = DefaultPipeSize
	}
	if cfg.MaxIdlePipes == 0 {
		cfg.MaxIdlePipes = DefaultMaxIdlePipes
	}
	if cfg.NotSentLowat == 0 {
		cfg.NotSentLowat = DefaultNotSentLowat
	}
	if cfg.BackendRcvBuf == 0 {
		cfg.BackendRcvBuf = DefaultBackendRcvBuf
	}
	r := &Relay{
		workers:       make([]*worker, 0, cfg.Workers),
		notSentLowat:  cfg.NotSentLowat,
		backendRcvBuf: cfg.BackendRcvBuf,
	}
	for i := 0; i < cfg.Workers; i++ {
		w, err := newWorker(r, &cfg)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.workers = append(r.workers, w)
		r.wg.Add(1)
		go w.run()
	}
	return r, nil
}

// Add hands a session to a worker, round robin. On error the caller still
// owns the fds.
func (r *Relay) Add(s *Session) (*Handle, error) {
	if s == nil || s.ClientFD < 0 || s.BackendFD < 0 || s.ClientFD == s.BackendFD {
		return nil, errors.New("relay: invalid session fds")
	}
	for _, t := range []*TLS{s.ClientTLS, s.BackendTLS} {
		if t == nil {
			continue
		}
		if t.Conn == nil || t.Raw == nil || t.Raw.Mode() != tlsio.FD {
			return nil, errors.New("relay: TLS side without a Conn, or its Raw not in FD mode")
		}
		// A handshake started on the worker would fail at once (would-block is
		// fatal to it) and leave a session that never reads.
		if !t.Conn.ConnectionState().HandshakeComplete {
			return nil, errors.New("relay: TLS side before the end of its handshake")
		}
	}
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if err := r.bound(s); err != nil {
		return nil, err
	}
	w := r.workers[(r.next.Add(1)-1)%uint32(len(r.workers))]
	ss := &sess{
		fd:   [2]int{s.ClientFD, s.BackendFD},
		done: s.Done,
		hold: s.HoldClient,
		slot: -1,
	}
	if len(s.ToBackend) > 0 || len(s.ToClient) > 0 {
		ss.pre = new([2][]byte)
		ss.pre[dirToBackend], ss.pre[dirToClient] = s.ToBackend, s.ToClient
		ss.setPrefix(dirToBackend, ss.pre[dirToBackend]) // an empty one as nil
		ss.setPrefix(dirToClient, ss.pre[dirToClient])
	}
	for i := range ss.dir {
		ss.dir[i].pipe = noPipe
	}
	if s.ClientTLS != nil || s.BackendTLS != nil {
		ss.t = &tlsState{side: [2]*TLS{s.ClientTLS, s.BackendTLS}}
	}
	ss.h = Handle{s: ss, w: w}
	if !w.enqueue(ss) {
		return nil, ErrClosed
	}
	return &ss.h, nil
}

// bound sets the socket options that bound the kernel memory a stalled
// session holds (Config.NotSentLowat and BackendRcvBuf).
func (r *Relay) bound(s *Session) error {
	if r.notSentLowat >= 0 {
		if err := unix.SetsockoptInt(s.ClientFD, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, r.notSentLowat); err != nil {
			return &OpError{SideClient, "setsockopt", err}
		}
	}
	if r.backendRcvBuf >= 0 {
		if err := unix.SetsockoptInt(s.BackendFD, unix.SOL_SOCKET, unix.SO_RCVBUF, r.backendRcvBuf); err != nil {
			return &OpError{SideBackend, "setsockopt", err}
		}
	}
	return nil
}

// Close ends every session (each Done gets SideProxy and ErrClosed), stops
// the workers, closes the pooled pipes and waits for all of it. It must not
// be called from a Done callback (it would wait for itself). Every call
// returns once the workers have stopped.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		for _, w := range r.workers {
			w.stop()
		}
	})
	r.wg.Wait()
	return nil
}

// Counters are gauges (Sessions, PipesInUse, PipesIdle, PrefixBytes, TLSBuffersInUse) and
// running totals (the rest), summed over the workers.
type Counters struct {
	Sessions    int64 // added and not yet Done
	PipesInUse  int64 // pipes held by a direction (data in flight or stalled)
	PipesIdle   int64 // empty pipes in the pools
	PrefixBytes int64 // prefix bytes not yet written
	// TLSBuffersInUse counts the plaintext buffers (16 KiB of Go heap each) held by
	// directions of TLS sessions: data in flight or stalled, at most two per session.
	TLSBuffersInUse int64
	// Totals.
	PipesCreated      int64
	PipesResizeFailed int64
	Panics            int64
}

// Counters reads the counters; each is atomic, the set is not a snapshot.
func (r *Relay) Counters() Counters {
	var c Counters
	for _, w := range r.workers {
		c.Sessions += w.ctr.sessions.Load()
		c.PipesInUse += w.ctr.pipesInUse.Load()
		c.PipesIdle += w.ctr.pipesIdle.Load()
		c.PrefixBytes += w.ctr.prefixBytes.Load()
		c.TLSBuffersInUse += w.ctr.tlsBufs.Load()
		c.PipesCreated += w.ctr.pipesCreated.Load()
		c.PipesResizeFailed += w.ctr.resizeFailed.Load()
		c.Panics += w.ctr.panics.Load()
	}
	return c
}

// Handle refers to one added session.
type Handle struct {
	s      *sess
	w      *worker
	kicked atomic.Bool
}

// Kick ends the session from the proxy side: Done gets SideProxy and
// ErrKicked, unless the session had already ended. It is asynchronous,
// idempotent and safe from any goroutine, including Done callbacks.
func (h *Handle) Kick() {
	if h.kicked.Swap(true) {
		return
	}
	h.w.kick(h.s)
}

// Bytes returns the bytes delivered so far each way (prefixes included;
// plaintext on a TLS side).
// Safe from any goroutine; after Done it equals the Stats.
func (h *Handle) Bytes() (toClient, toBackend int64) {
	return h.s.dir[dirToClient].n.Load(), h.s.dir[dirToBackend].n.Load()
}
