package route

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// PasswdFile is Dovecot's passwd-file passdb:
//
//	user:{SCHEME}password:uid:gid:gecos:home:shell:extra_fields
//
// Everything after the password is optional. uid, gid, gecos, home and shell
// are read and ignored (they matter to a userdb, not to a proxy). Extra
// fields are space-separated key=value pairs or bare flags; everything from
// the 8th field on belongs to them, so values may contain ':' (host=::1).
// Lines that are empty, blank or start with '#' or ':' are skipped. The old
// layout with an empty 8th field followed by a mail location is read as
// userdb_mail=<location>, as Dovecot does.
//
// Field values may use %u (the user name), %n (the part before '@'), %d (the
// part after '@'), their long forms %{user}, %{username}, %{domain}, the
// modifiers %L (lower case) and %U (upper case), and %% for a literal '%'.
// Dovecot knows more variables (%s, %r, …); they depend on the session, so
// Doorman rejects them when loading rather than pass them on unexpanded. The one
// exception is %m (%{mech}), the client's SASL mechanism, kept as it is for the login
// to expand: proxy_mech=%m forwards an OAuth2 token with the client's mechanism.
//
// Stricter than Dovecot, which logs and carries on: a duplicate user, a field
// with an empty name, a password= extra field, nopassword next to a non-empty
// password, a user= that empties the name, or a malformed proxy field (see
// ParseProxy) make the whole file fail to load, with file:line for each.
//
// The file is read once by NewPasswdFile and again on every Reload; lookups
// see either the old or the new contents, never a mix, and never block.
type PasswdFile struct {
	path          string
	defaultScheme string
	reload        sync.Mutex // one Reload at a time
	users         atomic.Pointer[map[string]*Entry]
}

var _ Passdb = (*PasswdFile)(nil)

// DefaultPasswdFileScheme is Dovecot's default_pass_scheme for passwd-file.
const DefaultPasswdFileScheme = "CRYPT"

// NewPasswdFile loads path. defaultScheme applies to passwords without a
// {SCHEME} prefix; "" means CRYPT, which recognises $1$, $5$, $6$ and
// $2a$/$2b$/$2y$ hashes by their prefix.
func NewPasswdFile(path, defaultScheme string) (*PasswdFile, error) {
	if defaultScheme == "" {
		defaultScheme = DefaultPasswdFileScheme
	}
	if !SchemeSupported(defaultScheme) {
		return nil, fmt.Errorf("route: passwd-file %s: %w %q", path, ErrUnknownScheme, defaultScheme)
	}
	f := &PasswdFile{path: path, defaultScheme: defaultScheme}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Name is "passwd-file:<path>".
func (f *PasswdFile) Name() string { return "passwd-file:" + f.path }

// Path is the file's path.
func (f *PasswdFile) Path() string { return f.path }

// Len is the number of users currently loaded.
func (f *PasswdFile) Len() int { return len(*f.users.Load()) }

// Lookup returns the user's entry (shared: do not modify) or ErrUnknownUser.
// The name is matched exactly, as Dovecot does with username_format=%u.
func (f *PasswdFile) Lookup(_ context.Context, user string) (*Entry, error) {
	if e := (*f.users.Load())[user]; e != nil {
		return e, nil
	}
	return nil, ErrUnknownUser
}

// Reload reads the file again and swaps it in. On any error the previous
// contents stay in use and the error lists file:line of each problem.
func (f *PasswdFile) Reload() error {
	f.reload.Lock()
	defer f.reload.Unlock()
	fh, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("route: passwd-file: %w", err)
	}
	defer fh.Close()
	users, err := ParsePasswdFile(fh, f.path, f.defaultScheme)
	if err != nil {
		return err
	}
	f.users.Store(&users)
	return nil
}

// Close does nothing; a PasswdFile holds no open files.
func (f *PasswdFile) Close() error { return nil }

// ParseError is one bad line of a passdb file.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// maxParseErrors bounds how many bad lines one error reports.
const maxParseErrors = 20

// ParsePasswdFile reads passwd-file lines from r (filename is only used in
// errors) and returns the entries keyed by the user name on each line. On
// failure the error joins one *ParseError per bad line (at most 20, then a
// count of the rest).
func ParsePasswdFile(r io.Reader, filename, defaultScheme string) (map[string]*Entry, error) {
	if defaultScheme == "" {
		defaultScheme = DefaultPasswdFileScheme
	}
	users := make(map[string]*Entry)
	firstLine := make(map[string]int)
	var errs []error
	more := 0
	fail := func(line int, format string, args ...any) {
		if len(errs) < maxParseErrors {
			errs = append(errs, &ParseError{filename, line, fmt.Sprintf(format, args...)})
		} else {
			more++
		}
	}

	br := bufio.NewReader(r)
	for lineNo := 1; ; lineNo++ {
		line, rerr := br.ReadString('\n')
		if rerr != nil && rerr != io.EOF {
			return nil, fmt.Errorf("route: passwd-file %s: %w", filename, rerr)
		}
		if line == "" && rerr == io.EOF {
			break
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" || line[0] == '#' || line[0] == ':' || strings.TrimSpace(line) == "" {
			if rerr == io.EOF {
				break
			}
			continue
		}
		name, e, msg := parsePasswdLine(line, defaultScheme)
		switch {
		case msg != "":
			fail(lineNo, "%s", msg)
		case firstLine[name] != 0:
			fail(lineNo, "user %q exists more than once (first on line %d)", name, firstLine[name])
		default:
			users[name] = e
			firstLine[name] = lineNo
		}
		if rerr == io.EOF {
			break
		}
	}
	if len(errs) > 0 {
		if more > 0 {
			errs = append(errs, fmt.Errorf("%s: and %d more bad lines", filename, more))
		}
		return nil, errors.Join(errs...)
	}
	return users, nil
}

