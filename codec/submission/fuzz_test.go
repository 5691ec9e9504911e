package submission

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
)

// FuzzSession: see codectest.FuzzSession. Bits of the first byte beyond the shared
// ones: 8 a short MaxLine, 16 MaxAuthAttempts 2, 32 MaxBadCommands 3, 64 a trusted client
// (XCLIENT).
func FuzzSession(f *testing.F) { codectest.FuzzSession(f, os.DirFS("."), frontend) }

func fuzzSession(flags byte, info SessionInfo) (codectest.Session, int) {
	cfg := &Config{Hostname: "mx.example"}
	if flags&8 != 0 {
		cfg.MaxLine = 64 // reach the limits with short inputs
	}
	if flags&16 != 0 {
		cfg.MaxAuthAttempts = 2
	}
	if flags&32 != 0 {
		cfg.MaxBadCommands = 3
	}
	info.Trusted = flags&64 != 0
	if flags&128 != 0 {
		cfg.Mechanisms = fuzzMechanisms
	}
	s := NewSession(cfg, info)
	return codectest.Adapt[State](s), max(srvMaxName+1+s.maxLine+4, srvAuthMaxLine+2)
}

// fuzzFlags gives a transcript's seed its trusted bit.
func fuzzFlags(c *Config, info SessionInfo) byte {
	var f byte
	if info.Trusted {
		f |= 64
	}
	if len(c.Mechanisms) > 0 {
		f |= 128 // the OAuth and challenge-response mechanisms too
	}
	return f
}

var fuzzMechanisms = []string{"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "SCRAM-SHA-256"}
