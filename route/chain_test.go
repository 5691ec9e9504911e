package route

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDB is a passdb backed by a map, or failing with err.
type fakeDB struct {
	name    string
	entries map[string]*Entry
	err     error
	calls   atomic.Int32
	asked   []string // users looked up, in order (not for concurrent use)
}

func (f *fakeDB) Name() string { return f.name }
func (f *fakeDB) Close() error { return nil }
func (f *fakeDB) Lookup(ctx context.Context, user string) (*Entry, error) {
	f.calls.Add(1)
	f.asked = append(f.asked, user)
	if f.err != nil {
		return nil, f.err
	}
	if e := f.entries[user]; e != nil {
		return e, nil
	}
	return nil, ErrUnknownUser
}

func db(name string, entries ...*Entry) *fakeDB {
	m := make(map[string]*Entry)
	for _, e := range entries {
		m[e.User] = e
	}
	return &fakeDB{name: name, entries: m}
}

func down(name string) *fakeDB {
	return &fakeDB{name: name, err: &TempError{Passdb: name, Err: errors.New("connection refused")}}
}

func entry(user, password string, fields ...string) *Entry {
	e := &Entry{User: user, Password: password}
	if len(fields) > 0 {
		e.Fields = map[string]string{}
		for _, f := range fields {
			k, v, _ := strings.Cut(f, "=")
			e.Fields[k] = v
		}
	}
	return e
}

func TestChainAuthenticate(t *testing.T) {
	ctx := context.Background()
	h := NewHasher(2)
	type step struct {
		user, password string
		want           Verdict
		passdb         string
		errIs          error
	}
	tests := []struct {
		name  string
		chain func() *Chain
		steps []step
	}{
		{
			name: "first passdb that accepts wins",
			chain: func() *Chain {
				return NewChain(
					db("a", entry("alice", "{PLAIN}a1", "proxy", "host=10.0.0.1")),
					db("b", entry("alice", "{PLAIN}b1"), entry("bob", "{PLAIN}b2")),
				)
			},
			steps: []step{
				{"alice", "a1", VerdictOK, "a", nil},
				{"bob", "b2", VerdictOK, "b", nil},
				// Dovecot's result_failure=continue: a mismatch in a moves on to b.
				{"alice", "b1", VerdictOK, "b", nil},
				{"alice", "wrong", VerdictPasswordMismatch, "a", nil},
				{"bob", "wrong", VerdictPasswordMismatch, "b", nil},
				{"carol", "x", VerdictUnknownUser, "", nil},
			},
		},
		{
			name: "temporary failure continues, and is the result if nothing else accepts",
			chain: func() *Chain {
				return NewChain(down("redis"), db("file", entry("alice", "{PLAIN}pw")))
			},
			steps: []step{
				{"alice", "pw", VerdictOK, "file", nil},
				{"alice", "wrong", VerdictTempFail, "redis", ErrTempFail},
				{"nobody", "x", VerdictTempFail, "redis", ErrTempFail},
			},
		},
		{
			name: "StopOnTempFail ends the chain",
			chain: func() *Chain {
				c := NewChain(down("redis"), db("file", entry("alice", "{PLAIN}pw")))
				c.StopOnTempFail = true
				return c
			},
			steps: []step{
				{"alice", "pw", VerdictTempFail, "redis", ErrTempFail},
			},
		},
		{
			name: "nopassword only with an empty stored password",
			chain: func() *Chain {
				return NewChain(db("a",
					entry("np", "", "nopassword", "proxy", "host=10.0.0.1"),
					entry("npscheme", "{PLAIN}", "nopassword=y"),
					entry("empty", ""),
					entry("emptyscheme", "{PLAIN}"),
				))
			},
			steps: []step{
				{"np", "anything", VerdictOK, "a", nil},
				{"np", "", VerdictOK, "a", nil},
				{"npscheme", "x", VerdictOK, "a", nil},
				{"empty", "", VerdictPasswordMismatch, "a", nil},
				{"empty", "x", VerdictPasswordMismatch, "a", nil},
				{"emptyscheme", "", VerdictPasswordMismatch, "a", nil},
			},
		},
		{
			name: "nopassword next to a real password: the password is checked",
			chain: func() *Chain {
				return NewChain(db("a", entry("x", "{PLAIN}pw", "nopassword")))
			},
			steps: []step{
				{"x", "other", VerdictPasswordMismatch, "a", nil},
				{"x", "pw", VerdictOK, "a", nil},
			},
		},
		{
			name: "unknown scheme is a failed login, broken hash a temporary failure",
			chain: func() *Chain {
				return NewChain(db("a", entry("u", "{ROT13}fcr"), entry("b", "{SHA256}!!!")))
			},
			steps: []step{
				{"u", "spe", VerdictPasswordMismatch, "a", ErrUnknownScheme},
				{"b", "x", VerdictTempFail, "a", ErrInvalidHash},
			},
		},
		{
			name: "fail field turns success into unknown user",
			chain: func() *Chain {
				return NewChain(db("a", entry("u", "{PLAIN}pw", "fail"), entry("v", "{PLAIN}pw", "fail")), db("b", entry("u", "{PLAIN}pw2")))
			},
			steps: []step{
				{"v", "pw", VerdictUnknownUser, "", nil},
				{"u", "pw2", VerdictOK, "b", nil},
				// As in Dovecot, b's mismatch is the last word.
				{"u", "pw", VerdictPasswordMismatch, "b", nil},
			},
		},
		{
			name: "malformed proxy field is a temporary failure of that passdb",
			chain: func() *Chain {
				return NewChain(db("a", entry("u", "{PLAIN}pw", "proxy", "port=http")))
			},
			steps: []step{
				{"u", "pw", VerdictTempFail, "a", ErrTempFail},
				{"u", "wrong", VerdictPasswordMismatch, "a", nil},
			},
		},
		{
			name: "noauthenticate as last passdb",
			chain: func() *Chain {
				return NewChain(db("a", entry("u", "", "noauthenticate")))
			},
			steps: []step{{"u", "pw", VerdictTempFail, "a", ErrTempFail}},
		},
		{
			name:  "empty chain",
			chain: func() *Chain { return NewChain() },
			steps: []step{{"u", "pw", VerdictTempFail, "", ErrTempFail}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.chain()
			for _, s := range tt.steps {
				r := c.Authenticate(ctx, h, s.user, s.password)
				if r.Verdict != s.want || r.Passdb != s.passdb {
					t.Errorf("Authenticate(%q, %q) = %v from %q (err %v); want %v from %q",
						s.user, s.password, r.Verdict, r.Passdb, r.Err, s.want, s.passdb)
				}
				if s.errIs != nil && !errors.Is(r.Err, s.errIs) {
					t.Errorf("Authenticate(%q, %q) err = %v; want %v", s.user, s.password, r.Err, s.errIs)
				}
				if r.Verdict == VerdictTempFail && !errors.Is(r.Err, ErrTempFail) {
					t.Errorf("TempFail err %v does not match ErrTempFail", r.Err)
				}
				if (r.Verdict == VerdictOK) != (r.Entry != nil) {
					t.Errorf("Authenticate(%q): verdict %v with entry %v", s.user, r.Verdict, r.Entry)
				}
			}
		})
	}
}

