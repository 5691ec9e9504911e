package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"doorman/codec/login"
	"doorman/engine/relay"
	"doorman/engine/tlsio"
)

// dialer opens backend connections from login_source_ips, round robin. Each socket sets
// IP_BIND_ADDRESS_NO_PORT, so binding a source address does not reserve a port until
// connect: the 4-tuple, not the source address alone, then limits the ports, which is
// how several source addresses get past the 64k-port limit to one backend.
type dialer struct {
	sources []netip.Addr
	next    atomic.Uint32
}

func newDialer(sources []string) (*dialer, error) {
	return newDialerOn(sources, hostAddrs())
}

// newDialerOn reads login_source_ips as Dovecot does: IP addresses, or host names that
// stand for all their addresses; "?name" keeps only the addresses this host has (local),
// so one configuration can serve several hosts.
func newDialerOn(sources []string, local []netip.Addr) (*dialer, error) {
	d := &dialer{}
	for _, s := range sources {
		name, onlyLocal := strings.CutPrefix(s, "?")
		addrs, err := resolve(name)
		if err != nil {
			return nil, fmt.Errorf("login_source_ips: %q: %w", s, err)
		}
		for _, a := range addrs {
			if !onlyLocal || slices.Contains(local, a) {
				d.sources = append(d.sources, a)
			}
		}
	}
	return d, nil
}

func resolve(name string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return nil, err
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// hostAddrs are this host's own addresses.
func hostAddrs() []netip.Addr {
	var out []netip.Addr
	if ifaddrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifaddrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				out = append(out, p.Addr().Unmap())
			}
		}
	}
	return out
}

