package managesieve

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"doorman/codec/internal/codectest"
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

// backendFuzzBits are the bits of a transcript's params.
func backendFuzzBits(p *login.BackendParams) uint8 {
	var bits uint8
	if p.StartTLS {
		bits |= backendFuzzStartTLS
	}
	if p.Master != "" {
		bits |= backendFuzzMaster
	}
	if len(p.Client.Forward) > 0 {
		bits |= backendFuzzForward
	}
	return bits
}

// A failure's client reply is a NO response.
func backendFuzzCheckReply(_ *login.BackendParams, res login.BackendResult) error {
	if res.Outcome != login.BackendOK && !bytes.HasPrefix(res.ClientReply, []byte("NO ")) {
		return fmt.Errorf("client reply %q for %v", res.ClientReply, res.Outcome)
	}
	return nil
}

// A login writes no more than three lines.
func backendFuzzCheckOut(_ *login.BackendParams, out []byte) error {
	if bytes.Count(out, []byte("\n")) > 3 {
		return fmt.Errorf("wrote more commands than a login has: %q", out)
	}
	return nil
}

func FuzzBackendLogin(f *testing.F) { codectest.FuzzBackendLogin(f, os.DirFS("."), backend) }
