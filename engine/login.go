package engine

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"doorman/codec/login"
	"doorman/codec/sasl"
	"doorman/engine/relay"
	"doorman/engine/tlsio"
	"doorman/route"
)

// proxyTTL is what this hop starts with (Dovecot 2.3's LOGIN_PROXY_TTL); the backend is
// told TTL-1.
const proxyTTL = 5

// maxDelayUntil is Dovecot's AUTH_REQUEST_MAX_DELAY_SECS.
const maxDelayUntil = 300 * time.Second

// loginRequest is everything the login goroutine needs, copied off the session so the
// goroutine never touches loop-owned state.
type loginRequest struct {
	proto    *protocol
	ttl      int                    // this hop's TTL; the backend is told ttl-1
	forward  []login.KV             // forward fields from a trusted previous hop
	clientID []login.BackendIDField // imap_id_retain
	id       string
	creds    login.Credentials
	remote   netip.AddrPort
	local    netip.AddrPort
	started  time.Time
}

// loginOutcome is what the goroutine hands back to the loop.
type loginOutcome struct {
	result     login.AuthResult
	user       string
	backendFD  int        // ≥0 on success: the logged-in backend socket
	backendTLS *relay.TLS // the backend's TLS (passdb ssl= or starttls=), in tlsio FD mode
	toClient   []byte     // backend bytes after its final OK, for the client
	stage      Stage
	reason     string // for the log when the login failed
	target     string
	targetAP   netip.AddrPort
	vsite      string // the passdb's vsite=
	directed   bool   // the director chose the backend
}

// startLogin runs on the loop: it leaves the command phase and hands the credentials to a
// goroutine, which looks the user up, logs in to the backend and reports back.
func (s *session) startLogin(cr *login.Credentials) {
	s.loop.remove(s)
	s.stage = StageLookup
	s.user = cr.User
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	req := &loginRequest{proto: s.lst.proto, ttl: s.ttl, forward: s.forward, clientID: s.clientID, id: s.id, creds: *cr, remote: s.remote, local: s.local, started: s.started}
	el := s.c.EventLoop()
	go func() {
		out := s.srv.safeLogin(ctx, req)
		err := el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.finishLogin(out)
			return nil
		}))
		if err != nil && out.backendFD >= 0 {
			_ = unix.Close(out.backendFD) // the engine is shutting down
		}
	}()
}

// CRAM-MD5 and SCRAM-SHA-256. The codec runs the exchange and checks the client's proof;
// the engine gives it a random nonce per session (SessionInfo.SASLNonce: only when
// auth_mechanisms has one of them) and, mid-exchange (ActSecret), the user's stored
// password in a form the mechanism can use (route.SASLSecret): {PLAIN}, {CRAM-MD5},
// {SCRAM-SHA-256}. The ActAuth that follows carries Credentials.Verified and no password:
// the login then goes on without a password check (route.Chain.AuthenticateVerified),
// and the backend login needs a passdb pass= or master= (or proxy_noauth): there is no
// client password to forward.

// isSecretMech reports whether mech is a challenge-response mechanism.
func isSecretMech(mech string) bool { return mech == sasl.CRAMMD5 || mech == sasl.SCRAMSHA256 }

// saslNonce is a session's SASLNonce: 18 random bytes in base64, or "" when
// auth_mechanisms (as configured) has neither CRAM-MD5 nor SCRAM-SHA-256.
func saslNonce(mechanisms string) string {
	if !containsFold(mechanisms, sasl.CRAMMD5) && !containsFold(mechanisms, sasl.SCRAMSHA256) {
		return ""
	}
	var b [18]byte
	_, _ = crand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// containsFold is strings.Contains for an upper-case ASCII sub, in any case, without
// allocating.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for ; j < len(sub); j++ {
			c := s[i+j]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}

// startSecret runs on the loop: the codec needs the stored password of the user of a
// CRAM-MD5 or SCRAM-SHA-256 exchange. A goroutine looks it up; finishSecret resumes the
// codec with it.
func (s *session) startSecret(cr *login.Credentials) {
	s.loop.remove(s)
	s.stage = StageLookup
	s.user = cr.User
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	req := &loginRequest{proto: s.lst.proto, ttl: s.ttl, id: s.id, creds: *cr, remote: s.remote, local: s.local, started: s.started}
	el := s.c.EventLoop()
	go func() {
		res, reason := s.srv.safeSecretLookup(ctx, req)
		_ = el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			s.finishSecret(res, reason)
			return nil
		}))
	}()
}

