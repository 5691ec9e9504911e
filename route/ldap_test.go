package route

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"doorman/route/ldaptest"

	"github.com/go-ldap/ldap/v3"
)

// testLDAPAttrs maps the test directory (ldaptest.DefaultLDIF) to fields.
const testLDAPAttrs = "uid=user,userPassword=password,mailHost=host,mailRoutingAddress=destuser," +
	"doormanVsite=vsite,mail=email,=proxy=y,=forward_mail=%{ldap:mail}/%s"

func testLDAPConfig(s *ldaptest.Server) LDAPConfig {
	return LDAPConfig{
		URIs:       []string{s.URI},
		DN:         ldaptest.ServiceDN,
		DNPass:     ldaptest.ServicePassword,
		Base:       "ou=people," + ldaptest.BaseDN,
		Scope:      "subtree",
		PassFilter: "(&(objectClass=posixAccount)(uid=%u))",
		PassAttrs:  testLDAPAttrs,
		Timeout:    2 * time.Second,
	}
}

func newTestLDAP(t *testing.T, cfg LDAPConfig) *LDAP {
	t.Helper()
	l, err := NewLDAP(cfg)
	if err != nil {
		t.Fatalf("NewLDAP: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLDAPLookup(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	l := newTestLDAP(t, testLDAPConfig(s))
	ctx := WithLookupInfo(context.Background(), LookupInfo{Service: "imap", RemoteIP: "192.0.2.1"})

	e, err := l.Lookup(ctx, "alice")
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	want := &Entry{User: "alice", Password: "{SSHA}HsWPVN14TLVNMxKmVrJehqEKZ5qIhofE", Fields: map[string]string{
		"host":         "10.0.0.1",
		"destuser":     "alice@backend.example.com",
		"email":        "alice@example.com", // the first of two values
		"proxy":        "y",
		"forward_mail": "alice@example.com/imap",
	}}
	checkEntry(t, e, want)

	// The password in the directory verifies with Doorman's hasher.
	res := NewChain(l).Authenticate(ctx, nil, "alice", "alicepw")
	if res.Verdict != VerdictOK || res.Proxy.Host != "10.0.0.1" {
		t.Errorf("Authenticate alice: %+v", res)
	}
	if res := NewChain(l).Authenticate(ctx, nil, "alice", "wrong"); res.Verdict != VerdictPasswordMismatch {
		t.Errorf("Authenticate alice with a wrong password: %v", res.Verdict)
	}

	// bob: a vsite, a password without a scheme (default_pass_scheme).
	e, err = l.Lookup(ctx, "bob")
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	checkEntry(t, e, &Entry{User: "bob", Password: "{CRYPT}bobpw", Fields: map[string]string{
		"vsite": "site1", "email": "bob@example.com", "proxy": "y", "forward_mail": "bob@example.com/imap",
	}})

	// carol: no password, no mail: the fields from missing attributes are absent.
	e, err = l.Lookup(ctx, "carol")
	if err != nil {
		t.Fatalf("carol: %v", err)
	}
	checkEntry(t, e, &Entry{User: "carol", Fields: map[string]string{"proxy": "y", "forward_mail": "/imap"}})
}

func checkEntry(t *testing.T, got, want *Entry) {
	t.Helper()
	if got.User != want.User || got.Password != want.Password || !maps.Equal(got.Fields, want.Fields) {
		t.Errorf("entry:\n got %+v\nwant %+v", got, want)
	}
}

func TestLDAPUnknownAndHostile(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	l := newTestLDAP(t, testLDAPConfig(s))
	ctx := context.Background()
	for _, user := range []string{
		"nobody", "", "*", "*)(uid=*", "alice)(uid=*", "*)(|(uid=*", `alice\`, "alice\x00", "al*",
	} {
		if e, err := l.Lookup(ctx, user); !errors.Is(err, ErrUnknownUser) {
			t.Errorf("Lookup(%q) = %+v, %v; want ErrUnknownUser", user, e, err)
		}
	}
	// Two entries with uid=twin: Dovecot's "multiple matches", a temporary failure.
	if _, err := l.Lookup(ctx, "twin"); !IsTemporary(err) || !strings.Contains(err.Error(), "multiple matches") {
		t.Errorf("twin: %v; want a temporary failure for multiple matches", err)
	}
	// The pool is still good after all that.
	if _, err := l.Lookup(ctx, "alice"); err != nil {
		t.Errorf("alice: %v", err)
	}
}

func TestLDAPUserRewriteAndScope(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	cfg := testLDAPConfig(s)
	cfg.PassFilter = "(&(objectClass=posixAccount)(uid=%n))"
	cfg.PassAttrs = "uid=user=%$@%d,userPassword=password"
	cfg.Scope = "onelevel"
	l := newTestLDAP(t, cfg)
	e, err := l.Lookup(context.Background(), "alice@Example.org")
	if err != nil {
		t.Fatal(err)
	}
	if e.User != "alice@Example.org" || e.Fields != nil {
		t.Errorf("entry %+v", e)
	}
	cfg.Scope = "base" // the base itself is no user
	l = newTestLDAP(t, cfg)
	if _, err := l.Lookup(context.Background(), "alice@x"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("scope base: %v", err)
	}
}

func TestLDAPAuthBind(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	for _, userDN := range []string{"", "uid=%u,ou=people," + ldaptest.BaseDN} {
		t.Run("userdn="+userDN, func(t *testing.T) {
			cfg := testLDAPConfig(s)
			cfg.AuthBind = true
			cfg.AuthBindUserDN = userDN
			cfg.PoolSize = 1 // the same connection serves binds and searches
			l := newTestLDAP(t, cfg)
			ctx := context.Background()
			if !l.VerifiesPasswords() {
				t.Fatal("VerifiesPasswords is false with auth_bind")
			}
			e, err := l.Authenticate(ctx, "bob", "bobpw")
			if err != nil {
				t.Fatalf("bob: %v", err)
			}
			// No password in the entry: the directory checked it.
			checkEntry(t, e, &Entry{User: "bob", Fields: map[string]string{
				"vsite": "site1", "email": "bob@example.com", "proxy": "y", "forward_mail": "bob@example.com/",
			}})
			for _, pw := range []string{"wrong", "", "bobpw "} {
				if _, err := l.Authenticate(ctx, "bob", pw); !errors.Is(err, ErrPasswordMismatch) {
					t.Errorf("bob with %q: %v; want ErrPasswordMismatch", pw, err)
				}
			}
			// The connection was last bound as bob: a search must still see
			// what the service DN sees.
			if e, err := l.Lookup(ctx, "alice"); err != nil || e.Password != "" || e.Fields["host"] != "10.0.0.1" {
				t.Errorf("alice after binds: %+v, %v", e, err)
			}
			if _, err := l.Authenticate(ctx, "*)(uid=*", "bobpw"); err == nil || IsTemporary(err) && userDN == "" {
				t.Errorf("injection: %v", err)
			}
			// The Chain lets the directory check the password (PasswordVerifier).
			if res := NewChain(l).Authenticate(ctx, nil, "bob", "bobpw"); res.Verdict != VerdictOK || res.Entry.Password != "" {
				t.Errorf("Chain over auth_bind: %v %v", res.Verdict, res.Err)
			}
			if res := NewChain(l).Authenticate(ctx, nil, "bob", "wrong"); res.Verdict != VerdictPasswordMismatch {
				t.Errorf("Chain over auth_bind, wrong password: %v %v", res.Verdict, res.Err)
			}
		})
	}
	// Unknown users (search mode).
	cfg := testLDAPConfig(s)
	cfg.AuthBind = true
	l := newTestLDAP(t, cfg)
	if _, err := l.Authenticate(context.Background(), "nobody", "x"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("nobody: %v", err)
	}
}

// A directory that accepts and never answers fails a lookup within the
// timeout, as a temporary failure.
func TestLDAPStuck(t *testing.T) {
	hung := ldaptest.StartHungServer(t)
	s := ldaptest.StartSlapd(t)

	cfg := testLDAPConfig(s)
	cfg.URIs = []string{hung}
	cfg.Timeout = 500 * time.Millisecond
	l := newTestLDAP(t, cfg)
	lookupFailsFast(t, l, 500*time.Millisecond)

	// A pooled connection to a slapd that stops answering.
	cfg.URIs = []string{s.URI}
	l = newTestLDAP(t, cfg)
	if _, err := l.Lookup(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	s.Pause(t)
	lookupFailsFast(t, l, 500*time.Millisecond)
	s.Resume(t)
	if _, err := l.Lookup(context.Background(), "alice"); err != nil {
		t.Errorf("after resume: %v", err)
	}

	// A context that ends first wins over the timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s.Pause(t)
	defer s.Resume(t)
	start := time.Now()
	if _, err := l.Lookup(ctx, "alice"); !IsTemporary(err) {
		t.Errorf("ctx deadline: %v", err)
	}
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("ctx deadline: took %v", d)
	}
}

func lookupFailsFast(t *testing.T, l *LDAP, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	_, err := l.Lookup(context.Background(), "alice")
	d := time.Since(start)
	var te *TempError
	if !errors.As(err, &te) {
		t.Errorf("Lookup: %v; want a *TempError", err)
	}
	if d > timeout+300*time.Millisecond {
		t.Errorf("Lookup took %v; timeout %v", d, timeout)
	}
}

func TestLDAPFailover(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	for name, first := range map[string]string{
		"dead": ldaptest.DeadURI(t),
		"hung": ldaptest.StartHungServer(t),
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testLDAPConfig(s)
			cfg.URIs = []string{first, s.URI}
			cfg.ConnectTimeout = 300 * time.Millisecond
			l := newTestLDAP(t, cfg)
			if e, err := l.Lookup(context.Background(), "alice"); err != nil || e.Fields["host"] != "10.0.0.1" {
				t.Fatalf("alice: %+v, %v", e, err)
			}
		})
	}
}

// A pooled connection broken by a restart is replaced without failing the
// lookup.
func TestLDAPReconnect(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	cfg := testLDAPConfig(s)
	cfg.PoolSize = 2
	l := newTestLDAP(t, cfg)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := l.Lookup(context.Background(), "alice"); err != nil {
				t.Errorf("before restart: %v", err)
			}
		})
	}
	wg.Wait()
	s.Restart(t)
	for range 3 {
		if _, err := l.Lookup(context.Background(), "alice"); err != nil {
			t.Errorf("after restart: %v", err)
		}
	}
}

func TestLDAPUnixSocket(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	cfg := testLDAPConfig(s)
	cfg.URIs = []string{s.LDAPIURI}
	if e, err := newTestLDAP(t, cfg).Lookup(context.Background(), "alice"); err != nil || e.Fields["host"] != "10.0.0.1" {
		t.Errorf("ldapi: %+v, %v", e, err)
	}
}

func TestLDAPTLS(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	cfg := testLDAPConfig(s)
	cfg.TLSCACertFile = s.CAFile

	cfg.URIs = []string{s.LDAPSURI}
	if _, err := newTestLDAP(t, cfg).Lookup(context.Background(), "alice"); err != nil {
		t.Errorf("ldaps: %v", err)
	}
	cfg.URIs, cfg.TLS = []string{s.URI}, true
	if _, err := newTestLDAP(t, cfg).Lookup(context.Background(), "alice"); err != nil {
		t.Errorf("starttls: %v", err)
	}

	// Without the CA the certificate is refused, unless tls_require_cert = never.
	cfg.TLSCACertFile = ""
	for _, uri := range []string{s.URI, s.LDAPSURI} {
		cfg.URIs = []string{uri}
		if _, err := newTestLDAP(t, cfg).Lookup(context.Background(), "alice"); !IsTemporary(err) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s without the CA: %v", uri, err)
		}
	}
	cfg.TLSRequireCert = "never"
	if _, err := newTestLDAP(t, cfg).Lookup(context.Background(), "alice"); err != nil {
		t.Errorf("tls_require_cert=never: %v", err)
	}
}

func TestLDAPWrongServicePassword(t *testing.T) {
	s := ldaptest.StartSlapd(t)
	cfg := testLDAPConfig(s)
	cfg.DNPass = "wrong"
	if _, err := newTestLDAP(t, cfg).Lookup(context.Background(), "alice"); !IsTemporary(err) {
		t.Errorf("wrong dnpass: %v; want a temporary failure", err)
	}
	// Anonymous: userPassword is not readable, the rest is.
	cfg.DN, cfg.DNPass = "", ""
	e, err := newTestLDAP(t, cfg).Lookup(context.Background(), "alice")
	if err != nil || e.Password != "" || e.Fields["host"] != "10.0.0.1" {
		t.Errorf("anonymous: %+v, %v", e, err)
	}
}

func TestNewLDAPErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  LDAPConfig
		want string
	}{
		{LDAPConfig{}, "uris: none"},
		{LDAPConfig{URIs: []string{"http://x"}}, "scheme"},
		{LDAPConfig{URIs: []string{"ldap://x"}, Scope: "sub"}, "scope"},
		{LDAPConfig{URIs: []string{"ldap://x"}, PassFilter: "(uid=%x)"}, "pass_filter"},
		{LDAPConfig{URIs: []string{"ldap://x"}, PassFilter: "(uid=%u"}, "pass_filter"},
		{LDAPConfig{URIs: []string{"ldap://x"}, PassAttrs: "a=b=%{ldap:}"}, "pass_attrs"},
		{LDAPConfig{URIs: []string{"ldap://x"}, PassAttrs: "a="}, "no field name"},
		{LDAPConfig{URIs: []string{"ldap://x"}, AuthBindUserDN: "uid=%u"}, "auth_bind_userdn needs auth_bind"},
		{LDAPConfig{URIs: []string{"ldap://x"}, TLSRequireCert: "maybe"}, "tls_require_cert"},
		{LDAPConfig{URIs: []string{"ldap://x"}, TLSCACertFile: "/nonexistent"}, "tls_ca_cert_file"},
		{LDAPConfig{URIs: []string{"ldap://x"}, DefaultPassScheme: "NOPE"}, "default_pass_scheme"},
		{LDAPConfig{URIs: []string{"ldap://x"}, Timeout: -1}, "negative"},
	} {
		_, err := NewLDAP(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestParsePassAttrs(t *testing.T) {
	got, err := parsePassAttrs(" uid = user ,userPassword=password, mail ,=proxy=y,=nopassword=,=x=%Lu-%$")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, pa := range got {
		b.WriteString(pa.attr + ">" + pa.field)
		if pa.tmpl != nil {
			b.WriteString("=" + pa.tmpl.expand(&fieldVars{Vars: Vars{User: "Ann"}, attr: "v"}, nil))
		}
		b.WriteString(";")
	}
	if want := "uid>user;userPassword>password;mail>mail;>proxy=y;>nopassword=;>x=ann-v;"; b.String() != want {
		t.Errorf("got  %s\nwant %s", b.String(), want)
	}
}

func TestLDAPEscaping(t *testing.T) {
	for in, want := range map[string]string{
		"alice":         "alice",
		"a,b+c":         `a\,b\+c`,
		" #x= y ":       `\ \#x\=\ y\ `,
		`q"<>;\`:        `q\"\<\>\;\\`,
		"nul\x00":       `nul\00`,
		"unicode-é@x.y": "unicode-é@x.y",
	} {
		if got := escapeDNValue(in); got != want {
			t.Errorf("escapeDNValue(%q) = %q, want %q", in, got, want)
		}
	}
	f, _ := ParseTemplate("(&(uid=%n)(dc=%d)(x=%s))")
	ctx := WithLookupInfo(context.Background(), LookupInfo{Service: "im*ap"})
	if got, want := f.Expand(filterVars(ctx, "*)(uid=*@(d)")), `(&(uid=\2a\29\28uid=\2a)(dc=\28d\29)(x=im\2aap))`; got != want {
		t.Errorf("filter: %s, want %s", got, want)
	}
	d, _ := ParseTemplate("uid=%n,dc=%d")
	if got, want := d.Expand(dnVars(ctx, "a,dc=evil@ x")), `uid=a\,dc\=evil,dc=\ x`; got != want {
		t.Errorf("dn: %s, want %s", got, want)
	}
}

const testVsiteLDIF = `dn: uid=dave,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: doormanUser
objectClass: inetLocalMailRecipient
uid: dave
cn: Dave
sn: Dave
uidNumber: 1006
gidNumber: 1006
homeDirectory: /home/dave
mailHost: 10.9.9.9
doormanVsite: site1

dn: uid=erin,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: doormanUser
uid: erin
cn: Erin
sn: Erin
uidNumber: 1007
gidNumber: 1007
homeDirectory: /home/erin
doormanVsite: nosuchsite
`

func TestLDAPVsite(t *testing.T) {
	s := ldaptest.StartSlapd(t, testVsiteLDIF)
	cfg := testLDAPConfig(s)
	cfg.PassAttrs = "uid=user,mailHost=host,doormanVsite=vsite"
	cfg.VsiteBase = "ou=vsites," + ldaptest.BaseDN
	cfg.VsiteFilter = "(&(objectClass=ipHost)(cn=%$))"
	cfg.VsiteAttrs = "ipHostNumber=host,=site=%{ldap:cn}"
	cfg.VsiteCacheTTL = -1
	l := newTestLDAP(t, cfg)
	ctx := context.Background()

	// dave's own mailHost gives way to the site's address; proxy is added.
	e, err := l.Lookup(ctx, "dave")
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, e, &Entry{User: "dave", Fields: map[string]string{"vsite": "site1", "host": "10.0.1.1", "site": "site1", "proxy": ""}})
	if e, err := l.Lookup(ctx, "alice"); err != nil || e.Fields["host"] != "10.0.0.1" {
		t.Errorf("alice (no vsite): %+v, %v", e, err)
	}
	if _, err := l.Lookup(ctx, "erin"); !IsTemporary(err) || !strings.Contains(err.Error(), "unknown vsite") {
		t.Errorf("erin: %v; want a temporary failure for an unknown vsite", err)
	}

	// Moving the site moves its users: at once without a cache, after the
	// TTL with one.
	cfg.VsiteCacheTTL = time.Hour
	cached := newTestLDAP(t, cfg)
	if e, err := cached.Lookup(ctx, "dave"); err != nil || e.Fields["host"] != "10.0.1.1" {
		t.Fatalf("dave (cached): %+v, %v", e, err)
	}
	ldaptest.Modify(t, s, "cn=site1,ou=vsites,"+ldaptest.BaseDN, "ipHostNumber", "10.0.2.2")
	if e, err := l.Lookup(ctx, "dave"); err != nil || e.Fields["host"] != "10.0.2.2" {
		t.Errorf("dave after the move: %+v, %v", e, err)
	}
	if e, err := cached.Lookup(ctx, "dave"); err != nil || e.Fields["host"] != "10.0.1.1" {
		t.Errorf("dave after the move, cached: %+v, %v", e, err)
	}
}

// Whatever the user name, the expanded filter is one equality match whose
// value is the name, and the expanded DN has one RDN whose value is the name.
func FuzzLDAPEscape(f *testing.F) {
	for _, s := range []string{"alice", "*)(uid=*", `\2a`, " #a,b=c+d ", "é\x00", "a@b@c"} {
		f.Add(s)
	}
	filter, _ := ParseTemplate("(uid=%u)")
	dn, _ := ParseTemplate("uid=%u")
	f.Fuzz(func(t *testing.T, user string) {
		if !utf8.ValidString(user) || user == "" {
			return
		}
		ctx := context.Background()
		p, err := ldap.CompileFilter(filter.Expand(filterVars(ctx, user)))
		if err != nil {
			t.Fatalf("filter for %q: %v", user, err)
		}
		if p.Tag != ldap.FilterEqualityMatch || len(p.Children) != 2 || p.Children[1].Data.String() != user {
			t.Fatalf("filter for %q: tag %d, %d children", user, p.Tag, len(p.Children))
		}
		d, err := ldap.ParseDN(dn.Expand(dnVars(ctx, user)))
		if err != nil {
			t.Fatalf("dn for %q: %v", user, err)
		}
		if len(d.RDNs) != 1 || len(d.RDNs[0].Attributes) != 1 || d.RDNs[0].Attributes[0].Value != user {
			t.Fatalf("dn for %q: %+v", user, d)
		}
	})
}
