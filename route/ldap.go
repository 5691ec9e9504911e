package route

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAP is Dovecot's ldap passdb (dovecot-ldap.conf.ext): the user is found
// with one search for PassFilter under Base, bound as the service DN, and
// the entry's attributes become passdb fields as PassAttrs says.
//
//	uris        = ldap://ldap1 ldap://ldap2     tried in order (failover)
//	dn, dnpass  = the service bind (empty dn: anonymous)
//	base, scope = where to search (base may use %-variables)
//	pass_filter = (&(objectClass=posixAccount)(uid=%u))
//	pass_attrs  = userPassword=password,mailHost=host,=proxy=y,doormanVsite=vsite
//
// pass_attrs is Dovecot 2.3's syntax, a comma-separated list of
//
//	attr          the attribute, returned as the field of the same name
//	attr=field    the attribute, returned as field
//	attr=field=t  field is the template t, where %$ is the attribute's value
//	=field=t      a constant field (t may be empty, or use %-variables)
//
// Templates may use %u, %n, %d, %s, %r, %l (and %{user}, %{username},
// %{domain}, %{service}, %{rip}, %{lip}), %{ldap:attr} (another attribute
// of the entry), %L / %U (lower / upper case) and %%. A missing attribute
// gives no field. A multi-valued attribute gives its first value (Dovecot
// would join them or warn, depending on the version: one host is what a
// proxy can use). Values expanded into pass_filter are escaped as RFC 4515
// filter values, into base and auth_bind_userdn as RFC 4514 DN values, so a
// user name cannot change the filter's meaning.
//
// The fields are those of every passdb: "password" (default scheme CRYPT,
// as Dovecot's default_pass_scheme), "password_noscheme", "user" (and
// "username", "domain", applied in pass_attrs order), proxy, host, vsite, …
//
// No entry is ErrUnknownUser; more than one ("multiple matches" in Dovecot's
// log) and every network, timeout or server error are a *TempError.
//
// With auth_bind the directory checks passwords: see Authenticate.
//
// Virtual sites (Dovecot's site-failover layout, user → vsite id → backend):
// when VsiteFilter is set and the user's fields have vsite=<id>, a second
// search (VsiteFilter in the subtree of VsiteBase, %$ being the id) finds
// the site's entry, and VsiteAttrs (pass_attrs syntax, e.g. "ipHostNumber=host")
// gives its routing fields. As with Redis vsites (vsite.go), the site's
// host, hostip, port, ssl, starttls and site replace the user's, and a user
// on a site gets proxy unless it has proxy or proxy_maybe. A site is cached
// for VsiteCacheTTL, so moving one takes effect within that time. An unknown
// site is a temporary failure, as is more than one entry for it.
//
// Connections: a pool of at most PoolSize connections, bound as the service
// DN and reused. A broken connection is dropped and a new one dialed,
// trying the URIs in order. Every Lookup finishes within Timeout (or ctx's
// deadline if earlier): a directory that accepts connections and never
// answers fails the login quickly instead of holding it.
type LDAP struct {
	uris     []*url.URL
	dn       string
	dnPass   string
	base     Template
	scope    int
	filter   Template
	attrs    []passAttr
	fetch    []string // attributes to request
	authBind bool
	userDN   *Template // auth_bind_userdn; nil: search for the DN
	startTLS bool
	tlsConf  *tls.Config
	scheme   string
	timeout  time.Duration
	connTO   time.Duration

	vsiteBase   Template
	vsiteFilter fieldTmpl // nil: vsites are not resolved
	vsiteAttrs  []passAttr
	vsiteFetch  []string
	vsiteTTL    time.Duration
	vsiteMu     sync.Mutex
	vsiteCache  map[string]ldapVsite

	slots  chan struct{} // one token per connection in use or being dialed
	mu     sync.Mutex
	idle   []*ldapConn
	closed bool
}

var _ PasswordVerifier = (*LDAP)(nil)

// PasswordVerifier is a passdb that checks passwords itself instead of
// returning a stored one (LDAP with auth_bind). When VerifiesPasswords is
// true, Lookup's entries carry no password (so a caller that only knows
// Lookup fails such logins as a mismatch, never lets them in), and a login
// must call Authenticate instead: it returns the entry only after the
// password was accepted, ErrPasswordMismatch when it was not,
// ErrUnknownUser, or a temporary failure.
type PasswordVerifier interface {
	Passdb
	VerifiesPasswords() bool
	Authenticate(ctx context.Context, user, password string) (*Entry, error)
}

