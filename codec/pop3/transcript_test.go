package pop3

// Transcript tests: testdata/*.txt, replayed by codectest.Transcripts (whose comment has
// the format; "tls" there is STLS). POP3's part:
//
//	O: options     greeting (text, with the escapes); maxline, maxbad, maxauth (int).
//	               Defaults: the package's.
//	A: actions     auth mech=USER [authzid=z] user=alice pass=secret (no tag)
//	               close reason=logout
//	               starttls
//	               id [x-originating-ip=... ...] (a trusted client's XCLIENT or XOIP)

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
	"doorman/codec/login"
)

var frontend = &codectest.Frontend[Config]{
	MinFiles: 20,
	ID:       true, // a trusted client's XCLIENT is reported as an ActID
	Options: func(c *Config) map[string]func(string) error {
		return map[string]func(string) error{
			"greeting":   codectest.Text(&c.Greeting),
			"maxline":    codectest.Int(&c.MaxLine),
			"maxbad":     codectest.Int(&c.MaxBadCommands),
			"maxauth":    codectest.Int(&c.MaxAuthAttempts),
			"mechanisms": codectest.Words(&c.Mechanisms),
		}
	},
	New: func(c *Config, info login.SessionInfo) codectest.Session {
		return codectest.Adapt[State](NewSession(c, info))
	},

	FuzzNew:      fuzzSession,
	FuzzFlags:    fuzzFlags,
	FuzzMaxInput: 2048,
	FuzzResults:  codectest.FuzzResults("[CONTACTADMIN] No mail server is set for this user.", "-ERR [AUTH] backend says no\r\n"),
	FuzzReasons: []string{
		"logout", "too many bad commands", "too many failed logins", "line too long",
		"authentication response too large", "output buffer full",
	},
	ErrClosed: ErrClosed,
}

func TestTranscripts(t *testing.T) { codectest.Transcripts(t, os.DirFS("."), frontend) }
