package submission

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"doorman/codec/internal/codectest"
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

// backendFuzzBits are the bits of a transcript's params.
func backendFuzzBits(p *BackendParams) uint8 {
	var bits uint8
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
	return bits
}

// The client reply ends with a last reply line, 2xx for a success.
func backendFuzzCheckReply(_ *BackendParams, res BackendResult) error {
	reply := res.ClientReply
	if len(reply) < 6 {
		return fmt.Errorf("client reply %q doesn't end in CRLF", reply)
	}
	last := codectest.LastLine(reply)
	if st, ok := backendReplyStatus(last); !ok || last[3] != ' ' {
		return fmt.Errorf("client reply %q doesn't end with a last reply line (%d)", reply, st)
	}
	if res.Outcome == BackendOK && reply[0] != '2' {
		return fmt.Errorf("success with reply %q", reply)
	}
	return nil
}

// The password never goes out in clear.
func backendFuzzCheckOut(p *BackendParams, out []byte) error {
	if bytes.Contains(out, []byte(p.Pass)) {
		return fmt.Errorf("the password went out in clear: %q", out)
	}
	return nil
}

func FuzzBackendLogin(f *testing.F) { codectest.FuzzBackendLogin(f, os.DirFS("."), backend) }
