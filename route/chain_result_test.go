package route

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// The chain's result rules (skip, result_success, result_failure,
// result_internalfail) with fake passdbs: the rules are what is tested.

func link(db Passdb, settings ...string) Link {
	l := Link{DB: db}
	for _, s := range settings {
		k, v, _ := cut(s)
		var err error
		switch k {
		case "skip":
			l.Skip, err = ParseSkip(v)
		case "result_success":
			l.ResultSuccess, err = ParseAction(v)
		case "result_failure":
			l.ResultFailure, err = ParseAction(v)
		case "result_internalfail":
			l.ResultInternalFail, err = ParseAction(v)
		default:
			err = fmt.Errorf("unknown setting %q", k)
		}
		if err != nil {
			panic(err)
		}
	}
	return l
}

func cut(s string) (k, v string, ok bool) {
	for i := range s {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestChainResultActions(t *testing.T) {
	ctx := context.Background()
	// a's outcome (success, failure or temporary failure) goes through one
	// action; b, when asked, shows whether the chain went on.
	type tc struct {
		name     string
		a        func() Passdb
		setting  string // on a
		b        *fakeDB
		password string
		want     Verdict
		passdb   string
		bAsked   bool
	}
	accepts := func() Passdb { return db("a", entry("alice", "{PLAIN}pw", "host=10.0.0.1")) }
	unknown := func() Passdb { return db("a") }
	mismatch := func() Passdb { return db("a", entry("alice", "{PLAIN}other")) }
	broken := func() Passdb { return down("a") }
	bKnows := func() *fakeDB { return db("b", entry("alice", "{PLAIN}bpw", "host=10.0.0.2")) }
	bAccepts := func() *fakeDB { return db("b", entry("alice", "{PLAIN}pw", "host=10.0.0.2")) }
	bEmpty := func() *fakeDB { return db("b") }
	tests := []tc{
		// result_success
		{"success default return-ok", accepts, "", bAccepts(), "pw", VerdictOK, "a", false},
		{"success return-ok", accepts, "result_success=return-ok", bAccepts(), "pw", VerdictOK, "a", false},
		{"success return: not successful before, so fails", accepts, "result_success=return", bAccepts(), "pw", VerdictPasswordMismatch, "a", false},
		{"success return-fail", accepts, "result_success=return-fail", bAccepts(), "pw", VerdictPasswordMismatch, "a", false},
		{"success continue: b unknown, never marked ok", accepts, "result_success=continue", bEmpty(), "pw", VerdictUnknownUser, "", true},
		{"success continue: b found, its password not checked", accepts, "result_success=continue", bKnows(), "pw", VerdictOK, "a", true},
		{"success continue-ok: b unknown keeps success", accepts, "result_success=continue-ok", bEmpty(), "pw", VerdictOK, "a", true},
		{"success continue-fail: b unknown", accepts, "result_success=continue-fail", bEmpty(), "pw", VerdictUnknownUser, "", true},
		{"success continue-fail: b found but not authenticated, password checked", accepts, "result_success=continue-fail", bKnows(), "pw", VerdictPasswordMismatch, "b", true},
		// result_failure
		{"unknown default continue", unknown, "", bAccepts(), "pw", VerdictOK, "b", true},
		{"mismatch default continue", mismatch, "", bAccepts(), "pw", VerdictOK, "b", true},
		{"unknown return", unknown, "result_failure=return", bAccepts(), "pw", VerdictUnknownUser, "", false},
		{"mismatch return", mismatch, "result_failure=return", bAccepts(), "pw", VerdictPasswordMismatch, "a", false},
		{"mismatch return-fail", mismatch, "result_failure=return-fail", bAccepts(), "pw", VerdictPasswordMismatch, "a", false},
		{"unknown return-ok: Dovecot lets it in", unknown, "result_failure=return-ok", bEmpty(), "pw", VerdictOK, "a", false},
		{"mismatch continue-ok: b not checking the password", mismatch, "result_failure=continue-ok", bKnows(), "wrong", VerdictOK, "b", true},
		{"mismatch continue-fail", mismatch, "result_failure=continue-fail", bAccepts(), "pw", VerdictOK, "b", true},
		{"mismatch continue-fail, b mismatch too", mismatch, "result_failure=continue-fail", bAccepts(), "x", VerdictPasswordMismatch, "a", true},
		// result_internalfail
		{"temp default continue", broken, "", bAccepts(), "pw", VerdictOK, "b", true},
		{"temp default continue, b mismatch", broken, "", bAccepts(), "wrong", VerdictTempFail, "a", true},
		{"temp return", broken, "result_internalfail=return", bAccepts(), "pw", VerdictTempFail, "a", false},
		{"temp return-fail", broken, "result_internalfail=return-fail", bAccepts(), "pw", VerdictTempFail, "a", false},
		{"temp return-ok: Dovecot lets it in", broken, "result_internalfail=return-ok", bAccepts(), "pw", VerdictOK, "a", false},
		{"temp continue-ok: b not checking the password", broken, "result_internalfail=continue-ok", bKnows(), "any", VerdictOK, "b", true},
		{"temp continue-fail", broken, "result_internalfail=continue-fail", bAccepts(), "pw", VerdictOK, "b", true},
		{"temp continue-fail, b unknown", broken, "result_internalfail=continue-fail", bEmpty(), "pw", VerdictTempFail, "a", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var settings []string
			if tt.setting != "" {
				settings = append(settings, tt.setting)
			}
			c := NewChainWith(link(tt.a(), settings...), link(tt.b))
			r := c.Authenticate(ctx, nil, "alice", tt.password)
			if r.Verdict != tt.want || r.Passdb != tt.passdb {
				t.Errorf("got %v from %q (%v); want %v from %q", r.Verdict, r.Passdb, r.Err, tt.want, tt.passdb)
			}
			if asked := tt.b.calls.Load() > 0; asked != tt.bAsked {
				t.Errorf("b asked: %v; want %v", asked, tt.bAsked)
			}
			if (r.Verdict == VerdictOK) != (r.Entry != nil) {
				t.Errorf("verdict %v with entry %+v", r.Verdict, r.Entry)
			}
			if r.Verdict == VerdictTempFail && !errors.Is(r.Err, ErrTempFail) {
				t.Errorf("temporary failure with err %v", r.Err)
			}
		})
	}
}

// Pattern 1: the first passdb checks the password (result_success=continue-ok),
// the second only adds routing fields for authenticated users
// (skip=unauthenticated).
func TestChainContinueOKAddsFields(t *testing.T) {
	ctx := context.Background()
	auth := db("auth", entry("alice", "{PLAIN}pw", "nodelay", "port=143"), entry("bob", "{PLAIN}bobpw"), entry("np", "", "nopassword"))
	routing := db("routing", entry("alice", "", "proxy", "host=10.0.0.9", "port=993"), entry("np", "", "proxy", "host=10.0.0.8"))
	c := NewChainWith(link(auth, "result_success=continue-ok"), link(routing, "skip=unauthenticated"))

	r := c.Authenticate(ctx, nil, "alice", "pw")
	if r.Verdict != VerdictOK || r.Passdb != "auth" {
		t.Fatalf("alice: %v from %q (%v)", r.Verdict, r.Passdb, r.Err)
	}
	if !r.Proxy.Proxy || r.Proxy.Host != "10.0.0.9" || r.Proxy.Port != 993 || !r.Proxy.NoDelay || r.Entry.Password != "{PLAIN}pw" {
		t.Errorf("alice: merged entry %+v, proxy %+v", r.Entry, r.Proxy)
	}
	if got := fmt.Sprint(routing.asked); got != "[alice]" {
		t.Errorf("routing asked for %s", got)
	}

	// Wrong password: the request is not authenticated, routing is skipped,
	// and its fields never reach the result.
	routing.asked = nil
	r = c.Authenticate(ctx, nil, "alice", "wrong")
	if r.Verdict != VerdictPasswordMismatch || r.Passdb != "auth" || r.Entry != nil || len(routing.asked) != 0 {
		t.Errorf("alice wrong: %v from %q, routing asked %v", r.Verdict, r.Passdb, routing.asked)
	}

	// Authenticated, but routing does not know bob: still a success
	// (continue-ok), with auth's fields only.
	r = c.Authenticate(ctx, nil, "bob", "bobpw")
	if r.Verdict != VerdictOK || r.Passdb != "auth" || r.Proxy.Host != "" {
		t.Errorf("bob: %v from %q, proxy %+v", r.Verdict, r.Passdb, r.Proxy)
	}

	// The nopassword of auth does not leak past it.
	r = c.Authenticate(ctx, nil, "np", "anything")
	if r.Verdict != VerdictOK || r.Entry.Has("nopassword") || r.Proxy.Host != "10.0.0.8" {
		t.Errorf("np: %v, entry %+v", r.Verdict, r.Entry)
	}

	// Lookup (LMTP) follows the same rules: the entry with routing's fields.
	e, err := c.Lookup(ctx, "alice")
	if err != nil || e.Fields["host"] != "10.0.0.9" || !e.Has("nodelay") {
		t.Errorf("Lookup(alice) = %+v, %v", e, err)
	}
	if _, err := c.Lookup(ctx, "carol"); err != ErrUnknownUser {
		t.Errorf("Lookup(carol) err = %v", err)
	}
}

// Pattern 2: result_failure=return-fail stops the chain at a passdb that
// must know the user (an allow list), and result_success=return-fail refuses
// the users of a deny list whatever later passdbs say.
func TestChainReturnFailLists(t *testing.T) {
	ctx := context.Background()
	t.Run("allow list", func(t *testing.T) {
		allowed := db("allowed", entry("alice", "", "nopassword", "noauthenticate"))
		users := db("users", entry("alice", "{PLAIN}pw"), entry("carol", "{PLAIN}pw"))
		c := NewChainWith(link(allowed, "result_failure=return-fail"), link(users))
		if r := c.Authenticate(ctx, nil, "alice", "pw"); r.Verdict != VerdictOK || r.Passdb != "users" {
			t.Errorf("alice: %v from %q (%v)", r.Verdict, r.Passdb, r.Err)
		}
		if r := c.Authenticate(ctx, nil, "carol", "pw"); r.Verdict != VerdictUnknownUser {
			t.Errorf("carol: %v", r.Verdict)
		}
		if got := fmt.Sprint(users.asked); got != "[alice]" {
			t.Errorf("users asked for %s", got)
		}
		if _, err := c.Lookup(ctx, "carol"); err != ErrUnknownUser {
			t.Errorf("Lookup(carol) err = %v", err)
		}
	})
	t.Run("a mismatch does not fall back", func(t *testing.T) {
		primary := db("primary", entry("alice", "{PLAIN}pw"))
		legacy := db("legacy", entry("alice", "{PLAIN}old"), entry("bob", "{PLAIN}b"))
		c := NewChainWith(link(primary, "result_failure=return-fail"), link(legacy))
		if r := c.Authenticate(ctx, nil, "alice", "old"); r.Verdict != VerdictPasswordMismatch || r.Passdb != "primary" {
			t.Errorf("alice old: %v from %q", r.Verdict, r.Passdb)
		}
		// An unknown user ends the chain too: return-fail is any failure.
		if r := c.Authenticate(ctx, nil, "bob", "b"); r.Verdict != VerdictUnknownUser || legacy.calls.Load() != 0 {
			t.Errorf("bob: %v, legacy asked %d", r.Verdict, legacy.calls.Load())
		}
	})
	t.Run("deny list", func(t *testing.T) {
		deny := db("deny", entry("mallory", "", "nopassword"))
		users := db("users", entry("alice", "{PLAIN}pw"), entry("mallory", "{PLAIN}pw"))
		c := NewChainWith(link(deny, "result_success=return-fail"), link(users))
		if r := c.Authenticate(ctx, nil, "mallory", "pw"); r.Verdict == VerdictOK || r.Passdb != "deny" || r.Entry != nil {
			t.Errorf("mallory: %v from %q", r.Verdict, r.Passdb)
		}
		if r := c.Authenticate(ctx, nil, "alice", "pw"); r.Verdict != VerdictOK || r.Passdb != "users" {
			t.Errorf("alice: %v from %q", r.Verdict, r.Passdb)
		}
		if got := fmt.Sprint(users.asked); got != "[alice]" {
			t.Errorf("users asked for %s", got)
		}
		if _, err := c.Lookup(ctx, "mallory"); err != ErrUnknownUser {
			t.Errorf("Lookup(mallory) err = %v", err)
		}
	})
}

// Pattern 3: result_internalfail=return-fail ends the chain at a passdb that
// is down; the default goes on and turns a later failure into a temporary one.
func TestChainInternalFail(t *testing.T) {
	ctx := context.Background()
	for _, stop := range []bool{false, true} {
		redis := down("redis")
		file := db("file", entry("alice", "{PLAIN}pw"))
		var c *Chain
		if stop {
			c = NewChainWith(link(redis, "result_internalfail=return-fail"), link(file))
		} else {
			c = NewChainWith(link(redis), link(file))
		}
		r := c.Authenticate(ctx, nil, "alice", "pw")
		switch {
		case stop && (r.Verdict != VerdictTempFail || r.Passdb != "redis" || file.calls.Load() != 0):
			t.Errorf("return-fail: %v from %q, file asked %d", r.Verdict, r.Passdb, file.calls.Load())
		case !stop && (r.Verdict != VerdictOK || r.Passdb != "file"):
			t.Errorf("continue: %v from %q", r.Verdict, r.Passdb)
		}
		if r := c.Authenticate(ctx, nil, "alice", "wrong"); r.Verdict != VerdictTempFail || !errors.Is(r.Err, ErrTempFail) {
			t.Errorf("stop=%v wrong password: %v (%v)", stop, r.Verdict, r.Err)
		}
		if _, err := c.Lookup(ctx, "alice"); stop != errors.Is(err, ErrTempFail) {
			t.Errorf("stop=%v Lookup err = %v", stop, err)
		}
	}
	// An earlier temporary failure is the result even when a later passdb
	// finds the user but its rule does not make the login successful.
	c := NewChainWith(link(down("redis")), link(db("file", entry("alice", "{PLAIN}pw")), "result_success=return"))
	if r := c.Authenticate(ctx, nil, "alice", "pw"); r.Verdict != VerdictTempFail || r.Passdb != "redis" {
		t.Errorf("temp then return: %v from %q", r.Verdict, r.Passdb)
	}
}

// Pattern 4: skip=authenticated is a fallback asked only for users no
// earlier passdb authenticated.
func TestChainSkipAuthenticated(t *testing.T) {
	ctx := context.Background()
	primary := db("primary", entry("alice", "{PLAIN}pw", "host=10.0.0.1"))
	fallback := db("fallback", entry("alice", "{PLAIN}pw", "host=10.9.9.9"), entry("bob", "{PLAIN}b", "host=10.0.0.2"))
	routing := db("routing", entry("alice", "", "port=10143"), entry("bob", "", "port=20143"))
	c := NewChainWith(
		link(primary, "result_success=continue-ok"),
		link(fallback, "skip=authenticated", "result_success=continue-ok"),
		link(routing, "skip=unauthenticated"),
	)
	r := c.Authenticate(ctx, nil, "alice", "pw")
	if r.Verdict != VerdictOK || r.Passdb != "primary" || r.Proxy.Host != "10.0.0.1" || r.Proxy.Port != 10143 {
		t.Errorf("alice: %v from %q, proxy %+v", r.Verdict, r.Passdb, r.Proxy)
	}
	if fallback.calls.Load() != 0 {
		t.Errorf("fallback asked %d times for an authenticated user", fallback.calls.Load())
	}
	r = c.Authenticate(ctx, nil, "bob", "b")
	if r.Verdict != VerdictOK || r.Passdb != "fallback" || r.Proxy.Host != "10.0.0.2" || r.Proxy.Port != 20143 {
		t.Errorf("bob: %v from %q, proxy %+v", r.Verdict, r.Passdb, r.Proxy)
	}
	if r := c.Authenticate(ctx, nil, "bob", "wrong"); r.Verdict != VerdictPasswordMismatch || r.Passdb != "fallback" {
		t.Errorf("bob wrong: %v from %q", r.Verdict, r.Passdb)
	}
	if got := fmt.Sprint(routing.asked); got != "[alice bob]" {
		t.Errorf("routing asked for %s", got)
	}
}

func TestChainSkipEdges(t *testing.T) {
	ctx := context.Background()
	// Every passdb skipped: a temporary failure, as Dovecot's "All password
	// databases were skipped".
	c := NewChainWith(link(db("a", entry("alice", "{PLAIN}pw")), "skip=unauthenticated"))
	if r := c.Authenticate(ctx, nil, "alice", "pw"); r.Verdict != VerdictTempFail || !errors.Is(r.Err, ErrTempFail) {
		t.Errorf("all skipped: %v (%v)", r.Verdict, r.Err)
	}
	// noauthenticate does not authenticate: a skip=unauthenticated passdb
	// after it is skipped, and so it is the last one.
	c = NewChainWith(link(db("alias", entry("alice", "", "noauthenticate"))), link(db("b", entry("alice", "")), "skip=unauthenticated"))
	if r := c.Authenticate(ctx, nil, "alice", "pw"); r.Verdict != VerdictTempFail {
		t.Errorf("noauthenticate then skipped: %v", r.Verdict)
	}
	// After authentication a password-verifying passdb is only looked up.
	v := verifier("ldap", map[string]string{"alice": "ldappw"}, entry("alice", "", "host=10.0.0.5"))
	c = NewChainWith(link(db("file", entry("alice", "{PLAIN}pw")), "result_success=continue-ok"), link(v))
	r := c.Authenticate(ctx, nil, "alice", "pw")
	if r.Verdict != VerdictOK || r.Proxy.Host != "10.0.0.5" || v.auths != 0 || v.calls.Load() != 1 {
		t.Errorf("verifier after authentication: %v %+v, auths=%d lookups=%d", r.Verdict, r.Proxy, v.auths, v.calls.Load())
	}
	// A malformed field coming from the second passdb is its temporary
	// failure (result_internalfail); the first one's success stands.
	c = NewChainWith(link(db("a", entry("alice", "{PLAIN}pw")), "result_success=continue-ok"), link(db("b", entry("alice", "", "port=http"))))
	if r := c.Authenticate(ctx, nil, "alice", "pw"); r.Verdict != VerdictOK || r.Entry.Has("port") {
		t.Errorf("malformed second: %v %+v", r.Verdict, r.Entry)
	}
}

func TestParseSkipAction(t *testing.T) {
	for s, want := range map[string]Skip{"": SkipNever, "never": SkipNever, "authenticated": SkipAuthenticated, "unauthenticated": SkipUnauthenticated} {
		if got, err := ParseSkip(s); err != nil || got != want {
			t.Errorf("ParseSkip(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseSkip("always"); err == nil {
		t.Error("ParseSkip(always) accepted")
	}
	for _, a := range []Action{ActionReturn, ActionReturnOK, ActionReturnFail, ActionContinue, ActionContinueOK, ActionContinueFail} {
		if got, err := ParseAction(a.String()); err != nil || got != a {
			t.Errorf("ParseAction(%q) = %v, %v", a.String(), got, err)
		}
	}
	if got, err := ParseAction(""); err != nil || got != ActionDefault {
		t.Errorf("ParseAction(\"\") = %v, %v", got, err)
	}
	for _, s := range []string{"default", "ok", "Return-OK", "continue_ok"} {
		if _, err := ParseAction(s); err == nil {
			t.Errorf("ParseAction(%q) accepted", s)
		}
	}
	if Skip(7).String() != "skip(7)" || Action(9).String() != "action(9)" {
		t.Error("String of unknown values")
	}
}
