package route

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseProxyBooleansAreExistenceTests(t *testing.T) {
	for _, v := range []string{"", "y", "yes", "N", "no", "0", "false"} {
		fields := map[string]string{
			"proxy": v, "proxy_maybe": v, "proxy_always": v, "nopassword": v, "nodelay": v,
			"nologin": v, "proxy_not_trusted": v, "proxy_nopipelining": v, "proxy_noauth": v,
		}
		p, err := ParseProxy(fields)
		if err != nil {
			t.Fatal(err)
		}
		if !(p.Proxy && p.ProxyMaybe && p.ProxyAlways && p.NoPassword && p.NoDelay && p.NoLogin &&
			p.ProxyNotTrusted && p.ProxyNoPipelining && p.ProxyNoAuth) {
			t.Errorf("value %q: %+v; want every flag on", v, p)
		}
	}
	p, err := ParseProxy(map[string]string{"host": "10.0.0.1"})
	if err != nil || p.Proxy || p.NoLogin || p.NoPassword {
		t.Errorf("flags without fields: %+v, %v", p, err)
	}
}

func TestParseProxyAll(t *testing.T) {
	fields := map[string]string{
		"proxy": "y", "host": "imap.example.com", "hostip": "2001:db8::1", "port": "10993",
		"destuser": "joe@backend", "pass": "pw", "master": "admin", "proxy_mech": "XOAUTH2",
		"source_ip": "192.0.2.7", "reason": "moved", "protocol": "smtp", "code": "temp_fail",
		"proxy_timeout": "15", "proxy_refresh": "450", "proxy_host_immediate_failure_after": "0",
		"delay_until": "1700000000+7", "ssl": "", "starttls": "any-cert",
		"forward_b": "2", "forward_a": "1", "forward_c": "", "forwardx": "not forwarded",
		"user": "joe", "unknown_field": "kept in Entry.Fields only",
	}
	got, err := ParseProxy(fields)
	if err != nil {
		t.Fatal(err)
	}
	want := Proxy{
		Proxy: true, Host: "imap.example.com", HostIP: "2001:db8::1", Port: 10993,
		DestUser: "joe@backend", Pass: "pw", Master: "admin", ProxyMech: "XOAUTH2",
		SourceIP: "192.0.2.7", Reason: "moved", Protocol: "smtp", Code: "temp_fail",
		ProxyTimeout: 15 * time.Second, ProxyRefresh: 450 * time.Second,
		HostImmediateFailureAfter: 0,
		DelayUntil:                time.Unix(1700000000, 0), DelayJitter: 7 * time.Second,
		SSL: "yes", StartTLS: "any-cert", AnyCert: true,
		Forward: []KV{{"a", "1"}, {"b", "2"}, {"c", ""}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseProxy =\n %+v\nwant\n %+v", got, want)
	}
	if !got.UseTLS() {
		t.Error("UseTLS() = false")
	}
}

func TestParseProxyDefaults(t *testing.T) {
	p, err := ParseProxy(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Proxy{HostImmediateFailureAfter: DefaultHostImmediateFailureAfter}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("ParseProxy(nil) = %+v", p)
	}
	if p.UseTLS() {
		t.Error("UseTLS() = true")
	}
}

func TestParseProxyPort(t *testing.T) {
	for v, want := range map[string]int{"1": 1, "143": 143, "65535": 65535, "0993": 993} {
		p, err := ParseProxy(map[string]string{"port": v})
		if err != nil || p.Port != want {
			t.Errorf("port=%s: %d, %v; want %d", v, p.Port, err, want)
		}
	}
	for _, v := range []string{"", "0", "65536", "-1", "+143", "143 ", "imap", "0x8f"} {
		if _, err := ParseProxy(map[string]string{"port": v}); err == nil || !strings.Contains(err.Error(), "port") {
			t.Errorf("port=%q: err = %v; want an error", v, err)
		}
	}
}

func TestParseProxyTimeouts(t *testing.T) {
	good := map[string]time.Duration{
		"0":           0,
		"30":          30 * time.Second,
		"500ms":       500 * time.Millisecond,
		"500 msecs":   500 * time.Millisecond,
		"1500 millis": 1500 * time.Millisecond,
		"2s":          2 * time.Second,
		"2 secs":      2 * time.Second,
		"2 seconds":   2 * time.Second,
		"1m":          time.Minute,
		"3 mins":      3 * time.Minute,
		"1h":          time.Hour,
		"1 day":       24 * time.Hour,
		"1w":          7 * 24 * time.Hour,
		"5S":          5 * time.Second,
	}
	for v, want := range good {
		p, err := ParseProxy(map[string]string{"proxy_timeout": v})
		if err != nil || p.ProxyTimeout != want {
			t.Errorf("proxy_timeout=%q: %v, %v; want %v", v, p.ProxyTimeout, err, want)
		}
	}
	for _, v := range []string{"", "abc", "5x", "5 parsecs", "-5", "1.5s", "s", "4294967296", "50 days"} {
		if _, err := ParseProxy(map[string]string{"proxy_timeout": v}); err == nil {
			t.Errorf("proxy_timeout=%q: no error", v)
		}
	}

	// Seconds-only settings: a unit is required (except for 0), and
	// milliseconds only when they make whole seconds.
	for v, want := range map[string]time.Duration{"0": 0, "10s": 10 * time.Second, "2000ms": 2 * time.Second, "1 min": time.Minute} {
		p, err := ParseProxy(map[string]string{"proxy_host_immediate_failure_after": v})
		if err != nil || p.HostImmediateFailureAfter != want {
			t.Errorf("proxy_host_immediate_failure_after=%q: %v, %v; want %v", v, p.HostImmediateFailureAfter, err, want)
		}
	}
	for _, v := range []string{"10", "1500ms", "x"} {
		if _, err := ParseProxy(map[string]string{"proxy_host_immediate_failure_after": v}); err == nil {
			t.Errorf("proxy_host_immediate_failure_after=%q: no error", v)
		}
	}
	for _, v := range []string{"", "1s", "-1"} {
		if _, err := ParseProxy(map[string]string{"proxy_refresh": v}); err == nil {
			t.Errorf("proxy_refresh=%q: no error", v)
		}
	}
}

func TestParseProxyDelayUntil(t *testing.T) {
	tests := map[string]struct {
		until  int64
		jitter time.Duration
	}{
		"1700000000":    {1700000000, 0},
		"1700000000+0":  {1700000000, 0},
		"1700000000+30": {1700000000, 30 * time.Second},
		"0":             {0, 0},
	}
	for v, want := range tests {
		p, err := ParseProxy(map[string]string{"delay_until": v})
		if err != nil || !p.DelayUntil.Equal(time.Unix(want.until, 0)) || p.DelayJitter != want.jitter {
			t.Errorf("delay_until=%q: %v %v, %v", v, p.DelayUntil, p.DelayJitter, err)
		}
	}
	for _, v := range []string{"", "soon", "+5", "1700000000+", "1700000000+x", "-1", "1700000000-5", "99999999999999999999"} {
		if _, err := ParseProxy(map[string]string{"delay_until": v}); err == nil || !strings.Contains(err.Error(), "delay_until") {
			t.Errorf("delay_until=%q: err = %v", v, err)
		}
	}
}

func TestParseProxyAddresses(t *testing.T) {
	for _, f := range []string{"hostip", "source_ip"} {
		for _, v := range []string{"", "10.0.0.1", "::1", "fe80::1%eth0"} {
			if _, err := ParseProxy(map[string]string{f: v}); err != nil {
				t.Errorf("%s=%q: %v", f, v, err)
			}
		}
		for _, v := range []string{"imap.example.com", "10.0.0.256", "10.0.0.1:143"} {
			if _, err := ParseProxy(map[string]string{f: v}); err == nil {
				t.Errorf("%s=%q: no error", f, v)
			}
		}
	}
	if _, err := ParseProxy(map[string]string{"forward_": "x"}); err == nil {
		t.Error("forward_ without a name: no error")
	}
}

func BenchmarkParseProxy(b *testing.B) {
	b.Run("plain", func(b *testing.B) {
		fields := map[string]string{"proxy": "", "host": "10.0.0.1", "port": "143", "nopassword": "y", "destuser": "joe", "proxy_timeout": "500ms"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseProxy(fields); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("forward", func(b *testing.B) {
		fields := map[string]string{"proxy": "", "host": "10.0.0.1", "port": "143", "forward_a": "1", "forward_b": "2", "forward_c": "3"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseProxy(fields); err != nil {
				b.Fatal(err)
			}
		}
	})
}
