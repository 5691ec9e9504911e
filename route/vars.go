package route

import (
	"context"
	"fmt"
	"strings"
)

// LookupInfo is what a passdb may know about the login besides the user
// name: the values of Dovecot's %s, %r and %l. Empty when unknown.
type LookupInfo struct {
	Service  string // "imap", "pop3", "submission", "sieve", "lmtp"
	RemoteIP string // the client's address, without port
	LocalIP  string // the address the client connected to, without port
}

type lookupInfoKey struct{}

// WithLookupInfo returns ctx carrying info, for passdbs whose queries use
// %s, %r or %l.
func WithLookupInfo(ctx context.Context, info LookupInfo) context.Context {
	return context.WithValue(ctx, lookupInfoKey{}, info)
}

// LookupInfoFrom returns the LookupInfo carried by ctx, or the zero value.
func LookupInfoFrom(ctx context.Context) LookupInfo {
	info, _ := ctx.Value(lookupInfoKey{}).(LookupInfo)
	return info
}

// Vars are the values of Dovecot's %-variables for one lookup.
type Vars struct {
	User string // %u; %n and %d are its parts before and after the first '@'
	LookupInfo
}

// value returns the variable's value; name is a valid variable name.
func (v *Vars) value(name string) string {
	switch name {
	case "u", "user":
		return v.User
	case "n", "username":
		if i := strings.IndexByte(v.User, '@'); i >= 0 {
			return v.User[:i]
		}
		return v.User
	case "d", "domain":
		if i := strings.IndexByte(v.User, '@'); i >= 0 {
			return v.User[i+1:]
		}
		return ""
	case "s", "service":
		return v.Service
	case "r", "rip":
		return v.RemoteIP
	case "l", "lip":
		return v.LocalIP
	}
	return ""
}

// varNames maps every name Doorman expands, short and long, to itself.
var varNames = map[string]bool{
	"u": true, "user": true,
	"n": true, "username": true,
	"d": true, "domain": true,
	"s": true, "service": true,
	"r": true, "rip": true,
	"l": true, "lip": true,
}

// Template is a string with Dovecot %-variables, parsed once and expanded
// per lookup. It knows %u %n %d %s %r %l, their long forms %{user}
// %{username} %{domain} %{service} %{rip} %{lip}, the modifiers L (lower
// case) and U (upper case) written before the name (%Lu, %L{user}), and %%
// for a literal '%'. Anything else is an error when parsing, so a typo
// fails at start-up instead of reaching a query unexpanded.
type Template struct {
	parts []varPart
}

type varPart struct {
	lit  string // literal text before the variable
	name string // "" for a trailing literal
	mod  byte   // 0, 'L' or 'U'
}

// ParseTemplate parses s.
func ParseTemplate(s string) (Template, error) {
	var t Template
	var lit strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		i++
		if i >= len(s) {
			return Template{}, fmt.Errorf("%% at the end of %q", s)
		}
		if s[i] == '%' {
			lit.WriteByte('%')
			continue
		}
		mod := byte(0)
		if s[i] == 'L' || s[i] == 'U' {
			mod = s[i]
			i++
			if i >= len(s) {
				return Template{}, fmt.Errorf("%%%c at the end of %q", mod, s)
			}
		}
		var name string
		if s[i] == '{' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return Template{}, fmt.Errorf("unterminated %%{ in %q", s)
			}
			name = s[i+1 : i+end]
			i += end
		} else {
			name = s[i : i+1]
		}
		if !varNames[name] {
			shown := name
			if len(name) != 1 {
				shown = "{" + name + "}"
			}
			return Template{}, fmt.Errorf("unsupported variable %%%s in %q (Doorman expands %%u %%n %%d %%s %%r %%l and %%{user} %%{username} %%{domain} %%{service} %%{rip} %%{lip})", shown, s)
		}
		t.parts = append(t.parts, varPart{lit: lit.String(), name: name, mod: mod})
		lit.Reset()
	}
	if lit.Len() > 0 || len(t.parts) == 0 {
		t.parts = append(t.parts, varPart{lit: lit.String()})
	}
	return t, nil
}

// HasVars reports whether the template has any variable (a template
// without one expands to a constant).
func (t Template) HasVars() bool {
	for _, p := range t.parts {
		if p.name != "" {
			return true
		}
	}
	return false
}

// Expand returns the template with v's values in place. Values are
// inserted as they are: escaping for the place they go is the caller's job.
func (t Template) Expand(v *Vars) string {
	if len(t.parts) == 1 && t.parts[0].name == "" {
		return t.parts[0].lit
	}
	var b strings.Builder
	for _, p := range t.parts {
		b.WriteString(p.lit)
		if p.name == "" {
			continue
		}
		val := v.value(p.name)
		switch p.mod {
		case 'L':
			val = strings.ToLower(val)
		case 'U':
			val = strings.ToUpper(val)
		}
		b.WriteString(val)
	}
	return b.String()
}
