package route

import (
	"context"
	"errors"
	"strings"
)

// Passdb is one password database. Implementations must be safe for
// concurrent use.
type Passdb interface {
	// Name identifies the passdb in logs ("passwd-file:/etc/doorman/users", "redis").
	Name() string
	// Lookup returns the entry, ErrUnknownUser, or another error (temporary failure).
	Lookup(ctx context.Context, user string) (*Entry, error)
	Close() error
}

// Entry is what a passdb knows about one user. Entries returned by a passdb
// may be shared between callers: treat them as read-only.
type Entry struct {
	User     string            // possibly rewritten by a `user=` (or `username=`, `domain=`) field
	Password string            // stored password incl. {SCHEME}, may be empty
	Fields   map[string]string // every extra field, raw (boolean flags have value ""); nil when none
}

// Has reports whether the extra field exists. Dovecot's boolean fields are
// existence tests: `proxy=N` still means proxy.
func (e *Entry) Has(field string) bool {
	_, ok := e.Fields[field]
	return ok
}

var (
	// ErrUnknownUser: the passdb does not have this user.
	ErrUnknownUser = errors.New("route: unknown user")
	// ErrTempFail is matched (errors.Is) by every *TempError.
	ErrTempFail = errors.New("route: temporary failure")
)

// TempError is a failure that is not the user's fault: the passdb is
// unreachable, timed out, or returned data that cannot be used. The login
// should get a temporary-failure reply, never "wrong password".
type TempError struct {
	Passdb string // name of the passdb, "" when not tied to one
	Err    error
}

func (e *TempError) Error() string {
	if e.Passdb == "" {
		return "route: temporary failure: " + e.Err.Error()
	}
	return "route: " + e.Passdb + ": temporary failure: " + e.Err.Error()
}

func (e *TempError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrTempFail) true for every TempError.
func (e *TempError) Is(target error) bool { return target == ErrTempFail }

// Temporary is true: the same login may succeed later.
func (e *TempError) Temporary() bool { return true }

// IsTemporary reports whether err is a temporary failure: a *TempError, or a
// context that ended before the answer came.
func IsTemporary(err error) bool {
	return errors.Is(err, ErrTempFail) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// storedPassword turns a passdb's password value into the form kept in
// Entry.Password: "{SCHEME}data". A value without a scheme gets the passdb's
// default scheme, except "$1$…", which Dovecot always reads as MD5-CRYPT
// (password_get_scheme()). An empty value stays empty ("no password").
func storedPassword(value, defaultScheme string) string {
	if value == "" {
		return ""
	}
	if value[0] == '{' && strings.IndexByte(value, '}') > 0 {
		return value
	}
	if strings.HasPrefix(value, "$1$") {
		// $1$<salt>$<hash>[$<ignored>]: Dovecot drops what follows the hash.
		if i := strings.IndexByte(value[3:], '$'); i >= 0 {
			if j := strings.IndexByte(value[3+i+1:], '$'); j >= 0 {
				value = value[:3+i+1+j]
			}
			return "{MD5-CRYPT}" + value
		}
	}
	return "{" + defaultScheme + "}" + value
}

// splitScheme splits "{SCHEME}data" into its parts. ok is false when there
// is no {SCHEME} prefix.
func splitScheme(stored string) (scheme, data string, ok bool) {
	if len(stored) == 0 || stored[0] != '{' {
		return "", stored, false
	}
	i := strings.IndexByte(stored, '}')
	if i < 0 {
		return "", stored, false
	}
	return stored[1:i], stored[i+1:], true
}

// passwordIsEmpty reports whether a stored password has no data once its
// {SCHEME} is removed — the condition under which Dovecot honours nopassword.
func passwordIsEmpty(stored string) bool {
	_, data, _ := splitScheme(stored)
	return data == ""
}

// updatedUser applies Dovecot's username-changing fields (auth-request.c
// get_updated_username()): user= replaces the whole name, username= the part
// before '@' (keeping the domain unless the value has its own), domain= the
// part after '@' (adding one if missing). ok is false for other fields.
func updatedUser(old, name, value string) (user string, ok bool) {
	switch name {
	case "user":
		return value, true
	case "username":
		if strings.IndexByte(value, '@') >= 0 {
			return value, true
		}
		if i := strings.IndexByte(old, '@'); i >= 0 {
			return value + old[i:], true
		}
		return value, true
	case "domain":
		if i := strings.IndexByte(old, '@'); i >= 0 {
			return old[:i+1] + value, true
		}
		return old + "@" + value, true
	}
	return "", false
}

// errEmptyUser: a user=/username= field emptied the name. Dovecot logs
// "username attempted to be changed to empty" and fails the passdb lookup
// as if the user did not exist.
var errEmptyUser = errors.New("username attempted to be changed to empty")
