package imap

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
)

// FuzzSession: see codectest.FuzzSession. Bits of the first byte beyond the shared
// ones: 8 a short MaxLine, 16 MaxAuthAttempts 2, 128 the OAuth and challenge-response mechanisms too.
func FuzzSession(f *testing.F) { codectest.FuzzSession(f, os.DirFS("."), frontend) }

func fuzzSession(flags byte, info SessionInfo) (codectest.Session, int) {
	cfg := &Config{}
	if flags&8 != 0 {
		cfg.MaxLine = 64 // reach the limits with short inputs
	}
	if flags&16 != 0 {
		cfg.MaxAuthAttempts = 2
	}
	if flags&128 != 0 {
		cfg.Mechanisms = fuzzMechanisms
	}
	s := NewSession(cfg, info)
	return codectest.Adapt[State](s), s.maxLine + 2 + srvAuthBufMax + 2
}

var fuzzMechanisms = []string{"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "SCRAM-SHA-256"}

// fuzzFlags gives a transcript's seed the bits fuzzSession reads.
func fuzzFlags(c *Config, _ SessionInfo) byte {
	if len(c.Mechanisms) > 0 {
		return 128
	}
	return 0
}