// ErrPasswordMismatch: the passdb checked the password and it is wrong.
var ErrPasswordMismatch = errors.New("route: password mismatch")

// LDAPConfig configures NewLDAP. The names follow dovecot-ldap.conf.ext.
type LDAPConfig struct {
	URIs   []string // uris: ldap://, ldaps:// or ldapi:// (several: failover in order)
	DN     string   // dn: service bind DN; "" binds anonymously
	DNPass string   // dnpass
	Base   string   // base; may use %-variables (DN-escaped)
	Scope  string   // scope: base, onelevel or subtree (default)
	// PassFilter: default "(&(objectClass=mailUser)(uid=%u))", Dovecot's.
	PassFilter string
	// PassAttrs: default "uid=user,userPassword=password", Dovecot's.
	PassAttrs string
	// AuthBind: check the password by binding as the user's DN; see
	// Authenticate. AuthBindUserDN (auth_bind_userdn, e.g.
	// "uid=%n,ou=people,dc=example,dc=com") names the DN directly instead
	// of taking it from the search.
	AuthBind       bool
	AuthBindUserDN string

	TLS            bool   // tls: StartTLS on ldap:// URIs (ldaps:// always uses TLS)
	TLSCACertFile  string // tls_ca_cert_file: PEM; "" uses the system roots
	TLSRequireCert string // tls_require_cert: never, allow, try, demand (default), hard
	// TLSConfig, when set, is used as is (cloned; ServerName is set from the
	// URI when empty) instead of the tls_* settings.
	TLSConfig *tls.Config

	DefaultPassScheme string        // default_pass_scheme; default CRYPT
	Timeout           time.Duration // a whole Lookup or Authenticate; default 2s
	ConnectTimeout    time.Duration // dial+TLS+bind of one URI; default 1s (at most Timeout)
	PoolSize          int           // connections at most; default 4

	// Virtual sites (Doorman's, not Dovecot's): see LDAP.
	VsiteBase     string        // vsite_base; default Base
	VsiteFilter   string        // vsite_filter, e.g. "(&(objectClass=ipHost)(cn=%$))"; "" = off
	VsiteAttrs    string        // vsite_attrs, e.g. "ipHostNumber=host"
	VsiteCacheTTL time.Duration // vsite_cache_ttl; default 10s, negative: no cache
}

// LDAP defaults.
const (
	DefaultLDAPPassFilter     = "(&(objectClass=mailUser)(uid=%u))"
	DefaultLDAPPassAttrs      = "uid=user,userPassword=password"
	DefaultLDAPTimeout        = 2 * time.Second
	DefaultLDAPConnectTimeout = 1 * time.Second
	DefaultLDAPPoolSize       = 4
	DefaultLDAPVsiteCacheTTL  = 10 * time.Second
)

type ldapVsite struct {
	fields  map[string]string // nil: no such site
	expires time.Time
}

