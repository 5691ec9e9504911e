package managesieve

// Transcript tests: testdata/*.txt, replayed by codectest.Transcripts (whose comment has
// the format). ManageSieve's part:
//
//	O: options     greeting, implementation, sieve, notify (text, with the escapes);
//	               maxline, maxbad (int). Defaults: the package's.
//	A: actions     auth mech=LOGIN [authzid=z] user=alice pass=secret (no tag)
//	               id x-originating-ip=192.0.2.1 ... (a trusted client's XCLIENT)
//	               close reason=logout
//	               starttls
//	E: tls         TLSStarted's writes (the capabilities again) follow as S: lines.

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
	"doorman/codec/login"
)

var frontend = &codectest.Frontend[Config]{
	MinFiles: 20,
	Options: func(c *Config) map[string]func(string) error {
		return map[string]func(string) error{
			"greeting":       codectest.Text(&c.Greeting),
			"implementation": codectest.Text(&c.Implementation),
			"sieve":          codectest.Text(&c.Sieve),
			"notify":         codectest.Text(&c.Notify),
			"maxline":        codectest.Int(&c.MaxLine),
			"maxbad":         codectest.Int(&c.MaxBadCommands),
			"mechanisms":     codectest.Words(&c.Mechanisms),
		}
	},
	New: func(c *Config, info login.SessionInfo) codectest.Session {
		return codectest.Adapt[State](NewSession(c, info))
	},

	FuzzNew:      fuzzSession,
	FuzzFlags:    fuzzFlags,
	FuzzMaxInput: 2048, // small enough that one call's output stays under the cap
	FuzzResults:  codectest.FuzzResults("No mail server is set for this user.", "NO \"Authentication failed.\"\r\n"),
	FuzzReasons: []string{
		"logout", "too many bad commands", "line too long", "literal too large",
		"authentication response too large", "output buffer full", "timeout",
	},
	ErrClosed: ErrClosed,
	ID:        true, // a trusted client's XCLIENT
}

func TestTranscripts(t *testing.T) { codectest.Transcripts(t, os.DirFS("."), frontend) }
