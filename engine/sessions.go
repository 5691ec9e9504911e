package engine

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"doorman/engine/relay"
)

// The registry of this host's relayed sessions, for the admin API (/sessions, /kick) and
// the fleet (fleet.go: the published session records, fleet kicks). An entry is the
// session's endRecord (which its Done keeps alive anyway) and its relay Handle: one map
// slot per session, no copy of the strings. With the fleet on, a per-user count of the
// sessions lets a login tell at once whether its user has sessions here (loginCheck).

const sessionShards = 32 // a power of two; enough that hand-offs on every loop rarely meet

type sessionRegistry struct {
	seed   maphash.Seed
	once   sync.Once
	shards [sessionShards]sessionShard
	users  [sessionShards]userShard // kept only with the fleet on
}

// userShard counts relayed sessions per user; the key is the endRecord's own user string.
type userShard struct {
	mu sync.Mutex
	m  map[string]int32
	_  [48]byte
}

func (r *sessionRegistry) userShard(user string) *userShard {
	r.once.Do(func() { r.seed = maphash.MakeSeed() })
	return &r.users[maphash.String(r.seed, user)&(sessionShards-1)]
}

// userSessions is how many relayed sessions of user this host holds (fleet on only).
func (r *sessionRegistry) userSessions(user string) int {
	us := r.userShard(user)
	us.mu.Lock()
	n := us.m[user]
	us.mu.Unlock()
	return int(n)
}

func (r *sessionRegistry) countUser(user string, d int32) {
	us := r.userShard(user)
	us.mu.Lock()
	if us.m == nil {
		us.m = make(map[string]int32)
	}
	if n := us.m[user] + d; n > 0 {
		us.m[user] = n
	} else {
		delete(us.m, user)
	}
	us.mu.Unlock()
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
func (srv *Server) registerSession(rec *endRecord, h *relay.Handle) {
	sh := srv.sessions.shard(rec)
	sh.mu.Lock()
	added := false
	if old, ok := sh.m[rec]; ok && old == nil {
		delete(sh.m, rec) // already ended
	} else {
		if sh.m == nil {
			sh.m = make(map[*endRecord]*relay.Handle)
		}
		sh.m[rec] = h
		added = true
	}
	sh.mu.Unlock()
	if added && srv.fleet != nil {
		srv.sessions.countUser(rec.user, 1)
		srv.fleet.changed(rec, h)
	}
}

// unregisterSession removes a session at its end; see registerSession.
func (srv *Server) unregisterSession(rec *endRecord) {
	sh := srv.sessions.shard(rec)
	sh.mu.Lock()
	removed := false
	if h, ok := sh.m[rec]; ok && h != nil {
		delete(sh.m, rec)
		removed = true
	} else if !ok {
		if sh.m == nil {
			sh.m = make(map[*endRecord]*relay.Handle)
		}
		sh.m[rec] = nil // ended before it was registered
	}
	sh.mu.Unlock()
	if removed && srv.fleet != nil {
		srv.sessions.countUser(rec.user, -1)
		srv.fleet.changed(rec, nil)
	}
}

// sessionFilter selects sessions; an empty field matches all.
type sessionFilter struct {
	user      string
	backend   string     // the target as logged: "ip:port" (IPv4-mapped addresses unmapped)
	backendIP netip.Addr // any port of this backend address (unmapped)
	vsite     string
	before    int64 // unix nanoseconds: only sessions started before; 0 = any
}

func (f sessionFilter) match(rec *endRecord) bool {
	if (f.user != "" && f.user != rec.user) || (f.backend != "" && f.backend != rec.target) ||
		(f.vsite != "" && f.vsite != rec.vsite()) || (f.before != 0 && rec.started >= f.before) {
		return false
	}
	if f.backendIP.IsValid() {
		ap, err := netip.ParseAddrPort(rec.target)
		return err == nil && ap.Addr().Unmap() == f.backendIP
	}
	return true
}

// backendFilter reads a backend as an operator writes it: "ip:port" for one backend
// port, or an IP alone for every port of it. IPv4-mapped IPv6 addresses are unmapped,
// as the targets are.
func backendFilter(f *sessionFilter, s string) bool {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		f.backend = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
		return true
	}
	if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
		f.backendIP = ip.Unmap()
		return true
	}
	return false
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
	Vsite     string    `json:"vsite"`
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
			Listener:  rec.listener(),
			Protocol:  srv.listenerProtocol(rec.listener()),
			Client:    rec.remote.String(),
			Backend:   rec.target,
			Vsite:     rec.vsite(),
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
