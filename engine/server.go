// Package engine is the running proxy: listeners and the gnet login phase, passdb lookups
// and backend logins off the loop, the hand-off to the splice relay, timers and logs.
// It drives the pure state machines of package codec and the lookups of package route;
// it must never block an event loop nor let one session's panic reach another.
package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"doorman/codec/imap"
	"doorman/codec/managesieve"
	"doorman/codec/pop3"
	"doorman/codec/submission"
	"doorman/engine/relay"
	"doorman/route"
)

// Server is one Doorman process: its listeners, passdbs and relay.
type Server struct {
	cfg    *Config
	log    *zap.Logger
	chain  *route.Chain
	dbs    []route.Passdb
	hasher *route.Hasher
	// penalty keeps the auth penalty counters (the first redis passdb); nil when
	// auth_penalty is off.
	penalty *route.Redis
	relay   *relay.Relay
	dialer  *dialer
	tls     *tlsState

	live      atomic.Pointer[liveConfig] // what SIGHUP may change under running sessions
	haproxies []netip.Prefix             // haproxy_trusted_networks
	hostAddrs []netip.Addr               // this host's addresses, for the proxy-loop check
	proxySelf []netip.Addr               // auth_proxy_self
	spreader  *disconnectSpreader        // login_proxy_max_disconnect_delay; nil when off
	listeners map[netip.AddrPort]*listener
	imapCfg   imap.Config
	pop3Cfg   pop3.Config

	submissionCfg  submission.Config
	managesieveCfg managesieve.Config
	oauth          *introspector // oauth2_introspection_url; nil when unset

	eng     gnet.Engine
	booted  chan struct{}
	stopped chan error

	loopsMu sync.Mutex
	loops   map[gnet.EventLoop]*loopState

	lmtp []*lmtpServer

	tickStop chan struct{}
	memTrim  *memTrimmer // memory_trim_interval (memtrim.go); nil when off
	nextID   atomic.Uint32

	stats Counters

	sessions sessionRegistry // relayed sessions, for the admin API
	admin    *adminServer    // nil when admin.address is unset

	fleet    *fleet    // fleet view and kicks (fleet.go); nil when off
	watchdog *watchdog // site watchdog (watchdog.go); nil when off
	director *director // consistent-hashing assignment (director.go); nil when off

	hostFail   *hostFailures // proxy_host_immediate_failure_after (hostfail.go)
	stopOnce   sync.Once
	stopErr    error
	loginsOnce sync.Once
	lmtpMu     sync.Mutex
}

// Counters are the process's running totals, read with Server.Counters.
type Counters struct {
	Accepted     atomic.Int64
	Active       atomic.Int64 // connections not yet ended, in any stage
	Relaying     atomic.Int64
	LoginsOK     atomic.Int64
	LoginsFailed atomic.Int64
	Kicked       atomic.Int64 // relayed sessions kicked through the admin API

	RelayToBackend atomic.Int64 // relayed bytes of ended sessions, client to backend
	RelayToClient  atomic.Int64 // and backend to client

	// ByProtocol: sessions of each protocol (protocolIndex) in the login phase and in
	// the relay, kept by sessionOpened, sessionRelayed and sessionClosed.
	ByProtocol [len(protocolNames)]struct{ Login, Relay atomic.Int64 }
	// Logins by outcome class (loginClass), counted by countLogin.
	Logins [len(loginClasses)]atomic.Int64
	// BackendLogin: seconds from the backend connect to its login reply, per attempt.
	BackendLogin histogram
	// HostDown: logins failed at once by proxy_host_immediate_failure_after.
	HostDown atomic.Int64
	// PassdbTempFails: logins whose passdb lookup failed temporarily (Redis errors and
	// the like; the fleet parts count their own Redis errors).
	PassdbTempFails atomic.Int64
	// ShutdownKicked: relayed sessions ended by a shutdown after shutdown_timeout.
	ShutdownKicked atomic.Int64
}

