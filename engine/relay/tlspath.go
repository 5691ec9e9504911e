//go:build linux

package relay

import (
	"container/heap"
	"errors"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"doorman/engine/tlsio"
)

// The TLS path: a session with either side TLS moves plaintext through one
// userspace buffer per direction instead of a pipe. A plain side is read and
// written with read(2)/write(2); a TLS side through its tls.Conn, whose
// tlsio.Conn reads the socket (ErrWouldBlock on EAGAIN) and writes what the
// socket takes, queueing the rest (Pending) until Flush.

const (
	// tlsBufSize is a direction's plaintext buffer: one full TLS record.
	tlsBufSize = 16 << 10
	// maxIdleBufs caps the empty buffers a worker keeps (1 MiB).
	maxIdleBufs = 64
	// maxTLSRounds is how many buffer fills one direction gets per turn
	// before the worker serves other sessions (512 KiB).
	maxTLSRounds = 32
)

// errAgain is take's "the source has nothing now" (EAGAIN, tlsio.ErrWouldBlock).
var errAgain = errors.New("relay: would block")

// tlsState is the part of a session only the TLS path uses.
type tlsState struct {
	side [2]*TLS // by fd index; nil for a plain side
	dir  [2]tlsDir
}

type tlsDir struct {
	buf      []byte // nil unless plaintext is in flight: idle sessions hold none
	off, end int    // buf[off:end] is still to be written
	// unsent is plaintext handed to the destination's tls.Conn whose records
	// still wait in its Raw queue: counted as delivered once that drains.
	unsent   int64
	notified bool // close_notify written to a TLS destination
}

// pumpTLSDir is pumpDir for the TLS path: the same steps, with a buffer for
// the pipe. Backpressure is the same too: the source is read only when the
// buffer is empty and the destination's TLS queue has gone out, so a stalled
// reader pins one buffer and one batch of records per direction.
func (w *worker) pumpTLSDir(s *sess, d int) (more bool) {
	src, dst := d, 1-d
	dr, td := &s.dir[d], &s.t.dir[d]
	out := s.t.side[dst]
	for round := 0; ; round++ {
		// 1. The destination's queued records go first: ours, or what crypto/tls
		// wrote by itself while reading that side (a KeyUpdate answer).
		if out != nil && !w.flushTLS(s, dst) {
			return false
		}

		// 2. The prefix, on a TLS side one buffer's worth of records at a time.
		for pre := s.prefix(d); len(pre) > 0; pre = s.prefix(d) {
			p := pre
			if out != nil {
				p = p[:min(len(p), tlsBufSize)]
			}
			n, ok := w.put(s, d, p)
			s.setPrefix(d, pre[n:])
			w.ctr.prefixBytes.Add(-int64(n))
			if !ok {
				return false
			}
		}

		// 3. Drain the buffer, 4. and give it back at once.
		for td.off < td.end {
			n, ok := w.put(s, d, td.buf[td.off:td.end])
			td.off += n
			if !ok {
				return false
			}
		}
		if td.buf != nil {
			w.putBuf(td.buf)
			td.buf, td.off, td.end = nil, 0, 0
		}

		// 5. Pass the end on once everything before it is delivered: close_notify
		// and the FIN behind it (towards the client, after the hold, as in pumpDir).
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
			if dr.shut {
				return false
			}
			if out != nil {
				if !td.notified {
					td.notified = true
					if err := out.Conn.CloseWrite(); err != nil {
						w.fail(s, sideOf(dst), "tls", err)
						return false
					}
				}
				if !w.flushTLS(s, dst) {
					return false
				}
			}
			if err := shutdownWrite(s.fd[dst]); err != nil {
				w.fail(s, sideOf(dst), "shutdown", err)
				return false
			}
			dr.shut = true
			return false
		}

		// 6. Refill, only now that the buffer is empty and the records are out. A
		// TLS source stays readable until it says ErrWouldBlock, which it does
		// only with no whole record left inside crypto/tls: stopping here for
		// backpressure never strands bytes it holds.
		if !s.rd[src] {
			return false
		}
		if round == maxTLSRounds {
			return true
		}
		buf := w.getBuf()
		n, err := w.take(s, src, buf)
		if n > 0 {
			td.buf, td.off, td.end = buf, 0, n
		} else {
			w.putBuf(buf)
		}
		switch {
		case err == nil:
		case err == errAgain:
			s.rd[src] = false
			if n == 0 {
				return false
			}
		case err == io.EOF:
			dr.eof = true
			if s.endedBy == SideNone {
				s.endedBy = sideOf(src)
			}
		default:
			oe := err.(*OpError)
			w.finish(s, oe.Side, oe, false)
			return false
		}
	}
}

