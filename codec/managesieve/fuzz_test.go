package managesieve

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
	"doorman/codec/login"
)

// FuzzSession: see codectest.FuzzSession. Bits of the first byte beyond the shared
// ones: 8 a short MaxLine, 16 MaxBadCommands 10, 32 a trusted client.
func FuzzSession(f *testing.F) { codectest.FuzzSession(f, os.DirFS("."), frontend) }

func fuzzSession(flags byte, info login.SessionInfo) (codectest.Session, int) {
	// A short SIEVE list keeps CAPABILITY's answer, and so a whole feed's output, under
	// the per-call cap, which (on purpose) makes a whole feed differ from a split one.
	cfg := &Config{Sieve: "fileinto vacation"}
	if flags&8 != 0 {
		cfg.MaxLine = 64 // reach the limits with short inputs
	}
	if flags&16 != 0 {
		cfg.MaxBadCommands = 10
	}
	info.Trusted = flags&32 != 0
	if flags&128 != 0 {
		cfg.Mechanisms = fuzzMechanisms
	}
	s := NewSession(cfg, info)
	return codectest.Adapt[State](s), s.maxLine + 2 + 2*saslMaxResponse + 2
}

// fuzzFlags are the bits of a transcript's seed beyond the shared ones.
func fuzzFlags(c *Config, info login.SessionInfo) byte {
	var f byte
	if c.MaxLine > 0 {
		f |= 8
	}
	if info.Trusted {
		f |= 32
	}
	if len(c.Mechanisms) > 0 {
		f |= 128 // the OAuth and challenge-response mechanisms too
	}
	return f
}

var fuzzMechanisms = []string{"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "SCRAM-SHA-256"}