// NewLDAP checks cfg and builds the passdb. It does not connect: the first
// lookup does, so a directory that is down at start-up costs tempfails, not
// a failed start.
func NewLDAP(cfg LDAPConfig) (*LDAP, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("route: ldap: "+format, args...))
	}
	l := &LDAP{dn: cfg.DN, dnPass: cfg.DNPass, authBind: cfg.AuthBind, startTLS: cfg.TLS}

	if len(cfg.URIs) == 0 {
		bad("uris: none")
	}
	for _, s := range cfg.URIs {
		if rest, ok := strings.CutPrefix(s, "ldapi://"); ok {
			// The socket path is the URI's host, %-encoded ("ldapi://%2Frun%2Fldapi"),
			// which url.Parse refuses.
			host, _, _ := strings.Cut(rest, "/")
			path, err := url.PathUnescape(host)
			if err != nil {
				bad("uris: %q: %v", s, err)
				continue
			}
			if path == "" {
				path = "/var/run/slapd/ldapi"
			}
			l.uris = append(l.uris, &url.URL{Scheme: "ldapi", Path: path})
			continue
		}
		u, err := url.Parse(s)
		switch {
		case err != nil:
			bad("uris: %v", err)
		case u.Scheme != "ldap" && u.Scheme != "ldaps":
			bad("uris: %q: scheme must be ldap, ldaps or ldapi", s)
		case u.Host == "":
			bad("uris: %q: no host", s)
		default:
			l.uris = append(l.uris, u)
		}
	}
	var err error
	if l.base, err = ParseTemplate(cfg.Base); err != nil {
		bad("base: %v", err)
	}
	switch cfg.Scope {
	case "", "subtree":
		l.scope = ldap.ScopeWholeSubtree
	case "onelevel":
		l.scope = ldap.ScopeSingleLevel
	case "base":
		l.scope = ldap.ScopeBaseObject
	default:
		bad("scope: %q: must be base, onelevel or subtree", cfg.Scope)
	}
	if cfg.PassFilter == "" {
		cfg.PassFilter = DefaultLDAPPassFilter
	}
	if l.filter, err = ParseTemplate(cfg.PassFilter); err != nil {
		bad("pass_filter: %v", err)
	} else if _, err := ldap.CompileFilter(l.filter.Expand(filterVars(context.Background(), "u*)(x=y@d"))); err != nil {
		bad("pass_filter: %q: %v", cfg.PassFilter, err)
	}
	if cfg.PassAttrs == "" {
		cfg.PassAttrs = DefaultLDAPPassAttrs
	}
	if l.attrs, err = parsePassAttrs(cfg.PassAttrs); err != nil {
		bad("pass_attrs: %v", err)
	}
	if cfg.AuthBindUserDN != "" {
		if !cfg.AuthBind {
			bad("auth_bind_userdn needs auth_bind")
		}
		t, err := ParseTemplate(cfg.AuthBindUserDN)
		if err != nil {
			bad("auth_bind_userdn: %v", err)
		}
		l.userDN = &t
	}
	l.fetch = attributes(l.attrs, l.authBind)
	if cfg.VsiteFilter != "" {
		if cfg.VsiteBase == "" {
			cfg.VsiteBase = cfg.Base
		}
		if l.vsiteBase, err = ParseTemplate(cfg.VsiteBase); err != nil {
			bad("vsite_base: %v", err)
		}
		if l.vsiteFilter, err = parseFieldTmpl(cfg.VsiteFilter); err != nil {
			bad("vsite_filter: %v", err)
		} else if _, err := ldap.CompileFilter(l.vsiteFilter.expand(&fieldVars{attr: "x*)"}, ldap.EscapeFilter)); err != nil {
			bad("vsite_filter: %q: %v", cfg.VsiteFilter, err)
		}
		if l.vsiteAttrs, err = parsePassAttrs(cfg.VsiteAttrs); err != nil {
			bad("vsite_attrs: %v", err)
		} else if len(l.vsiteAttrs) == 0 {
			bad("vsite_attrs: none (vsite_filter is set)")
		}
		l.vsiteFetch = attributes(l.vsiteAttrs, false)
		l.vsiteTTL = orDefaultDuration(cfg.VsiteCacheTTL, DefaultLDAPVsiteCacheTTL)
		l.vsiteCache = make(map[string]ldapVsite)
	}

	l.scheme = cfg.DefaultPassScheme
	if l.scheme == "" {
		l.scheme = DefaultPasswdFileScheme
	}
	if !SchemeSupported(l.scheme) {
		bad("default_pass_scheme: %v %q", ErrUnknownScheme, l.scheme)
	}
	if cfg.Timeout < 0 || cfg.ConnectTimeout < 0 || cfg.PoolSize < 0 {
		bad("timeout, connect_timeout and pool_size must not be negative")
	}
	l.timeout = orDefaultDuration(cfg.Timeout, DefaultLDAPTimeout)
	l.connTO = min(orDefaultDuration(cfg.ConnectTimeout, DefaultLDAPConnectTimeout), l.timeout)
	size := cfg.PoolSize
	if size == 0 {
		size = DefaultLDAPPoolSize
	}
	l.slots = make(chan struct{}, size)

	if cfg.TLSConfig != nil {
		l.tlsConf = cfg.TLSConfig.Clone()
	} else {
		l.tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		switch cfg.TLSRequireCert {
		case "", "demand", "hard", "try":
		case "never", "allow":
			// OpenLDAP: a missing or bad certificate is accepted.
			l.tlsConf.InsecureSkipVerify = true
		default:
			bad("tls_require_cert: %q: must be never, allow, try, demand or hard", cfg.TLSRequireCert)
		}
		if cfg.TLSCACertFile != "" {
			pem, err := os.ReadFile(cfg.TLSCACertFile)
			if err != nil {
				bad("tls_ca_cert_file: %v", err)
			} else {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					bad("tls_ca_cert_file: %s: no PEM certificates", cfg.TLSCACertFile)
				}
				l.tlsConf.RootCAs = pool
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

func orDefaultDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Name is "ldap".
func (l *LDAP) Name() string { return "ldap" }

// VerifiesPasswords reports whether auth_bind is on.
func (l *LDAP) VerifiesPasswords() bool { return l.authBind }

// Lookup searches for the user and returns its fields. With auth_bind the
// entry has no password (see PasswordVerifier).
func (l *LDAP) Lookup(ctx context.Context, user string) (*Entry, error) {
	if user == "" {
		return nil, ErrUnknownUser
	}
	ctx, cancel := l.withTimeout(ctx)
	defer cancel()
	e, _, err := l.lookup(ctx, user)
	return e, err
}

// Authenticate checks password by binding as the user (auth_bind): as the
// DN found by the pass_filter search, or as auth_bind_userdn. It returns the
// user's entry (as Lookup does) only when the bind succeeds, and
// ErrPasswordMismatch when the directory refuses the credentials. An empty
// password is a mismatch without asking: LDAP takes a simple bind with an
// empty password as an anonymous bind, which always succeeds.
//
// Without auth_bind it returns a *TempError: such a passdb's passwords are
// checked by the caller.
func (l *LDAP) Authenticate(ctx context.Context, user, password string) (*Entry, error) {
	if !l.authBind {
		return nil, &TempError{Passdb: l.Name(), Err: errors.New("Authenticate needs auth_bind")}
	}
	if user == "" {
		return nil, ErrUnknownUser
	}
	ctx, cancel := l.withTimeout(ctx)
	defer cancel()
	var e *Entry
	dn := ""
	if l.userDN != nil {
		dn = l.userDN.Expand(dnVars(ctx, user))
	} else {
		var err error
		if e, dn, err = l.lookup(ctx, user); err != nil {
			return nil, err
		}
	}
	if password == "" {
		return nil, ErrPasswordMismatch
	}
	err := l.do(ctx, func(c *ldapConn) error {
		c.userBound = true // whatever the outcome, no longer the service DN
		return c.conn.Bind(dn, password)
	})
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
		return nil, ErrPasswordMismatch
	case err != nil:
		return nil, l.tempErr(fmt.Errorf("bind as %s: %w", dn, err))
	}
	if e == nil {
		// auth_bind_userdn: the fields still come from the search.
		if e, _, err = l.lookup(ctx, user); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Close closes the idle connections; those in use close when released.
func (l *LDAP) Close() error {
	l.mu.Lock()
	idle := l.idle
	l.idle, l.closed = nil, true
	l.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
	return nil
}

func (l *LDAP) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.timeout)
}

func (l *LDAP) tempErr(err error) error {
	return &TempError{Passdb: l.Name(), Err: err}
}

// filterVars and dnVars are the %-variables of a lookup (user, and the
// LookupInfo in ctx) escaped for a search filter (RFC 4515) or a DN value
// (RFC 4514). Both escapes work character by character, so %n and %d, cut
// from the escaped user at '@', are escaped too.
func filterVars(ctx context.Context, user string) *Vars {
	return escapedVars(ctx, user, ldap.EscapeFilter)
}

func dnVars(ctx context.Context, user string) *Vars {
	return escapedVars(ctx, user, escapeDNValue)
}

func escapedVars(ctx context.Context, user string, esc func(string) string) *Vars {
	info := LookupInfoFrom(ctx)
	return &Vars{User: esc(user), LookupInfo: LookupInfo{
		Service: esc(info.Service), RemoteIP: esc(info.RemoteIP), LocalIP: esc(info.LocalIP),
	}}
}

// lookup runs the pass_filter search; it returns the entry and its DN.
func (l *LDAP) lookup(ctx context.Context, user string) (*Entry, string, error) {
	req := &ldap.SearchRequest{
		BaseDN:       l.base.Expand(dnVars(ctx, user)),
		Scope:        l.scope,
		DerefAliases: ldap.NeverDerefAliases,
		SizeLimit:    2, // one is the answer, two is enough to know it is not
		TimeLimit:    int(math.Ceil(l.timeout.Seconds())),
		Filter:       l.filter.Expand(filterVars(ctx, user)),
		Attributes:   l.fetch,
	}
	var res *ldap.SearchResult
	err := l.do(ctx, func(c *ldapConn) error {
		var err error
		res, err = c.conn.Search(req)
		return err
	})
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) || err == nil && len(res.Entries) > 1:
		return nil, "", l.tempErr(fmt.Errorf("user %s: multiple matches for %s under %q", user, req.Filter, req.BaseDN))
	case err != nil:
		return nil, "", l.tempErr(fmt.Errorf("search %s under %q: %w", req.Filter, req.BaseDN, err))
	case len(res.Entries) == 0:
		return nil, "", ErrUnknownUser
	}
	info := LookupInfoFrom(ctx)
	e, err := l.entry(fieldVars{Vars: Vars{User: user, LookupInfo: info}}, res.Entries[0])
	if err != nil {
		return nil, "", err
	}
	if id, ok := e.Fields["vsite"]; ok && l.vsiteFilter != nil {
		vs, err := l.vsite(ctx, id)
		if err != nil {
			return nil, "", err
		}
		if vs == nil {
			return nil, "", l.tempErr(fmt.Errorf("user %s: unknown vsite %q", e.User, id))
		}
		for _, k := range vsiteFields {
			delete(e.Fields, k)
			if v, ok := vs[k]; ok {
				e.Fields[k] = v
			}
		}
		if !e.Has("proxy") && !e.Has("proxy_maybe") {
			e.Fields["proxy"] = ""
		}
	}
	return e, res.Entries[0].DN, nil
}

