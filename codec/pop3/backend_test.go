package pop3

// Backend login transcripts: testdata/backend/*.txt, replayed by
// codectest.BackendTranscripts (whose comment has the format). POP3's params are =user,
// =pass, =master, =mech, =client, =forward and the flags not-trusted, nopipelining, tls,
// starttls.

import (
	"bytes"
	"encoding/base64"
	"os"
	"strings"
	"testing"

	"doorman/codec/internal/codectest"
	"doorman/codec/login"
)

var backend = &codectest.Backend{
	New: func(p *login.BackendParams) codectest.BackendLogin { return NewBackendLogin(p) },

	FuzzParams:     backendFuzzParams,
	FuzzBits:       backendFuzzBits,
	FuzzMoreBits:   backendFuzzOddPass | backendFuzzPlain,
	FuzzCheckWrite: backendFuzzCheckWrite,
	FuzzCheckReply: backendFuzzCheckReply,
}

func TestBackendTranscripts(t *testing.T) { codectest.BackendTranscripts(t, os.DirFS("."), backend) }

// The reference's verbatim master-user example [V]: carol\0proxyadm\0masterpw.
func TestBackendMasterPlainPayload(t *testing.T) {
	const want = "Y2Fyb2wAcHJveHlhZG0AbWFzdGVycHc="
	if got := base64.StdEncoding.EncodeToString([]byte("carol\x00proxyadm\x00masterpw")); got != want {
		t.Fatalf("reference example: %s", got)
	}
	b := NewBackendLogin(&login.BackendParams{User: "carol", Pass: "masterpw", Master: "proxyadm"})
	_, out, res := b.Feed([]byte("+OK ready\r\n"))
	if res.Outcome != login.BackendPending || string(out) != "AUTH PLAIN "+want+"\r\n" {
		t.Fatalf("got %v %q", res.Outcome, out)
	}
}

// The reference's FORWARD example: foo=bar and x=y2.
func TestBackendForwardEncoding(t *testing.T) {
	b := NewBackendLogin(&login.BackendParams{User: "u", Pass: "p", Client: login.ClientInfo{
		RemoteIP: "127.0.0.31", RemotePort: 44741, SessionID: "0bT19Nhgxa5/AAAf", TTL: 4,
		Forward: []login.KV{{Key: "foo", Value: "bar"}, {Key: "x", Value: "y2"}},
	}})
	_, out, _ := b.Feed([]byte("+OK [XCLIENT] Fake ready.\r\n"))
	want := "XCLIENT ADDR=127.0.0.31 PORT=44741 SESSION=0bT19Nhgxa5/AAAf TTL=4 FORWARD=Zm9vPWJhcgl4PXky\r\nUSER u\r\n"
	if string(out) != want {
		t.Fatalf("wrote %q, want %q", out, want)
	}
	if got := string(backendAppendTabEscaped(nil, "a\tb\x01c\rd\ne")); got != "a\x01tb\x011c\x01rd\x01ne" {
		t.Fatalf("tab escape: %q", got)
	}
}

func TestBackendSanitize(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := backendSanitize([]byte(long))
	if len(got) > 160 || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Fatalf("long: %q (%d)", got, len(got))
	}
	if got := backendSanitize([]byte("a\x01b\xffc")); got != "a?b?c" {
		t.Fatalf("controls: %q", got)
	}
}

func TestBackendFailureReply(t *testing.T) {
	for o, want := range map[login.BackendOutcome]string{
		login.BackendProtocolError: "-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n",
		login.BackendInternal:      "-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n",
		login.BackendTempFail:      "-ERR [SYS/TEMP] Account is temporarily unavailable.\r\n",
		login.BackendRemoteConfig:  "-ERR Account is temporarily unavailable.\r\n",
		login.BackendOK:            "",
		login.BackendAuthFailed:    "",
		login.BackendPending:       "",
	} {
		if got := string(BackendFailureReply(nil, o)); got != want {
			t.Errorf("%v: %q, want %q", o, got, want)
		}
	}
}

// Reset must forget everything of the previous login, and wipe the password.
func TestBackendReset(t *testing.T) {
	p := &login.BackendParams{User: "u", Pass: "Sekr1t", Master: "m"}
	b := NewBackendLogin(p)
	b.Feed([]byte("+OK hi\r\n"))
	if b.State() != "login2" || len(b.secret) == 0 {
		t.Fatalf("after AUTH: %s, secret %d bytes", b.State(), len(b.secret))
	}
	b.Feed([]byte("+OK done\r\n"))
	if bytes.Contains(b.out[:cap(b.out)], []byte("Sekr1t")) || bytes.Contains(b.scratch[:cap(b.scratch)], []byte("Sekr1t")) {
		t.Fatal("password left in a buffer after the login")
	}
	if len(bytes.Trim(b.secret[:cap(b.secret)], "\x00")) != 0 {
		t.Fatal("SASL payload left after the login")
	}
	b.Reset(&login.BackendParams{User: "v", Pass: "w"})
	if b.State() != "banner" || b.Result().Outcome != login.BackendPending {
		t.Fatalf("after Reset: %s %v", b.State(), b.Result().Outcome)
	}
	_, out, _ := b.Feed([]byte("+OK hi\r\n"))
	if string(out) != "USER v\r\n" {
		t.Fatalf("after Reset wrote %q", out)
	}
	if out, res := b.TLSStarted(); out != nil || res.Outcome != login.BackendPending {
		t.Fatalf("TLSStarted without STLS: %q %v", out, res.Outcome)
	}
}

var (
	backendBenchBanner = []byte("+OK [XCLIENT] Dovecot ready.\r\n")
	backendBenchReply1 = []byte("+OK Updated\r\n+OK\r\n")
	backendBenchReply2 = []byte("+OK Logged in.\r\n")
)

// BenchmarkBackendLogin is one whole login (banner, XCLIENT + USER, PASS, replies) on a
// reused BackendLogin, as a pooled one would be used.
func BenchmarkBackendLogin(b *testing.B) {
	p := &login.BackendParams{
		User: "alice", Pass: "secret",
		Client: login.ClientInfo{
			SessionID: "NKUZ6dhgu+x/AAAC", RemoteIP: "127.0.0.2", RemotePort: 60603,
			LocalIP: "127.0.0.1", LocalPort: 22110, TTL: 4,
			Forward: []login.KV{{Key: "foo", Value: "bar"}},
		},
	}
	l := NewBackendLogin(p)
	b.ReportAllocs()
	for b.Loop() {
		l.Reset(p)
		if _, out, _ := l.Feed(backendBenchBanner); len(out) == 0 {
			b.Fatal("no XCLIENT")
		}
		if _, out, _ := l.Feed(backendBenchReply1); len(out) == 0 {
			b.Fatal("no PASS")
		}
		if _, _, res := l.Feed(backendBenchReply2); res.Outcome != login.BackendOK {
			b.Fatal(res.Outcome)
		}
	}
}
