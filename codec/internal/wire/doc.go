// Package wire holds the plumbing the login codecs (imap, pop3, submission,
// managesieve) share: the accumulator a client-side Session writes its output and
// actions into, the bounded line reader of the backend side, and small byte helpers.
// It is pure: no I/O, no clock; it knows nothing of any one protocol's texts or limits.
package wire
