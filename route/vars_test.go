package route

import (
	"context"
	"strings"
	"testing"
)

func TestTemplate(t *testing.T) {
	v := &Vars{User: "Alice@Example.com", LookupInfo: LookupInfo{Service: "imap", RemoteIP: "192.0.2.1", LocalIP: "2001:db8::1"}}
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"%u|%n|%d|%s|%r|%l", "Alice@Example.com|Alice|Example.com|imap|192.0.2.1|2001:db8::1"},
		{"%{user}|%{username}|%{domain}|%{service}|%{rip}|%{lip}", "Alice@Example.com|Alice|Example.com|imap|192.0.2.1|2001:db8::1"},
		{"%Lu %Un %L{domain} %U{service}", "alice@example.com ALICE example.com IMAP"},
		{"100%% %%u", "100% %u"},
	} {
		tmpl, err := ParseTemplate(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := tmpl.Expand(v); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
		if has := strings.Contains(strings.ReplaceAll(tc.in, "%%", ""), "%"); tmpl.HasVars() != has {
			t.Errorf("%q: HasVars %v", tc.in, !has)
		}
	}
	// No '@': %n is the whole name, %d empty.
	tmpl, _ := ParseTemplate("%n/%d")
	if got := tmpl.Expand(&Vars{User: "bob"}); got != "bob/" {
		t.Errorf("bob: %q", got)
	}
	for _, bad := range []string{"%", "%L", "%x", "%{nope}", "%{user", "%Lx"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestLookupInfoContext(t *testing.T) {
	if got := LookupInfoFrom(context.Background()); got != (LookupInfo{}) {
		t.Errorf("empty context: %+v", got)
	}
	info := LookupInfo{Service: "pop3", RemoteIP: "192.0.2.7", LocalIP: "192.0.2.8"}
	if got := LookupInfoFrom(WithLookupInfo(context.Background(), info)); got != info {
		t.Errorf("got %+v, want %+v", got, info)
	}
}
