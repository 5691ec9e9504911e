package route

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"
)

// Chain tries passdbs in order with Dovecot's default result rules
// (result_success=return-ok, result_failure=continue,
// result_internalfail=continue; auth/auth-request.c
// auth_request_handle_passdb_callback()):
//
//   - the first passdb that knows the user and accepts the password wins;
//   - an unknown user, a wrong password or an unsupported scheme moves on to
//     the next passdb;
//   - a temporary failure (Redis down, a broken entry) also moves on, but is
//     remembered: if no later passdb accepts the login the result is a
//     temporary failure, not "wrong password", because the failed passdb
//     might have had the right one. Set StopOnTempFail to end the chain at
//     the first temporary failure instead (Dovecot's
//     result_internalfail=return-fail), so a stale entry in a later passdb
//     can never stand in for one that is down;
//   - an entry with noauthenticate does not authenticate: its fields are
//     kept, a user= in it renames the user for the next passdbs, and the
//     chain goes on; if it is the last one the result is a temporary failure
//     ("Last passdb had noauthenticate field").
//
// A cancelled or expired ctx ends the chain at once with a temporary failure.
// A Chain is itself a Passdb (Lookup without a password).
type Chain struct {
	dbs []Passdb

	// StopOnTempFail ends the chain at the first temporary failure.
	StopOnTempFail bool
	// Now is the clock used to check delay_until; nil means time.Now.
	Now func() time.Time
}

var _ Passdb = (*Chain)(nil)

// NewChain returns a chain over dbs, tried in the given order.
func NewChain(dbs ...Passdb) *Chain { return &Chain{dbs: dbs} }

// Passdbs returns the passdbs in order.
func (c *Chain) Passdbs() []Passdb { return c.dbs }

// Verdict is the outcome of Authenticate.
type Verdict uint8

const (
	VerdictOK               Verdict = iota // user known, password accepted
	VerdictUnknownUser                     // no passdb knows the user
	VerdictPasswordMismatch                // a passdb knows the user, the password did not match
	VerdictTempFail                        // could not decide: answer with a temporary failure
)

