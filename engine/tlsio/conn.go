//go:build linux

// Package tlsio is the transport under crypto/tls that lets an event loop, a relay worker
// or a login goroutine drive one TLS connection in turn without ever blocking the first two.
//
// crypto/tls remembers every handshake error, temporary ones included, and turns every
// failed Write into a permanent error; only a temporary error from Read in the middle of
// a record is safe. So a Conn has four modes, and a tls.Conn over it moves between them:
//
//   - Handshake: the handshake runs on a short-lived goroutine whose Read blocks until the
//     loop Feeds bytes; Write queues bytes for the loop to send (Pending/Take) and wakes it.
//   - Loop: after the handshake, on the event loop: Read returns what was Fed, then
//     ErrWouldBlock (a temporary net.Error, safe mid-record); Write queues and never fails.
//   - Net: a blocking net.Conn below (a backend login on its goroutine, deadlines and all).
//   - FD: in the relay, a non-blocking socket: Read reads it (EAGAIN → ErrWouldBlock), Write
//     writes what the socket takes and queues the rest for Flush; it never fails, a socket
//     error is kept for Err.
//
// Queued bytes never outlive their use: an empty queue holds no buffer.
package tlsio

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mode says who drives a Conn.
type Mode uint8

const (
	Handshake Mode = iota
	Loop
	Net
	FD
)

// ErrWouldBlock is what Read returns when no bytes are at hand: a temporary net.Error, so
// crypto/tls keeps its state and a later Read resumes where this one stopped.
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlsio: would block" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

// ErrClosed is what a Read blocked in a handshake gets when the Conn is closed (the
// handshake's deadline, or the client went away).
var ErrClosed = errors.New("tlsio: closed")

// Conn implements net.Conn for a tls.Conn. Its methods are safe for concurrent use; the
// mode decides who may call what (see the package comment).
type Conn struct {
	mu     sync.Mutex
	cond   sync.Cond
	mode   Mode
	in     []byte // raw bytes Fed and not yet read by TLS
	out    []byte // raw bytes TLS wrote and not yet sent
	closed bool
	eof    bool  // Loop/Handshake: the peer ended its side; Read returns io.EOF once in is empty
	err    error // FD: the first socket write error
	fd     int
	nc     net.Conn
	wake   func()
	local  net.Addr
	remote net.Addr
}

var _ net.Conn = (*Conn)(nil)

// NewBuffered makes a Conn in Handshake mode. wake is called (without locks held) when
// Write has queued bytes for the loop to send; it must not block.
func NewBuffered(local, remote net.Addr, wake func()) *Conn {
	c := &Conn{mode: Handshake, fd: -1, wake: wake, local: local, remote: remote}
	c.cond.L = &c.mu
	return c
}

// NewNet makes a Conn in Net mode over a blocking connection.
func NewNet(nc net.Conn) *Conn {
	c := &Conn{mode: Net, fd: -1, nc: nc, local: nc.LocalAddr(), remote: nc.RemoteAddr()}
	c.cond.L = &c.mu
	return c
}

// Mode returns the current mode.
func (c *Conn) Mode() Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mode
}

// SetLoop switches a Handshake Conn to Loop mode, once its handshake has ended.
func (c *Conn) SetLoop() {
	c.mu.Lock()
	c.mode = Loop
	c.mu.Unlock()
}

// SetWake replaces the function Write calls after queueing; nil for none (an event loop
// that sends the queue itself after each step needs no wake-up).
func (c *Conn) SetWake(wake func()) {
	c.mu.Lock()
	c.wake = wake
	c.mu.Unlock()
}

// SetFD switches to FD mode over a non-blocking socket the caller owns (Close does not
// close it). Bytes still Fed and unread are read first; queued output stays queued for Flush.
// In Net mode the net.Conn is forgotten, not closed: the caller has duplicated its socket.
func (c *Conn) SetFD(fd int) {
	c.mu.Lock()
	c.mode = FD
	c.fd = fd
	c.nc = nil
	c.wake = nil
	c.mu.Unlock()
}

// Feed hands raw bytes read from the socket to TLS (Handshake and Loop modes). The bytes
// are copied.
func (c *Conn) Feed(p []byte) {
	if len(p) == 0 {
		return
	}
	c.mu.Lock()
	if len(c.in) == 0 {
		c.in = append(make([]byte, 0, len(p)), p...)
	} else {
		c.in = append(c.in, p...)
	}
	c.mu.Unlock()
	c.cond.Broadcast()
}

// FeedEOF says the peer has ended its side: once what was Fed is read, Read returns io.EOF.
func (c *Conn) FeedEOF() {
	c.mu.Lock()
	c.eof = true
	c.mu.Unlock()
	c.cond.Broadcast()
}

// Buffered returns how many Fed bytes TLS has not read yet.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.in)
}

