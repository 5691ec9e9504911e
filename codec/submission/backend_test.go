package submission

// Backend login transcripts: testdata/backend/*.txt, replayed by
// codectest.BackendTranscripts (whose comment has the format). Submission's params are
// =helo (ClientTag, the client's EHLO domain), =user, =pass, =master, =mech, =session,
// =addr, =port, =ttl, =forward and the flags not-trusted, starttls, tls, noauth.

import (
	"bytes"
	"encoding/base64"
	"os"
	"strings"
	"testing"

	"doorman/codec/internal/codectest"
)

var backend = &codectest.Backend{
	New: func(p *BackendParams) codectest.BackendLogin { return NewBackendLogin(p) },

	FuzzParams:     backendFuzzParams,
	FuzzBits:       backendFuzzBits,
	FuzzMoreBits:   backendFuzzLongForward,
	FuzzCheckReply: backendFuzzCheckReply,
	FuzzCheckOut:   backendFuzzCheckOut,
}

func TestBackendTranscripts(t *testing.T) { codectest.BackendTranscripts(t, os.DirFS("."), backend) }

// The reference's verbatim master-user example [V]: carol\0proxyadm\0masterpw.
func TestBackendMasterPlainPayload(t *testing.T) {
	const want = "Y2Fyb2wAcHJveHlhZG0AbWFzdGVycHc="
	if got := base64.StdEncoding.EncodeToString([]byte("carol\x00proxyadm\x00masterpw")); got != want {
		t.Fatalf("reference example: %s", got)
	}
	b := NewBackendLogin(&BackendParams{User: "carol", Pass: "masterpw", Master: "proxyadm"})
	b.Feed([]byte("220 hi\r\n"))
	_, out, res := b.Feed([]byte("250-x\r\n250 AUTH PLAIN\r\n"))
	if res.Outcome != BackendPending || string(out) != "AUTH PLAIN "+want+"\r\n" {
		t.Fatalf("got %v %q", res.Outcome, out)
	}
}

func TestBackendReplyStatus(t *testing.T) {
	for _, c := range []struct {
		line   string
		status int
		valid  bool
	}{
		{"220 ok", 220, true},
		{"250-more", 250, true},
		{"220 ", 220, true},
		{"220", 0, false},
		{"", 0, false},
		{"2200 x", 0, false},
		{"2x0 x", 2, false},
		{"199 x", 199, false},
		{"559 x", 559, true},
		{"560 x", 560, false},
		{"x20 y", 0, false},
		{"* OK", 0, false},
	} {
		if s, v := backendReplyStatus([]byte(c.line)); s != c.status || v != c.valid {
			t.Errorf("%q: %d %v, want %d %v", c.line, s, v, c.status, c.valid)
		}
	}
}