// finishSecret runs on the loop with the stored secret (or the failure).
func (s *session) finishSecret(res login.AuthResult, reason string) {
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	if s.closed {
		return
	}
	if res.Status != login.AuthOK {
		s.srv.stats.LoginsFailed.Add(1)
		s.srv.countSecretFailure(res.Status)
		s.logf(zap.InfoLevel, "login failed", zap.String("user", s.user), zap.String("stage", StageLookup.String()),
			zap.String("reason", reason))
	}
	s.stage = StageAuth
	s.loop.touch(s)
	if act := s.do(s.fe.Resume(res)); act == gnet.Close {
		s.closeNow(s.endedBy, s.reason)
		return
	}
	if s.stage == StageAuth && (s.raw != nil || s.hasInput()) {
		if act := s.onInput(); act == gnet.Close {
			s.closeNow(s.endedBy, s.reason)
		}
	}
}

// safeSecretLookup is secretLookup with a recover.
func (srv *Server) safeSecretLookup(ctx context.Context, req *loginRequest) (res login.AuthResult, reason string) {
	defer func() {
		if r := recover(); r != nil {
			srv.log.Error("panic in secret lookup", zap.String("session", req.id), zap.Any("panic", r),
				zap.ByteString("stack", debug.Stack()))
			res, reason = login.AuthResult{Status: login.AuthUnavailable}, "internal error"
		}
	}()
	return srv.secretLookup(ctx, req)
}

// secretLookup runs off the loop: the user's stored password, as the mechanism needs it.
// An unknown user or a password the mechanism can't use fails the login as a wrong
// password would (auth penalty, failure delay); the reason is for the log.
func (srv *Server) secretLookup(ctx context.Context, req *loginRequest) (login.AuthResult, string) {
	cr := &req.creds
	user := normalizeUser(srv.cfg.AuthUsernameFormat, cr.User)
	lctx, cancel := context.WithTimeout(ctx, time.Duration(srv.cfg.AuthLookupTimeout))
	lctx = route.WithLookupInfo(lctx, req.lookupInfo())
	e, err := srv.chain.Lookup(lctx, user)
	cancel()
	fail := func(reason string) (login.AuthResult, string) {
		srv.authPenalty(ctx, req, false, false)
		srv.failureDelay(ctx, false)
		return login.AuthResult{Status: login.AuthFailed}, reason
	}
	switch {
	case errors.Is(err, route.ErrUnknownUser):
		return fail("unknown user")
	case err != nil:
		return login.AuthResult{Status: login.AuthTempFail}, err.Error()
	}
	secret, err := route.SASLSecret(e.Password, cr.Mech)
	switch {
	case errors.Is(err, route.ErrSchemeNotUsable):
		return fail(cr.Mech + ": " + err.Error())
	case err != nil:
		return login.AuthResult{Status: login.AuthTempFail}, err.Error()
	}
	return login.AuthResult{Status: login.AuthOK, Secret: secret}, ""
}

// verifiedLookup is the passdb step of a CRAM-MD5 or SCRAM-SHA-256 login, once the codec
// has checked the proof (Verified) or found it wrong.
func (srv *Server) verifiedLookup(ctx context.Context, cr *login.Credentials, user string) route.Result {
	if !cr.Verified {
		// The lookup happened for the secret; the proof did not match it.
		return route.Result{Verdict: route.VerdictPasswordMismatch, Err: errors.New(cr.Mech + " proof mismatch")}
	}
	return srv.chain.AuthenticateVerified(ctx, user, func(e *route.Entry) (bool, error) {
		_, err := route.SASLSecret(e.Password, cr.Mech)
		if errors.Is(err, route.ErrSchemeNotUsable) {
			return false, nil
		}
		return err == nil, err
	})
}

