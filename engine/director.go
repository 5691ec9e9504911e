package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"doorman/engine/relay"
	"doorman/route"
)

// The director: a user whom the passdb proxies without a host but with a site (the
// user's or its vsite's site=, else fleet.director_site) gets one of the site's healthy
// backends by consistent hashing, as Dovecot's director did (route/ring.go), and the
// choice is shared through Redis (route/director.go) so that every proxy host sends the
// user's sessions to the same backend. A backend leaving the site (removed from hosts, or
// listed in down) moves only its own users; the others keep theirs.
//
// It exists whenever a redis passdb does (a site= may come from any user or vsite, not
// only fleet.director_site); without a site for the user it does nothing.
//
// Sites are read from an in-process table, never per login: loaded at first use, again on
// "site <id>" on the events channel, and every vsite_reload_interval. A user's record
// lives director_user_expire + a margin while the user has sessions here (renewed every
// director_user_expire/2 for the users of live directed sessions), and director_user_expire
// after the last one ends.
type director struct {
	srv     *Server
	fl      *route.Fleet
	log     *zap.Logger
	site    string        // fleet.director_site
	expire  time.Duration // director_user_expire
	reload  time.Duration // how often every known site is read again
	timeout time.Duration // one Redis round trip of a login's assignment

	mu         sync.Mutex
	sites      map[string]*directorSite
	endedUsers map[string]struct{} // users whose directed session ended since the last flush

	startOnce sync.Once
	started   atomic.Bool
	stopOnce  sync.Once
	stopc     chan struct{}
	done      chan struct{}

	kept, assigned, moved, failed atomic.Int64
	unstored                      atomic.Int64 // Redis errors: the ring's choice, not stored
	refreshes, refreshErrors      atomic.Int64
}

// directorSite is one site as the director holds it: its healthy hosts' ring.
type directorSite struct {
	ring   *route.Ring
	hosts  int // all of the site's hosts, healthy or not
	loaded time.Time
	err    error // the last load's error; the previous ring stays in use
	gone   bool  // the site does not exist
}

// newDirector builds the director on the first redis passdb. It registers for "site"
// events (before the passdb's Start); its refresh goroutine starts now with
// fleet.director_site, else at the first assignment.
func newDirector(s *Server, r *route.Redis) (*director, error) {
	expire := time.Duration(s.cfg.Fleet.DirectorUserExpire)
	if expire <= 0 {
		expire = 15 * time.Minute
	}
	reload := time.Duration(s.cfg.VsiteReloadInterval)
	if reload <= 0 {
		reload = route.DefaultVsiteReloadInterval
	}
	d := &director{
		srv:        s,
		fl:         r.Fleet(),
		log:        s.log.Named("director"),
		site:       s.cfg.Fleet.DirectorSite,
		expire:     expire,
		reload:     reload,
		timeout:    time.Second,
		sites:      map[string]*directorSite{},
		endedUsers: map[string]struct{}{},
		stopc:      make(chan struct{}),
		done:       make(chan struct{}),
	}
	r.OnEvent("site", d.onSiteEvent)
	r.OnResubscribe(func() { go d.reloadAll() })
	if d.site != "" {
		d.startOnce.Do(d.start)
	}
	return d, nil
}

// start runs the refresh goroutine: at once with fleet.director_site, else at the first
// assignment (a process that never directs a user has no goroutine).
func (d *director) start() {
	d.started.Store(true)
	go d.run()
}

// liveTTL is a record's expiry while its user has sessions: the refresh comes every
// expire/2, so the record always has at least that left.
func (d *director) liveTTL() time.Duration { return d.expire + d.expire/2 }

// refreshEvery is how often the records of users with live sessions are renewed.
func (d *director) refreshEvery() time.Duration { return max(d.expire/2, time.Second) }

