package route

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sites.
//
// A site is a group of backends (a physical site, a data centre) in the hash
// <prefix>site:<id>:
//
//	hosts       the site's backends (or its entry points): "ip[:port],..."
//	fallback    where its vsites go when it fails: "siteB:2,siteC:1" (weights; 1 if left out)
//	down        backends found unreachable (the watchdog, or an operator): "ip[:port],..."
//	state       "up" (or absent) or "failed" (its vsites are on the fallback sites)
//	down_since  unix seconds: since when the whole site is unreachable (the watchdog's clock)
//	up_since    unix seconds: since when a failed site is reachable again
//	changed     unix seconds of the last failover or restore
//	failed_by   who failed it over ("watchdog@<host>", "doormanctl@<host>"): the watchdog
//	            restores only the sites it failed over itself
//
// Changes are announced with "site <id>" on <prefix>events.

// Site is one site as stored.
type Site struct {
	ID        string
	Hosts     []string
	Fallback  []Weighted
	Down      []string
	State     string // "up" or "failed"
	DownSince time.Time
	UpSince   time.Time
	Changed   time.Time
	FailedBy  string
}

// Weighted is one fallback site and its weight.
type Weighted struct {
	Site   string
	Weight int
}

// SiteFailed is Site.State of a failed-over site.
const SiteFailed = "failed"

// SiteKey is the hash of a site.
func (f *Fleet) SiteKey(id string) string { return f.prefix + "site:" + id }

// Site reads a site; a missing site is (nil, nil).
func (f *Fleet) Site(ctx context.Context, id string) (*Site, error) {
	h, err := f.c.HGetAll(ctx, f.SiteKey(id)).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, nil
	}
	return ParseSite(id, h)
}

// ParseSite reads a site's hash.
func ParseSite(id string, h map[string]string) (*Site, error) {
	s := &Site{ID: id, Hosts: splitList(h["hosts"]), Down: splitList(h["down"]), State: h["state"], FailedBy: h["failed_by"]}
	if s.State == "" {
		s.State = "up"
	}
	if s.State != "up" && s.State != SiteFailed {
		return nil, fmt.Errorf("site %s: state %q is neither up nor failed", id, s.State)
	}
	for _, list := range [][]string{s.Hosts, s.Down} {
		for _, host := range list {
			if !isIP(host) {
				if ap, err := netip.ParseAddrPort(host); err != nil || ap.Port() == 0 {
					// Doorman connects to a site's hosts as they are: names would fail every
					// login the site gets (after a failover, or from the director).
					return nil, fmt.Errorf("site %s: host %q is neither an IP address nor IP:port", id, host)
				}
			}
		}
	}
	for _, fb := range splitList(h["fallback"]) {
		name, w, hasW := strings.Cut(fb, ":")
		n := 1
		if hasW {
			var err error
			if n, err = strconv.Atoi(w); err != nil || n < 1 {
				return nil, fmt.Errorf("site %s: fallback %q: the weight must be a positive number", id, fb)
			}
		}
		if name == "" || name == id {
			return nil, fmt.Errorf("site %s: bad fallback %q", id, fb)
		}
		s.Fallback = append(s.Fallback, Weighted{Site: name, Weight: n})
	}
	for _, t := range []struct {
		key string
		to  *time.Time
	}{{"down_since", &s.DownSince}, {"up_since", &s.UpSince}, {"changed", &s.Changed}} {
		if v := h[t.key]; v != "" {
			sec, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("site %s: %s %q is not unix seconds", id, t.key, v)
			}
			*t.to = time.Unix(sec, 0)
		}
	}
	return s, nil
}

