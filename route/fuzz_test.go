package route

import (
	"context"
	"strings"
	"testing"
)

func FuzzParsePasswdFile(f *testing.F) {
	for _, seed := range []string{
		"alice:{PLAIN}x::::::proxy host=10.0.0.1 port=143 forward_a=b\n",
		"# c\n\nbob\ncarol:pw:1:1::/h:/s::maildir:~/M\r\n",
		"d:x::::::user=%Lu destuser=%n@%d a:protected=1 a:remove\n",
		"e:pw[34]\nf:$1$salt$hash$x\ng:::::::nopassword delay_until=1+2 proxy_timeout=5ms\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		users, err := ParsePasswdFile(strings.NewReader(in), "fuzz", "")
		if err != nil {
			return
		}
		for name, e := range users {
			if name == "" || e.User == "" {
				t.Fatalf("empty name in %q: %q %+v", in, name, e)
			}
			if _, err := ParseProxy(e.Fields); err != nil {
				t.Fatalf("accepted entry fails ParseProxy: %v", err)
			}
		}
	})
}

func FuzzParseProxy(f *testing.F) {
	f.Add("proxy host=10.0.0.1 port=143 proxy_timeout=500ms delay_until=1700000000+5 forward_x=1 ssl=any-cert")
	f.Add("proxy_host_immediate_failure_after=2000ms proxy_refresh=450 hostip=::1 source_ip=127.0.0.1")
	f.Fuzz(func(t *testing.T, in string) {
		fields := map[string]string{}
		for _, kv := range strings.Fields(in) {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = v
		}
		p, err := ParseProxy(fields)
		if err != nil {
			return
		}
		if p.Port < 0 || p.Port > 65535 || p.ProxyTimeout < 0 || p.DelayJitter < 0 {
			t.Fatalf("out of range: %+v", p)
		}
	})
}

func FuzzVerify(f *testing.F) {
	for _, v := range doveadmVectors {
		if !strings.Contains(v.stored, "argon2") && !strings.Contains(v.stored, "rounds=") {
			f.Add(v.stored, v.password)
		}
	}
	f.Add("{CRYPT}$5$rounds=1000$x", "p")
	f.Add("{PBKDF2}$1$s$1$0000000000000000000000000000000000000000", "p")
	h := NewHasher(1)
	f.Fuzz(func(t *testing.T, stored, password string) {
		// Expensive parameters are the data owner's business; keep the
		// fuzzer fast.
		if strings.Contains(stored, "rounds=") || strings.Contains(stored, "argon2") ||
			strings.Contains(stored, "PBKDF2") || strings.Contains(stored, "$2") {
			return
		}
		_, _ = h.Verify(context.Background(), stored, password)
	})
}
