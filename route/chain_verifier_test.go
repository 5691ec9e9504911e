package route

import (
	"context"
	"errors"
	"testing"
)

// fakeVerifier is a PasswordVerifier (LDAP auth_bind's role): its entries carry no
// password, and Authenticate checks the password against pw. The fake is the point here:
// what is tested is the chain's rule for such passdbs.
type fakeVerifier struct {
	*fakeDB
	pw       map[string]string // user → the only password Authenticate accepts
	verifies bool
	authErr  error // returned by Authenticate when set
	auths    int
}

func (f *fakeVerifier) VerifiesPasswords() bool { return f.verifies }

func (f *fakeVerifier) Authenticate(ctx context.Context, user, password string) (*Entry, error) {
	f.auths++
	if f.authErr != nil {
		return nil, f.authErr
	}
	e, err := f.Lookup(ctx, user)
	if err != nil {
		return nil, err
	}
	if f.pw[user] != password || password == "" {
		return nil, ErrPasswordMismatch
	}
	return e, nil
}

func verifier(name string, pw map[string]string, entries ...*Entry) *fakeVerifier {
	return &fakeVerifier{fakeDB: db(name, entries...), pw: pw, verifies: true}
}

func TestChainPasswordVerifier(t *testing.T) {
	ctx := context.Background()
	ldapish := func() *fakeVerifier {
		return verifier("ldap", map[string]string{"alice": "bindpw", "bob": "bobpw"},
			entry("alice", "", "proxy", "host=10.0.0.1"), entry("bob", ""))
	}

	t.Run("right password", func(t *testing.T) {
		v := ldapish()
		r := NewChain(v).Authenticate(ctx, nil, "alice", "bindpw")
		if r.Verdict != VerdictOK || r.Passdb != "ldap" || r.Entry.Fields["host"] != "10.0.0.1" || r.Proxy.Host != "10.0.0.1" {
			t.Fatalf("got %v %+v %v", r.Verdict, r.Entry, r.Err)
		}
		if v.auths != 1 || v.calls.Load() != 1 { // one Authenticate (whose fake looks up once)
			t.Fatalf("auths=%d lookups=%d", v.auths, v.calls.Load())
		}
	})

	t.Run("wrong password is a mismatch", func(t *testing.T) {
		r := NewChain(ldapish()).Authenticate(ctx, nil, "alice", "wrong")
		if r.Verdict != VerdictPasswordMismatch || r.Passdb != "ldap" || r.Entry != nil {
			t.Fatalf("got %v %+v", r.Verdict, r)
		}
	})

	t.Run("mismatch continues to the next passdb", func(t *testing.T) {
		// Dovecot's result_failure=continue: a later passdb may accept the login.
		next := db("file", entry("alice", "{PLAIN}filepw", "host=10.0.0.2"))
		r := NewChain(ldapish(), next).Authenticate(ctx, nil, "alice", "filepw")
		if r.Verdict != VerdictOK || r.Passdb != "file" || r.Proxy.Host != "10.0.0.2" {
			t.Fatalf("got %v %v", r.Verdict, r.Passdb)
		}
		r = NewChain(ldapish(), next).Authenticate(ctx, nil, "alice", "neither")
		if r.Verdict != VerdictPasswordMismatch || r.Passdb != "ldap" {
			t.Fatalf("both wrong: got %v %v", r.Verdict, r.Passdb)
		}
	})

	t.Run("unknown user moves on", func(t *testing.T) {
		next := db("file", entry("carol", "{PLAIN}c"))
		r := NewChain(ldapish(), next).Authenticate(ctx, nil, "carol", "c")
		if r.Verdict != VerdictOK || r.Passdb != "file" {
			t.Fatalf("got %v %v", r.Verdict, r.Passdb)
		}
		r = NewChain(ldapish()).Authenticate(ctx, nil, "nobody", "x")
		if r.Verdict != VerdictUnknownUser {
			t.Fatalf("nobody: got %v", r.Verdict)
		}
	})

	t.Run("other errors are temporary failures", func(t *testing.T) {
		v := ldapish()
		v.authErr = &TempError{Passdb: "ldap", Err: errors.New("bind: connection reset")}
		r := NewChain(v).Authenticate(ctx, nil, "alice", "bindpw")
		if r.Verdict != VerdictTempFail || !errors.Is(r.Err, ErrTempFail) || r.Passdb != "ldap" {
			t.Fatalf("got %v %v", r.Verdict, r.Err)
		}
		// A plain error is wrapped into a TempError too.
		v.authErr = errors.New("boom")
		r = NewChain(v).Authenticate(ctx, nil, "alice", "bindpw")
		if r.Verdict != VerdictTempFail || !errors.Is(r.Err, ErrTempFail) {
			t.Fatalf("plain error: got %v %v", r.Verdict, r.Err)
		}
		// The chain goes on past it, but without an accepting passdb the result stays a
		// temporary failure (the down passdb might have said yes).
		v.authErr = errors.New("down")
		next := db("file", entry("alice", "{PLAIN}filepw"))
		if r = NewChain(v, next).Authenticate(ctx, nil, "alice", "filepw"); r.Verdict != VerdictOK || r.Passdb != "file" {
			t.Fatalf("past a failed verifier: got %v %v", r.Verdict, r.Passdb)
		}
		if r = NewChain(v, next).Authenticate(ctx, nil, "alice", "wrong"); r.Verdict != VerdictTempFail {
			t.Fatalf("failed verifier then mismatch: got %v", r.Verdict)
		}
		c := NewChain(v, next)
		c.StopOnTempFail = true
		if r = c.Authenticate(ctx, nil, "alice", "filepw"); r.Verdict != VerdictTempFail {
			t.Fatalf("StopOnTempFail: got %v", r.Verdict)
		}
	})

	t.Run("not verifying: stored password as usual", func(t *testing.T) {
		v := verifier("ldap", nil, entry("alice", "{PLAIN}stored"))
		v.verifies = false
		r := NewChain(v).Authenticate(ctx, nil, "alice", "stored")
		if r.Verdict != VerdictOK || v.auths != 0 {
			t.Fatalf("got %v, Authenticate called %d times", r.Verdict, v.auths)
		}
	})

	t.Run("fail field still refuses", func(t *testing.T) {
		v := verifier("ldap", map[string]string{"alice": "pw"}, entry("alice", "", "fail"))
		if r := NewChain(v).Authenticate(ctx, nil, "alice", "pw"); r.Verdict != VerdictUnknownUser {
			t.Fatalf("got %v", r.Verdict)
		}
	})

	t.Run("Lookup does not authenticate", func(t *testing.T) {
		v := ldapish()
		e, err := NewChain(v).Lookup(ctx, "alice")
		if err != nil || e.User != "alice" || v.auths != 0 {
			t.Fatalf("Lookup: %+v %v, auths=%d", e, err, v.auths)
		}
	})
}
