package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"doorman/codec/lmtp"
	"doorman/codec/proxyproto"
	"doorman/route"
)

// LMTP proxying (Dovecot's src/lmtp/lmtp-proxy.c): every RCPT TO is looked up in the
// passdb and relayed to the user's backend; the message is then streamed to every
// backend holding a recipient and the client gets one reply per recipient.
//
// Design: LMTP is MTA→proxy traffic with few connections and large message bodies, so
// an LMTP listener is a plain net.Listener with one goroutine per connection doing
// blocking I/O, not the gnet login loop. Blocking I/O gives natural backpressure while a
// message streams: a write to a slow backend stops us reading from the client, so a
// connection holds one read buffer and one encode buffer whatever the message's size.
// Unlike Dovecot, which spools the whole message to a temporary file and sends it after
// the final dot, Doorman streams: DATA goes to the backends first, and each piece of the
// message is passed on as it arrives. (A goroutine and ~200 KB per connection would be
// too much for IMAP's hundreds of thousands of idle sessions; for LMTP it is nothing.)

const (
	// lmtpIdleTimeout is Dovecot's CLIENT_IDLE_TIMEOUT_MSECS.
	lmtpIdleTimeout = 5 * time.Minute
	// lmtpProxyTimeout is LMTP_PROXY_DEFAULT_TIMEOUT_MSECS: backend I/O of one recipient
	// (connect, handshake, each command), unless the passdb gives proxy_timeout.
	lmtpProxyTimeout = 125 * time.Second
	// lmtpProxyTTL is LMTP_PROXY_DEFAULT_TTL: the XCLIENT TTL a backend gets.
	lmtpProxyTTL = 5
	// lmtpRecipientDelimiter is Dovecot's recipient_delimiter default: the "+detail" of
	// a recipient is not part of the user name looked up.
	lmtpRecipientDelimiter = "+"
	// lmtpAddReceivedHeader is lmtp_add_received_header (Dovecot's default: yes).
	lmtpAddReceivedHeader = true
	// lmtpReadBuffer is the client read buffer; a command line is at most ~4 KB, the
	// rest is room for message bytes.
	lmtpReadBuffer = 64 << 10
	// lmtpBackendBuffer reads backend replies (lines of at most 4 KB).
	lmtpBackendBuffer = 8 << 10
)

// lmtpServer serves one LMTP listener.
type lmtpServer struct {
	srv      *Server
	l        *listener
	ln       net.Listener
	cfg      lmtp.Config
	hostname string

	mu     sync.Mutex
	conns  map[*lmtpConn]struct{}
	closed bool

	wg         sync.WaitGroup // connection goroutines
	acceptDone chan struct{}
}

// newLMTPServer listens on the listener's address and serves it before returning.
func newLMTPServer(srv *Server, l *listener) (*lmtpServer, error) {
	host := srv.cfg.Hostname // the hostname setting, by default the system's host name
	if host == "" {
		host, _ = os.Hostname()
	}
	if host == "" {
		host = "localhost"
	}
	ln, err := net.Listen("tcp", l.Address)
	if err != nil {
		return nil, fmt.Errorf("lmtp listener %s: %w", l.Name, err)
	}
	ls := &lmtpServer{
		srv:        srv,
		l:          l,
		ln:         ln,
		hostname:   host,
		cfg:        lmtp.Config{Hostname: host},
		conns:      map[*lmtpConn]struct{}{},
		acceptDone: make(chan struct{}),
	}
	go ls.accept()
	srv.log.Debug("lmtp listening", zap.String("listener", l.Name), zap.String("address", ln.Addr().String()))
	return ls, nil
}