// vsite returns a site's fields (nil: no such site), from the cache or
// with a search.
func (l *LDAP) vsite(ctx context.Context, id string) (map[string]string, error) {
	now := time.Now()
	l.vsiteMu.Lock()
	vs, ok := l.vsiteCache[id]
	l.vsiteMu.Unlock()
	if ok && now.Before(vs.expires) {
		return vs.fields, nil
	}
	vars := fieldVars{Vars: *dnVars(ctx, ""), attr: id}
	req := &ldap.SearchRequest{
		BaseDN:       l.vsiteBase.Expand(&vars.Vars),
		Scope:        ldap.ScopeWholeSubtree,
		DerefAliases: ldap.NeverDerefAliases,
		SizeLimit:    2,
		TimeLimit:    int(math.Ceil(l.timeout.Seconds())),
		Filter:       l.vsiteFilter.expand(&vars, ldap.EscapeFilter),
		Attributes:   l.vsiteFetch,
	}
	var res *ldap.SearchResult
	err := l.do(ctx, func(c *ldapConn) error {
		var err error
		res, err = c.conn.Search(req)
		return err
	})
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) || err == nil && len(res.Entries) > 1:
		return nil, l.tempErr(fmt.Errorf("vsite %q: multiple matches for %s under %q", id, req.Filter, req.BaseDN))
	case err != nil:
		return nil, l.tempErr(fmt.Errorf("vsite %q: search %s under %q: %w", id, req.Filter, req.BaseDN, err))
	}
	vs = ldapVsite{expires: now.Add(l.vsiteTTL)}
	if len(res.Entries) == 1 {
		fv := fieldVars{Vars: Vars{LookupInfo: LookupInfoFrom(ctx)}, ldap: res.Entries[0]}
		vs.fields = map[string]string{}
		for _, pa := range l.vsiteAttrs {
			if v, ok := attrValue(pa, res.Entries[0], &fv); ok {
				vs.fields[pa.field] = v
			}
		}
	}
	if l.vsiteTTL > 0 {
		l.vsiteMu.Lock()
		if len(l.vsiteCache) >= maxLDAPVsites {
			clear(l.vsiteCache) // a bound, not a policy: sites are few
		}
		l.vsiteCache[id] = vs
		l.vsiteMu.Unlock()
	}
	return vs.fields, nil
}