// finishLogin runs on the loop with the login's outcome.
func (s *session) finishLogin(out *loginOutcome) {
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic finishing login", zap.Any("panic", r))
			if out.backendFD >= 0 {
				_ = unix.Close(out.backendFD)
				out.backendFD = -1
			}
			s.closeNow("proxy", "internal error")
		}
	}()
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	if s.closed {
		if out.backendFD >= 0 {
			_ = unix.Close(out.backendFD)
		}
		return
	}
	s.srv.countLogin(out)
	s.user = out.user
	s.stage = out.stage
	s.loginAt = time.Since(s.started)
	if out.backendFD >= 0 {
		s.srv.stats.LoginsOK.Add(1)
		s.handOff(out, 0)
		return
	}
	s.srv.stats.LoginsFailed.Add(1)
	s.target = out.target
	s.logf(zap.InfoLevel, "login failed", zap.String("user", out.user), zap.String("stage", out.stage.String()),
		zap.String("target", out.target), zap.String("reason", out.reason))
	s.stage = StageAuth
	s.loop.touch(s)
	if act := s.do(s.fe.Resume(out.result)); act == gnet.Close {
		s.closeNow(s.endedBy, s.reason)
		return
	}
	// Commands the client sent while we were busy are waiting in the buffer (or, with
	// TLS, maybe inside crypto/tls: look anyway).
	if s.raw != nil || s.hasInput() {
		if act := s.onInput(); act == gnet.Close {
			s.closeNow(s.endedBy, s.reason)
		}
	}
}

// handOff moves both sockets out of gnet and into the relay. It runs on the loop.
func (s *session) handOff(out *loginOutcome, tries int) {
	c := s.c
	if c.OutboundBuffered() > 0 {
		// gnet cannot give buffered output back; let it drain first. Only a client that
		// does not read its greeting gets here.
		_ = c.Flush()
		if c.OutboundBuffered() > 0 {
			if tries >= 50 {
				_ = unix.Close(out.backendFD)
				s.closeNow("proxy", "client does not read")
				return
			}
			el := c.EventLoop()
			time.AfterFunc(20*time.Millisecond, func() {
				_ = el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
					if s.closed {
						_ = unix.Close(out.backendFD)
						return nil
					}
					s.handOff(out, tries+1)
					return nil
				}))
			})
			return
		}
	}
	var toBackend []byte
	if s.raw != nil {
		// Records not yet decrypted stay with the TLS transport; plaintext the codec did
		// not consume goes first.
		if pending, _ := c.Next(-1); len(pending) > 0 {
			s.raw.Feed(pending)
		}
		toBackend, s.plain = s.plain, nil
	} else {
		pending, _ := c.Next(-1)
		toBackend = append([]byte(nil), pending...)
	}
	fd, err := c.Dup()
	if err != nil {
		_ = unix.Close(out.backendFD)
		s.logf(zap.ErrorLevel, "dup of the client socket failed", zap.Error(err))
		s.closeNow("proxy", "dup failed")
		return
	}
	s.handoff = true
	s.stage = StageRelay
	s.srv.stats.Active.Add(-1)
	_ = c.EventLoop().Close(c) // synchronous: OnClose runs now, and sees handoff
	srv := s.srv
	srv.stats.Relaying.Add(1)
	proto := s.lst.proto
	srv.stats.sessionRelayed(proto)
	// The relay counts the prefixes (pipelined client bytes, the login reply) itself.
	rec := s.record(out.target)
	rec.setExtra(rec.lbID(), out.vsite, out.directed)
	s.fe = nil
	var hold func() time.Duration
	if sp := srv.spreader; sp != nil {
		target := out.targetAP
		sp.started(target)
		hold = func() time.Duration { return sp.delay(target, time.Now()) }
	}
	var clientTLS *relay.TLS
	if s.raw != nil {
		s.raw.SetFD(fd)
		tlsio.Compact(s.tc) // the ClientHello's buffers, for a client that sends nothing more
		clientTLS = &relay.TLS{Conn: s.tc, Raw: s.raw}
		s.tc, s.raw = nil, nil
	}
	h, err := srv.relay.Add(&relay.Session{
		ClientFD:   fd,
		BackendFD:  out.backendFD,
		ClientTLS:  clientTLS,
		BackendTLS: out.backendTLS,
		ToClient:   out.toClient,
		ToBackend:  toBackend,
		HoldClient: hold,
		// Done lives as long as the session: a method value (16 bytes), not a closure over
		// what it needs (64), and never out with the login reply the relay has long sent.
		Done: rec.relayDone,
	})
	if err != nil {
		if srv.spreader != nil {
			srv.spreader.ended(out.targetAP)
		}
		srv.stats.Relaying.Add(-1)
		srv.stats.sessionClosed(proto, true)
		_ = unix.Close(fd)
		_ = unix.Close(out.backendFD)
		rec.log(srv.log, StageRelay, "proxy", "relay: "+err.Error(), 0, 0)
		return
	}
	srv.registerSession(rec, h) // the admin API's /sessions and /kick
}

