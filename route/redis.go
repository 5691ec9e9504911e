package route

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis is a passdb kept in Redis (standalone, Sentinel or Cluster).
//
// Key layout, all under KeyPrefix (default "doorman:"):
//
//	<prefix>user:<name>   hash: one user, looked up with one HGETALL
//	<prefix>vsite:<id>    hash: a virtual site (see vsite.go)
//	<prefix>events        pub/sub channel: vsite reloads, cache invalidation
//	<prefix>penalty:<ip>  failed-login counter of one client address (penalty.go)
//
// Other names under the prefix are reserved for Doorman (caches, moves,
// kicks). A user hash holds passdb fields with Dovecot's names: "password"
// (with or without a {SCHEME} prefix), or "password_noscheme" (taken as is,
// with DefaultScheme), and the extra fields (proxy, host, port, destuser,
// nopassword, forward_<name>, …). A hash field always has a value, so a
// boolean field is on as soon as it exists, whatever its value ("proxy"
// = "" and "proxy" = "N" both mean proxy). A user= field (or username=,
// domain=) rewrites the user name as in Dovecot.
//
// An empty or missing hash is an unknown user. Any Redis error — refused,
// timed out, wrong type, auth — is a *TempError. The client is built with
// short timeouts and no retries (see RedisConfig) so a dead or hung Redis
// fails a login in well under a second instead of holding it.
type Redis struct {
	client        redis.UniversalClient
	prefix        string
	defaultScheme string

	cache       *authCache // nil: auth_cache_size 0
	vsites      atomic.Pointer[vsiteTable]
	reloadMu    sync.Mutex // serializes writers of vsites
	reloadEvery time.Duration
	logf        func(msg string, err error)
	invalidate  []func()                      // OnInvalidate hooks
	events      map[string][]func(arg string) // OnEvent hooks, by verb
	resubscribe []func()                      // OnResubscribe hooks

	// Owned by the watcher goroutine (and Start before it runs).
	lastReload   time.Time
	watchFailing bool
	stopWatch    context.CancelFunc
	watchDone    chan struct{}
	subscribed   chan struct{} // closed when the first subscription attempt is over
	firstOnce    sync.Once
}

var _ Passdb = (*Redis)(nil)

// RedisConfig configures NewRedis. Zero values get the defaults below, which
// follow the project's Redis research notes ("tuned" settings).
//
// Addrs with more than one address (and no MasterName) means Redis Cluster;
// with MasterName the addresses are Sentinels.
type RedisConfig struct {
	Addrs                     []string
	MasterName                string // Sentinel master name
	Username, Password        string
	SentinelUsername          string
	SentinelPassword          string
	DB                        int
	KeyPrefix                 string        // default "doorman:"
	DialTimeout               time.Duration // default 250ms (one attempt: DialerRetries is 1)
	ReadTimeout, WriteTimeout time.Duration // default 300ms each
	PoolTimeout               time.Duration // default 300ms
	PoolSize                  int           // default go-redis's: 10 per GOMAXPROCS
	DefaultScheme             string        // for passwords without {SCHEME}; default CRYPT

	// Auth cache (Dovecot's auth_cache_size, auth_cache_ttl,
	// auth_cache_negative_ttl): CacheSize entries at most, 0 = off.
	CacheSize                  int
	CacheTTL, CacheNegativeTTL time.Duration

	// VsiteReloadInterval: full vsite reload period; default 60s.
	VsiteReloadInterval time.Duration
	// Log receives the events worth a log line (lost subscription, failed
	// reload); nil: none. err may be nil.
	Log func(msg string, err error)
}

// Redis defaults.
const (
	DefaultRedisKeyPrefix    = "doorman:"
	DefaultRedisDialTimeout  = 250 * time.Millisecond
	DefaultRedisReadTimeout  = 300 * time.Millisecond
	DefaultRedisWriteTimeout = 300 * time.Millisecond
	DefaultRedisPoolTimeout  = 300 * time.Millisecond
)

// NewRedis builds the client. It does not connect: the first lookup (or
// Ping) does, so a Redis that is down at start-up costs tempfails, not a
// failed start.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("route: redis: no addrs")
	}
	if cfg.DB != 0 && cfg.MasterName == "" && len(cfg.Addrs) > 1 {
		return nil, errors.New("route: redis: db must be 0 with Redis Cluster (more than one addr)")
	}
	for name, d := range map[string]time.Duration{
		"dial_timeout": cfg.DialTimeout, "read_timeout": cfg.ReadTimeout,
		"write_timeout": cfg.WriteTimeout, "pool_timeout": cfg.PoolTimeout,
	} {
		if d < 0 {
			return nil, fmt.Errorf("route: redis: %s must not be negative", name)
		}
	}
	if cfg.PoolSize < 0 || cfg.DB < 0 {
		return nil, errors.New("route: redis: pool_size and db must not be negative")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultRedisKeyPrefix
	}
	if cfg.DefaultScheme == "" {
		cfg.DefaultScheme = DefaultPasswdFileScheme
	}
	if !SchemeSupported(cfg.DefaultScheme) {
		return nil, fmt.Errorf("route: redis: %w %q", ErrUnknownScheme, cfg.DefaultScheme)
	}
	orDefault := func(d, def time.Duration) time.Duration {
		if d == 0 {
			return def
		}
		return d
	}
	opts := &redis.UniversalOptions{
		Addrs:            cfg.Addrs,
		MasterName:       cfg.MasterName,
		Username:         cfg.Username,
		Password:         cfg.Password,
		SentinelUsername: cfg.SentinelUsername,
		SentinelPassword: cfg.SentinelPassword,
		DB:               cfg.DB,
		PoolSize:         cfg.PoolSize,

		DialTimeout:  orDefault(cfg.DialTimeout, DefaultRedisDialTimeout),
		ReadTimeout:  orDefault(cfg.ReadTimeout, DefaultRedisReadTimeout),
		WriteTimeout: orDefault(cfg.WriteTimeout, DefaultRedisWriteTimeout),
		PoolTimeout:  orDefault(cfg.PoolTimeout, DefaultRedisPoolTimeout),
		// The go-redis defaults (5 dial attempts × 4 command attempts, 5 s
		// timeouts) can hold a login for 100 s when Redis is unreachable.
		DialerRetries:         1,
		MaxRetries:            -1, // no retries
		ContextTimeoutEnabled: true,
		// Not needed, and it costs a round trip on every new connection.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if cfg.CacheSize < 0 || cfg.CacheTTL < 0 || cfg.CacheNegativeTTL < 0 || cfg.VsiteReloadInterval < 0 {
		return nil, errors.New("route: redis: cache size, cache TTLs and vsite reload interval must not be negative")
	}
	r := &Redis{
		client:        redis.NewUniversalClient(opts),
		prefix:        cfg.KeyPrefix,
		defaultScheme: cfg.DefaultScheme,
		cache:         newAuthCache(cfg.CacheSize, cfg.CacheTTL, cfg.CacheNegativeTTL),
		reloadEvery:   orDefault(cfg.VsiteReloadInterval, DefaultVsiteReloadInterval),
		logf:          cfg.Log,
	}
	r.vsites.Store(&vsiteTable{})
	return r, nil
}

