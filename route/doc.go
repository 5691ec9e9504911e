// Package route decides who a user is and where their session goes.
//
// It owns the password databases (passdbs) — a Dovecot-format passwd-file and
// Redis — the password schemes used to verify what a client typed, a bounded
// pool for that CPU-heavy verification, the parsing of the passdb extra
// fields that steer proxying (host, port, destuser, ssl, …), and the chain
// that tries several passdbs in order. Field names and their meaning follow
// Dovecot 2.3 (see the project's Dovecot reference notes, §1), so an
// existing Dovecot passdb can be pointed at Doorman unchanged.
//
// What it must not do: import doorman/codec or doorman/engine, export
// go-redis types, log, or keep per-session state. Every failure is returned as
// an error; a failure that is not the user's fault (Redis down, a broken
// entry) is a *TempError, which errors.Is(err, ErrTempFail) recognises, so the
// caller can answer with a clean temporary failure.
//
// A passwd-file lookup is a map read and never blocks, but a Redis lookup is
// a network round trip and a password check burns CPU: call Chain and Hasher
// off the event loop.
package route