// relayDone ends a relayed session (relay.Session.Done): the session registry, counters,
// director and disconnect spreader, and the session's last log line.
func (rec *endRecord) relayDone(st relay.Stats) {
	srv := rec.lst.srv
	srv.unregisterSession(rec) // Done may come before Add returns: see sessions.go
	srv.stats.RelayToBackend.Add(st.ToBackend)
	srv.stats.RelayToClient.Add(st.ToClient)
	if rec.directed() {
		srv.director.ended(rec)
	}
	if srv.spreader != nil {
		// The target as logged is the address the spreader counted (handOff).
		if ap, err := netip.ParseAddrPort(rec.target); err == nil {
			srv.spreader.ended(ap)
		}
	}
	srv.stats.Relaying.Add(-1)
	srv.stats.sessionClosed(rec.lst.proto, true)
	reason := "disconnected"
	if st.Err != nil {
		reason = st.Err.Error()
	}
	rec.log(srv.log, StageRelay, sideName(st.EndedBy), reason, st.ToBackend, st.ToClient)
}

func sideName(sd relay.Side) string {
	switch sd {
	case relay.SideClient:
		return "client"
	case relay.SideBackend:
		return "backend"
	}
	return "proxy"
}

// isSelf is Dovecot's proxy_maybe test: the destination address is the one the client
// connected to, or one of auth_proxy_self, and the passdb gave no port or the one the client
// connected to.
func (srv *Server) isSelf(ip netip.Addr, port int, req *loginRequest) bool {
	if port != 0 && port != int(req.local.Port()) {
		return false
	}
	return ip == req.local.Addr() || slices.Contains(srv.proxySelf, ip)
}

// isOwnListener reports whether a backend address is one of this process's own listeners
// (Dovecot compares with the connection's local address; a trusted hop's ID may have
// replaced that, so the listeners themselves are the safer test).
func (srv *Server) isOwnListener(target netip.AddrPort) bool {
	for ap := range srv.listeners {
		if ap.Port() != target.Port() {
			continue
		}
		if ap.Addr() == target.Addr() {
			return true
		}
		// A wildcard listener is ours on every address of this host, and only there: a
		// backend on another host may well use the same port.
		if ap.Addr().IsUnspecified() && (target.Addr().IsLoopback() || slices.Contains(srv.hostAddrs, target.Addr())) {
			return true
		}
	}
	return false
}

// normalizeUser applies auth_username_format: %u as typed, %Lu lower case, %n and %Ln the
// part before the @ (as typed, lower case).
func normalizeUser(format, user string) string {
	switch format {
	case "%Lu":
		return strings.ToLower(user)
	case "%n", "%Ln":
		if i := strings.LastIndexByte(user, '@'); i >= 0 {
			user = user[:i]
		}
		if format == "%Ln" {
			user = strings.ToLower(user)
		}
	}
	return user
}

// safeLogin is login with a recover: a panic fails this one login, never the process.
func (srv *Server) safeLogin(ctx context.Context, req *loginRequest) (out *loginOutcome) {
	defer func() {
		if r := recover(); r != nil {
			srv.log.Error("panic in login", zap.String("session", req.id), zap.Any("panic", r),
				zap.ByteString("stack", debug.Stack()))
			if out != nil && out.backendFD >= 0 {
				_ = unix.Close(out.backendFD)
			}
			out = &loginOutcome{backendFD: -1, user: req.creds.User, stage: StageLookup,
				result: login.AuthResult{Status: login.AuthUnavailable}, reason: "internal error"}
		}
	}()
	return srv.login(ctx, req)
}

