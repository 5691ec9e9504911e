package engine

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"doorman/codec/proxyproto"

	"doorman/codec/login"
	"doorman/engine/tlsio"
)

// Stage names where a session is, as a reader of the logs would say it.
type Stage uint8

const (
	StageProxyHeader Stage = iota
	StageTLS
	StageGreeting
	StageAuth
	StageLookup
	StageConnect
	StageBackendLogin
	StageRelay
)

var stageNames = [...]string{"proxy-header", "tls", "greeting", "auth", "lookup", "connect", "backend-login", "relay"}

func (st Stage) String() string { return stageNames[st] }

// maxPendingInput caps what a client may send while its login is being completed: gnet
// keeps reading, so without a cap a client could grow the proxy's buffers at will.
const maxPendingInput = 64 << 10

// session is one client connection in its login phase. Its fields are touched only on
// its event loop, except those the login goroutine got as copies.
type session struct {
	id     string
	srv    *Server
	c      gnet.Conn
	loop   *loopState
	lst    *listener
	remote netip.AddrPort
	local  netip.AddrPort

	fe      login.Frontend
	stage   Stage
	closed  bool
	handoff bool
	cancel  context.CancelFunc
	user    string
	target  string // the backend, once known

	ttl       int                    // proxy TTL: proxyTTL, or what a trusted previous hop sent
	forward   []login.KV             // x-forward-* from a trusted previous hop
	idSeen    bool                   // only the first ID of a connection may override (Dovecot)
	clientID  []login.BackendIDField // imap_id_retain: the client's own ID, for the backend
	clientTLS bool                   // the PROXY header said the client's TLS ended at the balancer
	lbID      string                 // the PROXY header's unique id, kept with the session id

	// TLS with the client, once it has begun (implicit, or after STARTTLS).
	tc          *tls.Conn
	raw         *tlsio.Conn
	plain       []byte             // decrypted client bytes the codec has not consumed
	hsCancel    context.CancelFunc // ends the handshake goroutine; nil until it starts
	flushQueued atomic.Bool        // a flush of handshake output is queued on the loop

	started  time.Time
	loginAt  time.Duration // time from accept to the end of the backend login
	in, out  int64         // bytes from / to the client during the login phase
	endedBy  string
	reason   string
	lastSeen int64      // loop clock (unix seconds) of the last client input
	list     *timerList // the timeout list the session is on, if any
	prev     *session
	next     *session
}

type handler struct {
	gnet.BuiltinEventEngine
	srv *Server
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.srv.eng = eng
	close(h.srv.booted)
	return gnet.None
}

func (h *handler) OnOpen(c gnet.Conn) (out []byte, action gnet.Action) {
	srv := h.srv
	defer func() {
		if r := recover(); r != nil {
			srv.log.Error("panic in OnOpen", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			out, action = nil, gnet.Close
		}
	}()
	remote := addrPort(c.RemoteAddr())
	local := addrPort(c.LocalAddr())
	lst := srv.listenerFor(local)
	s := &session{
		srv:     srv,
		c:       c,
		loop:    srv.loopFor(c.EventLoop()),
		lst:     lst,
		remote:  remote,
		local:   local,
		started: time.Now(),
	}
	c.SetContext(s)
	srv.stats.Accepted.Add(1)
	srv.stats.Active.Add(1)
	srv.stats.sessionOpened(lst.proto)
	if lst.HAProxy {
		s.id = sessionID(s.started, remote)
		if !contains(srv.haproxies, remote.Addr()) {
			// Dovecot: connections from outside haproxy_trusted_networks are aborted at once.
			s.endedBy, s.reason = "proxy", "not from haproxy_trusted_networks"
			return nil, gnet.Close
		}
		s.stage = StageProxyHeader
		s.loop.awaitHeader(s)
		return nil, gnet.None // no greeting before the header
	}
	if lst.SSL {
		s.id = sessionID(s.started, remote)
		s.startTLS()
		return nil, gnet.None // the greeting follows the handshake
	}
	return s.begin(), gnet.None
}

// begin starts the login phase once the client's address is known: the session id, the
// codec, the greeting (returned, for the caller to send).
func (s *session) begin() []byte {
	srv := s.srv
	s.id = sessionID(s.started, s.remote)
	s.ttl = proxyTTL
	// Dovecot's "secured": TLS (here: ended at a load balancer that said so in its PROXY
	// header), a loopback client talking to its own address, or login_trusted_networks.
	// With ssl=required only TLS counts (Dovecot 2.4's reading; 2.3 is the same for
	// plaintext mechanisms).
	tlsOn := s.tc != nil || s.clientTLS
	secured := tlsOn
	if !srv.tls.required {
		secured = secured || srv.isTrusted(s.remote.Addr()) || s.remote.Addr() == s.local.Addr()
	}
	s.fe = s.lst.proto.newFrontend(srv, login.SessionInfo{
		Secured:          secured,
		PlaintextAllowed: !*srv.cfg.DisablePlaintextAuth && !srv.tls.required,
		TLSAvailable:     srv.tls.enabled() && !tlsOn,
		TLS:              tlsOn,
		Trusted:          srv.isTrusted(s.remote.Addr()),
		SASLNonce:        saslNonce(srv.cfg.AuthMechanisms),
		SASLHost:         srv.cfg.Hostname,
	})
	s.stage = StageAuth
	s.loop.touch(s)
	g := s.fe.Greeting()
	s.out += int64(len(g))
	return g
}

func (h *handler) OnTraffic(c gnet.Conn) (action gnet.Action) {
	s, ok := c.Context().(*session)
	if !ok || s == nil {
		return gnet.Close
	}
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic in OnTraffic", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			s.endedBy, s.reason = "proxy", "internal error"
			action = gnet.Close
		}
	}()
	return s.onInput()
}