// pick returns the source address for one connection to target: the passdb's source_ip if
// given, else the next of login_source_ips of target's family, else none (the kernel
// chooses).
func (d *dialer) pick(override netip.Addr, target netip.AddrPort) netip.Addr {
	if override.IsValid() {
		return override
	}
	for range d.sources {
		i := d.next.Add(1) - 1
		if a := d.sources[int(i)%len(d.sources)]; a.Is4() == target.Addr().Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// dial connects to target. When a source address has no port left for target (or cannot
// be bound), the next of login_source_ips is tried; when every one fails so, the error says
// that the sources are exhausted. A passdb source_ip is used alone.
func (d *dialer) dial(ctx context.Context, target netip.AddrPort, source netip.Addr, deadline time.Time) (*net.TCPConn, error) {
	tries := 1
	if !source.IsValid() && len(d.sources) > 1 {
		tries = len(d.sources)
	}
	var err error
	for i := 0; i < tries; i++ {
		var c *net.TCPConn
		c, err = d.dialFrom(ctx, target, d.pick(source, target), deadline)
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return c, err
		}
	}
	if tries > 1 {
		return nil, fmt.Errorf("every login_source_ips address is out of ports to %s: %w", target, err)
	}
	return nil, err
}

func (d *dialer) dialFrom(ctx context.Context, target netip.AddrPort, src netip.Addr, deadline time.Time) (*net.TCPConn, error) {
	nd := net.Dialer{
		Deadline: deadline,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	if src.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	c, err := nd.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// readBufs holds the backend-login read buffers: one is in use only while a login runs.
var readBufs bytebufferpool.Pool

// maxBackendLine is Dovecot's MAX_PROXY_INPUT_SIZE; the codec enforces it, and the read
// buffer here need not be larger.
const maxBackendLine = 4096

// backendTLS is how a backend login uses TLS: from the start (passdb ssl=) or after
// STARTTLS (starttls=).
type backendTLS struct {
	config   *tls.Config
	implicit bool
}

// tlsStarter is the part of a backend login codec that continues after STARTTLS.
type tlsStarter interface {
	TLSStarted() (out []byte, res login.BackendResult)
}

// backendAttempt is one connect and login at a backend, on the login goroutine with a
// blocking socket: the PROXY header if asked for, TLS if the passdb says so, then the
// protocol's login codec. On success the socket leaves Go's netpoller (fd), with its TLS
// switched to FD mode for the relay, and rest holds the backend's plaintext bytes after
// its final reply.
func (srv *Server) backendAttempt(ctx context.Context, proto *protocol, target netip.AddrPort, source netip.Addr, deadline time.Time, bp *login.BackendParams, header []byte, bt *backendTLS) (fd int, btls *relay.TLS, rest []byte, res login.BackendResult, stage Stage, err error) {
	stage = StageConnect
	fd = -1
	conn, err := srv.dialer.dial(ctx, target, source, deadline)
	if err != nil {
		return fd, nil, nil, res, stage, fmt.Errorf("connect(%s) failed: %w", target, err)
	}
	defer conn.Close()
	stage = StageBackendLogin
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if len(header) > 0 {
		if _, werr := conn.Write(header); werr != nil {
			return fd, nil, nil, res, stage, fmt.Errorf("backend write: %w", werr)
		}
	}
	var (
		rw  io.ReadWriter = conn
		raw *tlsio.Conn
		tc  *tls.Conn
	)
	handshake := func() error {
		raw = tlsio.NewNet(conn)
		tc = tls.Client(raw, bt.config)
		if herr := tc.HandshakeContext(ctx); herr != nil {
			return fmt.Errorf("TLS handshake with backend %s (%s) failed: %w", target, bt.config.ServerName, herr)
		}
		rw = tc
		return nil
	}
	if bt != nil && bt.implicit {
		if err := handshake(); err != nil {
			return fd, nil, nil, res, stage, err
		}
	}
	bl := proto.newBackend(bp)
	bb := readBufs.Get()
	defer readBufs.Put(bb)
	if cap(bb.B) < maxBackendLine+512 {
		bb.B = make([]byte, 0, maxBackendLine+512)
	}
	buf := bb.B[:0]
	for {
		if len(buf) == cap(buf) {
			// The codec gives up on over-long lines itself; this only guards the buffer.
			return fd, nil, nil, res, stage, errors.New("backend: too long input line")
		}
		n, rerr := rw.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		consumed, toBackend, r := bl.Feed(buf)
		buf = buf[:copy(buf, buf[consumed:])]
		if len(toBackend) > 0 {
			if _, werr := rw.Write(toBackend); werr != nil {
				return fd, nil, nil, res, stage, fmt.Errorf("backend write: %w", werr)
			}
		}
		if r.Outcome == login.BackendStartTLS {
			// Bytes after the STARTTLS reply came in plaintext: they could be injected.
			buf = buf[:0]
			st, ok := bl.(tlsStarter)
			if bt == nil || bt.implicit || !ok {
				return fd, nil, nil, res, stage, errors.New("backend: unexpected STARTTLS")
			}
			if err := handshake(); err != nil {
				return fd, nil, nil, res, stage, err
			}
			more, r2 := st.TLSStarted()
			if len(more) > 0 {
				if _, werr := rw.Write(more); werr != nil {
					return fd, nil, nil, res, stage, fmt.Errorf("backend write: %w", werr)
				}
			}
			if r2.Outcome.Final() {
				res = r2
				break
			}
			continue
		}
		if r.Outcome != login.BackendPending {
			res = r
			break
		}
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return fd, nil, nil, res, stage, errors.New("client disconnected")
				}
				return fd, nil, nil, res, stage, fmt.Errorf("login timed out in state=%s", bl.State())
			}
			return fd, nil, nil, res, stage, fmt.Errorf("backend disconnected in state=%s: %w", bl.State(), rerr)
		}
	}
	if res.Outcome != login.BackendOK {
		return fd, nil, nil, res, stage, nil
	}
	fd, err = detach(conn)
	if err != nil {
		return -1, nil, nil, res, stage, err
	}
	if raw != nil {
		raw.SetFD(fd) // the deferred Close closes the original descriptor, not this one
		btls = &relay.TLS{Conn: tc, Raw: raw}
	}
	return fd, btls, append([]byte(nil), buf...), res, stage, nil
}

// detach takes the socket out of Go's netpoller: a dup of the descriptor survives the
// Close that follows (deferred by the caller). The dup shares the open file description,
// so it stays non-blocking.
func detach(c *net.TCPConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := raw.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup backend socket: %w", derr)
	}
	return nfd, nil
}