// parsePasswdLine parses one non-comment line. msg is non-empty for a bad line.
func parsePasswdLine(line, defaultScheme string) (name string, e *Entry, msg string) {
	f := strings.Split(line, ":")
	name = f[0]
	e = &Entry{User: name}
	if len(f) > 1 {
		e.Password = storedPassword(pamPwdfilePassword(f[1]), defaultScheme)
	}
	// f[2:7] are uid, gid, gecos, home, shell: not used by a proxy.
	var extra []string
	if len(f) > 7 {
		if f[7] == "" {
			// Old layout: an empty field, then the mail location.
			if loc := strings.Join(f[8:], ":"); loc != "" {
				extra = []string{"userdb_mail=" + loc}
			}
		} else {
			extra = splitSpaces(strings.Join(f[7:], ":"))
		}
	}
	if len(extra) == 0 {
		return name, e, ""
	}
	e.Fields = make(map[string]string, len(extra))
	for _, field := range extra {
		key, value, _ := strings.Cut(field, "=")
		if key == "" {
			return name, nil, fmt.Sprintf("user %q: extra field %q has no name", name, field)
		}
		value, err := expandVars(value, name)
		if err != nil {
			return name, nil, fmt.Sprintf("user %q: field %s: %v", name, key, err)
		}
		if k, ok := strings.CutSuffix(key, ":protected"); ok && k != "" {
			if _, set := e.Fields[k]; set {
				continue
			}
			key = k
		} else if k, ok := strings.CutSuffix(key, ":remove"); ok && k != "" {
			delete(e.Fields, k)
			continue
		}
		if key == "password" || key == "password_noscheme" {
			return name, nil, fmt.Sprintf("user %q: %s given as an extra field; the password is the second field", name, key)
		}
		if u, ok := updatedUser(e.User, key, value); ok {
			if u == "" {
				return name, nil, fmt.Sprintf("user %q: %s", name, errEmptyUser)
			}
			e.User = u
		}
		e.Fields[key] = value
	}
	if e.Has("nopassword") && !passwordIsEmpty(e.Password) {
		return name, nil, fmt.Sprintf("user %q: nopassword set but password is non-empty", name)
	}
	if _, err := ParseProxy(e.Fields); err != nil {
		return name, nil, fmt.Sprintf("user %q: %v", name, strings.TrimPrefix(err.Error(), "route: "))
	}
	return name, e, ""
}

// pamPwdfilePassword converts libpam-pwdfile's "password[NN]" form, which
// Dovecot accepts for compatibility: 34 = MD5 (PLAIN-MD5), 56 = DIGEST-MD5,
// anything else CRYPT.
func pamPwdfilePassword(p string) string {
	n := len(p)
	if n <= 4 || p[0] == '{' || p[0] == '$' || p[n-1] != ']' || p[n-4] != '[' {
		return p
	}
	switch p[n-3 : n-1] {
	case "34":
		return "{PLAIN-MD5}" + p[:n-4]
	case "56":
		return "{DIGEST-MD5}" + p[:n-4]
	}
	return "{CRYPT}" + p[:n-4]
}

// splitSpaces splits on ' ' only, dropping empty parts (p_strsplit_spaces).
func splitSpaces(s string) []string {
	var out []string
	for _, part := range strings.Split(s, " ") {
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}

// expandVars expands the %-variables Doorman supports; see PasswdFile.
func expandVars(v, user string) (string, error) {
	if strings.IndexByte(v, '%') < 0 {
		return v, nil
	}
	local, domain := user, ""
	if i := strings.IndexByte(user, '@'); i >= 0 {
		local, domain = user[:i], user[i+1:]
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		i++
		if i >= len(v) {
			return "", fmt.Errorf("%% at the end of %q", v)
		}
		if v[i] == '%' {
			b.WriteByte('%')
			continue
		}
		mod := byte(0)
		if v[i] == 'L' || v[i] == 'U' {
			mod = v[i]
			i++
			if i >= len(v) {
				return "", fmt.Errorf("%%%c at the end of %q", mod, v)
			}
		}
		var name, shown string
		if v[i] == '{' {
			end := strings.IndexByte(v[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated %%{ in %q", v)
			}
			name, shown = v[i+1:i+end], v[i:i+end+1]
			i += end
		} else {
			name, shown = v[i:i+1], v[i:i+1]
		}
		var val string
		switch name {
		case "u", "user":
			val = user
		case "n", "username":
			val = local
		case "d", "domain":
			val = domain
		case "m", "mech":
			// The login's SASL mechanism is known only per login: %m stays as it is,
			// for the engine to expand (proxy_mech=%m).
			b.WriteByte('%')
			if mod != 0 {
				b.WriteByte(mod)
			}
			b.WriteString(shown)
			continue
		default:
			return "", fmt.Errorf("unsupported variable %%%s in %q (Doorman expands %%u, %%n, %%d, %%{user}, %%{username}, %%{domain}; %%m is left to the login)", shown, v)
		}
		switch mod {
		case 'L':
			val = strings.ToLower(val)
		case 'U':
			val = strings.ToUpper(val)
		}
		b.WriteString(val)
	}
	return b.String(), nil
}
