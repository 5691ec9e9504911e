package managesieve

import (
	"bytes"
	"strings"
	"testing"

	"doorman/codec/login"
)

// Parameter bits of FuzzBackendLogin.
const (
	backendFuzzStartTLS = 1 << iota
	backendFuzzMaster
	backendFuzzForward
	backendFuzzNotTrusted
	backendFuzzOddPass
)

func backendFuzzParams(bits uint8) *login.BackendParams {
	p := &login.BackendParams{
		User: "fuzzuser", Pass: "Fuzz-Pa55word",
		StartTLS:   bits&backendFuzzStartTLS != 0,
		NotTrusted: bits&backendFuzzNotTrusted != 0,
		Client:     login.ClientInfo{SessionID: "fuzzsession", RemoteIP: "192.0.2.1", RemotePort: 4190, TTL: 4},
	}
	if bits&backendFuzzMaster != 0 {
		p.Master = "fuzzmaster"
	}
	if bits&backendFuzzForward != 0 {
		p.Client.Forward = []login.KV{{Key: "n", Value: "J\xf6rg\t1"}}
	}
	if bits&backendFuzzOddPass != 0 {
		p.Pass = "Fuzz \"\r\nPa55\xffword"
	}
	return p
}

// backendFuzzRun feeds data to a login in chunks of chunk bytes (0: all at once), doing
// the engine's part on BackendStartTLS, and checks what must always hold.
func backendFuzzRun(t *testing.T, p *login.BackendParams, data []byte, chunk int) (out []byte, res login.BackendResult) {
	b := NewBackendLogin(p)
	var pending []byte
	for len(data) > 0 || len(pending) > 0 {
		n := len(data)
		if chunk > 0 {
			n = min(n, chunk)
		}
		pending = append(pending, data[:n]...)
		data = data[n:]
		before := b.Result().Outcome
		consumed, o, r := b.Feed(pending)
		if consumed < 0 || consumed > len(pending) {
			t.Fatalf("consumed %d of %d", consumed, len(pending))
		}
		if before != login.BackendPending && (consumed != 0 || o != nil || r.Outcome != before) {
			t.Fatalf("Feed after %v: consumed %d, wrote %q, got %v", before, consumed, o, r.Outcome)
		}
		if r.Outcome.Final() && o != nil {
			t.Fatalf("output %q with final outcome %v", o, r.Outcome)
		}
		if len(pending)-consumed > backendMaxLine && !r.Outcome.Final() && r.Outcome != login.BackendStartTLS {
			t.Fatalf("holds %d bytes", len(pending)-consumed)
		}
		out = append(out, o...)
		pending = pending[consumed:]
		res = r
		_ = b.State()
		if r.Outcome == login.BackendStartTLS {
			pending = nil
			o, r = b.TLSStarted()
			out = append(out, o...)
			res = r
		}
		if n == 0 && consumed == 0 {
			break // all fed, nothing more to take
		}
	}
	if strings.Contains(res.Text, p.Pass) {
		t.Fatalf("Text holds the password: %q", res.Text)
	}
	if res.Outcome.Final() {
		reply := res.ClientReply
		if !bytes.HasSuffix(reply, []byte("\r\n")) {
			t.Fatalf("client reply %q doesn't end in CRLF", reply)
		}
		if res.Outcome != login.BackendOK && !bytes.HasPrefix(reply, []byte("NO ")) {
			t.Fatalf("client reply %q for %v", reply, res.Outcome)
		}
	} else if res.ClientReply != nil {
		t.Fatalf("client reply %q with outcome %v", res.ClientReply, res.Outcome)
	}
	if bytes.Count(out, []byte("\n")) > 3 {
		t.Fatalf("wrote more commands than a login has: %q", out)
	}
	return out, res
}

func FuzzBackendLogin(f *testing.F) {
	for _, tr := range backendLoadTranscripts(f) {
		var data []byte
		for _, st := range tr.steps {
			if st.kind == "B" {
				data = append(data, st.data...)
			}
		}
		var bits uint8
		p := tr.params
		if p.StartTLS {
			bits |= backendFuzzStartTLS
		}
		if p.Master != "" {
			bits |= backendFuzzMaster
		}
		if len(p.Client.Forward) > 0 {
			bits |= backendFuzzForward
		}
		f.Add(data, bits, uint8(0))
		f.Add(data, bits|backendFuzzOddPass, uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, bits, chunk uint8) {
		p := backendFuzzParams(bits)
		out1, res1 := backendFuzzRun(t, p, data, int(chunk))
		if p.StartTLS {
			return // what is dropped after STARTTLS depends on how bytes were split
		}
		// However the bytes are split, the login must say and do the same. (Byte by
		// byte only for short inputs: minimizing long ones would take minutes.)
		other := 1
		if len(data) > 512 {
			other = 5
		}
		out2, res2 := backendFuzzRun(t, p, data, other)
		if res1.Outcome != res2.Outcome || res1.Text != res2.Text || !bytes.Equal(res1.ClientReply, res2.ClientReply) {
			t.Fatalf("split %d: %v %q %q; split %d: %v %q %q", chunk,
				res1.Outcome, res1.Text, res1.ClientReply, other, res2.Outcome, res2.Text, res2.ClientReply)
		}
		if res1.Outcome.Final() {
			// What a login still had to write when it ended is dropped, and where
			// it ended within a read depends on the split.
			if !bytes.HasPrefix(out1, out2) && !bytes.HasPrefix(out2, out1) {
				t.Fatalf("split %d wrote %q; split %d %q", chunk, out1, other, out2)
			}
		} else if !bytes.Equal(out1, out2) {
			t.Fatalf("split %d wrote %q; split %d %q", chunk, out1, other, out2)
		}
	})
}