// maxLDAPVsites bounds the vsite cache (ids come from user entries).
const maxLDAPVsites = 10000

// attrValue is a pass_attrs item's value for le; ok is false when its
// attribute is missing.
func attrValue(pa passAttr, le *ldap.Entry, vars *fieldVars) (string, bool) {
	val := ""
	if pa.attr != "" {
		vals := le.GetEqualFoldAttributeValues(pa.attr)
		if len(vals) == 0 {
			return "", false
		}
		val = vals[0]
	}
	if pa.tmpl != nil {
		vars.attr = val
		val = pa.tmpl.expand(vars, nil)
	}
	return val, true
}

// entry maps an LDAP entry to passdb fields, in pass_attrs order.
func (l *LDAP) entry(vars fieldVars, le *ldap.Entry) (*Entry, error) {
	e := &Entry{User: vars.User}
	vars.ldap = le
	for _, pa := range l.attrs {
		vars.User = e.User
		val, ok := attrValue(pa, le, &vars)
		if !ok {
			continue
		}
		switch pa.field {
		case "password":
			if !l.authBind {
				e.Password = storedPassword(val, l.scheme)
			}
			continue
		case "password_noscheme":
			if !l.authBind && val != "" {
				e.Password = "{" + l.scheme + "}" + val
			}
			continue
		}
		if u, ok := updatedUser(e.User, pa.field, val); ok {
			if u == "" {
				return nil, fmt.Errorf("%w: %s", ErrUnknownUser, errEmptyUser)
			}
			e.User = u
			continue // like the other passdbs: applied, not passed on
		}
		if e.Fields == nil {
			e.Fields = make(map[string]string, len(l.attrs))
		}
		e.Fields[pa.field] = val
	}
	return e, nil
}

