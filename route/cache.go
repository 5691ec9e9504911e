package route

import (
	"container/list"
	"sync"
	"time"
)

// authCache is Dovecot's auth cache (auth_cache_size, auth_cache_ttl,
// auth_cache_negative_ttl) for one passdb: the raw result of a user lookup,
// an entry or "unknown user", kept for a TTL in an LRU of bounded length.
//
// It caches the stored entry, not a verdict: the password is still checked
// against the cached hash on every login, so a wrong password never
// becomes right and a changed password is served for at most the TTL
// (less when the provisioning side publishes "user <name>"). Temporary
// failures are never cached.
type authCache struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	negTTL  time.Duration
	entries map[string]*list.Element
	lru     list.List // front = most recently used; values are *cacheItem
	now     func() time.Time
}

type cacheItem struct {
	user    string
	entry   *Entry // nil: unknown user
	expires time.Time
}

// newAuthCache returns nil (no cache) when max is 0.
func newAuthCache(max int, ttl, negTTL time.Duration) *authCache {
	if max <= 0 {
		return nil
	}
	return &authCache{max: max, ttl: ttl, negTTL: negTTL, entries: make(map[string]*list.Element), now: time.Now}
}

// get returns the cached entry (nil for a cached unknown user) and whether
// there was a live one.
func (c *authCache) get(user string) (*Entry, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[user]
	if !ok {
		return nil, false
	}
	it := el.Value.(*cacheItem)
	if !c.now().Before(it.expires) {
		c.lru.Remove(el)
		delete(c.entries, user)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return it.entry, true
}

// put stores an entry (nil: unknown user). A zero TTL for its kind stores nothing.
func (c *authCache) put(user string, e *Entry) {
	if c == nil {
		return
	}
	ttl := c.ttl
	if e == nil {
		ttl = c.negTTL
	}
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(ttl)
	if el, ok := c.entries[user]; ok {
		it := el.Value.(*cacheItem)
		it.entry, it.expires = e, exp
		c.lru.MoveToFront(el)
		return
	}
	c.entries[user] = c.lru.PushFront(&cacheItem{user: user, entry: e, expires: exp})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheItem).user)
	}
}

// drop forgets one user.
func (c *authCache) drop(user string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[user]; ok {
		c.lru.Remove(el)
		delete(c.entries, user)
	}
}

// flush forgets everyone.
func (c *authCache) flush() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = make(map[string]*list.Element)
	c.lru.Init()
}

// len is the number of entries, live or expired.
func (c *authCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// CacheEntrySize is the estimated memory of one cache entry, used to turn a
// Dovecot-style auth_cache_size in bytes ("10M") into a number of entries.
const CacheEntrySize = 200

// ParseCacheSize reads auth_cache_size: a plain number is a number of
// entries; a number with a K, M or G suffix (optionally followed by B) is a
// size in bytes, as Dovecot takes it, turned into entries of CacheEntrySize.
// "0" or "" is off.
func ParseCacheSize(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errInvalidCacheSize(s)
	}
	var n uint64
	for _, ch := range s[:i] {
		n = n*10 + uint64(ch-'0')
		if n > 1<<40 {
			return 0, errInvalidCacheSize(s)
		}
	}
	unit := s[i:]
	if len(unit) > 1 && (unit[len(unit)-1] == 'B' || unit[len(unit)-1] == 'b') {
		unit = unit[:len(unit)-1]
	}
	var mult uint64
	switch unit {
	case "":
		return int(n), nil
	case "K", "k":
		mult = 1 << 10
	case "M", "m":
		mult = 1 << 20
	case "G", "g":
		mult = 1 << 30
	default:
		return 0, errInvalidCacheSize(s)
	}
	entries := n * mult / CacheEntrySize
	if n > 0 && entries == 0 {
		entries = 1
	}
	return int(entries), nil
}

type errInvalidCacheSize string

func (e errInvalidCacheSize) Error() string {
	return "invalid auth_cache_size " + `"` + string(e) + `"` + ": want a number of entries or a size like 10M"
}
