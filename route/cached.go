package route

import (
	"context"
	"errors"
	"time"
)

// Cached fronts any passdb (sql, ldap) with Dovecot's auth cache, as the Redis passdb does
// for itself: the lookup's raw result, an entry or "unknown user", kept for auth_cache_ttl
// (auth_cache_negative_ttl) in an LRU of auth_cache_size entries. The password is still
// checked against the cached entry at every login; temporary failures are never cached.
//
// A query may use the client's address or the service (%r, %l, %s), so the cache key is the
// user together with the lookup info: a user logging in from elsewhere is looked up again.
// Invalidate (a "user <name>" or "flush" on the Redis events channel) empties the whole
// cache: such events are rare, and the key is not the user alone.
type Cached struct {
	db    Passdb
	cache *authCache
}

var _ Passdb = (*Cached)(nil)

// NewCached fronts db with a cache of max entries; it returns db itself when max is 0, or
// when db verifies passwords itself (LDAP auth bind: there is no stored password to cache).
func NewCached(db Passdb, max int, ttl, negTTL time.Duration) Passdb {
	if max <= 0 {
		return db
	}
	if v, ok := db.(PasswordVerifier); ok && v.VerifiesPasswords() {
		return db
	}
	return &Cached{db: db, cache: newAuthCache(max, ttl, negTTL)}
}

func (c *Cached) Name() string { return c.db.Name() }

func (c *Cached) Lookup(ctx context.Context, user string) (*Entry, error) {
	info := LookupInfoFrom(ctx)
	key := user + "\x00" + info.Service + "\x00" + info.RemoteIP + "\x00" + info.LocalIP
	if e, ok := c.cache.get(key); ok {
		if e == nil {
			return nil, ErrUnknownUser
		}
		return e, nil
	}
	e, err := c.db.Lookup(ctx, user)
	switch {
	case err == nil:
		c.cache.put(key, e)
	case errors.Is(err, ErrUnknownUser):
		c.cache.put(key, nil)
	}
	return e, err
}

// Invalidate empties the cache.
func (c *Cached) Invalidate() { c.cache.flush() }

// Len is the number of cached entries, live or expired.
func (c *Cached) Len() int { return c.cache.len() }

func (c *Cached) Close() error { return c.db.Close() }
