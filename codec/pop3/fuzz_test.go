package pop3

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
	"doorman/codec/login"
)

// FuzzSession: see codectest.FuzzSession. Bits of the first byte beyond the shared
// ones: 8 a short MaxLine, 16 MaxAuthAttempts 2, 32 implicit TLS, 64 a trusted client.
func FuzzSession(f *testing.F) { codectest.FuzzSession(f, os.DirFS("."), frontend) }

func fuzzSession(flags byte, info login.SessionInfo) (codectest.Session, int) {
	cfg := &Config{}
	if flags&8 != 0 {
		cfg.MaxLine = 16 // reach the limits with short inputs
	}
	if flags&16 != 0 {
		cfg.MaxAuthAttempts = 2
	}
	if flags&32 != 0 {
		info.TLS = true
	}
	if flags&64 != 0 {
		info.Trusted = true
	}
	if flags&128 != 0 {
		cfg.Mechanisms = fuzzMechanisms
	}
	s := NewSession(cfg, info)
	return codectest.Adapt[State](s), s.maxLine + 2 + srvAuthBufMax + 2
}

// fuzzFlags are the bits of a transcript's seed beyond the shared ones.
func fuzzFlags(c *Config, info login.SessionInfo) byte {
	var flags byte
	if c.MaxAuthAttempts > 0 {
		flags |= 16
	}
	if info.TLS {
		flags |= 32
	}
	if info.Trusted {
		flags |= 64
	}
	if len(c.Mechanisms) > 0 {
		flags |= 128 // the OAuth and challenge-response mechanisms too
	}
	return flags
}

var fuzzMechanisms = []string{"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "SCRAM-SHA-256"}