type listener struct {
	Listener
	addr  netip.AddrPort
	proto *protocol // nil for LMTP
	srv   *Server   // for what a relayed session's endRecord does at its end
}

// New builds a server from a validated configuration. It opens the passdbs and the relay
// workers but does not listen yet.
func New(cfg *Config, log *zap.Logger) (*Server, error) {
	s := &Server{
		cfg:       cfg,
		log:       log,
		listeners: map[netip.AddrPort]*listener{},
		loops:     map[gnet.EventLoop]*loopState{},
		booted:    make(chan struct{}),
		stopped:   make(chan error, 1),
		tickStop:  make(chan struct{}),
	}
	lc, err := newLiveConfig(cfg)
	if err != nil {
		return nil, err
	}
	s.live.Store(lc)
	for _, n := range cfg.HAProxyTrustedNetworks {
		p, err := parsePrefix(n)
		if err != nil {
			return nil, err
		}
		s.haproxies = append(s.haproxies, p)
	}
	for _, l := range cfg.Listeners {
		ap, err := netip.ParseAddrPort(l.Address)
		if err != nil {
			return nil, err
		}
		s.listeners[ap] = &listener{Listener: l, addr: ap, proto: protocols[l.Protocol], srv: s}
	}
	for _, a := range cfg.AuthProxySelf {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("auth_proxy_self: %q is not an IP address", a)
		}
		s.proxySelf = append(s.proxySelf, ip.Unmap())
	}
	s.hostAddrs = hostAddrs()
	if d := time.Duration(cfg.LoginProxyMaxDisconnectDelay); d > 0 {
		s.spreader = newDisconnectSpreader(d)
	}
	s.hostFail = newHostFailures()
	if s.dialer, err = newDialer(cfg.LoginSourceIPs); err != nil {
		return nil, err
	}
	if s.tls, err = newTLSState(cfg); err != nil {
		return nil, err
	}
	route.SetRedisLogger(func(_ context.Context, format string, args ...any) {
		log.Warn("redis", zap.String("message", fmt.Sprintf(format, args...)))
	})
	for i, p := range cfg.Passdb {
		db, err := openPassdb(cfg, p, log.With(zap.String("passdb", fmt.Sprintf("passdb[%d]", i))))
		if err != nil {
			s.closePassdbs()
			return nil, fmt.Errorf("passdb[%d]: %w", i, err)
		}
		s.dbs = append(s.dbs, db)
	}
	fleetOpened := false
	for _, db := range s.dbs {
		r, ok := db.(*route.Redis)
		if !ok {
			continue
		}
		if *cfg.AuthPenalty && s.penalty == nil {
			s.penalty = r
		}
		if !fleetOpened {
			// The first redis passdb carries the fleet: its hooks go in before Start.
			fleetOpened = true
			if err := s.openFleet(r); err != nil {
				s.closePassdbs()
				return nil, err
			}
		}
		// The events channel invalidates the caches in front of sql and ldap too.
		for _, other := range s.dbs {
			if c, ok := other.(*route.Cached); ok {
				r.OnInvalidate(c.Invalidate)
			}
		}
		r.Start()
	}
	links := make([]route.Link, len(s.dbs))
	for i, db := range s.dbs {
		if links[i], err = chainLink(cfg.Passdb[i], db); err != nil {
			s.closePassdbs()
			return nil, fmt.Errorf("passdb[%d]: %w", i, err)
		}
	}
	s.chain = route.NewChainWith(links...)
	workers := cfg.AuthWorkers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	s.hasher = route.NewHasher(workers)
	s.relay, err = relay.New(relay.Config{
		Workers:       cfg.Relay.Workers,
		PipeSize:      cfg.Relay.PipeSize,
		NotSentLowat:  cfg.Relay.NotSentLowat,
		BackendRcvBuf: cfg.Relay.BackendRcvBuf,
		OnPanic: func(v any, stack []byte) {
			log.Error("panic in relay worker; that session was closed", zap.Any("panic", v), zap.ByteString("stack", stack))
		},
	})
	if err != nil {
		s.closePassdbs()
		return nil, err
	}
	mechs := cfg.mechanismNames()
	s.imapCfg = imap.Config{Greeting: cfg.LoginGreeting, Capability: cfg.IMAPCapability, Mechanisms: mechs}
	s.pop3Cfg = pop3.Config{Greeting: cfg.LoginGreeting, Mechanisms: mechs}
	s.submissionCfg = submission.Config{Hostname: cfg.Hostname, Greeting: cfg.LoginGreeting,
		MaxMessageSize: cfg.SubmissionMaxMailSize, Mechanisms: mechs}
	s.oauth = newIntrospector(cfg)
	s.managesieveCfg = managesieve.Config{Greeting: cfg.LoginGreeting, Mechanisms: mechs,
		Implementation: cfg.ManagesieveImplementationString,
		Sieve:          cfg.ManagesieveSieveCapability,
		Notify:         cfg.ManagesieveNotifyCapability}
	return s, nil
}