func (ls *lmtpServer) accept() {
	defer close(ls.acceptDone)
	var backoff time.Duration
	for {
		c, err := ls.ln.Accept()
		if err != nil {
			ls.mu.Lock()
			closed := ls.closed
			ls.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of fds and the like: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			ls.srv.log.Warn("lmtp accept failed", zap.String("listener", ls.l.Name), zap.Error(err),
				zap.Duration("retry_in", backoff))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		tc := c.(*net.TCPConn)
		lc := ls.newConn(tc)
		ls.mu.Lock()
		if ls.closed {
			ls.mu.Unlock()
			_ = tc.Close()
			continue
		}
		ls.conns[lc] = struct{}{}
		ls.wg.Add(1)
		ls.mu.Unlock()
		go lc.serve()
	}
}

// close stops accepting and ends every connection: each gets "421 4.3.2 <host>
// Shutting down" (sent while the connection still reads commands) and its backend
// connections are closed. When ctx ends first the sockets are closed at once.
func (ls *lmtpServer) close(ctx context.Context) error {
	ls.mu.Lock()
	if ls.closed {
		ls.mu.Unlock()
		return nil
	}
	ls.closed = true
	lerr := ls.ln.Close()
	for c := range ls.conns {
		c.stop()
	}
	ls.mu.Unlock()
	<-ls.acceptDone
	done := make(chan struct{})
	go func() {
		ls.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		ls.mu.Lock()
		for c := range ls.conns {
			_ = c.c.Close()
		}
		ls.mu.Unlock()
		<-done
		return ctx.Err()
	}
	if errors.Is(lerr, net.ErrClosed) {
		lerr = nil
	}
	return lerr
}

// lmtpConn is one client connection, served by its own goroutine.
type lmtpConn struct {
	ls      *lmtpServer
	srv     *Server
	c       *net.TCPConn
	id      string
	remote  netip.AddrPort
	local   netip.AddrPort
	started time.Time
	log     *zap.Logger

	sess     *lmtp.Session
	ctx      context.Context
	cancel   context.CancelFunc
	stopping atomic.Bool

	tx       *lmtpTx    // the transaction's proxy state, nil outside one
	messages int        // transactions that reached the end of DATA
	stage    lmtp.State // where the session was when it last did something, for the end line
	inHeader bool       // still reading the PROXY header (haproxy listeners)
	ttl      int        // the XCLIENT TTL backends get: lmtpProxyTTL, or a trusted peer's minus one

	in, out int64
	closed  bool
	endedBy string
	reason  string
}

func (ls *lmtpServer) newConn(c *net.TCPConn) *lmtpConn {
	now := time.Now()
	remote := lmtpAddrPort(c.RemoteAddr())
	ctx, cancel := context.WithCancel(context.Background())
	lc := &lmtpConn{
		ls:      ls,
		srv:     ls.srv,
		c:       c,
		remote:  remote,
		local:   lmtpAddrPort(c.LocalAddr()),
		started: now,
		id:      sessionID(now, remote),
		sess:    lmtp.NewSession(&ls.cfg),
		ttl:     lmtpProxyTTL,
		ctx:     ctx,
		cancel:  cancel,
	}
	lc.log = ls.srv.log.With(zap.String("session", lc.id))
	return lc
}

func lmtpAddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// stop makes the connection end soon: reads and backend I/O fail at once; the goroutine
// then says goodbye to the client if it can.
func (c *lmtpConn) stop() {
	c.stopping.Store(true)
	c.cancel()
	_ = c.c.SetDeadline(time.Unix(1, 0))
}

// deadline sets the client socket's deadline, unless the connection is being stopped.
func (c *lmtpConn) deadline(d time.Duration, read bool) {
	t := time.Now().Add(d)
	if read {
		_ = c.c.SetReadDeadline(t)
	} else {
		_ = c.c.SetWriteDeadline(t)
	}
	if c.stopping.Load() { // stop() may have run between Now and Set
		_ = c.c.SetDeadline(time.Unix(1, 0))
	}
}

func (c *lmtpConn) serve() {
	srv := c.srv
	srv.stats.Accepted.Add(1)
	srv.stats.Active.Add(1)
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic in lmtp session; that session was closed", zap.Any("panic", r),
				zap.ByteString("stack", debug.Stack()))
			c.end("proxy", "internal error")
		}
		c.endTx()
		_ = c.c.Close()
		c.cancel()
		srv.stats.Active.Add(-1)
		c.logEnd()
		c.ls.mu.Lock()
		delete(c.ls.conns, c)
		c.ls.mu.Unlock()
		c.ls.wg.Done()
	}()
	if c.stopping.Load() {
		c.end("proxy", "shutting down")
		return
	}
	buf := make([]byte, lmtpReadBuffer)
	have := 0
	if c.ls.l.HAProxy {
		var ok bool
		if have, ok = c.readProxyHeader(buf); !ok {
			return
		}
	}
	// Dovecot trusts by the connecting address, or the one a PROXY header gave.
	c.sess.SetTrusted(srv.isTrusted(c.remote.Addr()))
	c.write(c.sess.Greeting())
	if have > 0 { // the client wrote behind its PROXY header before the greeting
		used := c.feed(buf[:have])
		have = copy(buf, buf[used:have])
	}
	for !c.closed {
		c.deadline(lmtpIdleTimeout, true)
		n, err := c.c.Read(buf[have:])
		c.in += int64(n)
		have += n
		if n > 0 {
			used := c.feed(buf[:have])
			have = copy(buf, buf[used:have])
		}
		if c.closed {
			return
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		if have == len(buf) {
			// The codec never holds more than one command line (~4 KB).
			c.end("proxy", "input buffer full")
			return
		}
	}
}

