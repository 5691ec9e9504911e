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
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"go.uber.org/zap"

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

	trusted   []netip.Prefix
	haproxies []netip.Prefix      // haproxy_trusted_networks
	hostAddrs []netip.Addr        // this host's addresses, for the proxy-loop check
	proxySelf []netip.Addr        // auth_proxy_self
	spreader  *disconnectSpreader // login_proxy_max_disconnect_delay; nil when off
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
	nextID   atomic.Uint32

	stats Counters

	sessions sessionRegistry // relayed sessions, for the admin API
	admin    *adminServer    // nil when admin.address is unset

	fleet    *fleet    // fleet view and kicks (fleet.go); nil when off
	watchdog *watchdog // site watchdog (watchdog.go); nil when off
	director *director // consistent-hashing assignment (director.go); nil when off
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
}

type listener struct {
	Listener
	addr  netip.AddrPort
	proto *protocol // nil for LMTP
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
	for _, n := range cfg.LoginTrustedNetworks {
		p, err := parsePrefix(n)
		if err != nil {
			return nil, err
		}
		s.trusted = append(s.trusted, p)
	}
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
		s.listeners[ap] = &listener{Listener: l, addr: ap, proto: protocols[l.Protocol]}
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
	var err error
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
		Workers:  cfg.Relay.Workers,
		PipeSize: cfg.Relay.PipeSize,
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
		return nil
	}
	h := &handler{srv: s}
	go func() {
		s.stopped <- gnet.Rotate(h, addrs,
			gnet.WithMulticore(true),
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
	s.fleet.start()
	s.watchdog.start()
	for _, l := range s.cfg.Listeners {
		s.log.Info("listening", zap.String("listener", l.Name), zap.String("protocol", l.Protocol), zap.String("address", l.Address))
	}
	return nil
}

// Stop closes the listeners and every session, login-phase and relayed alike.
func (s *Server) Stop(ctx context.Context) error {
	close(s.tickStop)
	err := s.stopAdmin(ctx) // first: no kick may race the relay's Close
	s.watchdog.stop(ctx)
	s.fleet.stop(ctx)
	if s.eng.Validate() == nil {
		if e := s.eng.Stop(ctx); err == nil {
			err = e
		}
	}
	if e := <-s.stopped; err == nil {
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

func (s *Server) stopLMTP(ctx context.Context) error {
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
	errs := []error{s.tls.reload()}
	for _, db := range s.dbs {
		if f, ok := db.(*route.PasswdFile); ok {
			if err := f.Reload(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Counters returns the server's live counters.
func (s *Server) Counters() *Counters { return &s.stats }

// RelayCounters returns the relay's pipe and session gauges.
func (s *Server) RelayCounters() relay.Counters { return s.relay.Counters() }

func (s *Server) isTrusted(a netip.Addr) bool { return contains(s.trusted, a) }

func contains(nets []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