// login runs off the loop: passdb lookup, password check, failure delay, backend login.
func (srv *Server) login(ctx context.Context, req *loginRequest) *loginOutcome {
	out := &loginOutcome{backendFD: -1, user: req.creds.User, stage: StageLookup}
	fail := func(st login.AuthStatus, reason string) *loginOutcome {
		out.result = login.AuthResult{Status: st}
		out.reason = reason
		return out
	}
	cr := &req.creds
	if cr.Authzid != "" && cr.Authzid != cr.User {
		// Logging in as another user needs master-user support of our own: not offered.
		srv.failureDelay(ctx, false)
		return fail(login.AuthAuthzFailed, "authzid differs from authcid")
	}
	user := normalizeUser(srv.cfg.AuthUsernameFormat, cr.User)
	out.user = user
	lctx, cancel := context.WithTimeout(ctx, time.Duration(srv.cfg.AuthLookupTimeout))
	lctx = route.WithLookupInfo(lctx, req.lookupInfo())
	oauth := isOAuthMech(cr.Mech)
	secretMech := isSecretMech(cr.Mech)
	var res route.Result
	switch {
	case oauth:
		res = srv.oauthLookup(lctx, user) // a token is not a password: see oauth.go
	case secretMech:
		res = srv.verifiedLookup(lctx, cr, user)
	default:
		res = srv.chain.Authenticate(lctx, srv.hasher, user, cr.Pass)
	}
	cancel()
	switch res.Verdict {
	case route.VerdictTempFail:
		reason := "passdb temporary failure"
		if res.Err != nil {
			reason = res.Err.Error()
		}
		return fail(login.AuthTempFail, reason)
	case route.VerdictUnknownUser:
		srv.authPenalty(ctx, req, false, false)
		srv.failureDelay(ctx, false)
		return fail(login.AuthFailed, "unknown user")
	case route.VerdictPasswordMismatch:
		srv.authPenalty(ctx, req, false, false)
		srv.failureDelay(ctx, false)
		reason := "password mismatch"
		if (oauth || secretMech) && res.Err != nil {
			reason = res.Err.Error()
		}
		return fail(login.AuthFailed, reason)
	}
	if oauth && srv.oauth != nil {
		if err := srv.oauth.check(ctx, cr.Token, user); errors.Is(err, errTokenRefused) {
			srv.authPenalty(ctx, req, false, false)
			srv.failureDelay(ctx, false)
			return fail(login.AuthFailed, "oauth2 introspection: "+err.Error())
		} else if err != nil {
			return fail(login.AuthTempFail, err.Error())
		}
	}
	if res.Entry != nil && res.Entry.User != "" {
		out.user = res.Entry.User
	}
	p := res.Proxy
	srv.authPenalty(ctx, req, true, p.NoDelay)
	if p.NoLogin {
		srv.failureDelay(ctx, p.NoDelay)
		out.result = login.AuthResult{Status: login.AuthDisabled, Text: p.Reason}
		out.reason = "nologin"
		return out
	}
	if !p.Proxy && !p.ProxyMaybe {
		srv.failureDelay(ctx, p.NoDelay)
		out.result = login.AuthResult{Status: login.AuthDisabled,
			Text: "[CONTACTADMIN] No mail server is set for this user."}
		out.reason = "passdb has no proxy field: Doorman has no local mail store"
		return out
	}
	if !p.DelayUntil.IsZero() {
		wait, err := delayUntilWait(p.DelayUntil, p.DelayJitter, time.Now(), rand.IntN)
		if err != nil {
			return fail(login.AuthUnavailable, err.Error())
		}
		if wait > 0 && !sleepCtx(ctx, wait) {
			return fail(login.AuthUnavailable, "client left during delay_until")
		}
	}
	var fields map[string]string
	if res.Entry != nil {
		fields = res.Entry.Fields
	}
	out.vsite = fields["vsite"]
	if p.Host == "" && p.HostIP == "" && srv.director != nil {
		// No host: the director assigns one of the site's backends (director.go).
		ok, err := srv.director.assign(ctx, out.user, fields, &p)
		if err != nil {
			return fail(login.AuthUnavailable, "director: "+err.Error())
		}
		out.directed = ok
	}
	out = srv.proxyLogin(ctx, req, out, p, fields)
	if out.backendFD >= 0 {
		// A kick of this user that this host missed ends its older sessions now.
		srv.fleet.loginCheck(ctx, out.user)
	}
	return out
}

// delayUntilWait is how long delay_until=<until>+<jitter> holds a successful login, as
// Dovecot has it (auth-request.c): a timestamp more than AUTH_REQUEST_MAX_DELAY_SECS ahead
// fails the login; otherwise a random 0..N-1 whole seconds are added and the total is
// capped at that maximum. randN is rand.IntN (a parameter for tests).
func delayUntilWait(until time.Time, jitter time.Duration, now time.Time, randN func(int) int) (time.Duration, error) {
	if until.Sub(now) > maxDelayUntil {
		return 0, fmt.Errorf("delay_until %d is too far in the future", until.Unix())
	}
	if n := int(jitter / time.Second); n > 0 {
		until = until.Add(time.Duration(randN(n)) * time.Second)
	}
	return min(until.Sub(now), maxDelayUntil), nil
}