func TestChainStopsAtFirstAnswer(t *testing.T) {
	a := db("a", entry("alice", "{PLAIN}pw"))
	b := db("b", entry("alice", "{PLAIN}pw"))
	r := NewChain(a, b).Authenticate(context.Background(), nil, "alice", "pw")
	if r.Verdict != VerdictOK || a.calls.Load() != 1 || b.calls.Load() != 0 {
		t.Errorf("verdict %v, calls a=%d b=%d", r.Verdict, a.calls.Load(), b.calls.Load())
	}
	// StopOnTempFail: nothing after the failed passdb is asked.
	d := down("d")
	c := NewChain(d, b)
	c.StopOnTempFail = true
	c.Authenticate(context.Background(), nil, "alice", "pw")
	if b.calls.Load() != 0 {
		t.Errorf("b asked %d times after a temporary failure", b.calls.Load())
	}
}

func TestChainProxyResult(t *testing.T) {
	c := NewChain(db("a", entry("alice", "{PLAIN}pw", "proxy=N", "host=10.0.0.1", "port=10143", "forward_x=1", "nodelay")))
	r := c.Authenticate(context.Background(), nil, "alice", "pw")
	if r.Verdict != VerdictOK {
		t.Fatalf("verdict %v: %v", r.Verdict, r.Err)
	}
	if !r.Proxy.Proxy || r.Proxy.Host != "10.0.0.1" || r.Proxy.Port != 10143 || !r.Proxy.NoDelay ||
		len(r.Proxy.Forward) != 1 || r.Proxy.Forward[0] != (KV{"x", "1"}) {
		t.Errorf("Proxy = %+v", r.Proxy)
	}
	// A mismatch drops the fields (nodelay must not shorten the delay).
	r = c.Authenticate(context.Background(), nil, "alice", "wrong")
	if r.Entry != nil || r.Proxy.NoDelay {
		t.Errorf("mismatch result carries fields: %+v", r)
	}
}

