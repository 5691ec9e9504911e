package submission

import (
	"bytes"
	"strings"
	"testing"
)

// Parameter bits of FuzzBackendLogin.
const (
	backendFuzzNotTrusted = 1 << iota
	backendFuzzStartTLS
	backendFuzzNoAuth
	backendFuzzMaster
	backendFuzzPlain
	backendFuzzLongPass
	backendFuzzNoHelo
	backendFuzzLongForward
)

func backendFuzzParams(bits uint8) *BackendParams {
	p := &BackendParams{
		ClientTag: "client.example", User: "fuzzuser", Pass: "Fuzz-Pa55word",
		Client: ClientInfo{
			SessionID: "fuzzsession", RemoteIP: "192.0.2.7", RemotePort: 50000, TTL: 4,
			Forward: []KV{{Key: "n", Value: "J\xf6rg"}},
		},
		NotTrusted: bits&backendFuzzNotTrusted != 0,
		StartTLS:   bits&backendFuzzStartTLS != 0,
		NoAuth:     bits&backendFuzzNoAuth != 0,
	}
	if bits&backendFuzzMaster != 0 {
		p.Master = "fuzzmaster"
	}
	if bits&backendFuzzPlain != 0 {
		p.Mech = "PLAIN"
	}
	if bits&backendFuzzLongPass != 0 {
		p.Pass = strings.Repeat("Fuzz-Pa55word", 30) // the initial response waits for a 334
	}
	if bits&backendFuzzNoHelo != 0 {
		p.ClientTag = ""
	}
	if bits&backendFuzzLongForward != 0 {
		p.Client.Forward = append(p.Client.Forward, KV{Key: "big", Value: strings.Repeat("v", 400)})
	}
	return p
}

// backendFuzzRun feeds data to a login in chunks of chunk bytes (0: all at once), doing
// the engine's part on BackendStartTLS, and checks what must always hold.
func backendFuzzRun(t *testing.T, p *BackendParams, data []byte, chunk int) (out []byte, res BackendResult) {
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
		if before != BackendPending && (consumed != 0 || o != nil || r.Outcome != before) {
			t.Fatalf("Feed after %v: consumed %d, wrote %q, got %v", before, consumed, o, r.Outcome)
		}
		if r.Outcome.Final() && o != nil {
			t.Fatalf("output %q with final outcome %v", o, r.Outcome)
		}
		out = append(out, o...)
		pending = pending[consumed:]
		res = r
		if st := b.State(); st == "" {
			t.Fatal("no state")
		}
		if r.Outcome == BackendStartTLS {
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
	if bytes.Contains(out, []byte(p.Pass)) {
		t.Fatalf("the password went out in clear: %q", out)
	}
	if res.Outcome.Final() {
		reply := res.ClientReply
		if !bytes.HasSuffix(reply, []byte("\r\n")) || len(reply) < 6 {
			t.Fatalf("client reply %q doesn't end in CRLF", reply)
		}
		last := reply[:len(reply)-2]
		if i := bytes.LastIndex(last, []byte("\r\n")); i >= 0 {
			last = last[i+2:]
		}
		if st, ok := backendReplyStatus(last); !ok || last[3] != ' ' {
			t.Fatalf("client reply %q doesn't end with a last reply line (%d)", reply, st)
		}
		if res.Outcome == BackendOK && reply[0] != '2' {
			t.Fatalf("success with reply %q", reply)
		}
	} else if res.ClientReply != nil {
		t.Fatalf("client reply %q with outcome %v", res.ClientReply, res.Outcome)
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
		for _, c := range []struct {
			on  bool
			bit uint8
		}{
			{p.NotTrusted, backendFuzzNotTrusted}, {p.StartTLS, backendFuzzStartTLS},
			{p.NoAuth, backendFuzzNoAuth}, {p.Master != "", backendFuzzMaster},
			{p.Mech != "", backendFuzzPlain}, {len(p.Pass) > 300, backendFuzzLongPass},
			{p.ClientTag == "", backendFuzzNoHelo},
		} {
			if c.on {
				bits |= c.bit
			}
		}
		f.Add(data, bits, uint8(0))
		f.Add(data, bits|backendFuzzLongForward, uint8(7))
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