// readFailed ends the connection after a failed read.
func (c *lmtpConn) readFailed(err error) {
	c.stage = c.sess.State()
	switch {
	case c.stopping.Load():
		_ = c.c.SetWriteDeadline(time.Now().Add(time.Second))
		c.do(c.sess.Shutdown())
		c.end("proxy", "shutting down")
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.do(c.sess.Timeout())
	case errors.Is(err, io.EOF):
		c.end("client", "disconnected")
	default:
		c.end("client", "read: "+err.Error())
	}
}

// feed gives the codec the bytes read and does what it asks; it returns the bytes used.
func (c *lmtpConn) feed(in []byte) int {
	used := 0
	for used < len(in) && !c.closed {
		c.stage = c.sess.State()
		n, acts, err := c.sess.Feed(in[used:])
		if err != nil {
			c.end("proxy", err.Error())
			break
		}
		used += n
		c.do(acts)
		if n == 0 {
			break
		}
	}
	return used
}

// do carries out the codec's actions in order.
func (c *lmtpConn) do(acts []lmtp.Action) {
	for _, a := range acts {
		if c.closed {
			return
		}
		switch a.Kind {
		case lmtp.ActWrite:
			c.write(a.Data)
		case lmtp.ActRcpt:
			r := c.rcpt(a.Rcpt)
			c.do(c.sess.ResumeRcpt(r))
		case lmtp.ActData:
			c.startData()
		case lmtp.ActBody:
			c.body(a.Data)
		case lmtp.ActDataEnd:
			replies := c.endData()
			c.messages++
			c.endTx()
			c.do(c.sess.FinishData(replies))
		case lmtp.ActReset:
			c.endTx()
		case lmtp.ActXCLIENT:
			c.applyXCLIENT(a.XClient)
		case lmtp.ActClose:
			if len(a.Data) > 0 {
				c.write(a.Data)
			}
			by := "client"
			if a.Reason != "quit" {
				by = "proxy"
			}
			c.end(by, a.Reason)
		}
	}
}

func (c *lmtpConn) write(b []byte) {
	if c.closed {
		return
	}
	if !c.stopping.Load() {
		c.deadline(lmtpIdleTimeout, false)
	}
	n, err := c.c.Write(b)
	c.out += int64(n)
	switch {
	case err == nil:
	case c.stopping.Load():
		c.end("proxy", "shutting down")
	default:
		c.end("client", "write: "+err.Error())
	}
}

func (c *lmtpConn) end(by, reason string) {
	if c.closed {
		return
	}
	c.closed = true
	c.endedBy, c.reason = by, reason
}

func (c *lmtpConn) logEnd() {
	c.srv.log.Info("session ended",
		zap.String("session", c.id),
		zap.String("listener", c.ls.l.Name),
		zap.String("protocol", "lmtp"),
		zap.String("remote", c.remote.String()),
		zap.String("local", c.local.String()),
		zap.String("stage", c.stageName()),
		zap.String("ended_by", c.endedBy),
		zap.String("reason", c.reason),
		zap.Int("messages", c.messages),
		zap.Int64("in", c.in),
		zap.Int64("out", c.out),
		zap.Duration("duration", time.Since(c.started)),
	)
}

// lmtpTx is the proxy side of one transaction: the backend connections opened for it
// and the recipients they accepted.
type lmtpTx struct {
	id         string // Dovecot's transaction id: the session id, then "<id>:T<n>"
	conns      []*lmtpBackend
	rcpts      []*lmtpRcpt // accepted, in RCPT order
	seq        int         // backend connections opened (":P<n>")
	maxTimeout time.Duration
	enc        lmtp.DotEncoder
	wbuf       []byte
	started    time.Time
}

// lmtpRcpt is one accepted recipient.
type lmtpRcpt struct {
	rc    *lmtp.Rcpt
	sid   string // the recipient's session id: the transaction's, then "<tx>:R<n>"
	user  string
	be    *lmtpBackend
	addr  lmtp.Address // the address at the backend
	reply *lmtp.Reply  // the backend's reply to the message
	fail  *lmtpFailure
}

// lmtpBackendKey is what makes two recipients share a backend connection (Dovecot compares
// protocol, host, hostip, port, source_ip and the ssl flags).
type lmtpBackendKey struct {
	protocol, host, hostIP, sourceIP, ssl string
	port                                  int
}

// lmtpBackend is one connection to a backend within a transaction.
type lmtpBackend struct {
	key        lmtpBackendKey
	target     netip.AddrPort
	conn       *net.TCPConn
	stopAfter  func() bool
	buf        []byte
	off, end   int
	parser     lmtp.ReplyParser
	caps       lmtp.Capabilities
	timeout    time.Duration
	sid        string
	mailDone   bool
	inData     bool // DATA accepted: the connection is inside the message
	rcpts      []*lmtpRcpt
	fail       *lmtpFailure
	notTrusted bool
}

