package route

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Virtual sites.
//
// A user hash may name a virtual site (vsite=<id>) instead of a host. The
// site is the hash <prefix>vsite:<id>; its routing fields (vsiteFields) are
// the user's routing: a user's own host, hostip, port, ssl, starttls or site
// are dropped when it has a vsite, so moving a site (one HSET and a PUBLISH)
// moves every user on it and no stale per-user host can pin one behind.
// A user with a vsite and neither proxy nor proxy_maybe gets proxy.
//
// Every vsite is kept in process: one SCAN <prefix>vsite:* plus an HGETALL
// per site at start, then kept fresh by pub/sub on <prefix>events and by a
// full reload every VsiteReloadInterval (pub/sub drops what is published
// while the subscriber is disconnected). Messages on <prefix>events:
//
//	vsite <id>    reload that vsite (gone from Redis: forgotten)
//	user <name>   drop the user from the auth cache
//	flush         drop the whole auth cache and reload every vsite
//
// After the subscription comes back from a disconnect, every vsite is
// reloaded and the auth cache flushed at once, since invalidations may have
// been lost meanwhile. Each key is read with its own command, so this works
// on Redis Cluster (no multi-key commands; SCAN runs on every master).

// vsiteFields are the fields a vsite supplies.
var vsiteFields = [...]string{"host", "hostip", "port", "ssl", "starttls", "site"}

// DefaultVsiteReloadInterval is how often every vsite is reloaded.
const DefaultVsiteReloadInterval = 60 * time.Second

// vsiteTable is read without a lock (an atomic pointer, copy on write).
type vsiteTable map[string]map[string]string

// EventsChannel is the pub/sub channel: <prefix>events.
func (r *Redis) EventsChannel() string { return r.prefix + "events" }

// Vsite returns a copy of a vsite's fields as Doorman holds them now.
func (r *Redis) Vsite(id string) (map[string]string, bool) {
	vs, ok := (*r.vsites.Load())[id]
	return maps.Clone(vs), ok
}

// withVsite resolves e's vsite= field into its routing fields. e is not
// modified (entries are shared); the result is a new Entry.
func (r *Redis) withVsite(e *Entry) (*Entry, error) {
	id, ok := e.Fields["vsite"]
	if !ok {
		return e, nil
	}
	vs, ok := (*r.vsites.Load())[id]
	if !ok {
		return nil, &TempError{Passdb: r.Name(), Err: fmt.Errorf("user %s: unknown vsite %q", e.User, id)}
	}
	fields := maps.Clone(e.Fields)
	for _, k := range vsiteFields {
		delete(fields, k)
		if v, ok := vs[k]; ok {
			fields[k] = v
		}
	}
	// A vsite's delay_until (set when the vsite moves: doormanctl restore, a move of
	// the vsite) holds its users' new logins like their own would; the later one wins.
	if v, ok := vs["delay_until"]; ok {
		if own, ok := fields["delay_until"]; !ok || laterDelay(v, own) {
			fields["delay_until"] = v
		}
	}
	if _, ok := fields["proxy_maybe"]; !ok {
		if _, ok := fields["proxy"]; !ok {
			fields["proxy"] = ""
		}
	}
	return &Entry{User: e.User, Password: e.Password, Fields: fields}, nil
}

// laterDelay says whether delay_until value a ends after b; an unreadable a never wins
// (an unreadable b is reported by the login that reads it).
func laterDelay(a, b string) bool {
	ta, ja, err := parseDelayUntil(a)
	if err != nil {
		return false
	}
	tb, jb, err := parseDelayUntil(b)
	return err != nil || ta.Add(ja).After(tb.Add(jb))
}

// ReloadVsites reads every vsite and replaces the table. On error the old
// table stays.
func (r *Redis) ReloadVsites(ctx context.Context) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	prefix := r.prefix + "vsite:"
	keys, err := scanKeys(ctx, r.client, prefix)
	if err != nil {
		return &TempError{Passdb: r.Name(), Err: fmt.Errorf("scan vsites: %w", err)}
	}
	table := make(vsiteTable, len(keys))
	for _, k := range keys {
		m, err := r.client.HGetAll(ctx, k).Result()
		if err != nil {
			return &TempError{Passdb: r.Name(), Err: fmt.Errorf("vsite %s: %w", k, err)}
		}
		if len(m) > 0 {
			table[strings.TrimPrefix(k, prefix)] = m
		}
	}
	r.vsites.Store(&table)
	return nil
}

// ReloadVsite reads one vsite; an empty or missing hash removes it.
func (r *Redis) ReloadVsite(ctx context.Context, id string) error {
	m, err := r.client.HGetAll(ctx, r.VsiteKey(id)).Result()
	if err != nil {
		return &TempError{Passdb: r.Name(), Err: fmt.Errorf("vsite %s: %w", id, err)}
	}
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	table := maps.Clone(*r.vsites.Load())
	if len(m) == 0 {
		delete(table, id)
	} else {
		table[id] = m
	}
	r.vsites.Store(&table)
	return nil
}

// scanKeys lists the keys that start with prefix: SCAN, on every master of a Cluster
// (a Cluster client's SCAN would see one node only).
func scanKeys(ctx context.Context, c redis.UniversalClient, prefix string) ([]string, error) {
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		it := c.Scan(ctx, 0, escapeGlob(prefix)+"*", 1000).Iterator()
		var ks []string
		for it.Next(ctx) {
			ks = append(ks, it.Val())
		}
		if err := it.Err(); err != nil {
			return err
		}
		mu.Lock()
		keys = append(keys, ks...)
		mu.Unlock()
		return nil
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
		return keys, err
	}
	return keys, scan(ctx, c)
}