// assign sets p's host for a proxied user without one; it reports whether it did. No site
// for the user: nothing to do (false, nil).
func (d *director) assign(ctx context.Context, user string, fields map[string]string, p *route.Proxy) (bool, error) {
	if d == nil {
		return false, nil
	}
	siteID := fields["site"]
	if siteID == "" {
		siteID = d.site
	}
	if siteID == "" {
		return false, nil
	}
	d.startOnce.Do(d.start)
	ds := d.siteView(ctx, siteID)
	switch {
	case ds.gone:
		d.failed.Add(1)
		return false, fmt.Errorf("site %q does not exist", siteID)
	case ds.ring == nil:
		d.failed.Add(1)
		return false, fmt.Errorf("site %q not loaded: %v", siteID, ds.err)
	case len(ds.ring.Hosts()) == 0:
		d.failed.Add(1)
		return false, fmt.Errorf("site %q has no healthy backend (%d down)", siteID, ds.hosts)
	}
	actx, cancel := context.WithTimeout(ctx, d.timeout)
	as, err := d.fl.AssignRing(actx, user, ds.ring, d.liveTTL())
	cancel()
	if err != nil {
		// Redis is away: every host computes the same ring, so its choice still keeps a
		// user's sessions together (unless a stored assignment differed). The login
		// goes on; the assignment is stored at the user's next login.
		d.unstored.Add(1)
		d.log.Warn("director: assignment not read or stored; using the ring's choice",
			zap.String("user", user), zap.String("site", siteID), zap.Error(err))
		as = route.Assignment{Host: ds.ring.Host(user)}
	}
	host := as.Host
	ip, port, err := splitDirectorHost(host)
	if err != nil {
		d.failed.Add(1)
		return false, fmt.Errorf("site %q: %w", siteID, err)
	}
	switch {
	case as.Moved:
		d.moved.Add(1)
		d.log.Info("user moved to another backend of its site", zap.String("user", user),
			zap.String("site", siteID), zap.String("host", host))
	case as.Stored:
		d.assigned.Add(1)
	default:
		d.kept.Add(1)
	}
	p.Host, p.HostIP = ip, ""
	if port != 0 {
		p.Port = port
	}
	return true, nil
}

// splitDirectorHost reads a site's host: "ip" or "ip:port".
func splitDirectorHost(h string) (string, int, error) {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String(), 0, nil
	}
	if ap, err := netip.ParseAddrPort(h); err == nil && ap.Port() != 0 {
		return ap.Addr().Unmap().String(), int(ap.Port()), nil
	}
	return "", 0, fmt.Errorf("host %q is neither ip nor ip:port", h)
}

// siteView returns the site's view, loading it now if this process never did.
func (d *director) siteView(ctx context.Context, id string) *directorSite {
	d.mu.Lock()
	ds := d.sites[id]
	d.mu.Unlock()
	if ds != nil {
		return ds
	}
	return d.loadSite(ctx, id)
}

// loadSite reads a site from Redis into the table. A failed read keeps the previous ring.
func (d *director) loadSite(ctx context.Context, id string) *directorSite {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	site, err := d.fl.Site(ctx, id)
	cancel()
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.sites[id]
	ds := &directorSite{loaded: time.Now()}
	switch {
	case err != nil:
		ds.err = err
		if old != nil {
			ds.ring, ds.hosts, ds.gone = old.ring, old.hosts, old.gone
		}
		if old == nil || old.err == nil {
			d.log.Warn("site not loaded; the previous view stays", zap.String("site", id), zap.Error(err))
		}
	case site == nil:
		ds.gone = true
	default:
		ds.ring = route.NewRing(site.Healthy())
		ds.hosts = len(site.Hosts)
		if old != nil && old.ring != nil && !sameHosts(old.ring.Hosts(), ds.ring.Hosts()) {
			d.log.Info("site backends changed", zap.String("site", id),
				zap.Strings("healthy", ds.ring.Hosts()), zap.Strings("before", old.ring.Hosts()))
		}
	}
	d.sites[id] = ds
	return ds
}

func sameHosts(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := make(map[string]bool, len(a))
	for _, h := range a {
		seen[h] = true
	}
	for _, h := range b {
		if !seen[h] {
			return false
		}
	}
	return true
}

// onSiteEvent is "site <id>" on the events channel: read that site again (off the
// watcher goroutine, which must stay quick).
func (d *director) onSiteEvent(id string) {
	if id == "" {
		return
	}
	go d.loadSite(context.Background(), id)
}

// reloadAll reads every known site again (and fleet.director_site, known or not).
func (d *director) reloadAll() {
	d.mu.Lock()
	ids := make([]string, 0, len(d.sites)+1)
	for id := range d.sites {
		ids = append(ids, id)
	}
	if _, ok := d.sites[d.site]; !ok && d.site != "" {
		ids = append(ids, d.site)
	}
	d.mu.Unlock()
	for _, id := range ids {
		d.loadSite(context.Background(), id)
	}
}

// ended runs at the end of a session whose backend the director chose (on a relay
// worker: it only notes the user; the goroutine sets the record's expiry).
func (d *director) ended(rec *endRecord) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.endedUsers[rec.user] = struct{}{}
	d.mu.Unlock()
}