// lmtpFailure is why a backend connection can't take more: either a reply of the
// backend (its greeting, LHLO or MAIL failed), forwarded to the recipients as is, or a
// failure of the connection itself, given as Dovecot words it in
// "451 4.4.0 Proxy failed (<detail>session=<id>)".
type lmtpFailure struct {
	reply  *lmtp.Reply
	detail string // "connect, ", "connection lost, ", "timed out, ", "bad reply, " or ""
	err    error
}

func (f *lmtpFailure) String() string {
	if f.reply != nil {
		return "backend replied: " + f.reply.String()
	}
	if f.err != nil {
		return f.err.Error()
	}
	return strings.TrimSuffix(f.detail, ", ")
}

// rcptReply is the reply a recipient gets when its backend connection failed.
func (f *lmtpFailure) rcptReply(rc *lmtp.Rcpt, sid string) lmtp.Reply {
	if f.reply != nil {
		return f.reply.WithDefaultEnhanced(fmt.Sprintf("%d.0.0", f.reply.Code/100)).WithPath(rc.To.String(), true)
	}
	return lmtp.NewReply(451, "4.4.0", "Proxy failed ("+f.detail+"session="+sid+")")
}

func (c *lmtpConn) txID() string {
	if n := c.sess.Transaction(); n > 1 {
		return c.id + ":T" + strconv.Itoa(n)
	}
	return c.id
}

func lmtpRcptSessionID(tx string, index int) string {
	if index <= 1 {
		return tx
	}
	return tx + ":R" + strconv.Itoa(index)
}

// rcpt looks a recipient up and relays it to its backend; it returns the client's reply.
func (c *lmtpConn) rcpt(rc *lmtp.Rcpt) lmtp.Reply {
	if c.tx == nil {
		c.tx = &lmtpTx{id: c.txID(), started: time.Now()}
	}
	tx := c.tx
	sid := lmtpRcptSessionID(tx.id, rc.Index)
	path := rc.To.String()
	// The user name is Dovecot's: the whole address without its +detail (a recipient
	// without a domain is just its local part), normalised by auth_username_format.
	user, delim, detail := rc.To.Username(lmtpRecipientDelimiter)
	name := normalizeUser(c.srv.cfg.AuthUsernameFormat, user)
	log := c.log.With(zap.String("rcpt_session", sid), zap.String("rcpt", path), zap.String("user", name))
	fail := func(code int, enh, text, why string) lmtp.Reply {
		log.Info("recipient refused", zap.String("reason", why))
		return lmtp.NewReply(code, enh, text).WithPath(path, true)
	}

	lctx, cancel := context.WithTimeout(c.ctx, time.Duration(c.srv.cfg.AuthLookupTimeout))
	entry, err := c.srv.chain.Lookup(lctx, name)
	cancel()
	switch {
	case errors.Is(err, route.ErrUnknownUser):
		return fail(550, "5.1.1", "User doesn't exist: "+user, "unknown user")
	case err != nil:
		log.Warn("passdb lookup failed", zap.Error(err))
		return fail(451, "4.3.0", "Temporary user lookup failure", "lookup failed")
	}
	p, err := route.ParseProxy(entry.Fields)
	if err != nil {
		log.Warn("bad proxy fields", zap.Error(err))
		return fail(451, "4.3.0", "Temporary user lookup failure", err.Error())
	}
	if !p.Proxy && !p.ProxyMaybe {
		// Dovecot would deliver locally; Doorman has no mail store.
		return fail(550, "5.1.1", "No mail server is set for this user",
			"passdb has no proxy field: Doorman has no local mail store")
	}
	key, target, why := lmtpTarget(&p)
	if why != "" {
		log.Warn("cannot proxy recipient", zap.String("reason", why))
		return fail(451, "4.3.0", "Temporary internal error", why)
	}
	log = log.With(zap.String("target", target.String()))

	// destuser (or a user= from the passdb) changes the address at the backend; the
	// +detail stays.
	newName := entry.User
	if newName == "" {
		newName = name
	}
	if p.DestUser != "" {
		newName = p.DestUser
	}
	addr := rc.To
	if newName != user {
		ua, ok := lmtp.ParseUsername(newName)
		if !ok {
			log.Error("user name from the passdb is not a valid address", zap.String("new_user", newName))
			return fail(550, "5.3.5", "Internal user lookup failure", "bad destuser")
		}
		addr = ua.WithDetail(delim, detail)
	} else if target == c.local {
		log.Error("proxying loops to itself")
		return fail(554, "5.4.6", "Proxying loops to itself", "loop")
	}
	if c.ttl <= 0 {
		log.Error("proxying appears to be looping (TTL=0)")
		return fail(554, "5.4.6", "Proxying appears to be looping (TTL=0)", "ttl")
	}

	timeout := lmtpProxyTimeout
	if p.ProxyTimeout > 0 {
		timeout = p.ProxyTimeout
	}
	be := tx.backend(key)
	if be == nil {
		var src netip.Addr
		if p.SourceIP != "" {
			src, _ = netip.ParseAddr(p.SourceIP)
		}
		tx.seq++
		be = &lmtpBackend{key: key, target: target, timeout: timeout, notTrusted: p.ProxyNotTrusted,
			sid: tx.id + ":P" + strconv.Itoa(tx.seq)}
		tx.conns = append(tx.conns, be)
		c.open(be, src)
		if be.fail != nil {
			log.Warn("backend connection failed", zap.String("reason", be.fail.String()))
		}
	}
	tx.maxTimeout = max(tx.maxTimeout, timeout)
	if be.fail != nil {
		return be.fail.rcptReply(rc, sid)
	}

	out := &lmtp.RcptOut{To: addr, Rcpt: rc, AddOrcpt: !addr.Equal(rc.To)}
	if len(p.Forward) > 0 && be.caps.XRcptForward {
		var fw []byte
		for i, kv := range p.Forward {
			if i > 0 {
				fw = append(fw, '\t')
			}
			fw = lmtp.AppendTabEscaped(fw, kv.Key+"="+kv.Value)
		}
		out.Forward = string(fw)
	}
	r, err := c.relayRcpt(be, out)
	if err != nil {
		be.fail = lmtpFailureOf(err)
		log.Warn("backend failed", zap.String("reason", be.fail.String()))
		return be.fail.rcptReply(rc, sid)
	}
	if !r.Success() {
		log.Info("backend refused recipient", zap.String("reply", r.String()))
		return r.WithDefaultEnhanced(fmt.Sprintf("%d.0.0", r.Code/100)).WithPath(path, true)
	}
	lr := &lmtpRcpt{rc: rc, sid: sid, user: name, be: be, addr: addr}
	tx.rcpts = append(tx.rcpts, lr)
	be.rcpts = append(be.rcpts, lr)
	log.Debug("recipient accepted", zap.String("reply", r.String()))
	// "The default 2.0.0 code won't do" (lmtp-proxy.c).
	return r.WithDefaultEnhanced("2.1.0").WithPath(path, false)
}