// attributes lists what a search for attrs must return.
func attributes(attrs []passAttr, authBind bool) []string {
	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		if k := strings.ToLower(a); a != "" && !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	for _, pa := range attrs {
		if authBind && (pa.field == "password" || pa.field == "password_noscheme") {
			continue
		}
		add(pa.attr)
		for _, p := range pa.tmpl {
			if a, ok := strings.CutPrefix(p.name, "ldap:"); ok {
				add(a)
			}
		}
	}
	if len(out) == 0 {
		out = []string{"1.1"} // RFC 4511: no attributes
	}
	return out
}

// Connections.

type ldapConn struct {
	conn      *ldap.Conn
	raw       net.Conn // the TCP (or unix) connection under any TLS, for deadlines
	userBound bool     // bound as a user (auth_bind): rebind as the service DN before searching
}

func (c *ldapConn) close() {
	c.raw.Close() // first, so Close does not wait for a stuck server
	c.conn.Close()
}

// do runs op on a pooled connection before ctx's deadline. A connection
// that fails in any way other than an LDAP result is dropped; if it came
// from the pool (it may have gone stale while idle), op is tried again on
// the next one, at most once per pool slot and then on a new connection.
func (l *LDAP) do(ctx context.Context, op func(*ldapConn) error) error {
	for attempt := 0; ; attempt++ {
		c, reused, err := l.get(ctx)
		if err != nil {
			return err
		}
		err = l.run(ctx, c, op)
		if err == nil || isLDAPResult(err) {
			l.put(c, true)
			return err
		}
		l.put(c, false)
		if !reused || attempt >= cap(l.slots) || ctx.Err() != nil {
			return err
		}
	}
}

// isLDAPResult reports whether err is the server's answer (a result code),
// after which the connection is still good.
func isLDAPResult(err error) bool {
	var le *ldap.Error
	return errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork
}

// run calls op with the connection's deadline set to ctx's; cancelling ctx
// ends the operation at once.
func (l *LDAP) run(ctx context.Context, c *ldapConn, op func(*ldapConn) error) error {
	deadline, _ := ctx.Deadline()
	c.raw.SetDeadline(deadline)
	c.conn.SetTimeout(time.Until(deadline))
	stop := context.AfterFunc(ctx, func() { c.raw.SetDeadline(time.Unix(1, 0)) })
	var err error
	if c.userBound {
		if err = l.bindService(c.conn); err == nil {
			c.userBound = false
		}
	}
	if err == nil {
		err = op(c)
	}
	if !stop() {
		// ctx ended: the deadline may be (or become) in the past.
		if err == nil || isLDAPResult(err) {
			err = ctx.Err()
		}
		return err
	}
	c.raw.SetDeadline(time.Time{})
	return err
}

