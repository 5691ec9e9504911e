package lmtp

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// decodeAll runs a DotDecoder over in, fed in pieces of at most step bytes (0: whole)
// into a destination of dstSize bytes (0: always room), and returns the message, the
// bytes read and whether the end was found. It panics if the decoder stops making
// progress.
func decodeAll(in []byte, step, dstSize int) (out []byte, read int, done bool) {
	var d DotDecoder
	for read < len(in) && !done {
		end := len(in)
		if step > 0 {
			end = min(len(in), read+step)
		}
		n := dstSize
		if n == 0 {
			n = end - read + 3
		}
		buf := make([]byte, n)
		nDst, nSrc, dn := d.Decode(buf, in[read:end])
		out = append(out, buf[:nDst]...)
		read += nSrc
		done = dn
		if nDst == 0 && nSrc == 0 && !dn {
			panic("DotDecoder made no progress")
		}
	}
	return out, read, done
}

func TestDotDecoder(t *testing.T) {
	tests := []struct {
		in, out string
		read    int // -1: all of in
		done    bool
	}{
		{".\r\n", "", -1, true},
		{".\n", "", -1, true},
		{"a\r\n.\r\n", "a\r\n", -1, true},
		{"a\n.\n", "a\n", -1, true},
		{"a\r\n.\r\nQUIT\r\n", "a\r\n", 6, true},
		{"..a\r\n.\r\n", ".a\r\n", -1, true},
		{".a\r\n.\r\n", "a\r\n", -1, true}, // any leading dot is dropped
		{"a\r\n..\r\n.\r\n", "a\r\n.\r\n", -1, true},
		{"a.\r\n.\r\n", "a.\r\n", -1, true},
		{"a\r.\r\n", "a\r.", -1, false}, // a bare CR does not start a line; the CRLF waits
		{"a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n", -1, true},
		{"a\r\r\n.\r\n", "a\r\r\n", -1, true},
		{"\r\n.\r\n", "\r\n", -1, true},
		{"abc", "abc", -1, false},
		{"abc\r\n", "abc", -1, false}, // the line ending waits for what follows
		{"abc\r\n.", "abc", -1, false},
		{"abc\r\n.\r", "abc", -1, false},
	}
	for _, tc := range tests {
		read := tc.read
		if read < 0 {
			read = len(tc.in)
		}
		for _, step := range []int{0, 1, 2, 3} {
			for _, dst := range []int{0, 1, 2} {
				out, n, done := decodeAll([]byte(tc.in), step, dst)
				if string(out) != tc.out || n != read || done != tc.done {
					t.Errorf("%q step %d dst %d: got %q read %d done %v, want %q read %d done %v",
						tc.in, step, dst, out, n, done, tc.out, read, tc.done)
				}
			}
		}
	}
}

func encode(msg []byte) []byte {
	var e DotEncoder
	return e.Finish(e.Append(nil, msg))
}

func TestDotEncoder(t *testing.T) {
	tests := []struct{ in, out string }{
		{"", "\r\n.\r\n"}, // as Dovecot's ostream-dot: an empty message is one empty line
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{".a\r\n", "..a\r\n.\r\n"},
		{"a\n.b\n", "a\r\n..b\r\n.\r\n"},
		{"a\r.b\r\n", "a\r.b\r\n.\r\n"},
		{"a\r\n.\r\n", "a\r\n..\r\n.\r\n"},
		{"a\r\r\n", "a\r\r\n.\r\n"},
	}
	for _, tc := range tests {
		if got := encode([]byte(tc.in)); string(got) != tc.out {
			t.Errorf("encode %q = %q, want %q", tc.in, got, tc.out)
		}
		// In pieces: the same.
		var e DotEncoder
		var got []byte
		for i := 0; i < len(tc.in); i++ {
			got = e.Append(got, []byte(tc.in[i:i+1]))
		}
		if got = e.Finish(got); string(got) != tc.out {
			t.Errorf("encode %q bytewise = %q, want %q", tc.in, got, tc.out)
		}
	}
}

// TestDotRoundTrip: what the encoder writes, the decoder reads back as the message with
// its line endings made CRLF and a final line ending added when missing.
func TestDotRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\na ")
	for i := 0; i < 5000; i++ {
		msg := make([]byte, rng.IntN(30))
		for j := range msg {
			msg[j] = alphabet[rng.IntN(len(alphabet))]
		}
		checkRoundTrip(t, msg)
	}
}

