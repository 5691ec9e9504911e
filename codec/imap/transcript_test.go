package imap

// Transcript tests: testdata/*.txt, replayed by codectest.Transcripts (whose comment has
// the format). IMAP's part:
//
//	O: options     greeting, capability, idname (text, with the escapes); mechanisms
//	               (space-separated words); maxline,
//	               maxbad, maxauth (int). Defaults: the package's.
//	A: actions     auth tag=a mech=LOGIN [authzid=z] user=alice pass=secret [capability]
//	               close reason=logout
//	               id [key=value ...]
//	               starttls

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
)

var frontend = &codectest.Frontend[Config]{
	MinFiles: 25,
	Options: func(c *Config) map[string]func(string) error {
		return map[string]func(string) error{
			"greeting":   codectest.Text(&c.Greeting),
			"capability": codectest.Text(&c.Capability),
			"idname":     codectest.Text(&c.IDName),
			"mechanisms": codectest.Words(&c.Mechanisms),
			"maxline":    codectest.Int(&c.MaxLine),
			"maxbad":     codectest.Int(&c.MaxBadCommands),
			"maxauth":    codectest.Int(&c.MaxAuthAttempts),
		}
	},
	New: func(c *Config, info SessionInfo) codectest.Session {
		return codectest.Adapt[State](NewSession(c, info))
	},
	TagKey:         "tag",
	CapabilitySeen: true,
	ID:             true,

	FuzzNew:      fuzzSession,
	FuzzFlags:    fuzzFlags,
	FuzzMaxInput: 2048,
	FuzzResults:  codectest.FuzzResults("[CONTACTADMIN] No mail server is set for this user.", "x NO backend says no\r\n"),
	FuzzReasons: []string{
		"logout", "too many bad commands", "too many failed logins", "line too long",
		"literal too large", "authentication response too large", "output buffer full",
	},
	ErrClosed: ErrClosed,
}

func TestTranscripts(t *testing.T) { codectest.Transcripts(t, os.DirFS("."), frontend) }