// lmtpTarget checks the passdb's proxy fields for LMTP and returns the connection key
// and address, or why they can't be used.
func lmtpTarget(p *route.Proxy) (lmtpBackendKey, netip.AddrPort, string) {
	key := lmtpBackendKey{protocol: p.Protocol, host: p.Host, hostIP: p.HostIP, sourceIP: p.SourceIP, port: p.Port}
	host := p.HostIP
	if host == "" {
		host = p.Host
	}
	if host == "" {
		return key, netip.AddrPort{}, "proxy: host not given"
	}
	if p.UseTLS() {
		// TLS to backends lands with the TLS issue; until then refuse rather than send
		// mail in the clear where the passdb asked for TLS.
		return key, netip.AddrPort{}, "proxy: ssl/starttls to backends is not supported yet"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return key, netip.AddrPort{}, fmt.Sprintf("proxy: host %q is not an IP address", host)
	}
	defPort := 24
	switch p.Protocol {
	case "", "lmtp":
		key.protocol = "lmtp"
	case "smtp":
		defPort = 25
	default:
		return key, netip.AddrPort{}, fmt.Sprintf("proxy: unknown protocol %q", p.Protocol)
	}
	if key.port == 0 {
		// Dovecot 2.3 defaults to the port the client came in on; 2.4 (and Doorman) to
		// the protocol's port.
		key.port = defPort
	}
	return key, netip.AddrPortFrom(ip.Unmap(), uint16(key.port)), ""
}

func (tx *lmtpTx) backend(k lmtpBackendKey) *lmtpBackend {
	for _, be := range tx.conns {
		if be.key == k {
			return be
		}
	}
	return nil
}

// lmtpFailureOf classifies a backend I/O error with Dovecot's words.
func lmtpFailureOf(err error) *lmtpFailure {
	var rf *lmtpReplyError
	switch {
	case errors.As(err, &rf):
		return &lmtpFailure{reply: rf.reply, err: err}
	case errors.Is(err, lmtp.ErrBadReply):
		return &lmtpFailure{detail: "bad reply, ", err: err}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &lmtpFailure{detail: "timed out, ", err: err}
	case errors.Is(err, errLMTPConnect):
		return &lmtpFailure{detail: "connect, ", err: err}
	}
	return &lmtpFailure{detail: "connection lost, ", err: err}
}

var errLMTPConnect = errors.New("connect failed")

// lmtpReplyError is a backend reply that ended the connection's usefulness.
type lmtpReplyError struct {
	what  string
	reply *lmtp.Reply
}

func (e *lmtpReplyError) Error() string { return e.what + ": " + e.reply.String() }

