package route

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// countingPassdb counts lookups; users it does not know are unknown, "tempfail" fails.
type countingPassdb struct {
	n     atomic.Int32
	users map[string]string
}

func (p *countingPassdb) Name() string { return "counting" }
func (p *countingPassdb) Close() error { return nil }
func (p *countingPassdb) Lookup(ctx context.Context, user string) (*Entry, error) {
	p.n.Add(1)
	if user == "tempfail" {
		return nil, &TempError{Passdb: "counting", Err: errors.New("down")}
	}
	pw, ok := p.users[user]
	if !ok {
		return nil, ErrUnknownUser
	}
	return &Entry{User: user, Password: pw}, nil
}

func TestCachedPassdb(t *testing.T) {
	db := &countingPassdb{users: map[string]string{"alice": "{PLAIN}a"}}
	if NewCached(db, 0, time.Hour, time.Hour) != Passdb(db) {
		t.Fatal("auth_cache_size 0 must leave the passdb as it is")
	}
	c := NewCached(db, 100, time.Hour, 50*time.Millisecond).(*Cached)
	ctx := WithLookupInfo(context.Background(), LookupInfo{Service: "imap", RemoteIP: "192.0.2.1"})
	for range 3 {
		if e, err := c.Lookup(ctx, "alice"); err != nil || e.Password != "{PLAIN}a" {
			t.Fatalf("alice: %v %v", e, err)
		}
		if _, err := c.Lookup(ctx, "nobody"); !errors.Is(err, ErrUnknownUser) {
			t.Fatalf("nobody: %v", err)
		}
		if _, err := c.Lookup(ctx, "tempfail"); !IsTemporary(err) {
			t.Fatalf("tempfail: %v", err)
		}
	}
	// alice and nobody once each; temporary failures are never cached.
	if got := db.n.Load(); got != 5 {
		t.Fatalf("%d lookups reached the passdb, want 5", got)
	}
	// Another client address is another key (a query may use %r).
	other := WithLookupInfo(context.Background(), LookupInfo{Service: "imap", RemoteIP: "192.0.2.2"})
	if _, err := c.Lookup(other, "alice"); err != nil || db.n.Load() != 6 {
		t.Fatalf("lookup from another address: %v, %d lookups", err, db.n.Load())
	}
	// The negative TTL runs out; a changed password shows after Invalidate.
	time.Sleep(80 * time.Millisecond)
	c.Lookup(ctx, "nobody")
	if db.n.Load() != 7 {
		t.Fatalf("a negative entry outlived auth_cache_negative_ttl (%d lookups)", db.n.Load())
	}
	db.users["alice"] = "{PLAIN}b"
	if e, _ := c.Lookup(ctx, "alice"); e.Password != "{PLAIN}a" {
		t.Fatal("the cache did not serve the cached entry")
	}
	c.Invalidate()
	if e, _ := c.Lookup(ctx, "alice"); e.Password != "{PLAIN}b" {
		t.Fatal("after Invalidate the old password is still served")
	}
}
