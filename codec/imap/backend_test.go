package imap

// Backend login transcripts: testdata/backend/*.txt, replayed by
// codectest.BackendTranscripts (whose comment has the format). IMAP's params are =tag,
// =user, =pass, =master, =mech, =id and the flags not-trusted, client-capability,
// nopipelining, tls, starttls.

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
	FuzzMoreBits:   backendFuzzLiteralPass,
	FuzzCheckReply: backendFuzzCheckReply,
}

func TestBackendTranscripts(t *testing.T) { codectest.BackendTranscripts(t, os.DirFS("."), backend) }

// The reference's verbatim master-user example [V]: carol\0proxyadm\0masterpw.
func TestBackendMasterPlainPayload(t *testing.T) {
	const want = "Y2Fyb2wAcHJveHlhZG0AbWFzdGVycHc="
	if got := base64.StdEncoding.EncodeToString([]byte("carol\x00proxyadm\x00masterpw")); got != want {
		t.Fatalf("reference example: %s", got)
	}
	b := NewBackendLogin(&BackendParams{ClientTag: "b", User: "carol", Pass: "masterpw", Master: "proxyadm"})
	_, out, res := b.Feed([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR ID] ready\r\n"))
	if res.Outcome != BackendPending || string(out) != "L AUTHENTICATE PLAIN "+want+"\r\n" {
		t.Fatalf("got %v %q", res.Outcome, out)
	}
}

func TestBackendAppendString(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", `""`},
		{"alice", `"alice"`},
		{`a"b\c`, `"a\"b\\c"`},
		{`""""`, `"\"\"\"\""`},         // 4 quoted-specials: still quoted
		{`"""""`, "{5}\r\n\"\"\"\"\""}, // the 5th makes it a literal
		{"p\xe4ss", "{4}\r\np\xe4ss"},  // 8-bit
		{"a\r\nb", "{4}\r\na\r\nb"},    // CR LF
		{"a\x00b", "{3}\r\na\x00b"},    // NUL
		{"tab\tok", "\"tab\tok\""},     // other controls are TEXT-CHARs
		{"NIL", `"NIL"`},               // always a string, never an atom
	} {
		if got := string(AppendString([]byte("x "), c.in)); got != "x "+c.want {
			t.Errorf("AppendString(%q) = %q, want %q", c.in, got, "x "+c.want)
		}
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

func TestBackendOutcomeProperties(t *testing.T) {
	for o := BackendPending; o <= BackendStartTLS; o++ {
		retry := o == BackendTempFail || o == BackendProtocolError
		if o.Retryable() != retry {
			t.Errorf("%v: Retryable %v", o, o.Retryable())
		}
		if o.String() == "unknown" {
			t.Errorf("%d has no name", o)
		}
	}
	if got := string(BackendFailureReply(nil, "a1", BackendRemoteConfig)); got != "a1 NO [SERVERBUG] Account is temporarily unavailable.\r\n" {
		t.Errorf("remote-config reply %q", got)
	}
	if got := BackendFailureReply(nil, "a1", BackendOK); len(got) != 0 {
		t.Errorf("ok reply %q", got)
	}
}

// Reset must forget everything of the previous login, and wipe the password.
func TestBackendReset(t *testing.T) {
	p := &BackendParams{ClientTag: "a", User: "u", Pass: "Sekr1t"}
	b := NewBackendLogin(p)
	b.Feed([]byte("* OK [CAPABILITY IMAP4rev1 ID LITERAL+] hi\r\n"))
	b.Feed([]byte("L OK done\r\n"))
	if bytes.Contains(b.pipe[:cap(b.pipe)], []byte("Sekr1t")) {
		t.Fatal("password left in pipe after the login")
	}
	b.Reset(&BackendParams{ClientTag: "z", User: "v", Pass: "w"})
	if b.State() != "/none" || b.Result().Outcome != BackendPending {
		t.Fatalf("after Reset: %s %v", b.State(), b.Result().Outcome)
	}
	_, out, _ := b.Feed([]byte("* OK hi\r\n"))
	if string(out) != "C CAPABILITY\r\nL LOGIN \"v\" \"w\"\r\n" {
		t.Fatalf("after Reset wrote %q", out)
	}
}

var backendBenchBanner = []byte("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n")
var backendBenchReply = []byte("* ID (\"name\" \"Dovecot\")\r\nI OK ID completed.\r\n" +
	"L OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT MOVE LITERAL+] Logged in\r\n")

// BenchmarkBackendLogin is one whole login (banner, ID + LOGIN, replies) on a reused
// BackendLogin, as a pooled one would be used.
func BenchmarkBackendLogin(b *testing.B) {
	p := &BackendParams{
		ClientTag: "b", User: "alice", Pass: "secret",
		ID: []BackendIDField{
			{Key: "x-session-id", Value: "NKUZ6dhgu+x/AAAC"}, {Key: "x-originating-ip", Value: "127.0.0.2"},
			{Key: "x-originating-port", Value: "60603"}, {Key: "x-connected-ip", Value: "127.0.0.1"},
			{Key: "x-connected-port", Value: "22143"}, {Key: "x-proxy-ttl", Value: "4"},
		},
	}
	l := NewBackendLogin(p)
	b.ReportAllocs()
	for b.Loop() {
		l.Reset(p)
		if _, out, _ := l.Feed(backendBenchBanner); len(out) == 0 {
			b.Fatal("no commands")
		}
		if _, _, res := l.Feed(backendBenchReply); res.Outcome != BackendOK {
			b.Fatal(res.Outcome)
		}
	}
}