// openFleet builds the fleet parts on the first redis passdb, each only when configured.
func (s *Server) openFleet(r *route.Redis) (err error) {
	if s.fleet, err = newFleet(s, r); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if s.director, err = newDirector(s, r); err != nil {
		return fmt.Errorf("fleet.director_site: %w", err)
	}
	if s.watchdog, err = newWatchdog(s, r); err != nil {
		return fmt.Errorf("fleet.watchdog: %w", err)
	}
	return nil
}

// chainLink is db with the chain settings of its configuration (skip, result_*).
func chainLink(p Passdb, db route.Passdb) (route.Link, error) {
	l := route.Link{DB: db}
	var err error
	if l.Skip, err = route.ParseSkip(p.Skip); err != nil {
		return l, fmt.Errorf("skip: %w", err)
	}
	if l.ResultSuccess, err = route.ParseAction(p.ResultSuccess); err != nil {
		return l, fmt.Errorf("result_success: %w", err)
	}
	if l.ResultFailure, err = route.ParseAction(p.ResultFailure); err != nil {
		return l, fmt.Errorf("result_failure: %w", err)
	}
	if l.ResultInternalFail, err = route.ParseAction(p.ResultInternalFail); err != nil {
		return l, fmt.Errorf("result_internalfail: %w", err)
	}
	return l, nil
}

func openPassdb(cfg *Config, p Passdb, log *zap.Logger) (route.Passdb, error) {
	switch p.Driver {
	case "passwd-file":
		return route.NewPasswdFile(cfg.Resolve(p.Path), p.DefaultScheme)
	case "redis":
		cacheSize, err := route.ParseCacheSize(cfg.AuthCacheSize)
		if err != nil {
			return nil, err
		}
		return route.NewRedis(route.RedisConfig{
			CacheSize:           cacheSize,
			CacheTTL:            time.Duration(cfg.AuthCacheTTL),
			CacheNegativeTTL:    time.Duration(cfg.AuthCacheNegativeTTL),
			VsiteReloadInterval: time.Duration(cfg.VsiteReloadInterval),
			Log: func(msg string, err error) {
				if err != nil {
					log.Warn(msg, zap.Error(err))
				} else {
					log.Info(msg)
				}
			},
			Addrs:        p.Addrs,
			MasterName:   p.MasterName,
			Username:     p.Username,
			Password:     p.Password,
			DB:           p.DB,
			KeyPrefix:    p.KeyPrefix,
			DialTimeout:  time.Duration(p.DialTimeout),
			ReadTimeout:  time.Duration(p.ReadTimeout),
			WriteTimeout: time.Duration(p.WriteTimeout),
			PoolTimeout:  time.Duration(p.PoolTimeout),
			PoolSize:     p.PoolSize,
		})
	case "sql", "ldap":
		var db route.Passdb
		var err error
		if p.Driver == "sql" {
			db, err = route.NewSQL(p.sqlConfig())
		} else {
			db, err = route.NewLDAP(cfg.ldapConfig(&p))
		}
		if err != nil {
			return nil, err
		}
		size, err := route.ParseCacheSize(cfg.AuthCacheSize)
		if err != nil {
			db.Close()
			return nil, err
		}
		return route.NewCached(db, size, time.Duration(cfg.AuthCacheTTL), time.Duration(cfg.AuthCacheNegativeTTL)), nil
	}
	return nil, fmt.Errorf("unknown driver %q", p.Driver)
}