// open connects to the backend and greets it: LHLO (EHLO for SMTP), XCLIENT with the
// real client's address when offered and trusted, LHLO again. The MAIL FROM goes with
// the first RCPT. A failure is kept in be.fail.
func (c *lmtpConn) open(be *lmtpBackend, src netip.Addr) {
	err := c.handshake(be, src)
	if err != nil {
		be.fail = lmtpFailureOf(err)
		be.close(false)
	}
}

func (c *lmtpConn) handshake(be *lmtpBackend, src netip.Addr) error {
	conn, err := c.srv.dialer.dial(c.ctx, be.target, src, time.Now().Add(be.timeout))
	if err != nil {
		return fmt.Errorf("%w: connect(%s): %v", errLMTPConnect, be.target, err)
	}
	be.conn = conn
	be.buf = make([]byte, lmtpBackendBuffer)
	be.stopAfter = context.AfterFunc(c.ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	r, err := be.read(c.ctx)
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return lmtpUnexpected("greeting", r)
	}
	hello := "LHLO "
	if be.key.protocol == "smtp" {
		hello = "EHLO "
	}
	hello += c.ls.hostname + "\r\n"
	if r, err = be.command(c.ctx, []byte(hello)); err != nil {
		return err
	}
	if !r.Success() {
		return lmtpUnexpected("LHLO", r)
	}
	be.caps = lmtp.ParseCapabilities(r)
	if be.caps.XClient == nil || be.notTrusted {
		return nil
	}
	x := lmtp.XClient{
		Helo:    c.sess.Helo(),
		Proto:   "LMTP",
		Session: be.sid,
		TTL:     c.ttl,
		Port:    int(c.remote.Port()),
		Addr:    c.remote.Addr().String(),
	}
	cmds := x.Commands(&be.caps)
	if len(cmds) == 0 {
		return nil
	}
	var out []byte
	for _, cmd := range cmds {
		out = append(out, cmd...)
	}
	if err := be.send(c.ctx, out); err != nil {
		return err
	}
	for range cmds {
		if r, err = be.read(c.ctx); err != nil {
			return err
		}
		// Dovecot goes on whatever the answer, unless the backend is closing.
		if r.Code == 421 {
			return lmtpUnexpected("XCLIENT", r)
		}
	}
	if r, err = be.command(c.ctx, []byte(hello)); err != nil {
		return err
	}
	if !r.Success() {
		return lmtpUnexpected("LHLO", r)
	}
	be.caps = lmtp.ParseCapabilities(r)
	return nil
}

// lmtpUnexpected turns a reply that is not the one wanted into an error: a failure reply
// (4xx, 5xx) is forwarded to the recipients, anything else is a bad reply.
func lmtpUnexpected(what string, r *lmtp.Reply) error {
	if r.Code >= 400 {
		return &lmtpReplyError{what: what, reply: r}
	}
	return fmt.Errorf("%w: lmtpUnexpected %s reply %q", lmtp.ErrBadReply, what, r.String())
}

// relayRcpt sends the RCPT (after the MAIL FROM on a fresh connection; pipelined when
// the backend offers PIPELINING) and returns the backend's reply.
func (c *lmtpConn) relayRcpt(be *lmtpBackend, out *lmtp.RcptOut) (*lmtp.Reply, error) {
	rcptLine := lmtp.AppendRcptTo(nil, out)
	if be.mailDone {
		return be.command(c.ctx, rcptLine)
	}
	m := *c.sess.Mail()
	if !be.caps.EightBitMIME {
		m.Body = "" // BODY= is for servers that offer 8BITMIME (RFC 6152)
	}
	mailLine := lmtp.AppendMailFrom(nil, &m)
	pipelined := be.caps.Pipelining
	if pipelined {
		mailLine = append(mailLine, rcptLine...)
	}
	r, err := be.command(c.ctx, mailLine)
	if err != nil {
		return nil, err
	}
	if !r.Success() {
		if pipelined {
			_, _ = be.read(c.ctx) // the RCPT's answer to a failed MAIL
		}
		return nil, &lmtpReplyError{what: "MAIL", reply: r}
	}
	be.mailDone = true
	if pipelined {
		return be.read(c.ctx)
	}
	return be.command(c.ctx, rcptLine)
}

// send writes to the backend within its timeout.
func (be *lmtpBackend) send(ctx context.Context, b []byte) error {
	be.setDeadline(ctx, be.timeout)
	_, err := be.conn.Write(b)
	return err
}

// command sends b and reads one reply.
func (be *lmtpBackend) command(ctx context.Context, b []byte) (*lmtp.Reply, error) {
	if err := be.send(ctx, b); err != nil {
		return nil, err
	}
	return be.read(ctx)
}

