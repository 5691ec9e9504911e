package imap

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
)

// FuzzSession: see codectest.FuzzSession. Bits of the first byte beyond the shared
// ones: 8 a short MaxLine, 16 MaxAuthAttempts 2.
func FuzzSession(f *testing.F) { codectest.FuzzSession(f, os.DirFS("."), frontend) }

func fuzzSession(flags byte, info SessionInfo) (codectest.Session, int) {
	cfg := &Config{}
	if flags&8 != 0 {
		cfg.MaxLine = 64 // reach the limits with short inputs
	}
	if flags&16 != 0 {
		cfg.MaxAuthAttempts = 2
	}
	s := NewSession(cfg, info)
	return codectest.Adapt[State](s), s.maxLine + 2 + srvAuthBufMax + 2
}