// lookupInfo is what a passdb lookup knows of the login besides the user: Dovecot's %s
// (the service: "sieve" for ManageSieve, as Dovecot names it), %r and %l.
func (req *loginRequest) lookupInfo() route.LookupInfo {
	info := route.LookupInfo{}
	if req.proto != nil {
		info.Service = req.proto.name
		if info.Service == "managesieve" {
			info.Service = "sieve"
		}
	}
	if req.remote.IsValid() {
		info.RemoteIP = req.remote.Addr().Unmap().String()
	}
	if req.local.IsValid() {
		info.LocalIP = req.local.Addr().Unmap().String()
	}
	return info
}

func (s *Server) closePassdbs() {
	for _, db := range s.dbs {
		_ = db.Close()
	}
}

// EventLoops is the number of gnet event loops: one per CPU. Each sits in a blocking
// epoll_wait on a locked thread, holding one of the Go scheduler's Ps while it does; the
// daemon therefore runs with GOMAXPROCS raised by this many (cmd/doorman), or with every
// P so held the runtime's sysmon keeps retaking them and wakes every 20 µs.
func EventLoops() int { return runtime.NumCPU() }

// Start listens on every configured address and returns once the event loops run.
func (s *Server) Start() (err error) {
	if err := s.startAdmin(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			s.stopAdmin(context.Background())
		}
	}()
	addrs := make([]string, 0, len(s.cfg.Listeners))
	for _, l := range s.listeners {
		if l.proto == nil {
			ls, err := newLMTPServer(s, l)
			if err != nil {
				s.stopLMTP(context.Background())
				return err
			}
			s.lmtp = append(s.lmtp, ls)
			continue
		}
		addrs = append(addrs, "tcp://"+l.Address)
	}
	if len(addrs) == 0 {
		// LMTP only: no event loops to run.
		close(s.booted)
		s.stopped <- nil
		go s.ticker()
		s.memTrim = startMemTrim(time.Duration(*s.cfg.MemoryTrimInterval), s.log)
		return nil
	}
	h := &handler{srv: s}
	go func() {
		s.stopped <- gnet.Rotate(h, addrs,
			gnet.WithNumEventLoop(EventLoops()),
			gnet.WithReuseAddr(true), // restart at once, despite TIME_WAITs on the port
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLogger(s.log.Named("gnet").Sugar()),
		)
	}()
	select {
	case <-s.booted:
	case err := <-s.stopped:
		if err == nil {
			err = errors.New("engine: event loops stopped at start")
		}
		return err
	}
	go s.ticker()
	s.memTrim = startMemTrim(time.Duration(*s.cfg.MemoryTrimInterval), s.log)
	s.fleet.start()
	s.watchdog.start()
	for _, l := range s.cfg.Listeners {
		s.log.Info("listening", zap.String("listener", l.Name), zap.String("protocol", l.Protocol), zap.String("address", l.Address))
	}
	return nil
}

// Stop closes the listeners and every session, login-phase and relayed alike. It may be
// called more than once (after Shutdown, say): the later calls return the first's result.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	return s.stopErr
}

