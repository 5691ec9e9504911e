package codectest

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"doorman/codec/login"
)

// FuzzBackendLogin feeds arbitrary backend bytes to a login whose params come from the
// fuzzed bits (Backend.FuzzParams), seeded from the backend transcripts of fsys, in
// chunks of the fuzzed size and again in small ones: whatever the split, the login must
// say and write the same, and always keep the promises of login.Backend.
func FuzzBackendLogin(f *testing.F, fsys fs.FS, be *Backend) {
	for _, tr := range backendLoadTranscripts(f, fsys) {
		var data []byte
		for _, st := range tr.steps {
			if st.kind == "B" {
				data = append(data, st.data...)
			}
		}
		bits := be.FuzzBits(&tr.params)
		f.Add(data, bits, uint8(0))
		f.Add(data, bits|be.FuzzMoreBits, uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, bits, chunk uint8) {
		p := be.FuzzParams(bits)
		out1, res1 := backendFuzzRun(t, be, p, data, int(chunk))
		if p.StartTLS {
			return // what is dropped after STARTTLS depends on how bytes were split
		}
		// However the bytes are split, the login must say and do the same. (Byte by
		// byte only for short inputs: minimizing long ones would take minutes.)
		other := 1
		if len(data) > 512 {
			other = 5
		}
		out2, res2 := backendFuzzRun(t, be, p, data, other)
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

// backendFuzzRun feeds data to a login in chunks of chunk bytes (0: all at once), doing
// the engine's part on BackendStartTLS, and checks what must always hold.
func backendFuzzRun(t *testing.T, be *Backend, p *login.BackendParams, data []byte, chunk int) (out []byte, res login.BackendResult) {
	b := be.New(p)
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
		if be.FuzzCheckWrite != nil {
			if err := be.FuzzCheckWrite(o); err != nil {
				t.Fatal(err)
			}
		}
		if be.FuzzMaxHeld > 0 && len(pending)-consumed > be.FuzzMaxHeld && !r.Outcome.Final() && r.Outcome != login.BackendStartTLS {
			t.Fatalf("holds %d bytes", len(pending)-consumed)
		}
		out = append(out, o...)
		pending = pending[consumed:]
		res = r
		if st := b.State(); st == "" {
			t.Fatal("no state")
		}
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
		if !bytes.HasSuffix(res.ClientReply, []byte("\r\n")) {
			t.Fatalf("client reply %q doesn't end in CRLF", res.ClientReply)
		}
		if be.FuzzCheckReply != nil {
			if err := be.FuzzCheckReply(p, res); err != nil {
				t.Fatal(err)
			}
		}
	} else if res.ClientReply != nil {
		t.Fatalf("client reply %q with outcome %v", res.ClientReply, res.Outcome)
	}
	if be.FuzzCheckOut != nil {
		if err := be.FuzzCheckOut(p, out); err != nil {
			t.Fatal(err)
		}
	}
	return out, res
}

// LastLine is the last line of a CRLF-terminated reply, without its CRLF.
func LastLine(reply []byte) []byte {
	last := bytes.TrimSuffix(reply, []byte("\r\n"))
	if i := bytes.LastIndex(last, []byte("\r\n")); i >= 0 {
		last = last[i+2:]
	}
	return last
}
