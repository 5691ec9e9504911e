// Package relay moves the bytes of a proxied session after login: two
// plaintext TCP sockets, handed over as raw non-blocking fds, are relayed
// byte for byte until either side ends.
//
// It owns a small set of workers (one per core by default). Each worker is a
// goroutine locked to its OS thread with its own epoll set and an eventfd for
// wake-ups. Sockets are registered once, edge-triggered, and bytes move with
// splice(2) through pipes taken from a per-worker pool only while data is in
// flight: an idle session holds no pipe and no buffer.
//
// Backpressure is structural: a direction never reads its source while its
// pipe still holds data, so a stalled reader pins at most one pipe (PipeSize
// bytes of kernel memory) and the relay stops reading from the sender.
//
// The package must not parse protocols, terminate TLS, log, or keep timers:
// idle timeouts and admin kicks are the engine's (it calls Handle.Kick).
// Userspace bytes exist only as the login leftovers handed in with a Session
// (its prefixes), written before splicing starts.
//
// Things a caller must know:
//   - Session.Done runs on a worker's thread; while it runs, that worker's
//     other sessions wait. Keep it short and never block in it.
//   - A worker blocked in epoll_wait holds no P, but needs one to run, like
//     any Go code: CPU-bound goroutines elsewhere add latency to the relay.
//   - Pipes are kernel memory, invisible to Go: Counters.PipesInUse times
//     PipeSize bounds it. An unprivileged process shares the user's pipe
//     quota (fs.pipe-user-pages-soft); past it pipes stay small and slow
//     (Counters.PipesResizeFailed).
//   - Per idle session the relay holds about 200 bytes of heap (one
//     192-byte record and a slot), 0 pipes, 0 goroutines; the per-worker
//     slot table keeps its peak length.
package relay