func checkRoundTrip(t *testing.T, msg []byte) {
	t.Helper()
	wire := encode(msg)
	got, n, done := decodeAll(wire, 0, 0)
	if !done || n != len(wire) {
		t.Fatalf("%q: encoded %q read %d of %d, done %v", msg, wire, n, len(wire), done)
	}
	if want := normalize(msg); !bytes.Equal(got, want) {
		t.Fatalf("%q: encoded %q decoded %q, want %q", msg, wire, got, want)
	}
}

// normalize is what a message becomes on the way: bare LF → CRLF, CRLF at the end.
func normalize(msg []byte) []byte {
	var out []byte
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) || len(msg) == 0 {
		out = append(out, '\r', '\n')
	}
	return out
}

func TestReplyParser(t *testing.T) {
	tests := []struct {
		in   string
		want []Reply
		err  bool
	}{
		{"250 2.1.5 OK\r\n", []Reply{{250, "2.1.5", []string{"OK"}}}, false},
		{"250-mx\r\n250-PIPELINING\r\n250 XCLIENT ADDR PORT\r\n", []Reply{{250, "", []string{"mx", "PIPELINING", "XCLIENT ADDR PORT"}}}, false},
		{"550-5.1.1 a\r\n550 5.1.1 b\r\n", []Reply{{550, "5.1.1", []string{"a", "b"}}}, false},
		{"451 4.3.0\r\n", []Reply{{451, "4.3.0", []string{""}}}, false},
		{"250 5.1.1 wrong class\r\n", []Reply{{250, "", []string{"5.1.1 wrong class"}}}, false},
		{"250 2.1.1234 x\r\n", []Reply{{250, "", []string{"2.1.1234 x"}}}, false},
		{"250\r\n220 ready\n", []Reply{{250, "", []string{""}}, {220, "", []string{"ready"}}}, false},
		{"250-a\r\n251 b\r\n", nil, true},
		{"25x ok\r\n", nil, true},
		{"250+ok\r\n", nil, true},
		{"250 a\x00b\r\n", nil, true},
		{"650 x\r\n", nil, true},
	}
	for _, tc := range tests {
		for _, step := range []int{0, 1, 5} {
			var p ReplyParser
			var got []Reply
			var buf []byte
			in := []byte(tc.in)
			var err error
			for len(in) > 0 && err == nil {
				n := len(in)
				if step > 0 {
					n = min(n, step)
				}
				buf = append(buf, in[:n]...)
				in = in[n:]
				for err == nil {
					c, r, e := p.Feed(buf)
					buf = buf[c:]
					err = e
					if r == nil {
						break
					}
					got = append(got, *r)
				}
			}
			if (err != nil) != tc.err {
				t.Errorf("%q step %d: err %v", tc.in, step, err)
				continue
			}
			if tc.err {
				continue
			}
			if len(buf) != 0 {
				t.Errorf("%q step %d: left %q", tc.in, step, buf)
			}
			if len(got) != len(tc.want) {
				t.Errorf("%q step %d: got %v", tc.in, step, got)
				continue
			}
			for i := range got {
				if got[i].String() != tc.want[i].String() || got[i].Enhanced != tc.want[i].Enhanced {
					t.Errorf("%q step %d: reply %d = %#v, want %#v", tc.in, step, i, got[i], tc.want[i])
				}
			}
		}
	}
	// A line longer than the limit is an error before it ends.
	p := ReplyParser{MaxLine: 10}
	if _, _, err := p.Feed([]byte("250 0123456789")); err == nil {
		t.Error("long line accepted")
	}
	p = ReplyParser{MaxLines: 2}
	if _, _, err := p.Feed([]byte("250-a\r\n250-b\r\n250 c\r\n")); err == nil {
		t.Error("too many lines accepted")
	}
}

func TestReplyWrite(t *testing.T) {
	r := Reply{Code: 250, Enhanced: "2.0.0", Lines: []string{"a", "b"}}
	if got := string(r.Append(nil)); got != "250-2.0.0 a\r\n250 2.0.0 b\r\n" {
		t.Errorf("got %q", got)
	}
	r = NewReply(550, "5.1.1", "<kate@backend> User doesn't exist: kate@backend")
	if got := r.WithPath("alice@example.org", true).String(); got != "550 5.1.1 <alice@example.org> User doesn't exist: kate@backend" {
		t.Errorf("replace path: %q", got)
	}
	if got := NewReply(250, "2.1.5", "OK").WithPath("a", false).String(); got != "250 2.1.5 OK" {
		t.Errorf("no path: %q", got)
	}
	if got := NewReply(451, "4.3.0", "Temp").WithPath("a", true).String(); got != "451 4.3.0 <a> Temp" {
		t.Errorf("add path: %q", got)
	}
	if got := NewReply(451, "", "x").WithDefaultEnhanced("4.0.0").String(); got != "451 4.0.0 x" {
		t.Errorf("default enhanced: %q", got)
	}
}