func TestBackendStripEnhanced(t *testing.T) {
	for in, want := range map[string]string{
		"2.7.0 Logged in":   "Logged in",
		"5.7.8 bad":         "bad",
		"4.123.456 x":       "x",
		"5.. x":             "x", // Dovecot allows no digits at all
		"5.1234.1 x":        "5.1234.1 x",
		"3.0.0 x":           "3.0.0 x",
		"2.0.0x":            "2.0.0x",
		"2.0.0":             "2.0.0",
		"Logged in":         "Logged in",
		"VXNlcm5hbWU6":      "VXNlcm5hbWU6",
		"2.7.0  two spaces": " two spaces",
	} {
		if got := string(backendStripEnhanced([]byte(in))); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestBackendXtext(t *testing.T) {
	in := []byte("a+b=c d\x00\xff~!")
	if got := string(backendAppendXtext(nil, in)); got != "a+2Bb+3Dc+20d+00+FF~!" {
		t.Errorf("xtext %q", got)
	}
}

func TestBackendSanitize(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := backendSanitize([]byte(long), 160)
	if len(got) > 160 || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Fatalf("long: %q (%d)", got, len(got))
	}
	if got := backendSanitize([]byte("a\x01b\xffc"), 160); got != "a?b?c" {
		t.Fatalf("controls: %q", got)
	}
}

func TestBackendFailureReply(t *testing.T) {
	for o := BackendPending; o <= BackendStartTLS; o++ {
		got := string(BackendFailureReply(nil, o))
		switch o {
		case BackendProtocolError, BackendInternal, BackendTempFail, BackendRemoteConfig:
			if got != "454 4.7.0 Account is temporarily unavailable.\r\n" {
				t.Errorf("%v: %q", o, got)
			}
		default:
			if got != "" {
				t.Errorf("%v: %q", o, got)
			}
		}
	}
}

// Reset must forget everything of the previous login, and wipe the password.
func TestBackendReset(t *testing.T) {
	p := &BackendParams{ClientTag: "client.example", User: "u", Pass: "Sekr1t"}
	b := NewBackendLogin(p)
	b.Feed([]byte("220 hi\r\n250 AUTH PLAIN\r\n"))
	b.Feed([]byte("235 ok\r\n"))
	if b.Result().Outcome != BackendOK {
		t.Fatalf("first login: %v", b.Result().Outcome)
	}
	if bytes.Contains(b.sasl[:cap(b.sasl)], []byte(base64.StdEncoding.EncodeToString([]byte("u\x00u\x00Sekr1t")))) {
		t.Fatal("SASL payload left after the login")
	}
	if bytes.Contains(b.out[:cap(b.out)], []byte("dTx1AFNla3IxdA")) {
		t.Fatal("output left after the login")
	}
	b.Reset(&BackendParams{User: "v", Pass: "w"})
	if b.State() != "banner" || b.Result().Outcome != BackendPending {
		t.Fatalf("after Reset: %s %v", b.State(), b.Result().Outcome)
	}
	_, out, _ := b.Feed([]byte("220 hi\r\n"))
	if string(out) != "EHLO doorman\r\n" {
		t.Fatalf("after Reset wrote %q", out)
	}
}

// The EHLO name is the client's only if it can stand in an EHLO line.
func TestBackendEHLOName(t *testing.T) {
	for tag, want := range map[string]string{
		"client.example":         "client.example",
		"[IPv6:2001:db8::1]":     "[IPv6:2001:db8::1]",
		"":                       "doorman",
		"two words":              "doorman",
		"crlf\r\nMAIL FROM:<>":   "doorman",
		strings.Repeat("a", 256): "doorman",
	} {
		b := NewBackendLogin(&BackendParams{ClientTag: tag, User: "u", Pass: "p"})
		if _, out, _ := b.Feed([]byte("220 hi\r\n")); string(out) != "EHLO "+want+"\r\n" {
			t.Errorf("tag %q: %q", tag, out)
		}
	}
}

var (
	backendBenchParams = &BackendParams{
		ClientTag: "client.example", User: "alice", Pass: "secret",
		Client: ClientInfo{
			SessionID: "ofPv9thgrZ1/AAAp", RemoteIP: "127.0.0.41", RemotePort: 40365, TTL: 4,
			Forward: []KV{{Key: "foo", Value: "bar"}},
		},
	}
	backendBenchBanner = []byte("220 fake.backend ESMTP Fake\r\n")
	backendBenchEHLO   = []byte("250-fake.backend\r\n250-XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL FORWARD\r\n" +
		"250-AUTH PLAIN\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n")
	backendBenchXCLIENT = []byte("220 fake.backend ESMTP Fake\r\n250-fake.backend\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
	backendBenchAuth    = []byte("235 2.7.0 Logged in.\r\n")
)

// BenchmarkBackendLogin is one whole login (banner, EHLO, XCLIENT, EHLO, AUTH) on a
// reused BackendLogin, as a pooled one would be used.
func BenchmarkBackendLogin(b *testing.B) {
	l := NewBackendLogin(backendBenchParams)
	b.ReportAllocs()
	for b.Loop() {
		l.Reset(backendBenchParams)
		for _, in := range [][]byte{backendBenchBanner, backendBenchEHLO, backendBenchXCLIENT} {
			if _, out, _ := l.Feed(in); len(out) == 0 {
				b.Fatal("no commands")
			}
		}
		if _, _, res := l.Feed(backendBenchAuth); res.Outcome != BackendOK {
			b.Fatal(res.Outcome)
		}
	}
}