func TestChainNoAuthenticate(t *testing.T) {
	// The first passdb maps an alias to the real user and adds routing; the
	// second authenticates the real user.
	// Entry.User is what a real passdb returns after applying user=.
	alias := db("alias")
	alias.entries["info@example.com"] = entry("joe@example.com", "", "noauthenticate", "user=joe@example.com", "proxy", "host=10.0.0.1", "port=143")
	users := db("users", entry("joe@example.com", "{PLAIN}pw", "port=993", "ssl=yes"))
	c := NewChain(alias, users)
	r := c.Authenticate(context.Background(), nil, "info@example.com", "pw")
	if r.Verdict != VerdictOK {
		t.Fatalf("verdict %v: %v", r.Verdict, r.Err)
	}
	if got := fmt.Sprint(users.asked); got != "[joe@example.com]" {
		t.Errorf("second passdb asked for %s", got)
	}
	if r.Entry.User != "joe@example.com" || !r.Proxy.Proxy || r.Proxy.Host != "10.0.0.1" ||
		r.Proxy.Port != 993 || r.Proxy.SSL != "yes" {
		t.Errorf("merged result: user %q, proxy %+v", r.Entry.User, r.Proxy)
	}
	if r.Entry.Has("noauthenticate") {
		t.Error("noauthenticate leaked into the result")
	}
	// The alias entry itself is unchanged (entries are shared).
	if alias.entries["info@example.com"].Has("ssl") {
		t.Error("alias entry modified")
	}

	e, err := c.Lookup(context.Background(), "info@example.com")
	if err != nil || e.User != "joe@example.com" || e.Fields["host"] != "10.0.0.1" || e.Fields["port"] != "993" {
		t.Errorf("Lookup = %+v, %v", e, err)
	}
}

func TestChainDelayUntil(t *testing.T) {
	now := time.Unix(1700000000, 0)
	c := NewChain(db("a",
		entry("soon", "{PLAIN}pw", "delay_until=1700000060+5"),
		entry("late", "{PLAIN}pw", "delay_until=1700000301"),
		entry("past", "{PLAIN}pw", "delay_until=1600000000"),
	))
	c.Now = func() time.Time { return now }
	for user, want := range map[string]Verdict{"soon": VerdictOK, "late": VerdictTempFail, "past": VerdictOK} {
		r := c.Authenticate(context.Background(), nil, user, "pw")
		if r.Verdict != want {
			t.Errorf("%s: %v (%v); want %v", user, r.Verdict, r.Err, want)
		}
	}
	r := c.Authenticate(context.Background(), nil, "soon", "pw")
	if !r.Proxy.DelayUntil.Equal(now.Add(time.Minute)) || r.Proxy.DelayJitter != 5*time.Second {
		t.Errorf("delay %v + %v", r.Proxy.DelayUntil, r.Proxy.DelayJitter)
	}
}

func TestChainLookup(t *testing.T) {
	ctx := context.Background()
	c := NewChain(db("a", entry("alice", "{PLAIN}pw", "fail")), db("b", entry("alice", "{PLAIN}pw2"), entry("bob", "")))
	if e, err := c.Lookup(ctx, "alice"); err != nil || e.Password != "{PLAIN}pw2" {
		t.Errorf("Lookup(alice) = %+v, %v", e, err)
	}
	if _, err := c.Lookup(ctx, "carol"); err != ErrUnknownUser {
		t.Errorf("Lookup(carol) err = %v", err)
	}
	c = NewChain(down("r"), db("b", entry("bob", "")))
	if e, err := c.Lookup(ctx, "bob"); err != nil || e.User != "bob" {
		t.Errorf("Lookup(bob) past a down passdb = %v, %v", e, err)
	}
	if _, err := c.Lookup(ctx, "carol"); !errors.Is(err, ErrTempFail) {
		t.Errorf("Lookup(carol) err = %v; want a temporary failure", err)
	}
}

func TestChainContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a := db("a", entry("alice", "{PLAIN}pw"))
	r := NewChain(a).Authenticate(ctx, nil, "alice", "pw")
	if r.Verdict != VerdictTempFail || !errors.Is(r.Err, context.Canceled) || !errors.Is(r.Err, ErrTempFail) || !IsTemporary(r.Err) {
		t.Errorf("cancelled: %v %v", r.Verdict, r.Err)
	}
	if a.calls.Load() != 0 {
		t.Error("passdb asked after ctx ended")
	}
}

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{VerdictOK: "ok", VerdictUnknownUser: "unknown user",
		VerdictPasswordMismatch: "password mismatch", VerdictTempFail: "temporary failure", 9: "verdict(9)"} {
		if v.String() != want {
			t.Errorf("%d.String() = %q", v, v.String())
		}
	}
}
