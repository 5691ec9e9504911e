package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"io"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"

	"doorman/codec/login"
	"doorman/engine/tlsio"
)

// A client's TLS in the login phase. The handshake runs on a short-lived goroutine that
// crypto/tls may block (its handshake errors are sticky, so it cannot be driven with
// would-block errors); the loop feeds it the client's bytes and sends what it writes.
// Afterwards the loop drives the record layer itself: tlsio's Loop mode returns a
// temporary error when the fed bytes run out, which crypto/tls survives mid-record.

// startTLS begins the handshake of an implicit-TLS connection or after STARTTLS. The
// goroutine starts with the client's first bytes, so a connection that sends nothing
// costs none.
func (s *session) startTLS() {
	el := s.c.EventLoop()
	s.raw = tlsio.NewBuffered(s.c.LocalAddr(), s.c.RemoteAddr(), func() { s.queueFlush(el) })
	s.tc = tls.Server(s.raw, s.srv.tls.server)
	s.stage = StageTLS
	s.loop.touch(s) // login_timeout covers a stalled handshake too
}

// onTLSHandshakeInput feeds handshake bytes, starting the handshake goroutine at the first.
func (s *session) onTLSHandshakeInput() gnet.Action {
	if s.raw.Buffered() > maxPendingInput {
		s.endedBy, s.reason = "proxy", "too much input during the TLS handshake"
		return gnet.Close
	}
	if s.hsCancel != nil || s.raw.Buffered() == 0 {
		return gnet.None
	}
	ts := s.srv.tls
	ctx, cancel := context.WithTimeout(context.Background(), ts.timeout)
	s.hsCancel = cancel
	el, tc := s.c.EventLoop(), s.tc
	go func() {
		var err error
		if ts.acquire(ctx) {
			err = tc.HandshakeContext(ctx)
			ts.release()
		} else {
			err = ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = errors.New("timed out")
		}
		_ = el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.handshakeDone(err)
			return nil
		}))
	}()
	return gnet.None
}

// queueFlush asks the loop to send what the handshake goroutine wrote; one request at a time.
func (s *session) queueFlush(el gnet.EventLoop) {
	if s.flushQueued.Swap(true) {
		return
	}
	_ = el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		s.flushQueued.Store(false)
		if !s.closed {
			s.flushTLS()
		}
		return nil
	}))
}

// flushTLS sends the records crypto/tls has written.
func (s *session) flushTLS() {
	if p := s.raw.Take(); len(p) > 0 && s.c != nil {
		_, _ = s.c.Write(p)
	}
}

// handshakeDone runs on the loop when the handshake goroutine has ended.
func (s *session) handshakeDone(err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic after the TLS handshake", zap.Any("panic", r))
			s.closeNow("proxy", "internal error")
		}
	}()
	if s.hsCancel != nil {
		s.hsCancel()
	}
	if s.closed || s.c == nil {
		return
	}
	s.flushTLS()
	if err != nil {
		s.closeNow("client", "TLS handshake failed: "+err.Error())
		return
	}
	s.raw.SetLoop()
	// From now on the loop sends what TLS queues after each step (flushTLS): a wake-up per
	// write would only queue a redundant task on the loop.
	s.raw.SetWake(nil)
	st := s.tc.ConnectionState()
	s.logf(zap.DebugLevel, "TLS established", zap.String("tls_version", tls.VersionName(st.Version)),
		zap.String("cipher", tls.CipherSuiteName(st.CipherSuite)), zap.String("sni", st.ServerName),
		zap.Bool("resumed", st.DidResume))
	if s.lst.SSL { // implicit TLS: the greeting follows the handshake
		s.write(s.begin())
	} else {
		s.stage = StageAuth
		s.loop.touch(s)
		if act := s.do(tlsStarted(s.fe)); act == gnet.Close {
			s.closeNow(s.endedBy, s.reason)
			return
		}
	}
	// Always look: crypto/tls may have read the client's first command together with its
	// Finished, and holds it where neither gnet nor s.raw can see it.
	if act := s.onInput(); act == gnet.Close {
		s.closeNow(s.endedBy, s.reason)
	}
}

// tlsStarted tells a codec its STARTTLS handshake is done; ManageSieve answers with its
// capabilities, the others stay silent.
func tlsStarted(fe login.Frontend) []login.Action {
	switch f := fe.(type) {
	case interface{ TLSStarted() []login.Action }:
		return f.TLSStarted()
	case interface{ TLSStarted() }:
		f.TLSStarted()
	}
	return nil
}

// readTLS decrypts what the client sent into s.plain, up to maxPendingInput.
func (s *session) readTLS() error {
	for len(s.plain) < maxPendingInput {
		if cap(s.plain)-len(s.plain) < 2048 {
			s.plain = append(s.plain, make([]byte, 4096)...)[:len(s.plain)]
		}
		n, err := s.tc.Read(s.plain[len(s.plain):cap(s.plain)])
		s.plain = s.plain[:len(s.plain)+n]
		if err == tlsio.ErrWouldBlock {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// hasInput says whether client bytes wait to be looked at.
func (s *session) hasInput() bool {
	if s.c == nil {
		return false
	}
	if s.raw != nil {
		return s.c.InboundBuffered() > 0 || s.raw.Buffered() > 0 || len(s.plain) > 0
	}
	return s.c.InboundBuffered() > 0
}

// tlsInput is onInput for a connection with TLS on: the raw bytes go to crypto/tls; in the
// command phase what it decrypts goes to the codec.
func (s *session) tlsInput() gnet.Action {
	c := s.c
	if buf, _ := c.Next(-1); len(buf) > 0 {
		s.raw.Feed(buf)
	}
	if s.stage == StageTLS {
		return s.onTLSHandshakeInput()
	}
	if s.stage != StageAuth {
		if s.raw.Buffered()+len(s.plain) > maxPendingInput {
			s.endedBy, s.reason = "proxy", "too much input while logging in"
			return gnet.Close
		}
		return gnet.None
	}
	s.loop.touch(s)
	err := s.readTLS()
	s.flushTLS() // what crypto/tls wrote while reading (a KeyUpdate answer)
	if err != nil {
		s.endedBy, s.reason = "client", "TLS: "+err.Error()
		if err == io.EOF {
			s.reason = "disconnected"
		}
		return gnet.Close
	}
	if len(s.plain) == 0 {
		return gnet.None
	}
	n, actions, err := s.fe.Feed(s.plain)
	if n > 0 {
		s.in += int64(n)
		s.plain = s.plain[n:]
		if len(s.plain) == 0 {
			s.plain = nil
		}
	}
	if act := s.do(actions); act != gnet.None {
		return act
	}
	if err != nil {
		s.endedBy, s.reason = "proxy", err.Error()
		return gnet.Close
	}
	return gnet.None
}
