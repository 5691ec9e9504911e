package route

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	// Write then rename, as an operator's tooling should: readers never see
	// a half-written file.
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPasswdFileLayouts(t *testing.T) {
	const file = "# comment line\r\n" +
		"\n" +
		"   \n" +
		":{PLAIN}no user name\n" +
		"alice\n" +
		"bob:{PLAIN}bobpw\n" +
		"carol:{PLAIN}carolpw:1000:1000\r\n" +
		"dave:{PLAIN}davepw:1000:1000:Dave:/home/dave:/bin/sh\n" +
		"eve:{PLAIN}evepw::::::proxy=y host=127.0.0.1 port=22901 forward_foo=bar\n" +
		"frank:{PLAIN}frankpw::::::proxy  hostip=::1   nodelay  reason=a=b\n" +
		"gina@example.com:{PLAIN}x::::::destuser=%n@backend.%d user_alt=%Lu pct=100%% long=%{username}\n" +
		"hank:{PLAIN}x::::::user=henry\n" +
		"ivy@old.example:{PLAIN}x::::::domain=new.example\n" +
		"jack@example.com:{PLAIN}x::::::username=jacques\n" +
		"kim:{PLAIN}x:1:1::/home/kim:/bin/sh::maildir:~/Maildir\n" +
		"lea:{PLAIN}x::::::a=1 a:protected=2 b:protected=3 c=4 c:remove\n" +
		"mo:5ebe2294ecd0e0f08eab7690d2a6ee69[34]\n" +
		"ned:plaintext\n" +
		"oz:$1$salt$hash\n" +
		"pat:::::::nopassword proxy host=10.0.0.1\n" +
		"quinn:{PLAIN}x::::::ssl=any-cert" // no final newline
	dir := t.TempDir()
	p := writeFile(t, dir, "users", file)
	f, err := NewPasswdFile(p, "PLAIN")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		user     string
		password string
		fields   map[string]string
	}{
		{"alice", "alice", "", nil},
		{"bob", "bob", "{PLAIN}bobpw", nil},
		{"carol", "carol", "{PLAIN}carolpw", nil},
		{"dave", "dave", "{PLAIN}davepw", nil},
		{"eve", "eve", "{PLAIN}evepw", map[string]string{"proxy": "y", "host": "127.0.0.1", "port": "22901", "forward_foo": "bar"}},
		{"frank", "frank", "{PLAIN}frankpw", map[string]string{"proxy": "", "hostip": "::1", "nodelay": "", "reason": "a=b"}},
		{"gina@example.com", "gina@example.com", "{PLAIN}x", map[string]string{"destuser": "gina@backend.example.com", "user_alt": "gina@example.com", "pct": "100%", "long": "gina"}},
		{"hank", "henry", "{PLAIN}x", map[string]string{"user": "henry"}},
		{"ivy@old.example", "ivy@new.example", "{PLAIN}x", map[string]string{"domain": "new.example"}},
		{"jack@example.com", "jacques@example.com", "{PLAIN}x", map[string]string{"username": "jacques"}},
		{"kim", "kim", "{PLAIN}x", map[string]string{"userdb_mail": "maildir:~/Maildir"}},
		{"lea", "lea", "{PLAIN}x", map[string]string{"a": "1", "b": "3"}},
		{"mo", "mo", "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69", nil},
		{"ned", "ned", "{PLAIN}plaintext", nil},
		{"oz", "oz", "{MD5-CRYPT}$1$salt$hash", nil},
		{"pat", "pat", "", map[string]string{"nopassword": "", "proxy": "", "host": "10.0.0.1"}},
		{"quinn", "quinn", "{PLAIN}x", map[string]string{"ssl": "any-cert"}},
	}
	for _, tt := range tests {
		e, err := f.Lookup(context.Background(), tt.name)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tt.name, err)
			continue
		}
		if e.User != tt.user || e.Password != tt.password || !maps.Equal(e.Fields, tt.fields) {
			t.Errorf("Lookup(%q) = %+v\n want user %q password %q fields %v", tt.name, *e, tt.user, tt.password, tt.fields)
		}
	}
	if n := f.Len(); n != len(tests) {
		t.Errorf("Len() = %d; want %d", n, len(tests))
	}
	for _, unknown := range []string{"", "nobody", "Alice", "# comment line", "   "} {
		if _, err := f.Lookup(context.Background(), unknown); err != ErrUnknownUser {
			t.Errorf("Lookup(%q) err = %v; want ErrUnknownUser", unknown, err)
		}
	}
	if got := f.Name(); got != "passwd-file:"+p {
		t.Errorf("Name() = %q", got)
	}
}

