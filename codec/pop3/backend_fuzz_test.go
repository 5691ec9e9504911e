package pop3

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
	backendFuzzNotTrusted = 1 << iota
	backendFuzzNoPipelining
	backendFuzzStartTLS
	backendFuzzMaster
	backendFuzzPlain
	backendFuzzForward
	backendFuzzOddPass
)

func backendFuzzParams(bits uint8) *login.BackendParams {
	p := &login.BackendParams{
		User: "fuzzuser", Pass: "Fuzz-Pa55word",
		NotTrusted:   bits&backendFuzzNotTrusted != 0,
		NoPipelining: bits&backendFuzzNoPipelining != 0,
		StartTLS:     bits&backendFuzzStartTLS != 0,
		Client: login.ClientInfo{
			SessionID: "fuzzsession", RemoteIP: "192.0.2.1", RemotePort: 4711, TTL: 4,
		},
	}
	if bits&backendFuzzMaster != 0 {
		p.Master = "fuzzmaster"
	}
	if bits&backendFuzzPlain != 0 {
		p.Mech = "PLAIN"
	}
	if bits&backendFuzzForward != 0 {
		p.Client.Forward = []login.KV{{Key: "n", Value: "J\xf6rg\tx"}}
	}
	if bits&backendFuzzOddPass != 0 {
		p.Pass = "Fuzz\r\nPa55\xffword" // INTERNAL unless PLAIN
	}
	return p
}

// backendFuzzBits are the bits of a transcript's params.
func backendFuzzBits(p *login.BackendParams) uint8 {
	var bits uint8
	for _, c := range []struct {
		on  bool
		bit uint8
	}{
		{p.NotTrusted, backendFuzzNotTrusted}, {p.NoPipelining, backendFuzzNoPipelining},
		{p.StartTLS, backendFuzzStartTLS}, {p.Master != "", backendFuzzMaster},
		{p.Mech != "", backendFuzzPlain}, {len(p.Client.Forward) > 0, backendFuzzForward},
	} {
		if c.on {
			bits |= c.bit
		}
	}
	return bits
}

// Each Feed writes whole CRLF lines.
func backendFuzzCheckWrite(o []byte) error {
	if bytes.Count(o, []byte("\r\n")) != bytes.Count(o, []byte("\n")) || (len(o) > 0 && !bytes.HasSuffix(o, []byte("\r\n"))) {
		return fmt.Errorf("output %q is not whole CRLF lines", o)
	}
	return nil
}

// The client reply is one +OK line for a success, one -ERR line otherwise.
func backendFuzzCheckReply(_ *login.BackendParams, res login.BackendResult) error {
	reply := res.ClientReply
	if bytes.Count(reply, []byte("\n")) != 1 {
		return fmt.Errorf("client reply %q is not one line", reply)
	}
	ok := bytes.HasPrefix(reply, []byte("+OK"))
	if ok != (res.Outcome == login.BackendOK) || (!ok && !bytes.HasPrefix(reply, []byte("-ERR"))) {
		return fmt.Errorf("client reply %q with outcome %v", reply, res.Outcome)
	}
	return nil
}

func FuzzBackendLogin(f *testing.F) { codectest.FuzzBackendLogin(f, os.DirFS("."), backend) }