// authPenalty applies Dovecot's auth penalty for the client's address, kept in Redis and
// so shared by every proxy host: it holds this login's reply for the delay the earlier
// failures earned, then counts a failure or (ok) clears the count. Clients from
// login_trusted_networks are exempt, and so is an accepted login whose passdb entry says
// nodelay. Dovecot waits before the lookup; Doorman reads the count after it, which the
// client cannot tell apart, so that nodelay is known. A Redis error is no penalty.
func (srv *Server) authPenalty(ctx context.Context, req *loginRequest, ok, nodelay bool) {
	if srv.penalty == nil || !req.remote.IsValid() || srv.isTrusted(req.remote.Addr()) || (ok && nodelay) {
		return
	}
	ip := req.remote.Addr()
	rctx, cancel := context.WithTimeout(ctx, penaltyTimeout)
	n, err := srv.penalty.Penalty(rctx, ip)
	cancel()
	if err != nil {
		srv.log.Debug("auth penalty not read", zap.String("session", req.id), zap.Error(err))
		return
	}
	sleepCtx(ctx, route.PenaltyDelay(n))
	rctx, cancel = context.WithTimeout(ctx, penaltyTimeout)
	defer cancel()
	switch {
	case !ok:
		err = srv.penalty.PenaltyFailed(rctx, ip)
	case n > 0:
		err = srv.penalty.PenaltyClear(rctx, ip)
	}
	if err != nil {
		srv.log.Debug("auth penalty not updated", zap.String("session", req.id), zap.Error(err))
	}
}

// penaltyTimeout bounds each penalty read or update: past it, no penalty.
const penaltyTimeout = 500 * time.Millisecond