func TestPasswdFileDefaultSchemeCrypt(t *testing.T) {
	p := writeFile(t, t.TempDir(), "users",
		"a:$6$mBVar4Tg19MlFPKE$6WFWHtYMIeGd1zmJ/qzD.hr/spEjU.kEmnw0b9uwoURXCJVtz6Gwly9OMeCqw8.m6/GHP83QFvkcat2ysxzLg.\n"+
			"b:$2y$05$KaS4ZF.bqsLurGRgn70fP.Z4EXVi1/aobuaBDU7nZtzLuF7JrDsiK\n")
	f, err := NewPasswdFile(p, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"a", "b"} {
		e, _ := f.Lookup(context.Background(), u)
		if !strings.HasPrefix(e.Password, "{CRYPT}$") {
			t.Errorf("%s: Password = %q; want {CRYPT} prefix", u, e.Password)
		}
		if ok, err := NewHasher(1).Verify(context.Background(), e.Password, "secret"); !ok || err != nil {
			t.Errorf("%s: Verify = %v, %v", u, ok, err)
		}
	}
}

func TestPasswdFileErrors(t *testing.T) {
	const file = "ok:{PLAIN}x\n" + // 1
		"ok:{PLAIN}y\n" + // 2: duplicate
		"a:{PLAIN}x::::::=value\n" + // 3
		"b:{PLAIN}x::::::destuser=%s\n" + // 4
		"c:{PLAIN}x::::::proxy port=abc\n" + // 5
		"d:{PLAIN}x::::::nopassword\n" + // 6
		"e:{PLAIN}x::::::user=\n" + // 7
		"f:{PLAIN}x::::::password=other\n" + // 8
		"g:{PLAIN}x::::::proxy_timeout=5 parsecs\n" + // 9: "parsecs" is a flag; fine
		"h:{PLAIN}x::::::proxy_timeout=5x\n" + // 10
		"i:{PLAIN}x::::::delay_until=soon\n" + // 11
		"j:{PLAIN}x::::::hostip=example.com\n" + // 12
		"k:{PLAIN}x::::::destuser=%\n" + // 13
		"l:{PLAIN}x::::::forward_=x\n" // 14
	_, err := ParsePasswdFile(strings.NewReader(file), "users", "PLAIN")
	if err == nil {
		t.Fatal("no error")
	}
	wantLines := []int{2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14}
	var got []int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var pe *ParseError
		if !errors.As(e, &pe) {
			t.Fatalf("not a ParseError: %v", e)
		}
		if pe.File != "users" {
			t.Errorf("File = %q", pe.File)
		}
		got = append(got, pe.Line)
	}
	if fmt.Sprint(got) != fmt.Sprint(wantLines) {
		t.Errorf("error lines = %v; want %v\n%v", got, wantLines, err)
	}
	for _, want := range []string{
		`users:2: user "ok" exists more than once (first on line 1)`,
		`users:3: user "a": extra field "=value" has no name`,
		`users:4: user "b": field destuser: unsupported variable %s`,
		`users:5: user "c": invalid port "abc"`,
		`users:6: user "d": nopassword set but password is non-empty`,
		`users:7: user "e": username attempted to be changed to empty`,
		`users:10: user "h": invalid proxy_timeout "5x"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestPasswdFileErrorCap(t *testing.T) {
	var b strings.Builder
	for i := range 25 {
		fmt.Fprintf(&b, "u%d:{PLAIN}x::::::port=0\n", i)
	}
	_, err := ParsePasswdFile(strings.NewReader(b.String()), "f", "")
	errs := err.(interface{ Unwrap() []error }).Unwrap()
	if len(errs) != maxParseErrors+1 || !strings.Contains(errs[maxParseErrors].Error(), "and 5 more bad lines") {
		t.Errorf("got %d errors, last %v", len(errs), errs[len(errs)-1])
	}
}

func TestPasswdFileReload(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "users", "alice:{PLAIN}one\n")
	f, err := NewPasswdFile(p, "")
	if err != nil {
		t.Fatal(err)
	}
	password := func(user string) string {
		e, err := f.Lookup(context.Background(), user)
		if err != nil {
			return err.Error()
		}
		return e.Password
	}

	writeFile(t, dir, "users", "alice:{PLAIN}two\nbob:{PLAIN}bob\n")
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := password("alice"); got != "{PLAIN}two" {
		t.Errorf("after reload alice = %q", got)
	}
	if got := password("bob"); got != "{PLAIN}bob" {
		t.Errorf("after reload bob = %q", got)
	}

	// A bad file: the error names file:line, the old contents stay.
	writeFile(t, dir, "users", "alice:{PLAIN}three\ncarol:{PLAIN}x::::::port=99999\n")
	err = f.Reload()
	if err == nil || !strings.Contains(err.Error(), p+":2: ") {
		t.Fatalf("Reload() = %v; want an error for %s:2", err, p)
	}
	if got := password("alice"); got != "{PLAIN}two" {
		t.Errorf("after failed reload alice = %q; want the old entry", got)
	}
	if got := password("carol"); got != ErrUnknownUser.Error() {
		t.Errorf("after failed reload carol = %q", got)
	}

	// A missing file: same.
	os.Remove(p)
	if err := f.Reload(); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Reload() of a missing file = %v", err)
	}
	if got := password("bob"); got != "{PLAIN}bob" {
		t.Errorf("after failed reload bob = %q", got)
	}
}

// Lookups keep working, and see whole files only, while reloads swap contents.
func TestPasswdFileConcurrentReload(t *testing.T) {
	dir := t.TempDir()
	gen := func(n int) string {
		var b strings.Builder
		for i := range 50 {
			fmt.Fprintf(&b, "u%d:{PLAIN}gen%d\n", i, n)
		}
		return b.String()
	}
	p := writeFile(t, dir, "users", gen(0))
	f, err := NewPasswdFile(p, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				e, err := f.Lookup(context.Background(), fmt.Sprintf("u%d", (i+r)%50))
				if err != nil || !strings.HasPrefix(e.Password, "{PLAIN}gen") {
					t.Errorf("Lookup: %v %v", e, err)
					return
				}
			}
		}()
	}
	for n := 1; n <= 20; n++ {
		writeFile(t, dir, "users", gen(n))
		if err := f.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	e, _ := f.Lookup(context.Background(), "u7")
	if e.Password != "{PLAIN}gen20" {
		t.Errorf("final password %q", e.Password)
	}
}

func TestNewPasswdFileErrors(t *testing.T) {
	if _, err := NewPasswdFile(filepath.Join(t.TempDir(), "missing"), ""); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	p := writeFile(t, t.TempDir(), "users", "a:x\n")
	if _, err := NewPasswdFile(p, "ROT13"); !errors.Is(err, ErrUnknownScheme) {
		t.Errorf("unknown default scheme: %v", err)
	}
}

func TestExpandVars(t *testing.T) {
	tests := []struct{ in, user, want, err string }{
		{"plain", "a@b", "plain", ""},
		{"%u|%n|%d", "Joe@Example.COM", "Joe@Example.COM|Joe|Example.COM", ""},
		{"%Lu %Ud %L{username}", "Joe@Example.COM", "joe@example.com EXAMPLE.COM joe", ""},
		{"%{user}/%{domain}", "joe", "joe/", ""},
		{"%%u", "joe", "%u", ""},
		{"%m %{mech} %Lm-%u", "joe", "%m %{mech} %Lm-joe", ""}, // the login expands %m
		{"%r", "joe", "", "unsupported variable"},
		{"%{home}", "joe", "", "unsupported variable"},
		{"%{user", "joe", "", "unterminated"},
		{"abc%", "joe", "", "at the end"},
		{"%L", "joe", "", "at the end"},
	}
	for _, tt := range tests {
		got, err := expandVars(tt.in, tt.user)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expandVars(%q) err = %v; want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expandVars(%q, %q) = %q, %v; want %q", tt.in, tt.user, got, err, tt.want)
		}
	}
}

func BenchmarkPasswdFileLookup(b *testing.B) {
	var sb strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&sb, "user%d@example.com:{SHA512-CRYPT}$6$salt$hash::::::proxy host=10.0.%d.%d port=143 forward_x=y\n", i, i/256%256, i%256)
	}
	p := writeFile(b, b.TempDir(), "users", sb.String())
	f, err := NewPasswdFile(p, "")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.Lookup(ctx, "user4242@example.com"); err != nil {
			b.Fatal(err)
		}
	}
}