// put writes p to direction d's destination. It returns how much was taken,
// and ok when the destination can take more now; a failure ends the session.
func (w *worker) put(s *sess, d int, p []byte) (n int, ok bool) {
	dst := 1 - d
	if !s.wr[dst] {
		return 0, false
	}
	dr := &s.dir[d]
	if t := s.t.side[dst]; t != nil {
		// The Raw queue is empty here (flushTLS came first), and Write never
		// fails in FD mode: what the socket does not take now is queued.
		if _, err := t.Conn.Write(p); err != nil {
			w.fail(s, sideOf(dst), "tls", err)
			return 0, false
		}
		if err := t.Raw.Err(); err != nil {
			w.fail(s, sideOf(dst), "write", err)
			return 0, false
		}
		if t.Raw.Pending() > 0 {
			// The socket said EAGAIN: its EPOLLOUT edge will come.
			s.t.dir[d].unsent += int64(len(p))
			s.wr[dst] = false
			return len(p), false
		}
		dr.n.Add(int64(len(p)))
		return len(p), true
	}
	for {
		n, err := unix.Write(s.fd[dst], p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			s.wr[dst] = false
			return 0, false
		case err != nil:
			w.fail(s, sideOf(dst), "write", err)
			return 0, false
		}
		dr.n.Add(int64(n))
		return n, true // a short write: the next one sees EAGAIN
	}
}

// flushTLS writes a TLS side's queued records; true when none are left.
func (w *worker) flushTLS(s *sess, side int) bool {
	d := 1 - side // the direction writing to side
	dr, td := &s.dir[d], &s.t.dir[d]
	if dr.shut {
		// close_notify and the FIN have gone: nothing more may be sent, and a
		// KeyUpdate answer crypto/tls queued since (or its EPIPE) is moot.
		return true
	}
	raw := s.t.side[side].Raw
	if err := raw.Err(); err != nil {
		w.fail(s, sideOf(side), "write", err)
		return false
	}
	if raw.Pending() > 0 {
		if !s.wr[side] {
			return false
		}
		if !raw.Flush() {
			if err := raw.Err(); err != nil {
				w.fail(s, sideOf(side), "write", err)
			} else {
				s.wr[side] = false
			}
			return false
		}
	}
	if td.unsent > 0 {
		dr.n.Add(td.unsent)
		td.unsent = 0
	}
	return true
}

// take reads side src into buf: from a TLS side, as much plaintext as
// crypto/tls gives before it would block; from a plain side, one read(2). The
// error is nil, errAgain, io.EOF (possibly with n > 0) or an *OpError.
func (w *worker) take(s *sess, src int, buf []byte) (int, error) {
	if t := s.t.side[src]; t != nil {
		n := 0
		for n < len(buf) {
			// Read can return data and an error together (it looks past a
			// record for a close_notify).
			m, err := t.Conn.Read(buf[n:])
			n += m
			switch {
			case err == nil:
				continue
			case errors.Is(err, tlsio.ErrWouldBlock):
				// Drained: let go of crypto/tls's record-sized input buffer, which it
				// would otherwise keep for the session's life.
				tlsio.Compact(t.Conn)
				return n, errAgain
			case err == io.EOF:
				return n, io.EOF
			}
			// A socket error under the record layer is reported as on the splice
			// path; anything else is crypto/tls refusing the stream.
			var ne *net.OpError
			if errors.As(err, &ne) && ne.Op == "read" {
				return n, &OpError{sideOf(src), "read", ne.Err}
			}
			return n, &OpError{sideOf(src), "tls", err}
		}
		return n, nil
	}
	for {
		n, err := unix.Read(s.fd[src], buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errAgain
		case err != nil:
			return 0, &OpError{sideOf(src), "read", err}
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (w *worker) getBuf() []byte {
	w.ctr.tlsBufs.Add(1)
	if n := len(w.bufs); n > 0 {
		b := w.bufs[n-1]
		w.bufs[n-1] = nil
		w.bufs = w.bufs[:n-1]
		return b
	}
	return make([]byte, tlsBufSize)
}

func (w *worker) putBuf(b []byte) {
	w.ctr.tlsBufs.Add(-1)
	if len(w.bufs) < maxIdleBufs {
		w.bufs = append(w.bufs, b)
	}
}

// releaseTLS gives back a finishing session's buffers and closes its Raws:
// queued records are dropped, and a late Write through the caller's tls.Conn
// goes nowhere rather than to a reused fd number.
func (w *worker) releaseTLS(s *sess, dirty bool) {
	for d := range s.t.dir {
		td := &s.t.dir[d]
		if td.buf != nil {
			if dirty {
				w.ctr.tlsBufs.Add(-1) // state cannot be trusted: let the GC have it
			} else {
				w.putBuf(td.buf)
			}
			td.buf, td.off, td.end = nil, 0, 0
		}
	}
	for _, t := range s.t.side {
		if t != nil {
			t.Raw.Close()
		}
	}
	s.t.side = [2]*TLS{} // the crypto/tls state (tens of KB) need not live as long as the Handle
}
