package submission

// Transcript tests: testdata/*.txt, replayed by codectest.Transcripts (whose comment has
// the format). Submission's part:
//
//	O: options     hostname, greeting (text, with the escapes); maxline, maxbad,
//	               maxauth, maxsize (int). Defaults: hostname mx.example, the package's
//	               otherwise.
//	A: actions     auth helo=client.example mech=PLAIN [authzid=z] user=alice pass=secret
//	               close reason=quit
//	               starttls
//	               id [x-originating-ip=.. x-originating-port=.. x-session-id=..
//	                  x-proxy-ttl=.. x-forward-<k>=..]   (a trusted client's XCLIENT)
//	               helo is Credentials.Tag: the client's EHLO domain.

import (
	"os"
	"testing"

	"doorman/codec/internal/codectest"
)

var frontend = &codectest.Frontend[Config]{
	MinFiles: 30,
	Config:   func() *Config { return &Config{Hostname: "mx.example"} },
	Options: func(c *Config) map[string]func(string) error {
		return map[string]func(string) error{
			"hostname":   codectest.Text(&c.Hostname),
			"greeting":   codectest.Text(&c.Greeting),
			"maxline":    codectest.Int(&c.MaxLine),
			"maxbad":     codectest.Int(&c.MaxBadCommands),
			"maxauth":    codectest.Int(&c.MaxAuthAttempts),
			"mechanisms": codectest.Words(&c.Mechanisms),
			"maxsize":    codectest.Int64(&c.MaxMessageSize),
		}
	},
	New: func(c *Config, info SessionInfo) codectest.Session {
		return codectest.Adapt[State](NewSession(c, info))
	},
	TagKey: "helo",
	ID:     true,

	FuzzNew:      fuzzSession,
	FuzzFlags:    fuzzFlags,
	FuzzMaxInput: 4096,
	FuzzResults:  codectest.FuzzResults("No mail server is set for this user.", "501 5.5.4 backend says no\r\n"),
	FuzzReasons: []string{
		"quit", "too many bad commands", "too many failed logins", "output buffer full", "timeout",
	},
	ErrClosed: ErrClosed,
}

func TestTranscripts(t *testing.T) { codectest.Transcripts(t, os.DirFS("."), frontend) }