func (l *LDAP) bindService(c *ldap.Conn) error {
	if l.dn == "" && l.dnPass == "" {
		return c.UnauthenticatedBind("")
	}
	_, err := c.SimpleBind(&ldap.SimpleBindRequest{Username: l.dn, Password: l.dnPass})
	return err
}

// get takes a free slot, then an idle connection or a new one.
func (l *LDAP) get(ctx context.Context) (c *ldapConn, reused bool, err error) {
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("no free connection (pool of %d): %w", cap(l.slots), ctx.Err())
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.slots
		return nil, false, errors.New("passdb closed")
	}
	var stale []*ldapConn
	for n := len(l.idle); n > 0 && c == nil; n-- {
		c = l.idle[n-1]
		l.idle = l.idle[:n-1]
		if c.conn.IsClosing() { // the server closed it while idle
			stale = append(stale, c)
			c = nil
		}
	}
	l.mu.Unlock()
	for _, sc := range stale {
		sc.close()
	}
	if c != nil {
		return c, true, nil
	}
	c, err = l.dial(ctx)
	if err != nil {
		<-l.slots
		return nil, false, err
	}
	return c, false, nil
}

// put gives the connection back (ok) or closes it, and frees its slot.
func (l *LDAP) put(c *ldapConn, ok bool) {
	l.mu.Lock()
	if ok && !l.closed && !c.conn.IsClosing() {
		l.idle = append(l.idle, c)
		c = nil
	}
	l.mu.Unlock()
	if c != nil {
		c.close()
	}
	<-l.slots
}

// dial connects to the first URI that answers, each within ConnectTimeout.
func (l *LDAP) dial(ctx context.Context) (*ldapConn, error) {
	var err error // one line for the log: "uri1: …; uri2: …"
	for _, u := range l.uris {
		if ctx.Err() != nil {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, l.connTO)
		c, derr := l.dialURI(cctx, u)
		cancel()
		if derr == nil {
			return c, nil
		}
		if err == nil {
			err = fmt.Errorf("%s: %w", u.Redacted(), derr)
		} else {
			err = fmt.Errorf("%v; %s: %w", err, u.Redacted(), derr)
		}
	}
	if cerr := ctx.Err(); cerr != nil && err == nil {
		err = cerr
	}
	return nil, err
}

