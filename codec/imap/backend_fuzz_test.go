package imap

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"doorman/codec/internal/codectest"
)

// Parameter bits of FuzzBackendLogin.
const (
	backendFuzzNotTrusted = 1 << iota
	backendFuzzClientCapability
	backendFuzzNoPipelining
	backendFuzzStartTLS
	backendFuzzTLS
	backendFuzzMaster
	backendFuzzPlain
	backendFuzzLiteralPass
)

func backendFuzzParams(bits uint8) *BackendParams {
	p := &BackendParams{
		ClientTag: "ftag", User: "fuzzuser", Pass: "Fuzz-Pa55word",
		ID:                   []BackendIDField{{Key: "x-session-id", Value: "fuzzsession"}, {Key: "x-forward-n", Value: "J\xf6rg"}},
		NotTrusted:           bits&backendFuzzNotTrusted != 0,
		ClientSentCapability: bits&backendFuzzClientCapability != 0,
		NoPipelining:         bits&backendFuzzNoPipelining != 0,
		StartTLS:             bits&backendFuzzStartTLS != 0,
		TLS:                  bits&backendFuzzTLS != 0,
	}
	if bits&backendFuzzMaster != 0 {
		p.Master = "fuzzmaster"
	}
	if bits&backendFuzzPlain != 0 {
		p.Mech = "PLAIN"
	}
	if bits&backendFuzzLiteralPass != 0 {
		p.Pass = "Fuzz\r\nPa55\xffword"
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
		{p.NotTrusted, backendFuzzNotTrusted}, {p.ClientSentCapability, backendFuzzClientCapability},
		{p.NoPipelining, backendFuzzNoPipelining}, {p.StartTLS, backendFuzzStartTLS},
		{p.TLS, backendFuzzTLS}, {p.Master != "", backendFuzzMaster}, {p.Mech != "", backendFuzzPlain},
	} {
		if c.on {
			bits |= c.bit
		}
	}
	return bits
}

// The client reply ends with the line tagged with the client's tag.
func backendFuzzCheckReply(p *BackendParams, res BackendResult) error {
	if !bytes.HasPrefix(codectest.LastLine(res.ClientReply), []byte(p.ClientTag+" ")) {
		return fmt.Errorf("client reply %q doesn't end with a line tagged %s", res.ClientReply, p.ClientTag)
	}
	return nil
}

func FuzzBackendLogin(f *testing.F) { codectest.FuzzBackendLogin(f, os.DirFS("."), backend) }