// run loads fleet.director_site, then each second gives the records of users whose
// session ended their after-session expiry, renews the records of users with live
// sessions every refreshEvery, and reloads the sites every reload.
func (d *director) run() {
	defer close(d.done)
	if d.site != "" {
		d.loadSite(context.Background(), d.site)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastRefresh, lastReload := time.Now(), time.Now()
	for {
		select {
		case <-d.stopc:
			d.flushEnded() // a last flush: these users' records start their expiry now
			return
		case now := <-tick.C:
			// Renew first: a user whose session ended while another goes on gets the
			// live expiry back at the next refresh anyway.
			if now.Sub(lastRefresh) >= d.refreshEvery() {
				lastRefresh = now
				d.refreshLive()
			}
			d.flushEnded()
			if now.Sub(lastReload) >= d.reload {
				lastReload = now
				d.reloadAll()
			}
		}
	}
}

// directorBatch bounds one pipeline of expiry updates.
const directorBatch = 1000

func (d *director) flushEnded() {
	d.mu.Lock()
	if len(d.endedUsers) == 0 {
		d.mu.Unlock()
		return
	}
	users := make([]string, 0, len(d.endedUsers))
	for u := range d.endedUsers {
		users = append(users, u)
	}
	clear(d.endedUsers)
	d.mu.Unlock()
	d.touch(users, d.expire)
}

// refreshLive renews the records of the users of this host's live directed sessions:
// one walk of the session registry every refreshEvery, one expiry per user.
func (d *director) refreshLive() {
	seen := map[string]struct{}{}
	d.srv.eachSession(sessionFilter{}, func(rec *endRecord, _ *relay.Handle) {
		if rec.directed() {
			seen[rec.user] = struct{}{}
		}
	})
	users := make([]string, 0, len(seen))
	for u := range seen {
		users = append(users, u)
	}
	d.touch(users, d.liveTTL())
}

func (d *director) touch(users []string, ttl time.Duration) {
	for len(users) > 0 {
		n := min(len(users), directorBatch)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := d.fl.DirectorTouch(ctx, users[:n], ttl)
		cancel()
		d.refreshes.Add(1)
		if err != nil && !errors.Is(err, context.Canceled) {
			d.refreshErrors.Add(1)
			d.log.Warn("director records not renewed", zap.Int("users", n), zap.Error(err))
		}
		users = users[n:]
	}
}

// stop ends the refresh goroutine (after a last flush of ended sessions' expiries).
func (d *director) stop(ctx context.Context) {
	if d == nil {
		return
	}
	d.stopOnce.Do(func() { close(d.stopc) })
	d.startOnce.Do(func() {}) // no start after the stop
	if !d.started.Load() {
		return
	}
	select {
	case <-d.done:
	case <-ctx.Done():
	}
}

func (d *director) appendMetrics(m *metricWriter) {
	if d == nil {
		return
	}
	const name = "doorman_director_assignments_total"
	m.family(name, "counter", "Director assignments of users without a host: existing (the stored backend), new (the ring's choice, stored), moved (the stored backend left the site), unstored (Redis unreachable: the ring's choice, not stored), failed.")
	m.sample(name, `result="existing"`, d.kept.Load())
	m.sample(name, `result="new"`, d.assigned.Load())
	m.sample(name, `result="moved"`, d.moved.Load())
	m.sample(name, `result="failed"`, d.failed.Load())
	m.sample(name, `result="unstored"`, d.unstored.Load())
	m.one("doorman_director_record_updates_total", "counter", "Pipelines renewing or starting the expiry of director records.", d.refreshes.Load())
	m.one("doorman_director_record_update_errors_total", "counter", "Such pipelines that failed (Redis errors).", d.refreshErrors.Load())
	d.mu.Lock()
	m.family("doorman_director_site_backends", "gauge", "Healthy backends of each site the director has loaded.")
	for id, ds := range d.sites {
		n := 0
		if ds.ring != nil {
			n = len(ds.ring.Hosts())
		}
		m.sample("doorman_director_site_backends", `site="`+escapeLabel(id)+`"`, int64(n))
	}
	d.mu.Unlock()
}

// escapeLabel escapes a label value for the text format: backslash, double quote and
// newline are the only escapes it knows (UTF-8 goes as is).
func escapeLabel(v string) string {
	if !strings.ContainsAny(v, "\\\"\n") {
		return v
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}