func TestCapabilities(t *testing.T) {
	r := Reply{Code: 250, Lines: []string{"vm", "8BITMIME", "CHUNKING", "ENHANCEDSTATUSCODES", "PIPELINING",
		"XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT", "XRCPTFORWARD"}}
	c := ParseCapabilities(&r)
	if !c.Pipelining || !c.EnhancedStatusCodes || !c.EightBitMIME || !c.Chunking || !c.XRcptForward || c.StartTLS {
		t.Errorf("caps %+v", c)
	}
	if strings.Join(c.XClient, " ") != "ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT" {
		t.Errorf("xclient %v", c.XClient)
	}
	if c := ParseCapabilities(&Reply{Code: 250, Lines: []string{"XCLIENT"}}); c.XClient != nil {
		t.Errorf("first line read as a keyword: %+v", c)
	}
}

func TestXClient(t *testing.T) {
	all := &Capabilities{XClient: []string{"ADDR", "PORT", "PROTO", "HELO", "LOGIN", "SESSION", "TTL", "TIMEOUT"}}
	x := XClient{Helo: "client.example", Proto: "LMTP", Session: "wKl7GgKjAmvFfQAAg+zDdQ:P1", TTL: 5, Port: 48713, Addr: "127.0.0.1"}
	got := x.Commands(all)
	// Dovecot's own line, from a proxy's wire (reference §3.5): the session id is xtext.
	want := "XCLIENT HELO=client.example PROTO=LMTP SESSION=wKl7GgKjAmvFfQAAg+2BzDdQ:P1 TTL=5 PORT=48713 ADDR=127.0.0.1\r\n"
	if len(got) != 1 || string(got[0]) != want {
		t.Errorf("got %q", got)
	}
	// Only what is advertised, in Dovecot's order whatever the backend's order.
	some := &Capabilities{XClient: []string{"ADDR", "TTL"}}
	if got := x.Commands(some); len(got) != 1 || string(got[0]) != "XCLIENT TTL=5 ADDR=127.0.0.1\r\n" {
		t.Errorf("subset: %q", got)
	}
	if got := x.Commands(&Capabilities{XClient: []string{}}); got != nil {
		t.Errorf("nothing advertised: %q", got)
	}
	// Long values split the command at 510 bytes.
	x.Helo = strings.Repeat("h", 300)
	x.Session = strings.Repeat("s", 300)
	got = x.Commands(all)
	if len(got) != 2 || !strings.HasPrefix(string(got[1]), "XCLIENT SESSION=") {
		t.Fatalf("split: %q", got)
	}
	for _, l := range got {
		if len(l) > xclientLineLimit+2 {
			t.Errorf("line of %d bytes", len(l))
		}
	}
}

func TestBackendCommands(t *testing.T) {
	m := &Mail{From: Address{"sender", "example.org"}, Body: "8BITMIME"}
	if got := string(AppendMailFrom(nil, m)); got != "MAIL FROM:<sender@example.org> BODY=8BITMIME\r\n" {
		t.Errorf("mail: %q", got)
	}
	if got := string(AppendMailFrom(nil, &Mail{})); got != "MAIL FROM:<>\r\n" {
		t.Errorf("null mail: %q", got)
	}
	rc := &Rcpt{To: Address{"Alice+box", "Example.org"}}
	out := &RcptOut{To: Address{"kate+box", "backend"}, Rcpt: rc, AddOrcpt: true, Forward: "foo=bar\tx=y2"}
	if got := string(AppendRcptTo(nil, out)); got != "RCPT TO:<kate+box@backend> ORCPT=rfc822;Alice+2Bbox@Example.org XRCPTFORWARD=foo+3Dbar+09x+3Dy2\r\n" {
		t.Errorf("rcpt: %q", got)
	}
	rc.OrcptType, rc.Orcpt = "rfc822", "orig@x"
	if got := string(AppendRcptTo(nil, out)); got != "RCPT TO:<kate+box@backend> ORCPT=rfc822;orig@x XRCPTFORWARD=foo+3Dbar+09x+3Dy2\r\n" {
		t.Errorf("rcpt with client's ORCPT: %q", got)
	}
}

