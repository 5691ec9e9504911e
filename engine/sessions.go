package engine

import (
	"hash/maphash"
	"sync"
	"time"

	"doorman/engine/relay"
)

// The registry of this host's relayed sessions, for the admin API (/sessions, /kick).
// An entry is the session's endRecord (which its Done keeps alive anyway) and its relay
// Handle: one map slot per session, no copy of the strings.

const sessionShards = 32 // a power of two; enough that hand-offs on every loop rarely meet

type sessionRegistry struct {
	seed   maphash.Seed
	once   sync.Once
	shards [sessionShards]sessionShard
}

type sessionShard struct {
	mu sync.Mutex
	// A nil Handle is a tombstone: the session's Done ran before registerSession did
	// (Add returns after the worker may already have ended the session), so the
	// registration that follows must not add it.
	m map[*endRecord]*relay.Handle
	_ [48]byte // keep shards on separate cache lines
}

func (r *sessionRegistry) shard(rec *endRecord) *sessionShard {
	r.once.Do(func() { r.seed = maphash.MakeSeed() })
	return &r.shards[maphash.Comparable(r.seed, rec)&(sessionShards-1)]
}

// registerSession makes a relayed session visible to /sessions and /kick. It is called
// once, after relay.Add succeeded; the session's Done calls unregisterSession(rec) (or
// the returned func) once. The two may come in either order: Done runs on a relay
// worker and can end a session before Add has even returned.
func (srv *Server) registerSession(rec *endRecord, h *relay.Handle) (unregister func()) {
	sh := srv.sessions.shard(rec)
	sh.mu.Lock()
	if old, ok := sh.m[rec]; ok && old == nil {
		delete(sh.m, rec) // already ended
	} else {
		if sh.m == nil {
			sh.m = make(map[*endRecord]*relay.Handle)
		}
		sh.m[rec] = h
	}
	sh.mu.Unlock()
	return func() { srv.unregisterSession(rec) }
}

// unregisterSession removes a session at its end; see registerSession.
func (srv *Server) unregisterSession(rec *endRecord) {
	sh := srv.sessions.shard(rec)
	sh.mu.Lock()
	if h, ok := sh.m[rec]; ok && h != nil {
		delete(sh.m, rec)
	} else if !ok {
		if sh.m == nil {
			sh.m = make(map[*endRecord]*relay.Handle)
		}
		sh.m[rec] = nil // ended before it was registered
	}
	sh.mu.Unlock()
}

// sessionFilter selects sessions; an empty field matches all.
type sessionFilter struct {
	user    string
	backend string // the target as logged: "ip:port"
}

func (f sessionFilter) match(rec *endRecord) bool {
	return (f.user == "" || f.user == rec.user) && (f.backend == "" || f.backend == rec.target)
}

// eachSession calls fn for every registered session that f matches. fn runs under a
// shard's lock: it must be quick and must not register or unregister.
func (srv *Server) eachSession(f sessionFilter, fn func(*endRecord, *relay.Handle)) {
	for i := range srv.sessions.shards {
		sh := &srv.sessions.shards[i]
		sh.mu.Lock()
		for rec, h := range sh.m {
			if h != nil && f.match(rec) {
				fn(rec, h)
			}
		}
		sh.mu.Unlock()
	}
}

// SessionInfo is one relayed session as /sessions lists it.
type SessionInfo struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Listener  string    `json:"listener"`
	Protocol  string    `json:"protocol"`
	Client    string    `json:"client"`
	Backend   string    `json:"backend"`
	Started   time.Time `json:"started"`
	ToClient  int64     `json:"to_client"`  // login phase and relay, as the end line's "out"
	ToBackend int64     `json:"to_backend"` // as the end line's "in"
}

// sessionList returns the matching sessions, in no particular order.
func (srv *Server) sessionList(f sessionFilter) []SessionInfo {
	var out []SessionInfo
	srv.eachSession(f, func(rec *endRecord, h *relay.Handle) {
		toClient, toBackend := h.Bytes()
		out = append(out, SessionInfo{
			ID:        rec.id,
			User:      rec.user,
			Listener:  rec.listener,
			Protocol:  srv.listenerProtocol(rec.listener),
			Client:    rec.remote.String(),
			Backend:   rec.target,
			Started:   time.Unix(0, rec.started).UTC(),
			ToClient:  rec.out + toClient,
			ToBackend: rec.in + toBackend,
		})
	})
	return out
}

// kickSessions kicks the matching sessions and returns how many. The kicks are
// asynchronous: each session ends (and leaves the registry) from its worker.
func (srv *Server) kickSessions(f sessionFilter) int {
	var hs []*relay.Handle
	srv.eachSession(f, func(_ *endRecord, h *relay.Handle) { hs = append(hs, h) })
	for _, h := range hs {
		h.Kick()
	}
	srv.stats.Kicked.Add(int64(len(hs)))
	return len(hs)
}

func (srv *Server) listenerProtocol(name string) string {
	for _, l := range srv.cfg.Listeners {
		if l.Name == name {
			return l.Protocol
		}
	}
	return ""
}