// Start loads the vsites (a failure is logged, not returned: a Redis that
// is down at start-up costs tempfails until it is back) and starts the
// subscriber that keeps them and the auth cache fresh; it returns once
// subscribed, or once that failed, or after 2 s. Close stops it.
func (r *Redis) Start() {
	if r.stopWatch != nil {
		return
	}
	r.reloadAll(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	r.stopWatch = cancel
	r.watchDone = make(chan struct{})
	r.subscribed = make(chan struct{})
	go r.watch(ctx)
	// Wait (a little) for the subscription, so that what is published once
	// Start has returned is not missed.
	select {
	case <-r.subscribed:
	case <-time.After(startSubscribeWait):
	}
}

// startSubscribeWait bounds Start's wait for the first subscription.
const startSubscribeWait = 2 * time.Second

// Name is "redis".
func (r *Redis) Name() string { return "redis" }

// UserKey is the key of a user's hash: <prefix>user:<name>.
func (r *Redis) UserKey(user string) string { return r.prefix + "user:" + user }

// VsiteKey is the key of a virtual site's hash: <prefix>vsite:<id>.
func (r *Redis) VsiteKey(id string) string { return r.prefix + "vsite:" + id }

// Lookup reads the user's hash with one HGETALL, or takes it from the auth
// cache, and resolves its vsite. The cache holds the hash as stored, so a
// moved vsite applies to cached users at once.
func (r *Redis) Lookup(ctx context.Context, user string) (*Entry, error) {
	if user == "" {
		return nil, ErrUnknownUser
	}
	if e, ok := r.cache.get(user); ok {
		if e == nil {
			return nil, ErrUnknownUser
		}
		return r.withVsite(e)
	}
	m, err := r.client.HGetAll(ctx, r.UserKey(user)).Result()
	if err != nil {
		return nil, &TempError{Passdb: r.Name(), Err: err}
	}
	if len(m) == 0 {
		r.cache.put(user, nil)
		return nil, ErrUnknownUser
	}
	e, err := entryFromHash(user, m, r.defaultScheme)
	if err != nil {
		return nil, err
	}
	r.cache.put(user, e)
	return r.withVsite(e)
}

// CacheLen is the number of users in the auth cache (expired ones included).
func (r *Redis) CacheLen() int { return r.cache.len() }

// entryFromHash builds an Entry from a user hash; fields is reused as
// Entry.Fields.
func entryFromHash(user string, fields map[string]string, defaultScheme string) (*Entry, error) {
	e := &Entry{User: user, Fields: fields}
	if pw, ok := fields["password"]; ok {
		e.Password = storedPassword(pw, defaultScheme)
		delete(fields, "password")
	} else if pw, ok := fields["password_noscheme"]; ok {
		if pw != "" {
			e.Password = "{" + defaultScheme + "}" + pw
		}
		delete(fields, "password_noscheme")
	}
	// Dovecot applies user=, username= and domain= in field order; a hash
	// has no order, so apply them in a fixed one.
	for _, k := range [...]string{"user", "username", "domain"} {
		if v, ok := fields[k]; ok {
			e.User, _ = updatedUser(e.User, k, v)
			if e.User == "" {
				return nil, fmt.Errorf("%w: %s", ErrUnknownUser, errEmptyUser)
			}
		}
	}
	return e, nil
}

// Ping checks that Redis answers; its error is a *TempError.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return &TempError{Passdb: r.Name(), Err: err}
	}
	return nil
}

// SetRedisLogger sends go-redis's own log lines (pool dial failures,
// reconnects) to printf instead of the standard logger on stderr. It is
// process-wide and meant to be called once at start-up.
func SetRedisLogger(printf func(ctx context.Context, format string, args ...any)) {
	redis.SetLogger(redisLogger(printf))
}

type redisLogger func(ctx context.Context, format string, args ...any)

func (l redisLogger) Printf(ctx context.Context, format string, args ...any) { l(ctx, format, args...) }

// Close stops the subscriber and closes the client's connections.
func (r *Redis) Close() error {
	if r.stopWatch != nil {
		r.stopWatch()
		<-r.watchDone
		r.stopWatch = nil
	}
	return r.client.Close()
}
