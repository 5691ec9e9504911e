package proxyproto

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func v2(payload int) []byte {
	h := append([]byte(nil), sigV2...)
	h = append(h, 0x21, 0x11, 0, 0) // v2 PROXY, TCP over IPv4, length below
	binary.BigEndian.PutUint16(h[14:], uint16(payload))
	return append(h, make([]byte, payload)...)
}

func TestFrame(t *testing.T) {
	v1 := "PROXY TCP4 192.0.2.1 198.51.100.2 56324 143\r\n"
	cases := []struct {
		name string
		in   string
		n    int
		err  error
	}{
		{"empty", "", 0, nil},
		{"v1 whole", v1, len(v1), nil},
		{"v1 with the command behind it", v1 + "a LOGIN x y\r\n", len(v1), nil},
		{"v1 partial", v1[:20], 0, nil},
		{"v1 first byte", "P", 0, nil},
		{"v1 unknown", "PROXY UNKNOWN\r\n", len("PROXY UNKNOWN\r\n"), nil},
		{"v1 too long", "PROXY " + strings.Repeat("1", 120), 0, ErrTooLong},
		{"v1 just too long", "PROXY " + strings.Repeat("1", MaxV1-6), 0, ErrTooLong},
		{"v1 longest", "PROXY " + strings.Repeat("1", MaxV1-8) + "\r\n", MaxV1, nil},
		{"v1 LF only", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 0, ErrBadLineEnd},
		{"v1 misspelt", "PROXZ TCP4", 0, ErrNotProxy},
		{"imap", "a LOGIN alice secret\r\n", 0, ErrNotProxy},
		{"tls", "\x16\x03\x01\x02\x00", 0, ErrNotProxy},
		{"v2 whole", string(v2(12)), 28, nil},
		{"v2 with bytes behind it", string(v2(12)) + "a NOOP\r\n", 28, nil},
		{"v2 signature only", string(sigV2), 0, nil},
		{"v2 no length yet", string(v2(12)[:15]), 0, nil},
		{"v2 partial payload", string(v2(12)[:20]), 0, nil},
		{"v2 longest", string(v2(MaxV2 - 16)), MaxV2, nil},
		{"v2 too long", string(v2(MaxV2 - 15)[:16]), 0, ErrTooLong},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n", 0, ErrNotProxy},
	}
	for _, c := range cases {
		n, err := Frame([]byte(c.in))
		if n != c.n || !errors.Is(err, c.err) {
			t.Errorf("%s: Frame = %d, %v; want %d, %v", c.name, n, err, c.n, c.err)
		}
	}
}

// Fed a byte at a time, a header is "need more" until its last byte, then complete.
func TestFrameByteByByte(t *testing.T) {
	for _, h := range []string{"PROXY TCP6 2001:db8::1 2001:db8::2 4000 993\r\n", string(v2(36))} {
		in := h + "rest"
		for i := 1; i <= len(in); i++ {
			n, err := Frame([]byte(in[:i]))
			want := 0
			if i >= len(h) {
				want = len(h)
			}
			if err != nil || n != want {
				t.Fatalf("%q[:%d]: %d, %v; want %d", h, i, n, err, want)
			}
		}
	}
}

func FuzzFrame(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.2 56324 143\r\na NOOP\r\n"))
	f.Add(v2(12))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("a LOGIN x y\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := Frame(in)
		if err != nil && n != 0 {
			t.Fatalf("error with a length: %d, %v", n, err)
		}
		if n > len(in) || n > MaxV2 {
			t.Fatalf("length %d beyond the input (%d) or the limit", n, len(in))
		}
		if n > 0 {
			// The header's length does not depend on what follows it.
			m, err := Frame(in[:n])
			if m != n || err != nil {
				t.Fatalf("prefix of length %d framed as %d, %v", n, m, err)
			}
		}
		// A prefix of input that needs more or is complete never looks invalid.
		if err == nil {
			for i := 0; i < len(in) && i < n; i++ {
				if _, perr := Frame(in[:i]); perr != nil {
					t.Fatalf("prefix %d of a valid header is invalid: %v", i, perr)
				}
			}
		}
	})
}
