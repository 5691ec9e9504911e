package engine

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
)

// loopState is what Doorman keeps per gnet event loop: the sessions waiting on a timeout, in
// order of their last activity, one list per kind of wait. A list's timeout is the same for
// every session on it, so that order is also the order of their deadlines: one tick a
// second walks each list from the front and stops at the first session still in time. That
// is the loop's whole timer wheel: no timer per connection.
type loopState struct {
	el     gnet.EventLoop
	login  timerList // pre-login command phase: login_timeout
	header timerList // haproxy listeners before the PROXY header: haproxy_timeout
	now    int64     // unix seconds, updated by each tick
}

type timerList struct{ head, tail *session }

func (srv *Server) loopFor(el gnet.EventLoop) *loopState {
	srv.loopsMu.Lock()
	defer srv.loopsMu.Unlock()
	ls, ok := srv.loops[el]
	if !ok {
		ls = &loopState{el: el, now: time.Now().Unix()}
		srv.loops[el] = ls
	}
	return ls
}

// touch records client activity in the command phase: the session moves to the back of
// the login list.
func (ls *loopState) touch(s *session) { ls.push(&ls.login, s) }

// awaitHeader puts a new haproxy-listener session on the header list.
func (ls *loopState) awaitHeader(s *session) { ls.push(&ls.header, s) }

func (ls *loopState) push(l *timerList, s *session) {
	ls.remove(s)
	s.lastSeen = ls.now
	s.prev = l.tail
	if l.tail != nil {
		l.tail.next = s
	} else {
		l.head = s
	}
	l.tail = s
	s.list = l
}

func (ls *loopState) remove(s *session) {
	l := s.list
	if l == nil {
		return
	}
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		l.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next, s.list = nil, nil, nil
}

// expire ends the sessions that waited too long on either list.
func (ls *loopState) expire(now int64, loginTimeout, headerTimeout time.Duration) {
	ls.now = now
	for _, w := range []struct {
		l       *timerList
		timeout time.Duration
		end     func(*session)
	}{
		{&ls.login, loginTimeout, (*session).expire},
		{&ls.header, headerTimeout, (*session).expireHeader},
	} {
		limit := now - int64(w.timeout/time.Second)
		for s := w.l.head; s != nil && s.lastSeen <= limit; s = w.l.head {
			ls.remove(s)
			w.end(s)
		}
	}
}

// expireHeader ends a session whose PROXY header did not arrive in time: no reply, as
// Dovecot does.
func (s *session) expireHeader() {
	if !s.closed && s.stage == StageProxyHeader {
		s.closeNow("proxy", "PROXY header timeout")
	}
}

func (s *session) expire() {
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic in timeout", zap.Any("panic", r))
			s.closeNow("proxy", "internal error")
		}
	}()
	if !s.closed && s.stage == StageTLS {
		s.closeNow("proxy", "TLS handshake timeout")
		return
	}
	if s.closed || s.stage != StageAuth {
		return
	}
	for _, a := range s.fe.Timeout() {
		s.write(a.Data)
	}
	s.closeNow("proxy", "inactivity timeout")
}

// ticker runs each loop's expiry once a second, on that loop.
func (srv *Server) ticker() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	timeout := max(time.Duration(srv.cfg.LoginTimeout), time.Second)
	headerTimeout := max(time.Duration(srv.cfg.HAProxyTimeout), time.Second)
	for {
		select {
		case <-srv.tickStop:
			return
		case now := <-t.C:
			sec := now.Unix()
			srv.loopsMu.Lock()
			for _, ls := range srv.loops {
				ls := ls
				_ = ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
					ls.expire(sec, timeout, headerTimeout)
					return nil
				}))
			}
			srv.loopsMu.Unlock()
		}
	}
}