// Healthy is the site's hosts not marked down, in their order.
func (s *Site) Healthy() []string {
	var out []string
	for _, h := range s.Hosts {
		if !slices.Contains(s.Down, h) {
			out = append(out, h)
		}
	}
	return out
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Site failover and restore.
//
// A failover moves the vsites of a site (site=<id> in the vsite's hash) to its fallback
// sites, spread by weight, remembering where each came from (home_site, home_host,
// home_port, home_hostip in the vsite's hash); a restore brings them back one at a
// time, with a pause between, so the returning site's caches warm up under a growing
// load instead of all at once (Dovecot's proxy document: "restore one vsite at a time").
// Both run under the site's lock <prefix>lock:site:<id>, so one failover or restore of a
// site runs at a time in the whole fleet, whoever starts it (doormanctl, a watchdog).

// Site lock errors.
var (
	ErrSiteBusy = errors.New("route: another failover or restore of this site is running")
	ErrLockLost = errors.New("route: the site lock was lost")
)

// DefaultSiteLockTTL is the expiry of a site lock; its holder renews it at a third of that.
const DefaultSiteLockTTL = 15 * time.Second

// Lease is a lock held in Redis: a key with a random token and an expiry, renewed and
// released only by its holder (compare and set).
type Lease struct {
	f     *Fleet
	key   string
	token string
	ttl   time.Duration
}

var (
	renewLease   = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
	releaseLease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

// Acquire takes the lease key (under the prefix) for ttl if nobody holds it; owner (a
// host name, say) goes into the value for whoever looks. ok is false when it is held.
func (f *Fleet) Acquire(ctx context.Context, key, owner string, ttl time.Duration) (l *Lease, ok bool, err error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, false, err
	}
	l = &Lease{f: f, key: f.prefix + key, token: owner + " " + hex.EncodeToString(b[:]), ttl: ttl}
	ok, err = f.c.SetNX(ctx, l.key, l.token, ttl).Result()
	if err != nil || !ok {
		return nil, false, err
	}
	return l, true, nil
}

// Renew extends the lease by its ttl; ErrLockLost if it expired or went to another.
func (l *Lease) Renew(ctx context.Context) error {
	n, err := renewLease.Run(ctx, l.f.c, []string{l.key}, l.token, l.ttl.Milliseconds()).Int()
	if err != nil {
		return err
	}
	if n != 1 {
		return ErrLockLost
	}
	return nil
}

// Release gives the lease up if it is still ours.
func (l *Lease) Release(ctx context.Context) error {
	return releaseLease.Run(ctx, l.f.c, []string{l.key}, l.token).Err()
}

// hold renews l every third of its ttl until the returned stop is called; ctx is
// cancelled if the lease is lost, so work done under it stops.
func (l *Lease) hold(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(l.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				rctx, rcancel := context.WithTimeout(ctx, l.ttl/3)
				err := l.Renew(rctx)
				rcancel()
				if errors.Is(err, ErrLockLost) {
					cancel(ErrLockLost)
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// SiteLockKey is the key (after the prefix) of a site's lock.
func SiteLockKey(site string) string { return "lock:site:" + site }

// SiteOptions tune Failover and Restore.
type SiteOptions struct {
	Owner   string        // who takes the lock (for operators reading it); default "doorman"
	LockTTL time.Duration // default DefaultSiteLockTTL
	KickTTL time.Duration // the vsite kicks' record expiry (default DefaultKickRecordTTL)
	// Restore only:
	Pause time.Duration // between two vsites brought back
	Delay time.Duration // the vsite's delay_until after it comes back (default DefaultMoveDelay; < 0: none)
	// Progress, if set, is told of each vsite as it is moved (or fails to be).
	Progress func(VsiteMove)
}

// VsiteMove is one vsite moved by a failover or a restore.
type VsiteMove struct {
	Vsite    string
	From, To string // host[:port]
	ToSite   string
	FromSite string
	Err      error // set when the vsite was left where it was
	At       time.Time
}

// SiteResult is what a failover or a restore did.
type SiteResult struct {
	Moved  []VsiteMove
	Failed []VsiteMove // vsites left where they were, with the reason
}

func (o *SiteOptions) defaults() {
	if o.Owner == "" {
		o.Owner = "doorman"
	}
	if o.LockTTL <= 0 {
		o.LockTTL = DefaultSiteLockTTL
	}
	if o.Delay == 0 {
		o.Delay = DefaultMoveDelay
	}
}

// Sites lists every site (SCAN <prefix>site:*, on every master of a Cluster), by id.
func (f *Fleet) Sites(ctx context.Context) ([]*Site, error) {
	hs, err := f.scanHashes(ctx, f.prefix+"site:")
	if err != nil {
		return nil, err
	}
	var out []*Site
	for _, id := range slices.Sorted(maps.Keys(hs)) {
		s, err := ParseSite(id, hs[id])
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Vsites reads every vsite's hash, by id.
func (f *Fleet) Vsites(ctx context.Context) (map[string]map[string]string, error) {
	return f.scanHashes(ctx, f.prefix+"vsite:")
}

// VsiteKey is the hash of a vsite.
func (f *Fleet) VsiteKey(id string) string { return f.prefix + "vsite:" + id }

// scanHashes reads every hash named prefix<id> (SCAN on every master, as ReloadVsites).
func (f *Fleet) scanHashes(ctx context.Context, prefix string) (map[string]map[string]string, error) {
	keys, err := scanKeys(ctx, f.c, prefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]map[string]string, len(keys))
	for start := 0; start < len(keys); start += 1000 {
		batch := keys[start:min(start+1000, len(keys))]
		cmds := make([]*redis.MapStringStringCmd, len(batch))
		if _, err := f.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range batch {
				cmds[i] = p.HGetAll(ctx, k)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		for i, c := range cmds {
			if h := c.Val(); len(h) > 0 {
				out[strings.TrimPrefix(batch[i], prefix)] = h
			}
		}
	}
	return out, nil
}

// UpdateSite sets and deletes fields of a site's hash in one transaction and publishes
// "site <id>".
func (f *Fleet) UpdateSite(ctx context.Context, id string, set map[string]string, del ...string) error {
	if id == "" || strings.ContainsAny(id, " \t\r\n") {
		return fmt.Errorf("route: bad site id %q", id)
	}
	_, err := f.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if len(set) > 0 {
			p.HSet(ctx, f.SiteKey(id), set)
		}
		if len(del) > 0 {
			p.HDel(ctx, f.SiteKey(id), del...)
		}
		p.Publish(ctx, f.EventsChannel(), "site "+id)
		return nil
	})
	return err
}

// failVsite moves one vsite off a site if it is still there. ARGV: the site, the new
// site, host, port ("" = none).
var failVsite = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'site') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'home_site') == 1 then return 0 end
local h = redis.call('HMGET', KEYS[1], 'host', 'port', 'hostip')
redis.call('HSET', KEYS[1], 'home_site', ARGV[1], 'home_host', h[1] or '', 'host', ARGV[3], 'site', ARGV[2])
if h[2] then redis.call('HSET', KEYS[1], 'home_port', h[2]) end
if h[3] then redis.call('HSET', KEYS[1], 'home_hostip', h[3]); redis.call('HDEL', KEYS[1], 'hostip') end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'port', ARGV[4]) else redis.call('HDEL', KEYS[1], 'port') end
return 1`)

// restoreVsite brings one vsite home if it is away from that site. ARGV: the site,
// delay_until ("" = none).
var restoreVsite = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'home_site') ~= ARGV[1] then return 0 end
local h = redis.call('HMGET', KEYS[1], 'home_host', 'home_port', 'home_hostip')
if h[1] and h[1] ~= '' then redis.call('HSET', KEYS[1], 'host', h[1]) else redis.call('HDEL', KEYS[1], 'host') end
if h[2] then redis.call('HSET', KEYS[1], 'port', h[2]) else redis.call('HDEL', KEYS[1], 'port') end
if h[3] then redis.call('HSET', KEYS[1], 'hostip', h[3]) else redis.call('HDEL', KEYS[1], 'hostip') end
redis.call('HSET', KEYS[1], 'site', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'delay_until', ARGV[2]) end
redis.call('HDEL', KEYS[1], 'home_site', 'home_host', 'home_port', 'home_hostip')
return 1`)

