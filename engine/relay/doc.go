// Package relay moves the bytes of a proxied session after login: two TCP
// sockets, handed over as raw non-blocking fds (either side possibly speaking
// TLS, its handshake done), are relayed byte for byte until either side ends.
//
// It owns a small set of workers (one per core by default). Each worker is a
// goroutine with its own epoll set and an eventfd for wake-ups; it waits for
// that epoll fd in Go's netpoller (it is readable when a session has events),
// not in a blocking epoll_wait on a locked thread: a thread blocked in a
// syscall keeps its P, and with every P so held the runtime's sysmon wakes
// every 20 µs to take them back (a fifth of the CPU of a login at 1,000/s
// before this, by perf). Sockets are registered once, edge-triggered, and bytes move with
// splice(2) through pipes taken from a per-worker pool only while data is in
// flight: an idle session holds no pipe and no buffer.
//
// Backpressure is structural: a direction never reads its source while its
// pipe still holds data, so a stalled reader pins at most one pipe (PipeSize
// bytes of kernel memory) and the relay stops reading from the sender. The
// two sockets would still hold megabytes, the kernel growing a send queue to
// tcp_wmem's maximum for a client that reads nothing and a receive buffer
// towards tcp_rmem's after a fast download; Add bounds both (Config.NotSentLowat
// on the client socket, Config.BackendRcvBuf on the backend socket). Measured
// on a client that reads 48 MB and stops: the proxy's sockets held 384 KB
// instead of 6.8 MB, besides the full pipe.
//
// The TLS path. A session with Session.ClientTLS or BackendTLS set cannot
// splice: plaintext exists only in userspace. Both of its directions then move
// through a 16 KiB buffer taken from a per-worker free list when the direction
// reads and given back as soon as it is written out (Counters.TLSBuffersInUse).
// A TLS side is read and written through its tls.Conn, whose transport
// (tlsio, FD mode) reads the socket, says ErrWouldBlock on EAGAIN (safe
// mid-record), and writes what the socket takes, queueing the rest of the
// records; a plain side uses read(2) and write(2). Backpressure is the splice
// path's: a direction reads only when its buffer is empty and the destination's
// record queue has gone out, so a stalled reader pins one buffer and one batch
// of records per direction. The queue goes first on every turn, which also
// sends what crypto/tls wrote by itself while reading that side (a TLS 1.3
// KeyUpdate answer). A TLS source counts as readable until it says
// ErrWouldBlock, which it does only with no whole record left inside
// crypto/tls, so records it read ahead are never stranded when the relay
// stops reading for backpressure; at the hand-off every TLS side is read
// once, for what the handshake or the login left there. A source's end
// (close_notify, or a FIN at a record boundary) becomes close_notify then FIN
// on a TLS destination once everything before it is out; any other record
// layer error ends the session (OpError "tls"). Stats count plaintext. A kick
// closes the sockets without close_notify. The relay never handshakes.
//
// The package must not parse protocols, handshake, log, or keep timers:
// idle timeouts and admin kicks are the engine's (it calls Handle.Kick).
// Userspace bytes exist only as the login leftovers handed in with a Session
// (its prefixes), written before anything relayed, and, on the TLS path,
// in its buffers and crypto/tls's.
//
// Things a caller must know:
//   - Session.Done runs on a worker's thread; while it runs, that worker's
//     other sessions wait. Keep it short and never block in it.
//   - A waiting worker holds no P and no thread, but needs both to run, like
//     any goroutine: CPU-bound goroutines elsewhere add latency to the relay.
//   - Pipes are kernel memory, invisible to Go: Counters.PipesInUse times
//     PipeSize bounds it. An unprivileged process shares the user's pipe
//     quota (fs.pipe-user-pages-soft); past it pipes stay small and slow
//     (Counters.PipesResizeFailed).
//   - Per idle session the relay holds about 180 bytes of heap (one
//     176-byte record and a slot), 0 pipes, 0 goroutines; the per-worker
//     slot table keeps its peak length. A TLS session adds a 128-byte record
//     and no buffer, besides its tls.Conn (several KB, more once a peer has
//     sent full-size records: crypto/tls keeps its input buffer).
//   - The TLS path costs about 2–3 times the worker CPU per GB of the
//     splice path (one encryption or decryption per byte plus a copy), and
//     each worker keeps up to 64 idle 16 KiB buffers.
package relay
