package managesieve

import (
	"net/netip"
	"strings"
	"testing"
)

// TestXclientAddr checks ADDR= against what glibc's inet_pton and inet_aton take, and
// that what goes to the engine is an address netip parses the same way.
func TestXclientAddr(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"127.1", "127.0.0.1"},
		{"10.1.2", "10.1.0.2"},
		{"0x7f.1", "127.0.0.1"},
		{"0X7F.0.0.01", "127.0.0.1"},
		{"4294967295", "255.255.255.255"},
		{"0", "0.0.0.0"},
		{"4294967296", ""},
		{"256.1.1.1", ""},
		{"1.256.1", ""},
		{"1.2.256", "1.2.1.0"},
		{"1.2.65536", ""},
		{"09", ""},
		{"1..2", ""},
		{".1", ""},
		{"1.2.3.4.5", ""},
		{"a.b.c.d", ""},
		{"", ""},
		{"::", "::"},
		{"::1", "::1"},
		{"[::1]", "::1"},
		{"[::1", ""},
		{"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"},
		{"1:2:3:4:5:6:7::", "1:2:3:4:5:6:7::"},
		{"::2:3:4:5:6:7:8", "::2:3:4:5:6:7:8"},
		{"1:2:3:4:5:6:7:8:9", ""},
		{"1:2:3:4:5:6:7", ""},
		{"1:2:3:4:5:6::7:8", ""}, // "::" must stand for a group at least
		{":1::", ""},
		{"1::2:", ""},
		{"12345::", ""},
		{"::ffff:1.2.3.4", "::ffff:1.2.3.4"},
		{"1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:1.2.3.4"},
		{"1:2:3:4:5:6:7:1.2.3.4", ""},
		{"::1.2.3", ""},
		{"::1.2.3.04", ""},
		{"::256.2.3.4", ""},
		{"fe80::1%eth0", ""},
		{"::g", ""},
	} {
		got, ok := xclientAddr([]byte(c.in))
		if string(got) != c.want || ok != (c.want != "") {
			t.Errorf("xclientAddr(%q) = %q, %v; want %q", c.in, got, ok, c.want)
			continue
		}
		if ok {
			if _, err := netip.ParseAddr(string(got)); err != nil {
				t.Errorf("xclientAddr(%q) = %q, which netip refuses: %v", c.in, got, err)
			}
		} else if a, err := netip.ParseAddr(strings.Trim(c.in, "[]")); err == nil && a.Zone() == "" && strings.Count(c.in, ".") == 3 && !strings.Contains(c.in, ":") {
			t.Errorf("xclientAddr(%q) refused, netip takes it", c.in)
		}
	}
}
