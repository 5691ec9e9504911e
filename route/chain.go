package route

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"
)

// Chain tries passdbs in order, with Dovecot's per-passdb chain settings
// (auth/auth-request.c auth_request_handle_passdb_callback()): `skip` and
// result_success / result_failure / result_internalfail, each Link's. With
// the defaults (skip=never, result_success=return-ok, result_failure=continue,
// result_internalfail=continue; NewChain):
//
//   - the first passdb that knows the user and accepts the password wins;
//   - an unknown user, a wrong password or an unsupported scheme moves on to
//     the next passdb;
//   - a temporary failure (Redis down, a broken entry) also moves on, but is
//     remembered: if no later passdb accepts the login the result is a
//     temporary failure, not "wrong password", because the failed passdb
//     might have had the right one. Set StopOnTempFail to end the chain at
//     the first temporary failure instead (result_internalfail=return-fail
//     for every passdb), so a stale entry in a later passdb can never stand
//     in for one that is down;
//   - an entry with noauthenticate does not authenticate: its fields are
//     kept, a user= in it renames the user for the next passdbs, and the
//     chain goes on whatever the result rules say; if it is the last one the
//     result is a temporary failure ("Last passdb had noauthenticate field").
//
// The rules in general, as Dovecot applies them: each passdb tried gives a
// success (user known, password accepted or not checked, no `fail` field),
// a failure (unknown user, wrong password, unknown scheme, `fail`), a
// temporary failure, or noauthenticate. The passdb's result_* action for it
// (Action) may mark the request successful so far (…-ok) or not (…-fail), and
// either ends the chain (return…) or goes on to the next passdb that is not
// skipped (continue…). A success whose action is continue or continue-ok
// also marks the user authenticated: later passdbs do not check the password
// again (a found entry is a success), and `skip` is decided by it. The fields
// of every success and noauthenticate are kept (a later passdb's override an
// earlier's), a failure's are dropped. When the chain ends: after
// noauthenticate, a temporary failure; if marked successful, VerdictOK with
// the kept fields; else if any passdb failed temporarily, that temporary
// failure; else a failed login (a mismatch if a passdb had one, else an
// unknown user). If every passdb is skipped the result is a temporary
// failure ("All password databases were skipped").
//
// A cancelled or expired ctx ends the chain at once with a temporary failure.
// A Chain is itself a Passdb (Lookup without a password).
type Chain struct {
	links []Link

	// StopOnTempFail ends the chain at the first temporary failure: every
	// passdb's result_internalfail is return-fail.
	StopOnTempFail bool
	// Now is the clock used to check delay_until; nil means time.Now.
	Now func() time.Time
}

var _ Passdb = (*Chain)(nil)

// Link is one passdb of a Chain with its chain settings. The zero values are
// Dovecot's defaults.
type Link struct {
	DB   Passdb
	Skip Skip
	// ResultSuccess, ResultFailure and ResultInternalFail are Dovecot's
	// result_success (default return-ok), result_failure (default continue)
	// and result_internalfail (default continue).
	ResultSuccess, ResultFailure, ResultInternalFail Action
}

// Skip is a passdb's `skip` setting.
type Skip uint8

const (
	SkipNever           Skip = iota // always try the passdb (default)
	SkipAuthenticated               // skip it once an earlier passdb authenticated the user
	SkipUnauthenticated             // skip it unless an earlier passdb authenticated the user
)

var skipNames = [...]string{SkipNever: "never", SkipAuthenticated: "authenticated", SkipUnauthenticated: "unauthenticated"}

func (s Skip) String() string {
	if int(s) < len(skipNames) {
		return skipNames[s]
	}
	return fmt.Sprintf("skip(%d)", uint8(s))
}

// ParseSkip parses a `skip` value; "" is never.
func ParseSkip(s string) (Skip, error) {
	if s == "" {
		return SkipNever, nil
	}
	for i, n := range skipNames {
		if s == n {
			return Skip(i), nil
		}
	}
	return 0, fmt.Errorf("unknown value %q (never, authenticated, unauthenticated)", s)
}

// Action is what a result_success / result_failure / result_internalfail
// setting does with a passdb's result.
type Action uint8

const (
	ActionDefault      Action = iota // the setting's default
	ActionReturn                     // end the chain, the request successful or not as before
	ActionReturnOK                   // end the chain, the request successful
	ActionReturnFail                 // end the chain, the request not successful
	ActionContinue                   // go on, the request successful or not as before
	ActionContinueOK                 // go on, the request successful so far
	ActionContinueFail               // go on, the request not successful so far
)