// setDeadline sets the backend socket's deadline, unless ctx has ended.
func (be *lmtpBackend) setDeadline(ctx context.Context, d time.Duration) {
	_ = be.conn.SetDeadline(time.Now().Add(d))
	if ctx.Err() != nil { // the AfterFunc may have run between Now and Set
		_ = be.conn.SetDeadline(time.Unix(1, 0))
	}
}

// read reads one reply.
func (be *lmtpBackend) read(ctx context.Context) (*lmtp.Reply, error) {
	be.setDeadline(ctx, be.timeout)
	for {
		n, r, err := be.parser.Feed(be.buf[be.off:be.end])
		be.off += n
		if err != nil {
			return nil, err
		}
		if r != nil {
			return r, nil
		}
		be.end = copy(be.buf, be.buf[be.off:be.end])
		be.off = 0
		if be.end == len(be.buf) {
			return nil, lmtp.ErrBadReply // cannot happen: the parser's lines are shorter
		}
		m, err := be.conn.Read(be.buf[be.end:])
		be.end += m
		if err != nil && m == 0 {
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// close ends the backend connection: QUIT, without waiting for its answer (as Dovecot),
// unless the connection is inside a message or broken.
func (be *lmtpBackend) close(quit bool) {
	if be.conn == nil {
		return
	}
	if quit && !be.inData && be.fail == nil {
		_ = be.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = be.conn.Write([]byte("QUIT\r\n"))
	}
	if be.stopAfter != nil {
		be.stopAfter()
	}
	_ = be.conn.Close()
	be.conn = nil
}

// endTx closes the transaction's backend connections.
func (c *lmtpConn) endTx() {
	if c.tx == nil {
		return
	}
	for _, be := range c.tx.conns {
		be.close(true)
	}
	c.tx = nil
}

// live are the backends that take the message: accepted recipients, no failure.
func (tx *lmtpTx) live() []*lmtpBackend {
	var out []*lmtpBackend
	for _, be := range tx.conns {
		if be.fail == nil && len(be.rcpts) > 0 && be.conn != nil {
			out = append(out, be)
		}
	}
	return out
}

// startData sends DATA to every backend with accepted recipients and waits for their
// 354; then the Received: header goes out.
func (c *lmtpConn) startData() {
	tx := c.tx
	if tx == nil { // cannot happen: DATA needs an accepted recipient
		return
	}
	tx.enc.Reset()
	for _, be := range tx.live() {
		be.timeout = tx.maxTimeout
		if err := be.send(c.ctx, []byte("DATA\r\n")); err != nil {
			c.backendFailed(be, err)
		}
	}
	for _, be := range tx.live() {
		r, err := be.read(c.ctx)
		switch {
		case err != nil:
			c.backendFailed(be, err)
		case r.Code == 354:
			be.inData = true
		default:
			c.backendFailed(be, lmtpUnexpected("DATA", r))
		}
	}
	if lmtpAddReceivedHeader {
		t := lmtp.Trace{
			Helo:     c.sess.Helo(),
			RemoteIP: c.remote.Addr().String(),
			Hostname: c.ls.hostname,
			Proto:    "LMTP",
			ID:       tx.id,
			MailFrom: c.sess.Mail().From,
			Date:     time.Now().Format("Mon, 02 Jan 2006 15:04:05 -0700"),
		}
		if len(tx.rcpts) == 1 {
			t.For = tx.rcpts[0].rc.To.String()
		}
		c.body(lmtp.AppendReceived(nil, &t))
	}
}

func (c *lmtpConn) backendFailed(be *lmtpBackend, err error) {
	be.fail = lmtpFailureOf(err)
	c.log.Warn("backend failed", zap.String("target", be.target.String()), zap.String("reason", be.fail.String()))
	be.close(false)
}

// body passes a piece of the message to every backend still in it.
func (c *lmtpConn) body(b []byte) {
	tx := c.tx
	if tx == nil {
		return
	}
	tx.wbuf = tx.enc.Append(tx.wbuf[:0], b)
	c.sendAll(tx.wbuf)
}

func (c *lmtpConn) sendAll(b []byte) {
	for _, be := range c.tx.live() {
		if !be.inData {
			continue
		}
		if err := be.send(c.ctx, b); err != nil {
			c.backendFailed(be, err)
		}
	}
	if cap(c.tx.wbuf) > 4*lmtpReadBuffer {
		c.tx.wbuf = nil // a huge piece (the codec's are bounded by the read buffer)
	}
}

// endData ends the message at every backend, reads their replies and returns one reply
// per accepted recipient, in RCPT order. A backend success becomes Dovecot's
// "250 2.0.0 <rcpt> <session> Saved".
func (c *lmtpConn) endData() []lmtp.Reply {
	tx := c.tx
	if tx == nil {
		return nil
	}
	tx.wbuf = tx.enc.Finish(tx.wbuf[:0])
	c.sendAll(tx.wbuf)
	for _, be := range tx.live() {
		if !be.inData {
			continue
		}
		// LMTP answers once per recipient, SMTP once for all.
		n := len(be.rcpts)
		if be.key.protocol == "smtp" {
			n = 1
		}
		for i := 0; i < n; i++ {
			r, err := be.read(c.ctx)
			if err != nil {
				c.backendFailed(be, err)
				break
			}
			if be.key.protocol == "smtp" {
				for _, lr := range be.rcpts {
					lr.reply = r
				}
			} else {
				be.rcpts[i].reply = r
			}
		}
		be.inData = false
	}
	replies := make([]lmtp.Reply, 0, len(tx.rcpts))
	for i, lr := range tx.rcpts {
		rep := c.dataReply(lr)
		fields := []zap.Field{zap.String("rcpt_session", lr.sid), zap.String("rcpt", lr.rc.To.String()),
			zap.String("user", lr.user), zap.String("target", lr.be.target.String()),
			zap.String("reply", rep.String()), zap.Int("index", i+1), zap.Int("of", len(tx.rcpts)),
			zap.Duration("took", time.Since(tx.started))}
		if rep.Success() {
			c.log.Info("sent message", fields...)
		} else {
			c.log.Info("failed to send message", fields...)
		}
		replies = append(replies, rep)
	}
	return replies
}

func (c *lmtpConn) dataReply(lr *lmtpRcpt) lmtp.Reply {
	path := lr.rc.To.String()
	switch {
	case lr.reply != nil && lr.reply.Success():
		enh := lr.reply.Enhanced
		if enh == "" {
			enh = "2.0.0"
		}
		return lmtp.NewReply(250, enh, lr.sid+" Saved").WithPath(path, true)
	case lr.reply != nil:
		return lr.reply.WithDefaultEnhanced(fmt.Sprintf("%d.0.0", lr.reply.Code/100)).WithPath(path, true)
	case lr.be.fail != nil:
		return lr.be.fail.rcptReply(lr.rc, lr.sid)
	}
	return lmtp.NewReply(451, "4.4.0", "Proxy failed (session="+lr.sid+")")
}

// readProxyHeader reads the PROXY header a haproxy listener's connection starts with, within
// haproxy_timeout, from a peer in haproxy_trusted_networks only; the header's client address
// becomes the connection's. It returns how many bytes after the header are in buf.
func (c *lmtpConn) readProxyHeader(buf []byte) (int, bool) {
	c.inHeader = true
	if !contains(c.srv.haproxies, c.remote.Addr()) {
		c.end("proxy", "not from haproxy_trusted_networks")
		return 0, false
	}
	_ = c.c.SetReadDeadline(time.Now().Add(time.Duration(c.srv.cfg.HAProxyTimeout)))
	have := 0
	for {
		n, err := c.c.Read(buf[have:min(len(buf), proxyproto.MaxV2)])
		c.in += int64(n)
		have += n
		hn, ferr := proxyproto.Frame(buf[:have])
		if ferr != nil {
			c.end("proxy", "invalid PROXY header: "+ferr.Error())
			return 0, false
		}
		if hn > 0 {
			pi, perr := parseProxyHeader(buf[:hn])
			if perr != nil {
				c.end("proxy", "invalid PROXY header: "+perr.Error())
				return 0, false
			}
			if pi.remote.IsValid() {
				c.remote, c.local = pi.remote, pi.local
				c.id = sessionID(c.started, c.remote)
				c.log = c.srv.log.With(zap.String("session", c.id))
			}
			c.inHeader = false
			return copy(buf, buf[hn:have]), true
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.end("proxy", "PROXY header timeout")
			} else {
				c.end("client", "read: "+err.Error())
			}
			return 0, false
		}
	}
}

func (c *lmtpConn) stageName() string {
	if c.inHeader {
		return StageProxyHeader.String()
	}
	return c.stage.String()
}

// applyXCLIENT takes what a trusted previous hop says about the client (the codec accepts
// XCLIENT only from trusted peers): its address, session id and TTL, which is lowered by one
// for our backends, as Dovecot's LMTP proxy does.
func (c *lmtpConn) applyXCLIENT(x *lmtp.XClient) {
	if x == nil {
		return
	}
	if a, err := netip.ParseAddr(x.Addr); err == nil {
		c.remote = netip.AddrPortFrom(a.Unmap(), c.remote.Port())
	}
	if x.Port > 0 {
		c.remote = netip.AddrPortFrom(c.remote.Addr(), uint16(x.Port))
	}
	if x.Session != "" && len(x.Session) <= 64 {
		c.id = x.Session
		c.log = c.srv.log.With(zap.String("session", c.id))
	}
	if x.TTL >= 0 {
		c.ttl = x.TTL - 1
	}
}