// TakeIn removes and returns the Fed bytes TLS has not read (for a hand-off).
func (c *Conn) TakeIn() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.in
	c.in = nil
	return p
}

// PutIn adds raw bytes to be read before the socket's (after a hand-off), behind those
// already held: call it in the order the bytes came off the socket.
func (c *Conn) PutIn(p []byte) {
	if len(p) == 0 {
		return
	}
	c.mu.Lock()
	c.in = append(c.in, p...)
	c.mu.Unlock()
}

// Take removes and returns the bytes TLS queued for sending (Handshake and Loop modes).
// The caller owns them.
func (c *Conn) Take() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.out
	c.out = nil
	return p
}

// Pending returns how many queued bytes wait to be sent.
func (c *Conn) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out)
}

// Read is called by crypto/tls.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	for {
		if len(c.in) > 0 {
			n := copy(p, c.in)
			c.in = c.in[n:]
			if len(c.in) == 0 {
				c.in = nil // an idle connection keeps no buffer
			}
			c.mu.Unlock()
			return n, nil
		}
		switch c.mode {
		case Net:
			nc := c.nc
			c.mu.Unlock()
			return nc.Read(p)
		case FD:
			if c.closed {
				// The owner closes the socket right after Close: the number may
				// already name another connection.
				c.mu.Unlock()
				return 0, ErrClosed
			}
			fd := c.fd
			c.mu.Unlock()
			return readFD(fd, p)
		}
		if c.closed {
			c.mu.Unlock()
			return 0, ErrClosed
		}
		if c.eof {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if c.mode == Loop {
			c.mu.Unlock()
			return 0, ErrWouldBlock
		}
		c.cond.Wait() // Handshake: the goroutine waits for the loop
	}
}

func readFD(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Read(fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, ErrWouldBlock
		case err != nil:
			return 0, &net.OpError{Op: "read", Net: "tcp", Err: sockErr{err}}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write is called by crypto/tls. Except in Net mode it never fails (crypto/tls would make
// any error permanent): bytes are queued, and in FD mode a socket error waits in Err.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	switch c.mode {
	case Net:
		nc := c.nc
		c.mu.Unlock()
		return nc.Write(p)
	case FD:
		defer c.mu.Unlock()
		if c.err != nil || c.closed {
			return len(p), nil
		}
		q := p
		if len(c.out) == 0 {
			n, err := writeFD(c.fd, q)
			if err != nil {
				c.err = err
				return len(p), nil
			}
			q = q[n:]
		}
		if len(q) > 0 {
			c.out = append(c.out, q...)
		}
		return len(p), nil
	}
	if c.closed {
		c.mu.Unlock()
		return len(p), nil
	}
	c.out = append(c.out, p...)
	wake := c.wake
	c.mu.Unlock()
	if wake != nil {
		wake()
	}
	return len(p), nil
}

// sockErr hides syscall.Errno's Temporary and Timeout (ETIMEDOUT has both), so crypto/tls
// keeps a dead socket's error; errors.Is still finds the errno.
type sockErr struct{ error }

func (e sockErr) Unwrap() error { return e.error }

// writeFD writes what the socket takes now; EAGAIN is not an error.
func writeFD(fd int, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(fd, p[done:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return done, nil
		case err != nil:
			return done, &net.OpError{Op: "write", Net: "tcp", Err: err}
		}
		done += n
	}
	return done, nil
}

// Flush (FD mode) writes queued bytes. It returns true when none are left; false when the
// socket is full (wait for it to be writable) or failed (see Err).
func (c *Conn) Flush() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false
	}
	if len(c.out) == 0 {
		return true
	}
	n, err := writeFD(c.fd, c.out)
	if err != nil {
		c.err = err
		return false
	}
	c.out = c.out[n:]
	if len(c.out) == 0 {
		c.out = nil
		return true
	}
	return false
}

// Err returns the first socket write error of FD mode.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close unblocks a handshake waiting in Read and drops queued bytes. In Net mode it closes
// the net.Conn; it never closes an FD-mode socket (the relay owns it).
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.in, c.out = nil, nil
	nc := c.nc
	if c.mode != Net {
		nc = nil
	}
	c.mu.Unlock()
	c.cond.Broadcast()
	if nc != nil {
		return nc.Close()
	}
	return nil
}

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Deadlines apply in Net mode only: elsewhere the loop's timers and the handshake's
// context do that job.
func (c *Conn) SetDeadline(t time.Time) error {
	if nc := c.netConn(); nc != nil {
		return nc.SetDeadline(t)
	}
	return nil
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	if nc := c.netConn(); nc != nil {
		return nc.SetReadDeadline(t)
	}
	return nil
}

func (c *Conn) SetWriteDeadline(t time.Time) error {
	if nc := c.netConn(); nc != nil {
		return nc.SetWriteDeadline(t)
	}
	return nil
}

func (c *Conn) netConn() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode == Net {
		return c.nc
	}
	return nil
}