func (s *Server) stop(ctx context.Context) error {
	close(s.tickStop)
	s.memTrim.stop()
	err := s.stopAdmin(ctx) // first: no kick may race the relay's Close
	s.watchdog.stop(ctx)
	s.fleet.stop(ctx)
	s.director.stop(ctx)
	if e := s.stopLogins(ctx); err == nil {
		err = e
	}
	if e := s.stopLMTP(ctx); err == nil {
		err = e
	}
	if e := s.relay.Close(); err == nil {
		err = e
	}
	s.closePassdbs()
	return err
}

// stopLogins stops the event loops: their listeners close (if closeListeners has not shut
// them already), and so does every session still in its login phase. Relayed sessions
// live in the relay and go on. Safe to call more than once, and at once.
func (s *Server) stopLogins(ctx context.Context) error {
	var err error
	s.loginsOnce.Do(func() {
		if s.eng.Validate() == nil {
			err = s.eng.Stop(ctx)
		}
		if e := <-s.stopped; err == nil {
			err = e
		}
	})
	return err
}

// Shutdown is the graceful stop (SIGTERM): new connections are refused at once (the
// listening sockets close; LMTP sessions get shutdown_timeout to finish); sessions in
// their login phase get shutdownLoginGrace (at most shutdown_timeout) to log in, and are
// closed then; relayed sessions go on by themselves for up to shutdown_timeout, ending
// early when all are gone, and those still open then are disconnected spread evenly over
// shutdown_spread, so their clients do not all reconnect elsewhere in the same second.
// Then Stop. Cancelling ctx (a second signal) skips the waiting: what is left is
// disconnected at once.
func (s *Server) Shutdown(ctx context.Context) error {
	start := time.Now()
	timeout := time.Duration(s.cfg.ShutdownTimeout)
	spread := time.Duration(s.cfg.ShutdownSpread)
	var err error
	grace := true
	if e := s.closeListeners(); e != nil {
		// The event loops stop with their listeners, and their sessions with them.
		s.log.Warn("shutdown: cannot close the listeners alone; closing the login-phase sessions with them", zap.Error(e))
		grace = false
		err = s.stopLogins(context.Background())
	}
	lmtpDone := make(chan error, 1)
	go func() {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		lmtpDone <- s.stopLMTP(lctx)
	}()
	s.log.Info("shutdown: listeners closed; sessions may go on",
		zap.Int64("login_phase", s.stats.Active.Load()), zap.Int64("relayed", s.stats.Relaying.Load()),
		zap.Duration("shutdown_timeout", timeout), zap.Duration("shutdown_spread", spread))

	deadline := start.Add(timeout)
	if grace {
		loginEnd := start.Add(min(shutdownLoginGrace, timeout))
		for s.stats.Active.Load() > 0 && time.Now().Before(loginEnd) && ctx.Err() == nil {
			sleepCtx(ctx, min(50*time.Millisecond, time.Until(loginEnd)))
		}
		// The event loops take a moment to stop (gnet polls for it): meanwhile the
		// relayed sessions' clock runs on.
		s.log.Info("shutdown: login phase over; closing the sessions still in it",
			zap.Int64("login_phase", s.stats.Active.Load()), zap.Int64("relayed", s.stats.Relaying.Load()))
		go func() {
			if e := s.stopLogins(context.Background()); e != nil {
				s.log.Warn("shutdown: stopping the event loops", zap.Error(e))
			}
		}()
	}
	for s.stats.Relaying.Load() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		sleepCtx(ctx, min(100*time.Millisecond, time.Until(deadline)))
	}
	if n := s.stats.Relaying.Load(); n == 0 {
		s.log.Info("shutdown: every relayed session has ended", zap.Duration("after", time.Since(start).Round(time.Millisecond)))
	} else {
		if ctx.Err() != nil {
			spread = 0
		}
		s.log.Info("shutdown: disconnecting the remaining sessions", zap.Int64("relayed", n), zap.Duration("spread", spread))
		kicked := s.kickSpread(ctx, spread)
		s.log.Info("shutdown: sessions disconnected", zap.Int("kicked", kicked))
	}
	if e := <-lmtpDone; err == nil && e != nil && !errors.Is(e, context.DeadlineExceeded) {
		err = e
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if e := s.Stop(sctx); err == nil {
		err = e
	}
	return err
}

