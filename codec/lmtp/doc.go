// Package lmtp is LMTP (RFC 2033) for Doorman's LMTP proxy, with Dovecot's replies:
// the server side of a client connection (Session: commands, transaction state and the
// dot-stuffed message body, fed bytes and returning actions), the pieces of the client
// side towards backends (ReplyParser, Capabilities, XClient, the MAIL and RCPT lines, the
// Received: header), DotDecoder and DotEncoder for message bodies, and xtext.
//
// It is pure: no I/O, no clock, no goroutines. Everything that reads a socket, looks a
// user up or waits lives in the engine (engine/lmtp.go).
package lmtp