func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	s, ok := c.Context().(*session)
	if !ok || s == nil {
		return gnet.None
	}
	c.SetContext(nil)
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic in OnClose", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	s.closed = true
	s.c = nil // a gnet.Conn must never be used after OnClose: its fd may be reused
	s.loop.remove(s)
	if s.cancel != nil {
		s.cancel()
	}
	if s.hsCancel != nil {
		s.hsCancel()
	}
	if s.raw != nil && !s.handoff {
		_ = s.raw.Close() // unblocks a handshake waiting for bytes
	}
	if s.handoff {
		return gnet.None // the relay owns the session now and logs its end
	}
	if s.endedBy == "" {
		s.endedBy = "client"
		if err != nil {
			s.reason = err.Error()
		} else {
			s.reason = "disconnected"
		}
	}
	s.srv.stats.Active.Add(-1)
	s.srv.stats.sessionClosed(s.lst.proto, false)
	s.logEnd()
	return gnet.None
}

// onInput feeds what the client sent to the login codec while the session is in the
// command phase; while a login is under way the bytes stay buffered for the backend.
func (s *session) onInput() gnet.Action {
	c := s.c
	if s.stage == StageProxyHeader {
		return s.onHeader()
	}
	if s.raw != nil {
		return s.tlsInput()
	}
	if s.stage != StageAuth {
		if c.InboundBuffered() > maxPendingInput {
			s.endedBy, s.reason = "proxy", "too much input while logging in"
			return gnet.Close
		}
		return gnet.None
	}
	s.loop.touch(s)
	buf, _ := c.Peek(-1)
	if len(buf) == 0 {
		return gnet.None
	}
	n, actions, err := s.fe.Feed(buf)
	if n > 0 {
		_, _ = c.Discard(n)
		s.in += int64(n)
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

// do carries out the codec's actions. It returns gnet.Close when the session must end.
func (s *session) do(actions []login.Action) gnet.Action {
	for i := range actions {
		a := &actions[i]
		switch a.Kind {
		case login.ActWrite:
			s.write(a.Data)
		case login.ActClose:
			s.write(a.Data)
			s.endedBy, s.reason = "proxy", a.Reason
			return gnet.Close
		case login.ActAuth:
			s.startLogin(a.Creds)
		case login.ActSecret:
			s.startSecret(a.Creds)
		case login.ActID:
			s.applyID(a.IDParams)
		case login.ActStartTLS:
			// Whatever came after the STARTTLS line was sent in plaintext and may have
			// been injected on the way: drop it (the CVE-2011-0411 class of bugs).
			if n := s.c.InboundBuffered(); n > 0 {
				_, _ = s.c.Discard(n)
				s.logf(zap.InfoLevel, "dropped plaintext pipelined after STARTTLS", zap.Int("bytes", n))
			}
			s.startTLS()
			return gnet.None
		}
	}
	return gnet.None
}

func (s *session) write(p []byte) {
	if len(p) == 0 || s.c == nil {
		return
	}
	s.out += int64(len(p))
	if s.tc != nil {
		_, _ = s.tc.Write(p) // into s.raw's queue: never fails
		s.flushTLS()
		return
	}
	_, _ = s.c.Write(p)
}

// closeNow ends a login-phase session from outside a gnet callback (a timer or a login
// result), synchronously on its own loop.
func (s *session) closeNow(endedBy, reason string) {
	if s.closed || s.c == nil {
		return
	}
	s.endedBy, s.reason = endedBy, reason
	_ = s.c.EventLoop().Close(s.c)
}

// logf writes one line about this session: every line carries the session id. (No child
// logger per session: zap's With clones the encoder, too much for a connection.)
func (s *session) logf(level zapcore.Level, msg string, fields ...zap.Field) {
	if ce := s.srv.log.Check(level, msg); ce != nil {
		ce.Write(append(fields, zap.String("session", s.id))...)
	}
}

// endRecord is what a session keeps for its last log line once it is relayed: the login
// phase's state (codec, gnet conn) is dropped at the hand-off so an idle relayed session
// costs only this and the relay's own record.
type endRecord struct {
	id      string
	lst     *listener // the session's listener (nil only in tests)
	user    string
	target  string
	remote  netip.AddrPort
	local   netip.AddrPort
	started int64 // unix nanoseconds: a time.Time would take three words
	loginAt time.Duration
	in, out int64
	// extra holds what only some sessions have, so that the common record stays in the
	// 160-byte size class (with these three inline it took 208: 48 bytes more for every
	// idle session). nil when none is set.
	extra *endExtra
}

// endExtra is the part of an endRecord that most sessions do not have.
type endExtra struct {
	lbID     string // the PROXY header's unique id
	vsite    string // the passdb's vsite=, for fleet kicks and the fleet view
	directed bool   // the backend was chosen by the director (consistent hashing)
}

// listener is the name of the session's listener.
func (r *endRecord) listener() string {
	if r.lst == nil {
		return ""
	}
	return r.lst.Name
}

func (r *endRecord) lbID() string {
	if r.extra == nil {
		return ""
	}
	return r.extra.lbID
}

func (r *endRecord) vsite() string {
	if r.extra == nil {
		return ""
	}
	return r.extra.vsite
}

func (r *endRecord) directed() bool { return r.extra != nil && r.extra.directed }

// setExtra records the rarely set fields (a no-op, and no allocation, when all are zero).
func (r *endRecord) setExtra(lbID, vsite string, directed bool) {
	if lbID == "" && vsite == "" && !directed {
		r.extra = nil
		return
	}
	r.extra = &endExtra{lbID: lbID, vsite: vsite, directed: directed}
}

func (s *session) record(target string) *endRecord {
	r := &endRecord{id: s.id, lst: s.lst, user: s.user, target: target,
		remote: s.remote, local: s.local, started: s.started.UnixNano(), loginAt: s.loginAt, in: s.in, out: s.out}
	r.setExtra(s.lbID, "", false)
	return r
}

// log writes the one line that says how a session ended.
func (r *endRecord) log(log *zap.Logger, stage Stage, endedBy, reason string, relayIn, relayOut int64) {
	lb := zap.Skip()
	if id := r.lbID(); id != "" {
		lb = zap.String("lb_id", id)
	}
	log.Info("session ended",
		zap.String("session", r.id),
		lb,
		zap.String("listener", r.listener()),
		zap.String("remote", r.remote.String()),
		zap.String("local", r.local.String()),
		zap.String("user", r.user),
		zap.String("target", r.target),
		zap.String("stage", stage.String()),
		zap.String("ended_by", endedBy),
		zap.String("reason", reason),
		zap.Int64("in", r.in+relayIn),
		zap.Int64("out", r.out+relayOut),
		zap.Duration("login", r.loginAt),
		zap.Duration("duration", time.Duration(time.Now().UnixNano()-r.started)),
	)
}

func (s *session) logEnd() {
	s.record(s.target).log(s.srv.log, s.stage, s.endedBy, s.reason, 0, 0)
}

func (srv *Server) listenerFor(local netip.AddrPort) *listener {
	if l, ok := srv.listeners[local]; ok {
		return l
	}
	for ap, l := range srv.listeners {
		if ap.Port() == local.Port() && ap.Addr().IsUnspecified() {
			return l
		}
	}
	for _, l := range srv.listeners {
		return l
	}
	panic("engine: no listeners")
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(fmt.Sprint(a))
	return ap
}

// onHeader reads the PROXY header of a haproxy listener's connection. The header's client
// address replaces the load balancer's; then the login phase begins, with whatever the
// client sent behind the header.
func (s *session) onHeader() gnet.Action {
	c := s.c
	buf, _ := c.Peek(-1)
	n, err := proxyproto.Frame(buf)
	if err != nil {
		s.endedBy, s.reason = "proxy", "invalid PROXY header: "+err.Error()
		return gnet.Close
	}
	if n == 0 {
		return gnet.None
	}
	pi, err := parseProxyHeader(buf[:n])
	if err != nil {
		s.endedBy, s.reason = "proxy", "invalid PROXY header: "+err.Error()
		return gnet.Close
	}
	_, _ = c.Discard(n)
	s.in += int64(n)
	s.loop.remove(s)
	if pi.remote.IsValid() { // a LOCAL header (the balancer's health check) keeps the socket's
		s.remote, s.local = pi.remote, pi.local
	}
	s.clientTLS = pi.clientTLS
	s.lbID = pi.uniqueID
	if pi.authority != "" || pi.uniqueID != "" {
		s.logf(zap.DebugLevel, "PROXY header", zap.String("authority", pi.authority), zap.String("lb_id", pi.uniqueID))
	}
	if s.lst.SSL {
		s.startTLS()
	} else {
		_, _ = c.Write(s.begin())
	}
	if c.InboundBuffered() > 0 {
		return s.onInput()
	}
	return gnet.None
}

// applyID takes what a trusted previous hop says in its ID, as Dovecot's imap-login does for
// clients in login_trusted_networks, on the connection's first ID only: the client's and
// the connected address, the session id, the proxy TTL and x-forward-* fields. From anyone
// else these keys are ignored.
func (s *session) applyID(params []login.IDParam) {
	if s.idSeen {
		return
	}
	s.idSeen = true
	if s.srv.cfg.IMAPIDRetain {
		s.clientID = retainID(params)
	}
	if !s.srv.isTrusted(s.remote.Addr()) {
		return
	}
	remote, local := s.remote, s.local
	for _, p := range params {
		switch k := strings.ToLower(p.Key); {
		case k == "x-originating-ip":
			if a, err := netip.ParseAddr(p.Value); err == nil {
				remote = netip.AddrPortFrom(a.Unmap(), remote.Port())
			}
		case k == "x-originating-port":
			if n, err := strconv.ParseUint(p.Value, 10, 16); err == nil {
				remote = netip.AddrPortFrom(remote.Addr(), uint16(n))
			}
		case k == "x-connected-ip":
			if a, err := netip.ParseAddr(p.Value); err == nil {
				local = netip.AddrPortFrom(a.Unmap(), local.Port())
			}
		case k == "x-connected-port":
			if n, err := strconv.ParseUint(p.Value, 10, 16); err == nil {
				local = netip.AddrPortFrom(local.Addr(), uint16(n))
			}
		case k == "x-session-id" || k == "x-session-ext-id":
			if p.Value != "" && len(p.Value) <= 64 {
				s.id = p.Value
			}
		case k == "x-proxy-ttl":
			if n, err := strconv.Atoi(p.Value); err == nil && n >= 0 {
				s.ttl = n
			}
		case strings.HasPrefix(k, "x-forward-") && len(k) > len("x-forward-"):
			s.forward = append(s.forward, login.KV{Key: p.Key[len("x-forward-"):], Value: p.Value})
		}
	}
	s.remote, s.local = remote, local
}

// maxRetainedID is Dovecot's LOGIN_MAX_CLIENT_ID_LEN.
const maxRetainedID = 256

// retainID keeps the client's own ID pairs for imap_id_retain, up to maxRetainedID bytes
// of keys and values. Keys starting with "x-" are never passed on: they are what proxies
// tell backends, and a client must not be able to say them through us.
func retainID(params []login.IDParam) []login.BackendIDField {
	var out []login.BackendIDField
	size := 0
	for _, p := range params {
		if len(p.Key) >= 2 && strings.EqualFold(p.Key[:2], "x-") {
			continue
		}
		if size += len(p.Key) + len(p.Value); size > maxRetainedID {
			break
		}
		out = append(out, login.BackendIDField{Key: p.Key, Value: p.Value})
	}
	return out
}