func TestReceived(t *testing.T) {
	tr := &Trace{Helo: "client.example", RemoteIP: "127.0.0.1", Hostname: "mx.test", Proto: "LMTP", ID: "SID",
		MailFrom: Address{"a", "b"}, For: "alice@example.org", Date: "Mon, 02 Jan 2006 15:04:05 +0000"}
	want := "Received: from client.example ([127.0.0.1])\r\n\tby mx.test with LMTP\r\n\tid SID\r\n\t(envelope-from <a@b>)\r\n\tfor <alice@example.org>; Mon, 02 Jan 2006 15:04:05 +0000\r\n"
	if got := string(AppendReceived(nil, tr)); got != want {
		t.Errorf("got %q", got)
	}
	tr.Helo, tr.For = "not a domain", ""
	if got := string(AppendReceived(nil, tr)); !strings.HasPrefix(got, "Received: from unknown ([127.0.0.1])") || strings.Contains(got, "for <") {
		t.Errorf("got %q", got)
	}
}

func TestXtext(t *testing.T) {
	if got := Xtext("foo=bar\tx=y2"); got != "foo+3Dbar+09x+3Dy2" {
		t.Errorf("got %q", got)
	}
	for _, s := range []string{"", "a+b=c", "\x00\xff é"} {
		if d, err := DecodeXtext(Xtext(s)); err != nil || d != s {
			t.Errorf("round trip %q: %q %v", s, d, err)
		}
	}
	if d, err := DecodeXtext("a+2bb"); err != nil || d != "a+b" {
		t.Errorf("lower-case hex: %q %v", d, err)
	}
	for _, bad := range []string{"a+", "a+2", "a+zz", "a b", "a=b"} {
		if _, err := DecodeXtext(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got := string(AppendTabEscaped(nil, "a\tb\x01c\r\n")); got != "a\x01tb\x011c\x01r\x01n" {
		t.Errorf("tab escape %q", got)
	}
}

func TestAddress(t *testing.T) {
	tests := []struct {
		path, str, user, detail string
		delim                   byte
	}{
		{"<alice@example.org>", "alice@example.org", "alice@example.org", "", 0},
		{"<Alice+box@Example.org>", "Alice+box@Example.org", "Alice@Example.org", "box", '+'},
		{"<alice>", "alice", "alice", "", 0},
		{"<\"quoted x\"@y>", "\"quoted x\"@y", "quoted x@y", "", 0},
		{"<\"a\\\"b\"@y>", "\"a\\\"b\"@y", "a\"b@y", "", 0},
		{"<\"plain\"@y>", "plain@y", "plain@y", "", 0},
		{"<@a,@b:bob@x>", "bob@x", "bob@x", "", 0},
		{"<bob@[127.0.0.1]>", "bob@[127.0.0.1]", "bob@[127.0.0.1]", "", 0},
		{"<a+b+c@d>", "a+b+c@d", "a@d", "b+c", '+'},
	}
	for _, tc := range tests {
		a, rest, why := parsePath(tc.path, false)
		if why != "" || rest != "" {
			t.Errorf("%s: %q %q", tc.path, rest, why)
			continue
		}
		if a.String() != tc.str {
			t.Errorf("%s: String %q, want %q", tc.path, a.String(), tc.str)
		}
		u, d, det := a.Username("+")
		if u != tc.user || d != tc.delim || det != tc.detail {
			t.Errorf("%s: Username %q %q %q", tc.path, u, d, det)
		}
		// What String writes parses back to the same address.
		b, _, why := parsePath("<"+a.String()+">", false)
		if why != "" || b != a {
			t.Errorf("%s: reparse %+v %q", tc.path, b, why)
		}
	}
	u, ok := ParseUsername("kate@backend")
	if !ok || u.WithDetail('+', "box").String() != "kate+box@backend" {
		t.Errorf("ParseUsername: %+v %v", u, ok)
	}
	for _, bad := range []string{"", "@x", "a@", "a\x01@b"} {
		if _, ok := ParseUsername(bad); ok {
			t.Errorf("ParseUsername(%q) accepted", bad)
		}
	}
	if !(Address{"a", "Example.ORG"}).Equal(Address{"a", "example.org"}) || (Address{"A", "x"}).Equal(Address{"a", "x"}) {
		t.Error("Equal")
	}
}