// takeSite acquires the site lock and keeps it renewed while the returned ctx lives.
func (f *Fleet) takeSite(ctx context.Context, site string, o *SiteOptions) (context.Context, func(), error) {
	l, ok, err := f.Acquire(ctx, SiteLockKey(site), o.Owner, o.LockTTL)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		holder, _ := f.c.Get(ctx, f.prefix+SiteLockKey(site)).Result()
		if owner, _, found := strings.Cut(holder, " "); found {
			return nil, nil, fmt.Errorf("site %s: %w (held by %s)", site, ErrSiteBusy, owner)
		}
		return nil, nil, fmt.Errorf("site %s: %w", site, ErrSiteBusy)
	}
	hctx, stop := l.hold(ctx)
	return hctx, func() {
		stop()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = l.Release(rctx)
	}, nil
}

// ctxErr is the reason ctx ended: the lost lock rather than a bare "canceled".
func ctxErr(ctx context.Context) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return ctx.Err()
}

// Failover moves the vsites of site (those with site=<site> and not already away from
// home) to its fallback sites: spread over them in proportion to their weights (smooth
// weighted round robin over the sorted vsite ids, so the same vsites go to the same
// sites each time) and, within a fallback site, to one of its healthy hosts chosen by a
// hash of the vsite id. A fallback site that is failed itself or has no healthy host
// takes no share. Each vsite is rewritten atomically, announced ("vsite <id>") and
// kicked; then the site is marked failed ("site <id>"). A second failover of a failed
// site moves only what the first left behind.
func (f *Fleet) Failover(ctx context.Context, site string, o SiteOptions) (*SiteResult, error) {
	o.defaults()
	ctx, release, err := f.takeSite(ctx, site, &o)
	if err != nil {
		return nil, err
	}
	defer release()
	s, err := f.Site(ctx, site)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("site %s: no such site (%s)", site, f.SiteKey(site))
	}
	if len(s.Fallback) == 0 {
		return nil, fmt.Errorf("site %s: no fallback sites", site)
	}
	type target struct {
		site    string
		weight  int
		current int
		hosts   []string
	}
	var targets []*target
	var why []string
	for _, fb := range s.Fallback {
		fs, err := f.Site(ctx, fb.Site)
		switch {
		case err != nil:
			return nil, err
		case fs == nil:
			why = append(why, fb.Site+": no such site")
		case fs.State == SiteFailed:
			why = append(why, fb.Site+": failed itself")
		case len(fs.Healthy()) == 0:
			why = append(why, fb.Site+": no healthy host")
		default:
			targets = append(targets, &target{site: fb.Site, weight: fb.Weight, hosts: fs.Healthy()})
		}
	}
	all, err := f.Vsites(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for id, h := range all {
		if _, away := h["home_site"]; h["site"] == site && !away {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	res := &SiteResult{}
	now := time.Now()
	total := 0
	for _, t := range targets {
		total += t.weight
	}
	for _, id := range ids {
		m := VsiteMove{Vsite: id, From: hostPort(all[id]["host"], all[id]["port"]), FromSite: site, At: now}
		if len(targets) == 0 {
			m.Err = fmt.Errorf("no usable fallback site (%s)", strings.Join(why, "; "))
			res.Failed = append(res.Failed, m)
			o.report(m)
			continue
		}
		// Smooth weighted round robin (nginx's): deterministic, and interleaved.
		best := targets[0]
		for _, t := range targets {
			t.current += t.weight
			if t.current > best.current {
				best = t
			}
		}
		best.current -= total
		host := best.hosts[stableIndex(id, len(best.hosts))]
		h, p := splitHostPort(host)
		m.To, m.ToSite = host, best.site
		n, err := failVsite.Run(ctx, f.c, []string{f.VsiteKey(id)}, site, best.site, h, p).Int()
		if err != nil {
			return res, fmt.Errorf("vsite %s: %w", id, errors.Join(err, ctxErr(ctx)))
		}
		if n == 0 { // changed meanwhile (not by a failover: we hold the lock)
			continue
		}
		if err := f.announceVsite(ctx, id, now, o.KickTTL); err != nil {
			return res, err
		}
		res.Moved = append(res.Moved, m)
		o.report(m)
	}
	if err := f.UpdateSite(ctx, site, map[string]string{"state": SiteFailed, "changed": unix(now), "failed_by": o.Owner}, "up_since"); err != nil {
		return res, err
	}
	return res, nil
}

// Restore brings the vsites failed over from site back home, in the order of their ids,
// one at a time with o.Pause between two: each gets its home host back, site=<site> and
// delay_until=now+o.Delay (its users' new logins wait while their sessions on the
// fallback site end), is announced and kicked. At the end the site is up again. It
// stops when ctx ends (or the lock is lost); run again, it carries on.
func (f *Fleet) Restore(ctx context.Context, site string, o SiteOptions) (*SiteResult, error) {
	o.defaults()
	ctx, release, err := f.takeSite(ctx, site, &o)
	if err != nil {
		return nil, err
	}
	defer release()
	all, err := f.Vsites(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for id, h := range all {
		if h["home_site"] == site {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	res := &SiteResult{}
	for i, id := range ids {
		if i > 0 && o.Pause > 0 {
			select {
			case <-ctx.Done():
				return res, ctxErr(ctx)
			case <-time.After(o.Pause):
			}
		}
		now := time.Now()
		h := all[id]
		delay := ""
		if o.Delay > 0 {
			delay = delayUntil(now, o.Delay, 0)
		}
		m := VsiteMove{Vsite: id, From: hostPort(h["host"], h["port"]), FromSite: h["site"],
			To: hostPort(h["home_host"], h["home_port"]), ToSite: site, At: now}
		n, err := restoreVsite.Run(ctx, f.c, []string{f.VsiteKey(id)}, site, delay).Int()
		if err != nil {
			return res, fmt.Errorf("vsite %s: %w", id, errors.Join(err, ctxErr(ctx)))
		}
		if n == 0 {
			continue
		}
		if err := f.announceVsite(ctx, id, now, o.KickTTL); err != nil {
			return res, err
		}
		res.Moved = append(res.Moved, m)
		o.report(m)
	}
	if err := f.UpdateSite(ctx, site, map[string]string{"state": "up", "changed": unix(time.Now())}, "down_since", "up_since", "failed_by"); err != nil {
		return res, err
	}
	return res, nil
}

func (o *SiteOptions) report(m VsiteMove) {
	if o.Progress != nil {
		o.Progress(m)
	}
}

// announceVsite tells the proxies to reload the vsite, then kicks its sessions.
func (f *Fleet) announceVsite(ctx context.Context, id string, at time.Time, ttl time.Duration) error {
	_, err := f.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Publish(ctx, f.EventsChannel(), "vsite "+id)
		f.kickPipe(ctx, p, KickVsite, id, at, ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("vsite %s moved but not announced: %w", id, err)
	}
	return nil
}

// stableIndex picks one of n by a hash of id (FNV-1a), the same on every host and run.
func stableIndex(id string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// splitHostPort splits a site's "ip[:port]" (an IPv6 address with a port in brackets).
func splitHostPort(s string) (host, port string) {
	if h, p, err := net.SplitHostPort(s); err == nil {
		return h, p
	}
	return strings.Trim(s, "[]"), ""
}

func hostPort(host, port string) string {
	if port == "" {
		return host
	}
	return net.JoinHostPort(host, port)
}

func unix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
