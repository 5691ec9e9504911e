package engine

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
)

// loopState is what Doorman keeps per gnet event loop: the sessions in their pre-login
// command phase, in order of their last input. The pre-login timeout is the same for every
// session, so that order is also the order of their deadlines: one tick a second walks
// from the front and stops at the first session still in time. That is the loop's whole
// timer wheel: no timer per connection.
type loopState struct {
	el         gnet.EventLoop
	head, tail *session
	now        int64 // unix seconds, updated by each tick and each touch
}

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

// touch records client activity: the session moves to the back of the list.
func (ls *loopState) touch(s *session) {
	ls.remove(s)
	s.lastSeen = ls.now
	s.prev = ls.tail
	if ls.tail != nil {
		ls.tail.next = s
	} else {
		ls.head = s
	}
	ls.tail = s
	s.inList = true
}

func (ls *loopState) remove(s *session) {
	if !s.inList {
		return
	}
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		ls.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		ls.tail = s.prev
	}
	s.prev, s.next, s.inList = nil, nil, false
}

// expire times out the sessions idle for longer than timeout.
func (ls *loopState) expire(now int64, timeout time.Duration) {
	ls.now = now
	limit := now - int64(timeout/time.Second)
	for s := ls.head; s != nil && s.lastSeen <= limit; s = ls.head {
		ls.remove(s)
		s.expire()
	}
}

func (s *session) expire() {
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic in timeout", zap.Any("panic", r))
			s.closeNow("proxy", "internal error")
		}
	}()
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
	timeout := time.Duration(srv.cfg.LoginTimeout)
	if timeout < time.Second {
		timeout = time.Second
	}
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
					ls.expire(sec, timeout)
					return nil
				}))
			}
			srv.loopsMu.Unlock()
		}
	}
}