func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// handleEvent applies one message of the events channel.
func (r *Redis) handleEvent(ctx context.Context, payload string) {
	verb, arg, _ := strings.Cut(strings.TrimSpace(payload), " ")
	arg = strings.TrimSpace(arg)
	switch {
	case verb == "vsite" && arg != "":
		ctx, cancel := context.WithTimeout(ctx, reloadTimeout)
		defer cancel()
		if err := r.ReloadVsite(ctx, arg); err != nil {
			r.log("vsite reload failed", err)
		}
	case verb == "user" && arg != "":
		r.cache.drop(arg)
		r.notifyInvalidate()
	case verb == "flush" && arg == "":
		r.cache.flush()
		r.notifyInvalidate()
		r.reloadAll(ctx)
	case len(r.events[verb]) > 0:
		for _, fn := range r.events[verb] {
			fn(arg)
		}
	default:
		r.log(fmt.Sprintf("ignored message %q on %s", payload, r.EventsChannel()), nil)
	}
}

// OnEvent registers fn for the messages "<verb> <arg>" on the events channel (for
// example "kick user alice"); several may share a verb; fn runs on the watcher goroutine and must be quick. The
// verbs vsite, user and flush are the passdb's own. Call it before Start.
func (r *Redis) OnEvent(verb string, fn func(arg string)) {
	if r.events == nil {
		r.events = map[string][]func(string){}
	}
	r.events[verb] = append(r.events[verb], fn)
}

// OnResubscribe registers fn to run (on the watcher goroutine) each time the events
// subscription comes back after it was lost: messages published meanwhile are gone, so
// whatever they carried must be read again (kick records, for one). Call it before Start.
func (r *Redis) OnResubscribe(fn func()) { r.resubscribe = append(r.resubscribe, fn) }

// OnInvalidate registers fn to run (on the watcher goroutine) for every "user" and "flush"
// message, so caches in front of other passdbs follow the same events. Call it before
// Start.
func (r *Redis) OnInvalidate(fn func()) { r.invalidate = append(r.invalidate, fn) }

func (r *Redis) notifyInvalidate() {
	for _, fn := range r.invalidate {
		fn()
	}
}

// reloadTimeout bounds one reload (one vsite, or all of them).
const reloadTimeout = 10 * time.Second

func (r *Redis) reloadAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, reloadTimeout)
	defer cancel()
	if err := r.ReloadVsites(ctx); err != nil {
		r.log("vsite reload failed", err)
	}
	r.lastReload = time.Now()
}

func (r *Redis) log(msg string, err error) {
	if r.logf != nil {
		r.logf(msg, err)
	}
}

// watch keeps the subscription to the events channel alive until ctx ends,
// and reloads every vsite each reloadEvery.
func (r *Redis) watch(ctx context.Context) {
	defer close(r.watchDone)
	first := true
	for ctx.Err() == nil {
		failed := r.watchOnce(ctx, &first)
		r.firstTried()
		if failed && ctx.Err() == nil {
			// Lost the subscription: try again soon, and meanwhile keep the
			// periodic reload going (it will fail while Redis is away).
			if time.Since(r.lastReload) >= r.reloadEvery {
				r.reloadAll(ctx)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(watchRetry):
		}
	}
}

// Subscriber timings: how long a silent subscription may stay before it is
// pinged, and the pause between reconnects.
var (
	watchPingAfter = 2 * time.Second
	watchRetry     = 250 * time.Millisecond
)

// watchOnce subscribes and handles messages until the connection fails or
// stalls. It reports whether it ended because of a failure.
func (r *Redis) watchOnce(ctx context.Context, first *bool) bool {
	ps := r.client.Subscribe(ctx)
	defer ps.Close()
	// A blocked read does not watch ctx: closing the PubSub ends it at once.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	if err := ps.Subscribe(ctx, r.EventsChannel()); err != nil {
		return true
	}
	pinged := false
	for ctx.Err() == nil {
		wait := min(watchPingAfter, max(time.Until(r.lastReload.Add(r.reloadEvery)), 10*time.Millisecond))
		msg, err := ps.ReceiveTimeout(ctx, wait)
		if ctx.Err() != nil {
			return false
		}
		switch {
		case err == nil:
			pinged = false
		case isTimeout(err):
			if time.Since(r.lastReload) < r.reloadEvery {
				if pinged {
					// No PONG within watchPingAfter: a stalled server.
					r.watchLost("events subscription stalled; reconnecting", nil)
					return true
				}
				if err := ps.Ping(ctx); err != nil {
					return true
				}
				pinged = true
			}
		default:
			r.watchLost("events subscription lost; reconnecting", err)
			return true
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				if !*first {
					// Messages published while we were away are lost.
					r.cache.flush()
					r.log("events subscription restored; reloading vsites and flushing the auth cache", nil)
					for _, fn := range r.resubscribe {
						fn()
					}
				}
				*first = false
				r.watchFailing = false
				r.reloadAll(ctx)
				r.firstTried()
			}
		case *redis.Message:
			r.handleEvent(ctx, m.Payload)
		}
		if time.Since(r.lastReload) >= r.reloadEvery {
			r.reloadAll(ctx)
		}
	}
	return false
}

// firstTried tells Start that the first subscription attempt is over.
func (r *Redis) firstTried() {
	r.firstOnce.Do(func() { close(r.subscribed) })
}

// watchLost logs the first failure of an outage only: the subscriber retries
// four times a second.
func (r *Redis) watchLost(msg string, err error) {
	if !r.watchFailing {
		r.log(msg, err)
	}
	r.watchFailing = true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