// listenerDrainPause lets gnet's accept loop finish what it took from a listener's queue
// before the listener is shut down (an accept on a shut-down socket would stop gnet).
const listenerDrainPause = 100 * time.Millisecond

// shutdownLoginGrace is how long a shutdown lets sessions in their login phase finish
// logging in (those handed to the relay then go on as relayed sessions).
const shutdownLoginGrace = 5 * time.Second

// closeListeners makes the kernel refuse new connections on the event loops' listeners
// while the loops go on with the sessions they have. gnet has no call for that, and it
// stops all its loops when an accept fails (as accept on a shut-down socket does); so
// each listening socket first gets a filter that drops every incoming segment (no new
// connection joins its queue), then leaves the epoll set of gnet's accepting loop (found
// through /proc/self/fdinfo: the epoll instance that watches a socket of the listener's
// inode), and only after a pause, in which an accept loop under way drains the queue and
// returns, is it shut down: what still waits in its queue is reset, and new connections
// are refused. gnet closes the sockets in Stop. An error before the shutdown leaves the
// listeners accepting.
func (s *Server) closeListeners() error {
	if s.eng.Validate() != nil {
		return nil // LMTP only: no event loops
	}
	dups := map[string]int{} // "socket:[inode]" → a dup of the listener
	defer func() {
		for _, fd := range dups {
			_ = unix.Close(fd)
		}
	}()
	for _, l := range s.listeners {
		if l.proto == nil {
			continue
		}
		fd, err := s.eng.DupListener("tcp", l.Address)
		if err != nil {
			return fmt.Errorf("listener %s: %w", l.Address, err)
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			_ = unix.Close(fd)
			return err
		}
		dups[link] = fd
	}
	type reg struct{ epfd, fd int }
	var regs []reg
	found := map[string]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		epfd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "tfd:" {
				continue
			}
			tfd, err := strconv.Atoi(f[1])
			if err != nil {
				continue
			}
			link, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", tfd))
			if _, ok := dups[link]; ok && link != "" {
				regs = append(regs, reg{epfd, tfd})
				found[link] = true
			}
		}
	}
	if len(found) != len(dups) {
		return fmt.Errorf("found the epoll registration of %d of %d listeners", len(found), len(dups))
	}
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}} // "ret #0": drop
	for link, fd := range dups {
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: 1, Filter: &drop[0]}); err != nil {
			return fmt.Errorf("filter on listener %s: %w", link, err)
		}
	}
	for _, r := range regs {
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, r.fd, nil); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("epoll_ctl del: %w", err)
		}
	}
	time.Sleep(listenerDrainPause)
	for link, fd := range dups {
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil {
			return fmt.Errorf("shutdown of listener %s: %w", link, err)
		}
	}
	return nil
}

// kickSpread kicks every relayed session, the i-th of n at i/n of spread (all at once
// when ctx ends), and waits (up to a few seconds) for them to be gone. It returns how
// many it kicked.
func (s *Server) kickSpread(ctx context.Context, spread time.Duration) int {
	var hs []*relay.Handle
	s.eachSession(sessionFilter{}, func(_ *endRecord, h *relay.Handle) { hs = append(hs, h) })
	start := time.Now()
	for i, h := range hs {
		if ctx.Err() == nil && spread > 0 {
			at := start.Add(time.Duration(int64(spread) * int64(i) / int64(len(hs))))
			sleepCtx(ctx, time.Until(at))
		}
		h.Kick()
		s.stats.ShutdownKicked.Add(1)
	}
	for wait := time.Now().Add(5 * time.Second); s.stats.Relaying.Load() > 0 && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond)
	}
	return len(hs)
}