func (v Verdict) String() string {
	switch v {
	case VerdictOK:
		return "ok"
	case VerdictUnknownUser:
		return "unknown user"
	case VerdictPasswordMismatch:
		return "password mismatch"
	case VerdictTempFail:
		return "temporary failure"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Result of Authenticate.
type Result struct {
	Verdict Verdict
	// Entry and Proxy are set only for VerdictOK. As in Dovecot, the fields
	// of a passdb whose password did not match are dropped, so nodelay does
	// not shorten the failure delay of a wrong password.
	Entry *Entry
	Proxy Proxy
	// Passdb names the passdb that accepted the login (VerdictOK) or whose
	// failure Err describes.
	Passdb string
	// Err is the cause of a VerdictTempFail (always matching ErrTempFail),
	// or a detail worth logging for the other verdicts (e.g. ErrUnknownScheme
	// behind a mismatch). nil otherwise.
	Err error
}

// Name is "chain".
func (c *Chain) Name() string { return "chain" }

// Close closes every passdb and returns their errors joined.
func (c *Chain) Close() error {
	var errs []error
	for _, db := range c.dbs {
		errs = append(errs, db.Close())
	}
	return errors.Join(errs...)
}

// chainState carries what the chain remembers between passdbs.
type chainState struct {
	user    string
	pending map[string]string // fields of noauthenticate passdbs so far
	lastWas bool              // the last passdb answered noauthenticate
	temp    *Result           // first temporary failure
	detail  *Result           // first mismatch (with its Err detail, if any)
}

func tempResult(db string, err error) Result {
	var te *TempError
	if !errors.As(err, &te) {
		err = &TempError{Passdb: db, Err: err}
	}
	return Result{Verdict: VerdictTempFail, Passdb: db, Err: err}
}

// lookup runs one passdb's lookup. It returns the entry, or done=true with
// the result that ends the chain, or neither to move on.
func (c *Chain) lookup(ctx context.Context, st *chainState, db Passdb) (e *Entry, res Result, done bool) {
	return c.entry(ctx, st, db, db.Lookup)
}

// verify is lookup for a passdb that checks the password itself (a PasswordVerifier with
// VerifiesPasswords): its Authenticate returns the entry only for the right password. A
// wrong one is remembered as a mismatch and the chain moves on, as after a mismatch of a
// stored password.
func (c *Chain) verify(ctx context.Context, st *chainState, db PasswordVerifier, password string) (e *Entry, res Result, done bool) {
	return c.entry(ctx, st, db, func(ctx context.Context, user string) (*Entry, error) {
		return db.Authenticate(ctx, user, password)
	})
}

// entry runs get (one passdb's Lookup or Authenticate) with the rules of lookup.
func (c *Chain) entry(ctx context.Context, st *chainState, db Passdb, get func(context.Context, string) (*Entry, error)) (e *Entry, res Result, done bool) {
	if err := ctx.Err(); err != nil {
		return nil, tempResult(db.Name(), err), true
	}
	st.lastWas = false
	e, err := get(ctx, st.user)
	switch {
	case err == nil:
	case errors.Is(err, ErrUnknownUser):
		return nil, Result{}, false
	case errors.Is(err, ErrPasswordMismatch):
		if st.detail == nil {
			st.detail = &Result{Verdict: VerdictPasswordMismatch, Passdb: db.Name()}
		}
		return nil, Result{}, false
	default:
		return nil, Result{}, c.fail(ctx, st, tempResult(db.Name(), err))
	}
	if e.Has("noauthenticate") {
		if st.pending == nil {
			st.pending = make(map[string]string, len(e.Fields))
		}
		maps.Copy(st.pending, e.Fields)
		delete(st.pending, "noauthenticate")
		delete(st.pending, "nopassword")
		st.user = e.User
		st.lastWas = true
		return nil, Result{}, false
	}
	return e, Result{}, false
}

// fail records a temporary failure and reports whether it ends the chain.
func (c *Chain) fail(ctx context.Context, st *chainState, r Result) bool {
	if st.temp == nil {
		st.temp = &r
	}
	return c.StopOnTempFail || ctx.Err() != nil
}

// finish merges the fields of earlier noauthenticate passdbs under e's.
func (st *chainState) finish(e *Entry) *Entry {
	if st.pending == nil {
		return e
	}
	fields := maps.Clone(st.pending)
	maps.Copy(fields, e.Fields)
	return &Entry{User: e.User, Password: e.Password, Fields: fields}
}

// end is the result once every passdb has been tried.
func (c *Chain) end(st *chainState) Result {
	switch {
	case len(c.dbs) == 0:
		return tempResult("", errors.New("no passdbs configured"))
	case st.temp != nil:
		return *st.temp
	case st.lastWas:
		return tempResult(c.dbs[len(c.dbs)-1].Name(), errors.New("last passdb had noauthenticate field, cannot authenticate user"))
	case st.detail != nil:
		return *st.detail
	}
	return Result{Verdict: VerdictUnknownUser}
}

// Authenticate looks the user up and verifies the password with h (nil h:
// inline, unbounded). A passdb that checks passwords itself (a
// PasswordVerifier whose VerifiesPasswords is true: LDAP auth_bind) is asked
// with its Authenticate instead: ErrPasswordMismatch is a mismatch (the chain
// goes on), ErrUnknownUser moves on, any other error is a temporary failure
// of that passdb. nopassword accepts any password, but only when the
// stored password is empty (as in Dovecot); an empty stored password without
// nopassword never matches. A `fail` field turns an accepted login into an
// unknown user. After the password is accepted the proxy fields are parsed;
// a malformed field, or a delay_until more than MaxDelay ahead, is a
// temporary failure of that passdb. (Dovecot fails the login for a bad
// delay_until, but only logs a bad port and uses the default one.)
func (c *Chain) Authenticate(ctx context.Context, h *Hasher, user, password string) Result {
	return c.authenticate(ctx, user, password, true, func(e *Entry) (bool, error) {
		return checkPassword(ctx, h, e, password)
	})
}

// AuthenticateVerified is Authenticate for a login whose proof a challenge-response
// mechanism (CRAM-MD5, SCRAM-SHA-256) has already checked against the stored password
// the engine got with Lookup: each passdb's entry is accepted if check says so (its
// stored password can serve the mechanism), instead of a password comparison. A passdb
// that verifies passwords itself is only looked up. The rest (fail, the proxy fields,
// temporary failures, the order of passdbs) is Authenticate's.
func (c *Chain) AuthenticateVerified(ctx context.Context, user string, check func(*Entry) (bool, error)) Result {
	return c.authenticate(ctx, user, "", false, check)
}

func (c *Chain) authenticate(ctx context.Context, user, password string, verifiers bool, check func(*Entry) (bool, error)) Result {
	st := chainState{user: user}
	for _, db := range c.dbs {
		pv, verifies := db.(PasswordVerifier)
		verifies = verifiers && verifies && pv.VerifiesPasswords()
		var e *Entry
		var res Result
		var done bool
		if verifies {
			e, res, done = c.verify(ctx, &st, pv, password)
		} else {
			e, res, done = c.lookup(ctx, &st, db)
		}
		if done {
			if st.temp != nil {
				return *st.temp
			}
			return res
		}
		if e == nil {
			continue
		}
		if !verifies {
			ok, err := check(e)
			switch {
			case err != nil && errors.Is(err, ErrUnknownScheme):
				// "Scheme not available" counts as a failed login, not an outage.
				if st.detail == nil || st.detail.Err == nil {
					st.detail = &Result{Verdict: VerdictPasswordMismatch, Passdb: db.Name(), Err: err}
				}
				continue
			case err != nil:
				if c.fail(ctx, &st, tempResult(db.Name(), err)) {
					return *st.temp
				}
				continue
			case !ok:
				if st.detail == nil {
					st.detail = &Result{Verdict: VerdictPasswordMismatch, Passdb: db.Name()}
				}
				continue
			}
		}
		if e.Has("fail") {
			continue
		}
		e = st.finish(e)
		px, err := ParseProxy(e.Fields)
		if err == nil {
			err = c.checkDelay(&px)
		}
		if err != nil {
			if c.fail(ctx, &st, tempResult(db.Name(), fmt.Errorf("user %s: %w", e.User, err))) {
				return *st.temp
			}
			continue
		}
		return Result{Verdict: VerdictOK, Entry: e, Proxy: px, Passdb: db.Name()}
	}
	return c.end(&st)
}

func (c *Chain) checkDelay(px *Proxy) error {
	if px.DelayUntil.IsZero() {
		return nil
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	if px.DelayUntil.Sub(now()) > MaxDelay {
		return fmt.Errorf("delay_until %d is too far in the future (more than %v)", px.DelayUntil.Unix(), MaxDelay)
	}
	return nil
}

func checkPassword(ctx context.Context, h *Hasher, e *Entry, password string) (bool, error) {
	if passwordIsEmpty(e.Password) {
		// Dovecot: "nopassword" is honoured only with an empty password;
		// without it, "No password returned (and no nopassword)" fails.
		return e.Has("nopassword"), nil
	}
	return h.Verify(ctx, e.Password, password)
}

// Lookup finds the user without checking a password (LMTP, or a SASL
// mechanism that verifies elsewhere): the first passdb that knows the user
// answers, with the same rules for unknown users, temporary failures,
// noauthenticate and `fail` as Authenticate. It returns the entry,
// ErrUnknownUser, or a *TempError.
func (c *Chain) Lookup(ctx context.Context, user string) (*Entry, error) {
	st := chainState{user: user}
	for _, db := range c.dbs {
		e, res, done := c.lookup(ctx, &st, db)
		if done {
			if st.temp != nil {
				return nil, st.temp.Err
			}
			return nil, res.Err
		}
		if e == nil || e.Has("fail") {
			continue
		}
		return st.finish(e), nil
	}
	r := c.end(&st)
	if r.Verdict == VerdictTempFail {
		return nil, r.Err
	}
	return nil, ErrUnknownUser
}