// failureDelay holds a failed login's reply for auth_failure_delay (Dovecot's anti
// guessing delay), unless the passdb said nodelay.
func (srv *Server) failureDelay(ctx context.Context, nodelay bool) {
	if nodelay {
		return
	}
	sleepCtx(ctx, srv.live.Load().authFailureDelay) // SIGHUP may change it
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// proxyLogin connects to the user's backend and logs in there, retrying as Dovecot does:
// up to login_proxy_max_reconnects more tries, 1 s apart, all within the proxy timeout.
func (srv *Server) proxyLogin(ctx context.Context, req *loginRequest, out *loginOutcome, p route.Proxy, entryFields map[string]string) *loginOutcome {
	host := p.HostIP
	if host == "" {
		host = p.Host
	}
	out.stage = StageConnect
	if host == "" {
		out.result = login.AuthResult{Status: login.AuthUnavailable}
		out.reason = "proxy: host not given"
		return out
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		out.result = login.AuthResult{Status: login.AuthUnavailable}
		out.reason = fmt.Sprintf("proxy: host %q is not an IP address", host)
		return out
	}
	port := p.Port
	if port == 0 {
		port = req.proto.defaultPort
		if p.SSL != "" && req.proto.defaultSSLPort != 0 {
			port = req.proto.defaultSSLPort
		}
	}
	target := netip.AddrPortFrom(ip.Unmap(), uint16(port))
	out.target = target.String()
	out.targetAP = target
	destUser := p.DestUser
	if destUser == "" {
		destUser = out.user
	}
	if p.ProxyMaybe && !p.Proxy && srv.isSelf(target.Addr(), p.Port, req) {
		// Dovecot logs a proxy_maybe user in locally when the destination is this server
		// (proxy_always hands them to its director instead); Doorman has neither.
		out.result = login.AuthResult{Status: login.AuthDisabled,
			Text: "[CONTACTADMIN] No mail server is set for this user."}
		out.reason = "proxy_maybe: the destination is this server, and Doorman has no local mail store"
		return out
	}
	if req.ttl <= 1 {
		// Dovecot: a REMOTE_CONFIG failure, so the client gets [SERVERBUG].
		out.result = login.AuthResult{Status: login.AuthServerBug}
		out.reason = "TTL reached zero - proxies appear to be looping?"
		return out
	}
	if srv.isOwnListener(target) && destUser == out.user {
		out.result = login.AuthResult{Status: login.AuthUnavailable}
		out.reason = "Proxying loops to itself"
		return out
	}
	pass := p.Pass
	if pass == "" && p.Master == "" && req.creds.Verified && !p.ProxyNoAuth {
		// Dovecot: "proxy: password not given", and the client gets the proxy error.
		out.result = login.AuthResult{Status: login.AuthUnavailable}
		out.reason = "proxy: password not given: a " + req.creds.Mech +
			" login has no password to forward (the passdb needs pass= or master=)"
		return out
	}
	if pass == "" && p.Master == "" {
		pass = req.creds.Pass // password forwarding: the client's own password
		if req.creds.Token != "" {
			pass = req.creds.Token // Dovecot: an OAuth token is the auth request's password
		}
	}
	mech := backendMech(p.ProxyMech, req.creds.Mech)
	var token string
	if isOAuthMech(strings.ToUpper(mech)) {
		token = req.creds.Token // empty for a password login: Pass goes as the token
	}
	live := srv.live.Load()
	timeout := live.loginProxyTimeout
	if p.ProxyTimeout > 0 {
		timeout = p.ProxyTimeout
	}
	deadline := time.Now().Add(timeout)
	var source netip.Addr
	if p.SourceIP != "" {
		source, _ = netip.ParseAddr(p.SourceIP)
	}
	// Beyond Dovecot: passdb proxy_protocol=v2 (or v1) tells the backend who the client is
	// with a PROXY header instead of ID/XCLIENT.
	var ppVersion byte
	if res := proxyProtocolField(entryFields); res != 0 {
		ppVersion = res
	} else if entryFields["proxy_protocol"] != "" {
		out.result = login.AuthResult{Status: login.AuthUnavailable}
		out.reason = fmt.Sprintf("proxy_protocol=%q: only v1 and v2 exist", entryFields["proxy_protocol"])
		return out
	}
	forward := forwardFields(req.forward, p.Forward)
	bp := &login.BackendParams{
		ClientTag:            req.creds.Tag,
		User:                 destUser,
		Pass:                 pass,
		Master:               p.Master,
		Mech:                 mech,
		Token:                token,
		NotTrusted:           p.ProxyNotTrusted || ppVersion != 0,
		ClientSentCapability: req.creds.CapabilitySeen,
		NoPipelining:         p.ProxyNoPipelining,
		ID:                   idFields(req, forward),
		Client:               clientInfo(req, forward),
		NoAuth:               p.ProxyNoAuth,
		TLS:                  p.SSL != "",
		StartTLS:             p.StartTLS != "" && p.SSL == "",
	}
	var bt *backendTLS
	if p.SSL != "" || p.StartTLS != "" {
		// The certificate must name the passdb's host (hostip is only where to connect).
		bt = &backendTLS{config: srv.tls.backendConfig(p.Host, p.AnyCert), implicit: p.SSL != ""}
	}
	var (
		res     login.BackendResult
		lastErr error
	)
	started := time.Now() // Dovecot's proxy->created, for the backend's health record
	for attempt := 0; ; attempt++ {
		if ok, down := srv.hostFail.begin(target, time.Now(), p.HostImmediateFailureAfter); !ok {
			// proxy_host_immediate_failure_after: the backend is down and another
			// connect is already waiting on it. Dovecot: no reconnects.
			srv.stats.HostDown.Add(1)
			out.stage = StageConnect
			out.result = login.AuthResult{Status: login.AuthUnavailable}
			out.reason = fmt.Sprintf("Host is down (connects to %s failing for %s)", target, down.Round(time.Second))
			return out
		}
		var fd int
		var rest []byte
		var st Stage
		var btls *relay.TLS
		t0 := time.Now()
		fd, btls, rest, res, st, lastErr = srv.backendAttempt(ctx, req.proto, target, source, deadline, bp, proxyHeader(ppVersion, req), bt)
		srv.hostFail.end(target, started, time.Now(), attemptOutcome(ctx, st, lastErr))
		out.stage = st
		if lastErr == nil && res.Outcome == login.BackendOK {
			srv.stats.BackendLogin.observe(time.Since(t0))
			out.backendFD = fd
			out.backendTLS = btls
			out.toClient = append(res.ClientReply, rest...)
			return out
		}
		retry := lastErr != nil || res.Outcome == login.BackendTempFail || res.Outcome == login.BackendProtocolError
		if ctx.Err() != nil || !retry || attempt >= live.maxReconnects ||
			time.Until(deadline) < 1100*time.Millisecond {
			break
		}
		if !sleepCtx(ctx, time.Second) {
			break
		}
	}
	switch {
	case lastErr != nil:
		out.result = login.AuthResult{Status: login.AuthUnavailable}
		out.reason = lastErr.Error()
	case res.Outcome == login.BackendAuthFailed || res.Outcome == login.BackendTempFail:
		out.result = login.AuthResult{Status: login.AuthFailed, Reply: res.ClientReply}
		if res.Outcome == login.BackendTempFail {
			out.result.Status = login.AuthTempFail
		}
		out.reason = "backend: " + res.Text
	case res.Outcome == login.BackendRemoteConfig:
		out.result = login.AuthResult{Status: login.AuthServerBug}
		out.reason = "backend: " + res.Text
	default:
		out.result = login.AuthResult{Status: login.AuthUnavailable}
		out.reason = "backend: " + res.Text
	}
	return out
}

// proxyProtocolField reads passdb proxy_protocol: 1 or 2 for "v1"/"v2" (or "1"/"2"), 0 otherwise.
func proxyProtocolField(fields map[string]string) byte {
	switch fields["proxy_protocol"] {
	case "v1", "1":
		return 1
	case "v2", "2":
		return 2
	}
	return 0
}

// clientInfo is who the client is, for XCLIENT.
func clientInfo(req *loginRequest, forward []login.KV) login.ClientInfo {
	ci := login.ClientInfo{
		SessionID:  req.id,
		RemoteIP:   req.remote.Addr().String(),
		RemotePort: int(req.remote.Port()),
		LocalIP:    req.local.Addr().String(),
		LocalPort:  int(req.local.Port()),
		TTL:        req.ttl - 1,
	}
	ci.Forward = forward
	return ci
}

// forwardFields are the forward_* fields for the next hop: those a trusted previous hop sent,
// then the passdb's own, which win over a received field of the same name (Dovecot imports
// received ones as passdb fields that the passdb may set again).
func forwardFields(received []login.KV, passdb []route.KV) []login.KV {
	var out []login.KV
	for _, kv := range received {
		if !slices.ContainsFunc(passdb, func(p route.KV) bool { return p.Key == kv.Key }) {
			out = append(out, kv)
		}
	}
	for _, kv := range passdb {
		out = append(out, login.KV{Key: kv.Key, Value: kv.Value})
	}
	return out
}

// idFields builds the ID Dovecot's IMAP proxy sends, in Dovecot's key order.
func idFields(req *loginRequest, forward []login.KV) []login.BackendIDField {
	f := append(make([]login.BackendIDField, 0, len(req.clientID)+6+len(forward)), req.clientID...)
	f = append(f, []login.BackendIDField{
		{Key: "x-session-id", Value: req.id},
		{Key: "x-originating-ip", Value: req.remote.Addr().String()},
		{Key: "x-originating-port", Value: strconv.Itoa(int(req.remote.Port()))},
		{Key: "x-connected-ip", Value: req.local.Addr().String()},
		{Key: "x-connected-port", Value: strconv.Itoa(int(req.local.Port()))},
		{Key: "x-proxy-ttl", Value: strconv.Itoa(req.ttl - 1)},
	}...)
	for _, kv := range forward {
		f = append(f, login.BackendIDField{Key: "x-forward-" + kv.Key, Value: kv.Value})
	}
	return f
}

// countLogin counts a finished login by its outcome class (Counters.Logins), and passdb
// temporary failures. It runs once per login, on the loop, with its outcome.
func (srv *Server) countLogin(out *loginOutcome) {
	st := out.result.Status
	if out.backendFD >= 0 {
		st = login.AuthOK
	}
	srv.stats.Logins[loginClass(st)].Add(1)
	if st == login.AuthTempFail && out.stage == StageLookup {
		srv.stats.PassdbTempFails.Add(1)
	}
}

// countSecretFailure counts a login that failed at its secret lookup (CRAM-MD5,
// SCRAM-SHA-256), as countLogin does the others.
func (srv *Server) countSecretFailure(st login.AuthStatus) {
	srv.stats.Logins[loginClass(st)].Add(1)
	if st == login.AuthTempFail {
		srv.stats.PassdbTempFails.Add(1)
	}
}