// dialURI connects, does TLS (ldaps or StartTLS) and binds as the service
// DN, all before ctx's deadline.
func (l *LDAP) dialURI(ctx context.Context, u *url.URL) (*ldapConn, error) {
	network, addr, host := "tcp", u.Host, u.Hostname()
	switch u.Scheme {
	case "ldapi":
		network, addr = "unix", u.Path
	case "ldap":
		if u.Port() == "" {
			addr = net.JoinHostPort(host, ldap.DefaultLdapPort)
		}
	case "ldaps":
		if u.Port() == "" {
			addr = net.JoinHostPort(host, ldap.DefaultLdapsPort)
		}
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	tconf := l.tlsConf.Clone()
	if tconf.ServerName == "" {
		tconf.ServerName = host
	}
	var nc net.Conn = raw
	if u.Scheme == "ldaps" {
		tc := tls.Client(raw, tconf)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		nc = tc
	}
	c := &ldapConn{conn: ldap.NewConn(nc, u.Scheme == "ldaps"), raw: raw}
	c.conn.Start()
	c.conn.SetTimeout(time.Until(deadline))
	fail := func(step string, err error) (*ldapConn, error) {
		c.close()
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	if l.startTLS && u.Scheme == "ldap" {
		if err := c.conn.StartTLS(tconf); err != nil {
			return fail("starttls", err)
		}
	}
	if l.dn != "" || l.dnPass != "" {
		if err := l.bindService(c.conn); err != nil {
			return fail("bind as "+l.dn, err)
		}
	}
	if !stop() {
		c.close()
		return nil, ctx.Err()
	}
	raw.SetDeadline(time.Time{})
	return c, nil
}

// pass_attrs.

type passAttr struct {
	attr, field string
	tmpl        fieldTmpl // nil: the attribute's value as is
}

func parsePassAttrs(s string) ([]passAttr, error) {
	var out []passAttr
	var errs []error
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		attr, rest, hasField := strings.Cut(item, "=")
		pa := passAttr{attr: strings.TrimSpace(attr), field: strings.TrimSpace(attr)}
		if hasField {
			field, t, hasTmpl := strings.Cut(rest, "=")
			pa.field = strings.TrimSpace(field)
			if hasTmpl || pa.attr == "" {
				var err error
				if pa.tmpl, err = parseFieldTmpl(t); err != nil {
					errs = append(errs, fmt.Errorf("%q: %w", item, err))
					continue
				}
			}
		}
		if pa.field == "" {
			errs = append(errs, fmt.Errorf("%q: no field name", item))
			continue
		}
		out = append(out, pa)
	}
	return out, errors.Join(errs...)
}

// pass_attrs templates: vars.go's variables plus %$ (the attribute's value,
// or the vsite id in vsite_filter) and %{ldap:attr} (another attribute of
// the entry).

type fieldTmplPart struct {
	lit  string
	name string // "" for a literal: u, n, d, s, r, l, $ or ldap:<attr>
	mod  byte   // 'L', 'U' or 0
}

type fieldTmpl []fieldTmplPart

type fieldVars struct {
	Vars
	attr string      // %$
	ldap *ldap.Entry // %{ldap:attr}
}

// parseFieldTmpl parses s. A template without variables is one literal.
func parseFieldTmpl(s string) (fieldTmpl, error) {
	var t fieldTmpl
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		i++
		if i < len(s) && s[i] == '%' {
			lit.WriteByte('%')
			continue
		}
		var p fieldTmplPart
		if i < len(s) && (s[i] == 'L' || s[i] == 'U') {
			p.mod = s[i]
			i++
		}
		if i >= len(s) {
			return nil, fmt.Errorf("%% at the end of %q", s)
		}
		if s[i] == '{' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated %%{ in %q", s)
			}
			p.name = s[i+1 : i+end]
			i += end
		} else {
			p.name = s[i : i+1]
		}
		if !varNames[p.name] && p.name != "$" && !(strings.HasPrefix(p.name, "ldap:") && len(p.name) > len("ldap:")) {
			return nil, fmt.Errorf("unsupported variable %%%s in %q (Doorman expands %%u %%n %%d %%s %%r %%l, their %%{long} forms, %%$ and %%{ldap:attr})", p.name, s)
		}
		if lit.Len() > 0 {
			t = append(t, fieldTmplPart{lit: lit.String()})
			lit.Reset()
		}
		t = append(t, p)
	}
	if lit.Len() > 0 {
		t = append(t, fieldTmplPart{lit: lit.String()})
	}
	if t == nil {
		t = fieldTmpl{} // a constant empty value
	}
	return t, nil
}

// expand fills in the variables, each value passed through escape (nil:
// as is).
func (t fieldTmpl) expand(v *fieldVars, escape func(string) string) string {
	if len(t) == 1 && t[0].name == "" {
		return t[0].lit
	}
	var b strings.Builder
	for _, p := range t {
		var val string
		switch {
		case p.name == "":
			b.WriteString(p.lit)
			continue
		case p.name == "$":
			val = v.attr
		case strings.HasPrefix(p.name, "ldap:"):
			if v.ldap != nil {
				val = v.ldap.GetEqualFoldAttributeValue(p.name[len("ldap:"):])
			}
		default:
			val = v.Vars.value(p.name)
		}
		switch p.mod {
		case 'L':
			val = strings.ToLower(val)
		case 'U':
			val = strings.ToUpper(val)
		}
		if escape != nil {
			val = escape(val)
		}
		b.WriteString(val)
	}
	return b.String()
}

// escapeDNValue escapes a DN attribute value (RFC 4514). It escapes
// '#' and ' ' wherever they are, not only where RFC 4514 requires (first,
// last), and '=' too — all allowed by its grammar — so that any substring of
// an escaped value (%n, %d) is itself escaped. NUL becomes \00.
func escapeDNValue(s string) string {
	if !strings.ContainsAny(s, ",+\"\\<>;=# \x00") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0:
			b.WriteString(`\00`)
			continue
		case strings.IndexByte(",+\"\\<>;=# ", c) >= 0:
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