var actionNames = [...]string{ActionDefault: "default", ActionReturn: "return", ActionReturnOK: "return-ok",
	ActionReturnFail: "return-fail", ActionContinue: "continue", ActionContinueOK: "continue-ok", ActionContinueFail: "continue-fail"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// ParseAction parses a result_* value; "" is ActionDefault.
func ParseAction(s string) (Action, error) {
	if s == "" {
		return ActionDefault, nil
	}
	for i, n := range actionNames {
		if s == n && Action(i) != ActionDefault {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("unknown value %q (return-ok, return, return-fail, continue, continue-ok, continue-fail)", s)
}

func (a Action) or(def Action) Action {
	if a == ActionDefault {
		return def
	}
	return a
}

// NewChain returns a chain over dbs, tried in the given order with Dovecot's
// default settings.
func NewChain(dbs ...Passdb) *Chain {
	links := make([]Link, len(dbs))
	for i, db := range dbs {
		links[i] = Link{DB: db}
	}
	return &Chain{links: links}
}

// NewChainWith returns a chain over links, tried in the given order.
func NewChainWith(links ...Link) *Chain { return &Chain{links: links} }

// Passdbs returns the passdbs in order.
func (c *Chain) Passdbs() []Passdb {
	dbs := make([]Passdb, len(c.links))
	for i, l := range c.links {
		dbs[i] = l.DB
	}
	return dbs
}

// Links returns the passdbs with their settings, in order.
func (c *Chain) Links() []Link { return c.links }

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
	// Passdb names the passdb that accepted the login (VerdictOK: the first
	// one that succeeded; later ones may have added fields) or whose failure
	// Err describes.
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
	for _, l := range c.links {
		errs = append(errs, l.DB.Close())
	}
	return errors.Join(errs...)
}

// outcome is what one passdb said, before its result rule is applied.
type outcome uint8

const (
	outSuccess outcome = iota // PASSDB_RESULT_OK
	outFailure                // unknown user, mismatch, unknown scheme, `fail`
	outTemp                   // PASSDB_RESULT_INTERNAL_FAILURE
	outNext                   // noauthenticate (PASSDB_RESULT_NEXT)
)

// chainState carries what the chain remembers between passdbs.
type chainState struct {
	user          string
	fields        map[string]string // fields of successes and noauthenticate so far, without nopassword, noauthenticate
	nopassword    *string           // nopassword of the last kept passdb, if a success
	entry         *Entry            // the last success
	password      string            // the first non-empty stored password of a success
	commits       int               // passdbs whose fields were kept
	by, okBy      string            // the first passdb that succeeded; the last whose rule marked success
	success       bool              // Dovecot's passdb_success
	authenticated bool              // Dovecot's skip_password_check: the password was verified
	last          outcome           // the last passdb's outcome
	lastDB        string            // its name
	temp          *Result           // first temporary failure
	detail        *Result           // first mismatch (with its Err detail, if any)
}

func tempResult(db string, err error) Result {
	var te *TempError
	if !errors.As(err, &te) {
		err = &TempError{Passdb: db, Err: err}
	}
	return Result{Verdict: VerdictTempFail, Passdb: db, Err: err}
}

// skips says whether a passdb with skip s is skipped now.
func (st *chainState) skips(s Skip) bool {
	switch s {
	case SkipAuthenticated:
		return st.authenticated
	case SkipUnauthenticated:
		return !st.authenticated
	}
	return false
}

// merged is the fields kept so far with e's on top.
func (st *chainState) merged(e *Entry) map[string]string {
	if st.commits == 0 {
		return e.Fields
	}
	m := maps.Clone(st.fields)
	maps.Copy(m, e.Fields)
	return m
}

// keep keeps e's fields (a success or noauthenticate) and its user.
func (st *chainState) keep(e *Entry, success bool) {
	if st.fields == nil {
		st.fields = make(map[string]string, len(e.Fields))
	}
	maps.Copy(st.fields, e.Fields)
	st.nopassword = nil
	if v, ok := st.fields["nopassword"]; ok && success {
		st.nopassword = &v
	}
	delete(st.fields, "nopassword")
	delete(st.fields, "noauthenticate")
	if e.User != "" {
		st.user = e.User
	}
	if success {
		st.entry = e
		if st.password == "" {
			st.password = e.Password
		}
	}
	st.commits++
}

// final is the entry of a successful chain: the kept fields under the user
// and the password of the last success, or if it has none, the first stored
// password of an earlier one (Dovecot's delayed_credentials). A single
// success is returned as is.
func (st *chainState) final() *Entry {
	if st.commits == 1 && st.entry != nil {
		return st.entry
	}
	fields := maps.Clone(st.fields)
	if st.nopassword != nil {
		fields["nopassword"] = *st.nopassword
	}
	if len(fields) == 0 {
		fields = nil
	}
	e := &Entry{User: st.user, Fields: fields}
	if st.entry != nil {
		e.Password = st.entry.Password
	}
	if e.Password == "" {
		e.Password = st.password
	}
	return e
}

// action is the rule of l for an outcome (noauthenticate always continues).
func (c *Chain) action(l Link, out outcome) Action {
	switch out {
	case outSuccess:
		return l.ResultSuccess.or(ActionReturnOK)
	case outTemp:
		if c.StopOnTempFail {
			return ActionReturnFail
		}
		return l.ResultInternalFail.or(ActionContinue)
	case outNext:
		return ActionContinue
	}
	return l.ResultFailure.or(ActionContinue)
}

// try asks one passdb. check nil is a lookup (Chain.Lookup): no password, no
// proxy fields checked. A passdb that verifies passwords itself is asked with
// its Authenticate if verifiers is set and the user is not authenticated yet.
func (c *Chain) try(ctx context.Context, st *chainState, db Passdb, password string, verifiers bool, check func(*Entry) (bool, error)) (outcome, *Entry, Result) {
	name := db.Name()
	verify := check != nil && !st.authenticated
	pv, ok := db.(PasswordVerifier)
	verifies := verify && verifiers && ok && pv.VerifiesPasswords()
	var e *Entry
	var err error
	if verifies {
		e, err = pv.Authenticate(ctx, st.user, password)
	} else {
		e, err = db.Lookup(ctx, st.user)
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrUnknownUser):
		return outFailure, nil, Result{Verdict: VerdictUnknownUser}
	case errors.Is(err, ErrPasswordMismatch):
		return outFailure, nil, Result{Verdict: VerdictPasswordMismatch, Passdb: name}
	default:
		return outTemp, nil, tempResult(name, err)
	}
	if e.Has("noauthenticate") {
		return outNext, e, Result{}
	}
	if verify && !verifies {
		ok, err := check(e)
		switch {
		case err != nil && errors.Is(err, ErrUnknownScheme):
			// "Scheme not available" counts as a failed login, not an outage.
			return outFailure, nil, Result{Verdict: VerdictPasswordMismatch, Passdb: name, Err: err}
		case err != nil:
			return outTemp, nil, tempResult(name, err)
		case !ok:
			return outFailure, nil, Result{Verdict: VerdictPasswordMismatch, Passdb: name}
		}
	}
	if e.Has("fail") {
		return outFailure, nil, Result{Verdict: VerdictUnknownUser}
	}
	if check != nil {
		px, err := ParseProxy(st.merged(e))
		if err == nil {
			err = c.checkDelay(&px)
		}
		if err != nil {
			return outTemp, nil, tempResult(name, fmt.Errorf("user %s: %w", e.User, err))
		}
	}
	return outSuccess, e, Result{}
}

// run walks the chain (see Chain for the rules).
func (c *Chain) run(ctx context.Context, user, password string, verifiers bool, check func(*Entry) (bool, error)) Result {
	st := chainState{user: user}
	tried := false
	for _, l := range c.links {
		if st.skips(l.Skip) {
			continue
		}
		tried = true
		name := l.DB.Name()
		if err := ctx.Err(); err != nil {
			if st.temp != nil {
				return *st.temp
			}
			return tempResult(name, err)
		}
		out, e, r := c.try(ctx, &st, l.DB, password, verifiers, check)
		switch out {
		case outSuccess:
			st.keep(e, true)
			if st.by == "" {
				st.by = name
			}
		case outNext:
			st.keep(e, false)
		case outTemp:
			if st.temp == nil {
				st.temp = &r
			}
			if ctx.Err() != nil {
				return *st.temp
			}
		case outFailure:
			if r.Verdict == VerdictPasswordMismatch && (st.detail == nil || r.Err != nil && st.detail.Err == nil) {
				st.detail = &r
			}
		}
		st.last, st.lastDB = out, name
		cont := false
		switch c.action(l, out) {
		case ActionReturnOK:
			st.success, st.okBy = true, name
		case ActionReturnFail:
			st.success = false
		case ActionContinue:
			cont = true
			if out == outSuccess {
				st.authenticated = true
			}
		case ActionContinueOK:
			cont = true
			st.success, st.okBy = true, name
			st.authenticated = true
		case ActionContinueFail:
			cont = true
			st.success = false
		}
		if !cont {
			break
		}
	}
	switch {
	case len(c.links) == 0:
		return tempResult("", errors.New("no passdbs configured"))
	case !tried:
		return tempResult("", errors.New("all password databases were skipped"))
	}
	return c.end(&st, check != nil)
}

// end is the result once the chain has ended.
func (c *Chain) end(st *chainState, proxy bool) Result {
	switch {
	case st.last == outNext:
		return tempResult(st.lastDB, errors.New("last passdb had noauthenticate field, cannot authenticate user"))
	case st.success:
		by := st.by
		if by == "" {
			by = st.okBy
		}
		e := st.final()
		var px Proxy
		if proxy {
			var err error
			if px, err = ParseProxy(e.Fields); err == nil {
				err = c.checkDelay(&px)
			}
			if err != nil {
				return tempResult(by, fmt.Errorf("user %s: %w", e.User, err))
			}
		}
		return Result{Verdict: VerdictOK, Entry: e, Proxy: px, Passdb: by}
	case st.temp != nil:
		return *st.temp
	case st.last == outSuccess:
		// Dovecot's auth_request_success_continue(): the password was
		// right, but no rule made the request successful.
		return Result{Verdict: VerdictPasswordMismatch, Passdb: st.lastDB,
			Err: fmt.Errorf("passdb %s: user %s found, but the result rules did not make the login successful", st.lastDB, st.user)}
	case st.detail != nil:
		return *st.detail
	}
	return Result{Verdict: VerdictUnknownUser}
}

// Authenticate looks the user up and verifies the password with h (nil h:
// inline, unbounded). A passdb that checks passwords itself (a
// PasswordVerifier whose VerifiesPasswords is true: LDAP auth_bind) is asked
// with its Authenticate instead: ErrPasswordMismatch is a mismatch,
// ErrUnknownUser an unknown user (both failures for result_failure), any
// other error a temporary failure of that passdb. Once an earlier passdb has
// authenticated the user (result_success=continue or continue-ok), later
// passdbs are only looked up and their passwords not checked. nopassword
// accepts any password, but only when the stored password is empty (as in
// Dovecot); an empty stored password without nopassword never matches. A
// `fail` field turns an accepted login into an unknown user. After the
// password is accepted the proxy fields (with those kept from earlier
// passdbs) are parsed; a malformed field, or a delay_until more than MaxDelay
// ahead, is a temporary failure of that passdb. (Dovecot fails the login for
// a bad delay_until, but only logs a bad port and uses the default one.)
func (c *Chain) Authenticate(ctx context.Context, h *Hasher, user, password string) Result {
	return c.run(ctx, user, password, true, func(e *Entry) (bool, error) {
		return checkPassword(ctx, h, e, password)
	})
}

// AuthenticateVerified is Authenticate for a login whose proof a challenge-response
// mechanism (CRAM-MD5, SCRAM-SHA-256) has already checked against the stored password
// the engine got with Lookup: each passdb's entry is accepted if check says so (its
// stored password can serve the mechanism), instead of a password comparison. A passdb
// that verifies passwords itself is only looked up. The rest (fail, the proxy fields,
// temporary failures, the order of passdbs and the result rules) is Authenticate's.
func (c *Chain) AuthenticateVerified(ctx context.Context, user string, check func(*Entry) (bool, error)) Result {
	return c.run(ctx, user, "", false, check)
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
// mechanism that verifies elsewhere), with the rules of Authenticate as
// Dovecot applies them to a passdb lookup without a password: a passdb that
// knows the user (without `fail`) succeeds, and that success, a failure (an
// unknown user) or a temporary failure goes through the passdb's result_*
// rule; skip, noauthenticate and the kept fields work as in Authenticate
// (a success with continue or continue-ok counts as authenticated). With the
// default rules the first passdb that knows the user answers. No passdb is
// asked to verify a password, and the proxy fields are not parsed. It returns
// the entry, ErrUnknownUser for any failed result (including a user found but
// not made successful by the rules), or a *TempError.
func (c *Chain) Lookup(ctx context.Context, user string) (*Entry, error) {
	r := c.run(ctx, user, "", false, nil)
	switch r.Verdict {
	case VerdictOK:
		return r.Entry, nil
	case VerdictTempFail:
		return nil, r.Err
	}
	return nil, ErrUnknownUser
}
