package managesieve

// Backend login transcripts: testdata/backend/*.txt, replayed by
// codectest.BackendTranscripts (whose comment has the format). ManageSieve's params are
// =user, =pass, =master, =mech, =addr, =session, =port, =ttl, =forward and the flags
// starttls, tls, not-trusted.

import (
	"bytes"
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
	FuzzMoreBits:   backendFuzzOddPass,
	FuzzMaxHeld:    backendMaxLine,
	FuzzCheckReply: backendFuzzCheckReply,
	FuzzCheckOut:   backendFuzzCheckOut,
}

func TestBackendTranscripts(t *testing.T) { codectest.BackendTranscripts(t, os.DirFS("."), backend) }

func TestBackendFailureReply(t *testing.T) {
	for o, want := range map[login.BackendOutcome]string{
		login.BackendProtocolError: "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n",
		login.BackendInternal:      "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n",
		login.BackendTempFail:      "NO (TRYLATER) \"Account is temporarily unavailable.\"\r\n",
		login.BackendRemoteConfig:  "NO \"Account is temporarily unavailable.\"\r\n",
		login.BackendOK:            "",
		login.BackendAuthFailed:    "",
	} {
		if got := string(BackendFailureReply(nil, o)); got != want {
			t.Errorf("%v: %q, want %q", o, got, want)
		}
	}
}

// Reset must forget everything of the previous login, and the password must not stay
// in b's buffers.
func TestBackendReset(t *testing.T) {
	p := &login.BackendParams{User: "u", Pass: "Sekr1t"}
	b := NewBackendLogin(p)
	_, out, _ := b.Feed([]byte("\"SASL\" \"PLAIN\"\r\n\"XCLIENT\"\r\nOK\r\n"))
	if string(out) != "XCLIENT ADDR= PORT=0 SESSION= TTL=0\r\n" {
		t.Fatalf("wrote %q", out)
	}
	_, out, _ = b.Feed([]byte("OK\r\n"))
	if !strings.Contains(string(out), "AUTHENTICATE") {
		t.Fatalf("wrote %q", out)
	}
	if _, _, res := b.Feed([]byte("OK\r\n")); res.Outcome != login.BackendOK {
		t.Fatalf("outcome %v", res.Outcome)
	}
	for _, buf := range [][]byte{b.out[:cap(b.out)], b.scratch[:cap(b.scratch)]} {
		if bytes.Contains(buf, []byte("Sekr1t")) || bytes.Contains(buf, []byte("dQB1AFNla3IxdA")) {
			t.Fatal("password left in a buffer after the login")
		}
	}
	b.Reset(&login.BackendParams{User: "v", Pass: "w"})
	if b.State() != "none" || b.Result().Outcome != login.BackendPending {
		t.Fatalf("after Reset: %s %v", b.State(), b.Result().Outcome)
	}
	_, out, _ = b.Feed([]byte("\"SASL\" \"PLAIN\"\r\nOK\r\n"))
	if string(out) != "AUTHENTICATE \"PLAIN\" \"dgB2AHc=\"\r\n" {
		t.Fatalf("after Reset wrote %q", out)
	}
}

// Feed before any byte (before connecting) says whether the parameters are usable;
// TLSStarted out of turn changes nothing.
func TestBackendBeforeConnect(t *testing.T) {
	b := NewBackendLogin(&login.BackendParams{User: "u", Pass: "p"})
	if n, out, res := b.Feed(nil); n != 0 || out != nil || res.Outcome != login.BackendPending {
		t.Fatalf("Feed(nil): %d %q %v", n, out, res.Outcome)
	}
	if out, res := b.TLSStarted(); out != nil || res.Outcome != login.BackendPending {
		t.Fatalf("TLSStarted: %q %v", out, res.Outcome)
	}
}

// An engine that hands Feed fewer bytes than it left unconsumed gets a fresh look, not
// one that goes on where the lost bytes left off.
func TestBackendShortRefeed(t *testing.T) {
	b := NewBackendLogin(&login.BackendParams{User: "u", Pass: "p"})
	if n, _, _ := b.Feed([]byte("\"SASL\" {10}\r\nPLA")); n != 0 {
		t.Fatalf("consumed %d of a partial response", n)
	}
	n, out, res := b.Feed([]byte("OK\r\n"))
	if n != 4 || out != nil || res.Outcome != login.BackendRemoteConfig {
		t.Fatalf("%d %q %v", n, out, res.Outcome)
	}
}

var (
	backendBenchCaps = []byte("\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\"SIEVE\" \"fileinto reject envelope " +
		"encoded-character vacation subaddress comparator-i;ascii-numeric relational regex imap4flags copy include " +
		"variables body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext\"\r\n" +
		"\"NOTIFY\" \"mailto\"\r\n\"SASL\" \"PLAIN LOGIN\"\r\n\"VERSION\" \"1.0\"\r\n\"XCLIENT\"\r\nOK \"Dovecot ready.\"\r\n")
	backendBenchUpdated = []byte("OK \"Updated\"\r\n")
	backendBenchOK      = []byte("OK \"Logged in.\"\r\n")
)

// BenchmarkBackendLogin is one whole login (capabilities, XCLIENT, AUTHENTICATE,
// replies) on a reused BackendLogin, as a pooled one would be used.
func BenchmarkBackendLogin(b *testing.B) {
	p := &login.BackendParams{
		User: "alice", Pass: "secret",
		Client: login.ClientInfo{SessionID: "ui/c+NhgJa9/AAAz", RemoteIP: "127.0.0.51", RemotePort: 44837, TTL: 4,
			Forward: []login.KV{{Key: "foo", Value: "bar"}}},
	}
	l := NewBackendLogin(p)
	b.ReportAllocs()
	for b.Loop() {
		l.Reset(p)
		if _, out, _ := l.Feed(backendBenchCaps); len(out) == 0 {
			b.Fatal("no XCLIENT")
		}
		if _, out, _ := l.Feed(backendBenchUpdated); len(out) == 0 {
			b.Fatal("no AUTHENTICATE")
		}
		if _, _, res := l.Feed(backendBenchOK); res.Outcome != login.BackendOK {
			b.Fatal(res.Outcome)
		}
	}
}