func (s *Server) stopLMTP(ctx context.Context) error {
	s.lmtpMu.Lock() // Shutdown's and Stop's may overlap
	defer s.lmtpMu.Unlock()
	var errs []error
	for _, ls := range s.lmtp {
		errs = append(errs, ls.close(ctx))
	}
	s.lmtp = nil
	return errors.Join(errs...)
}

// Reload re-reads the passdb files, the certificates and the ticket keys (SIGHUP). What
// fails to load keeps its old contents; every failure is returned. Live sessions are
// not touched.
func (s *Server) Reload() error {
	_, err := s.ReloadConfig(nil)
	return err
}

// ReloadConfig is Reload with the configuration file read again (next; nil: none): it
// also applies next's keys that can change under running sessions (liveKeys), and returns
// the keys that changed and need a restart to take effect (listeners, the passdb list,
// ...): those keep their old values. Live sessions are not touched.
func (s *Server) ReloadConfig(next *Config) (restart []string, err error) {
	errs := []error{s.tls.reload()}
	for _, db := range s.dbs {
		if f, ok := db.(*route.PasswdFile); ok {
			if err := f.Reload(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if next != nil {
		lc, err := newLiveConfig(next)
		if err != nil {
			errs = append(errs, err)
		} else {
			s.live.Store(lc)
			restart = restartKeys(s.cfg, next)
		}
	}
	return restart, errors.Join(errs...)
}

// Counters returns the server's live counters.
func (s *Server) Counters() *Counters { return &s.stats }

// RelayCounters returns the relay's pipe and session gauges.
func (s *Server) RelayCounters() relay.Counters { return s.relay.Counters() }

func (s *Server) isTrusted(a netip.Addr) bool { return contains(s.live.Load().trusted, a) }

func contains(nets []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// liveConfig is the part of the configuration that a reload (SIGHUP) may change while
// sessions run: read through Server.live, replaced whole.
type liveConfig struct {
	trusted           []netip.Prefix // login_trusted_networks
	authFailureDelay  time.Duration  // auth_failure_delay
	loginProxyTimeout time.Duration  // login_proxy_timeout
	maxReconnects     int            // login_proxy_max_reconnects
}

// liveKeys are the configuration keys a reload applies at once; restartKeys names the
// others that changed. (passdb files and certificates are re-read on every reload, at
// the same paths; log.level is the daemon's own.)
var liveKeys = map[string]bool{
	"login_trusted_networks": true, "auth_failure_delay": true, "login_proxy_timeout": true,
	"login_proxy_max_reconnects": true, "log": true,
}

func newLiveConfig(cfg *Config) (*liveConfig, error) {
	lc := &liveConfig{
		authFailureDelay:  time.Duration(cfg.AuthFailureDelay),
		loginProxyTimeout: time.Duration(cfg.LoginProxyTimeout),
	}
	if cfg.LoginProxyMaxReconnects != nil {
		lc.maxReconnects = *cfg.LoginProxyMaxReconnects
	}
	for _, n := range cfg.LoginTrustedNetworks {
		p, err := parsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("login_trusted_networks: %w", err)
		}
		lc.trusted = append(lc.trusted, p)
	}
	return lc, nil
}

// restartKeys are the top-level keys (their YAML names) whose values differ between old
// and next, other than liveKeys: a restart applies them.
func restartKeys(old, next *Config) []string {
	var keys []string
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(next).Elem()
	t := ov.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || name == "-" || liveKeys[name] {
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			keys = append(keys, name)
		}
	}
	if old.Log.Format != next.Log.Format {
		keys = append(keys, "log.format") // log.level is live; the encoder is not
	}
	return keys
}
