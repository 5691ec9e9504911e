// Package codectest is the test machinery the login-phase codecs (codec/imap, codec/pop3,
// codec/submission, codec/managesieve) share: the client-side transcript runner and its
// fuzz target (transcript.go, fuzz.go), the backend-login transcript runner and its fuzz
// target (backend.go, backend_fuzz.go). What differs between protocols — how a transcript's
// options make a session, how a fuzz input's first byte does, what a client reply must
// look like — each codec's tests pass in through Frontend and Backend.
//
// Like the codecs it serves it imports no network, file, clock or third-party code
// (cmd/doorman's TestDependenciesPointOneWay): transcripts are read from an fs.FS the
// caller opens (os.DirFS(".") in a package's tests). Only _test.go files import it.
package codectest
