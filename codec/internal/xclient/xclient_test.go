package xclient

import (
	"encoding/base64"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"doorman/codec/login"
)

func TestParseAddr(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"1.2.3.4", "1.2.3.4"},
		{"127.1", "127.0.0.1"},
		{"10.1.2", "10.1.0.2"},
		{"2130706433", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0X7F.0.0.01", "127.0.0.1"},
		{"010.0.0.1", "8.0.0.1"},
		{"0x.1", "0.0.0.1"}, // glibc: a part without digits, but a digit later
		{"0", "0.0.0.0"},
		{"1.2.3.4 junk", "1.2.3.4"},
		{"1.2.3.4\tx", "1.2.3.4"},
		{"255.255.255.255", "255.255.255.255"},
		{"1.16777215", "1.255.255.255"},
		{"::1", "::1"},
		{"[::1]", "::1"},
		{"2001:DB8:0:0:0:0:0:1", "2001:db8::1"},
		{"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
		{"::ffff:1.2.3.4", "::ffff:1.2.3.4"},
		{"::ffff:0102:0304", "::ffff:1.2.3.4"},
		{"::1.2.3.4", "::102:304"},
		{"1:2:3:4:5:6:7.8.9.10", "1:2:3:4:5:6:708:90a"},
		{"1:0:0:2:0:0:0:3", "1:0:0:2::3"},
		{"1::", "1::"},
		{"::", "::"},
		{"0:0:0:0:0:0:0:0", "::"},
		{"1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"},
	} {
		got, ok := ParseAddr([]byte(c.in))
		if !ok || got != c.want {
			t.Errorf("ParseAddr(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
	for _, in := range []string{
		"", " ", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "1.2.65536", "4294967296",
		"08", "0x", "1.0x", "1..2", "1.2.3.", ".1", "a.b.c.d", "1.2.3.4x", "-1",
		"1:2", ":1", "1:::2", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8",
		"::1.2.3", "::01.2.3.4", "::1.2.3.4.5", "::256.1.1.1", "[::1", "::1]", "[1.2.3.4]",
		"fe80::1%eth0", "1:2:3:4:5:6:7:", "::g", "1.2.3.4:",
	} {
		if got, ok := ParseAddr([]byte(in)); ok {
			t.Errorf("ParseAddr(%q) = %q, accepted", in, got)
		}
	}
}

func TestParseUint(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  uint64
		want uint64
		ok   bool
	}{
		{"0", 65535, 0, true},
		{"65535", 65535, 65535, true},
		{"065535", 65535, 65535, true},
		{"65536", 65535, 0, false},
		{"4294967295", 1<<32 - 1, 1<<32 - 1, true},
		{"4294967296", 1<<32 - 1, 0, false},
		{"18446744073709551615", 1<<64 - 1, 1<<64 - 1, true},
		{"18446744073709551616", 1<<64 - 1, 0, false},
		{"99999999999999999999999", 1<<32 - 1, 0, false},
		{"", 10, 0, false},
		{"+1", 10, 0, false},
		{"1 ", 10, 0, false},
		{"1a", 10, 0, false},
	} {
		n, ok := ParseUint([]byte(c.in), c.max)
		if n != c.want || ok != c.ok {
			t.Errorf("ParseUint(%q, %d) = %d, %v; want %d, %v", c.in, c.max, n, ok, c.want, c.ok)
		}
	}
}

func TestTabUnescape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain", "plain"},
		{"a\x01tb", "a\tb"},
		{"\x010\x011\x01t\x01r\x01n\x01x", "\x00\x01\t\r\nx"},
		{"end\x01", "end"},
		{"\x01\x01", "\x01"},
	} {
		if got := string(TabUnescape([]byte(c.in))); got != c.want {
			t.Errorf("TabUnescape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDecodeForward(t *testing.T) {
	enc := func(s string) []byte { return []byte(base64.StdEncoding.EncodeToString([]byte(s))) }
	for _, c := range []struct {
		in   []byte
		want []login.IDParam
		ok   bool
	}{
		{enc("a=1\tb=x\x01ty\tnoeq\t=empty\t\tc="), []login.IDParam{
			{Key: "x-forward-a", Value: "1"}, {Key: "x-forward-b", Value: "x\ty"}, {Key: "x-forward-c"},
		}, true},
		{enc("k=v=w"), []login.IDParam{{Key: "x-forward-k", Value: "v=w"}}, true},
		{enc("a=1\x00\tb=2"), []login.IDParam{{Key: "x-forward-a", Value: "1"}}, true},
		{enc("a\x01=b=c"), []login.IDParam{{Key: "x-forward-a", Value: "b=c"}}, true}, // unescaped first
		{enc(""), nil, true},
		{[]byte("YT0x"), []login.IDParam{{Key: "x-forward-a", Value: "1"}}, true},
		{[]byte("YT0"), nil, false},
		{[]byte("!!!!"), nil, false},
	} {
		got, _, ok := DecodeForward(nil, nil, c.in)
		if ok != c.ok || !slices.Equal(got, c.want) {
			t.Errorf("DecodeForward(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
		if _, vok := ValidForward(nil, c.in); vok != c.ok {
			t.Errorf("ValidForward(%q) = %v, want %v", c.in, vok, c.ok)
		}
	}
	// params already there are kept; scratch comes back cleared.
	scratch := make([]byte, 0, 64)
	got, scratch, ok := DecodeForward([]login.IDParam{{Key: "x"}}, scratch, enc("s=secret"))
	if !ok || len(got) != 2 || got[0].Key != "x" || strings.Contains(string(scratch[:cap(scratch)]), "secret") {
		t.Errorf("DecodeForward with params and scratch: %q, %v, scratch %q", got, ok, scratch[:cap(scratch)])
	}
}

// FuzzParseAddr checks ParseAddr against net/netip where both read the same forms:
// every address netip takes without a zone ParseAddr takes too, written as netip writes
// it; and every IPv6 address or dotted quad in netip's strict form that ParseAddr takes,
// netip takes. ParseAddr's own extras (inet_aton's short, octal and hex forms, a blank
// and anything after it, brackets) are checked against the number they stand for.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"1.2.3.4", "127.1", "0x7f.1", "010.1", "4294967295", "1.2.3.4 x", "::1", "[::1]",
		"::ffff:1.2.3.4", "::1.2.3.4", "2001:db8::1", "1:2:3:4:5:6:7:8", "1::2:0:0:3",
		"fe80::1%eth0", "1.2.3.04", "::", "0.0.0.0", "1:2:3:4:5:6:1.2.3.4",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseAddr([]byte(s))
		want, err := netip.ParseAddr(s)
		if err == nil && want.Zone() == "" {
			if !ok || got != want.String() {
				t.Fatalf("ParseAddr(%q) = %q, %v; netip: %q", s, got, ok, want.String())
			}
			return
		}
		if !ok {
			return
		}
		// Accepted by ParseAddr, refused by netip (or zoned): only inet_aton's forms and
		// brackets may be.
		back, err := netip.ParseAddr(got)
		if err != nil || back.String() != got {
			t.Fatalf("ParseAddr(%q) = %q, not in netip's form", s, got)
		}
		if strings.Contains(s, ":") {
			if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
				t.Fatalf("ParseAddr(%q) = %q, netip refuses it: %v", s, got, err)
			}
			inner, err := netip.ParseAddr(s[1 : len(s)-1])
			if err != nil || inner.Zone() != "" || inner.String() != got {
				t.Fatalf("ParseAddr(%q) = %q, netip reads the inside as %v, %v", s, got, inner, err)
			}
			return
		}
		if !back.Is4() {
			t.Fatalf("ParseAddr(%q) = %q, not IPv4", s, got)
		}
		if isStrictQuad(s) {
			t.Fatalf("ParseAddr(%q) = %q, netip refuses the dotted quad", s, got)
		}
	})
}

// isStrictQuad reports whether s is four decimal numbers up to 255 without leading
// zeros, dot-separated, and nothing else: the IPv4 form netip reads.
func isStrictQuad(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || (len(p) > 1 && p[0] == '0') {
			return false
		}
		n := 0
		for _, c := range []byte(p) {
			if c < '0' || c > '9' {
				return false
			}
			n = n*10 + int(c-'0')
		}
		if n > 255 {
			return false
		}
	}
	return true
}
