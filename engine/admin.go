package engine

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The admin API: a small net/http server, off the event loops, for this host only.
//
//	GET  /metrics                       Prometheus text format
//	GET  /sessions[?user=U][&backend=H[:P]][&vsite=V]  relayed sessions, JSON
//	POST /kick?user=U | ?backend=H[:P] | ?vsite=V     kick matching relayed sessions, JSON {"kicked": n}
//
// Both act on this host only; doormanctl sessions and kick cover the fleet (fleet.go).
//
// Every request needs "Authorization: Bearer <token>", except /metrics with
// admin.metrics_public. The token is compared in constant time and never logged.

// adminMinToken is the shortest token accepted: a guessable token would open /kick.
const adminMinToken = 16

type adminServer struct {
	srv    *Server
	log    *zap.Logger
	token  [sha256.Size]byte // the token's hash: comparing hashes hides its length too
	authOK bool              // a token is configured; without one only public /metrics answers
	public bool              // metrics_public
	hs     *http.Server
	unix   string // the socket's path, removed at stop; "" for TCP
}

// validateAdmin checks the admin keys (called by Validate).
func (c *Config) validateAdmin(add func(path, format string, a ...any)) {
	a := &c.Admin
	if a.Address == "" {
		if a.Token != "" || a.TokenFile != "" || a.MetricsPublic {
			add("admin.address", "is required when other admin keys are set")
		}
		return
	}
	if p, ok := strings.CutPrefix(a.Address, "unix:"); ok {
		if !filepath.IsAbs(p) {
			add("admin.address", "%q: the socket path must be absolute", a.Address)
		}
	} else if _, err := netip.ParseAddrPort(a.Address); err != nil {
		add("admin.address", "%q is neither ip:port nor unix:/path", a.Address)
	}
	switch {
	case a.Token != "" && a.TokenFile != "":
		add("admin.token", "set token or token_file, not both")
	case a.Token == "" && a.TokenFile == "":
		if !a.MetricsPublic {
			add("admin.token", "token or token_file is required (or metrics_public: yes for /metrics alone)")
		}
	default:
		if _, err := c.adminToken(); err != nil {
			key := "admin.token"
			if a.TokenFile != "" {
				key = "admin.token_file"
			}
			add(key, "%v", err)
		}
	}
}

// adminToken returns the configured token: admin.token, or the first line of
// admin.token_file. "" when neither is set.
func (c *Config) adminToken() (string, error) {
	tok := c.Admin.Token
	if c.Admin.TokenFile != "" {
		data, err := os.ReadFile(c.Resolve(c.Admin.TokenFile))
		if err != nil {
			return "", err
		}
		tok, _, _ = strings.Cut(string(data), "\n")
		tok = strings.TrimSpace(tok)
	}
	if tok != "" && len(tok) < adminMinToken {
		return "", fmt.Errorf("the token must be at least %d characters", adminMinToken)
	}
	return tok, nil
}

func newAdminServer(srv *Server) (*adminServer, error) {
	tok, err := srv.cfg.adminToken()
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	a := &adminServer{srv: srv, log: srv.log.Named("admin"), public: srv.cfg.Admin.MetricsPublic}
	if tok != "" {
		a.token, a.authOK = sha256.Sum256([]byte(tok)), true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", a.metrics)
	mux.HandleFunc("GET /sessions", a.authed(a.sessions))
	mux.HandleFunc("POST /kick", a.authed(a.kick))
	a.hs = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          zap.NewStdLog(srv.log.Named("admin")),
	}
	return a, nil
}

// startAdmin listens on admin.address, if set, and serves there until stopAdmin.
func (s *Server) startAdmin() error {
	addr := s.cfg.Admin.Address
	if addr == "" {
		return nil
	}
	a, err := newAdminServer(s)
	if err != nil {
		return err
	}
	var ln net.Listener
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		// A socket left by a process that died is in the way; anything else is not ours.
		if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() == fs.ModeSocket {
			_ = os.Remove(p)
		}
		if ln, err = net.Listen("unix", p); err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			ln.Close()
			return fmt.Errorf("admin: %w", err)
		}
		a.unix = p
	} else if ln, err = net.Listen("tcp", addr); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	s.admin = a
	go func() {
		if err := a.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin server stopped", zap.Error(err))
		}
	}()
	s.log.Info("admin listening", zap.String("address", addr))
	return nil
}

// stopAdmin closes the admin listener and waits (up to ctx) for requests under way.
func (s *Server) stopAdmin(ctx context.Context) error {
	a := s.admin
	if a == nil {
		return nil
	}
	s.admin = nil
	err := a.hs.Shutdown(ctx)
	if a.unix != "" {
		_ = os.Remove(a.unix)
	}
	return err
}

// checkToken says whether the request carries the token, in constant time.
func (a *adminServer) checkToken(r *http.Request) bool {
	if !a.authOK {
		return false
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], a.token[:]) == 1
}

func (a *adminServer) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.checkToken(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="doorman"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next(w, r)
	}
}

func (a *adminServer) metrics(w http.ResponseWriter, r *http.Request) {
	if !a.public {
		a.authed(a.writeMetrics)(w, r)
		return
	}
	a.writeMetrics(w, r)
}

func (a *adminServer) writeMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(a.srv.appendMetrics(make([]byte, 0, 4<<10)))
}

// filterOf reads ?user=, ?vsite= and ?backend= (ip:port, written as the logs write it,
// or an IP alone for every port).
func filterOf(r *http.Request) (sessionFilter, error) {
	f := sessionFilter{user: r.FormValue("user"), vsite: r.FormValue("vsite")}
	if b := r.FormValue("backend"); b != "" && !backendFilter(&f, b) {
		return f, fmt.Errorf("backend %q is neither ip:port nor ip", b)
	}
	return f, nil
}

func (a *adminServer) sessions(w http.ResponseWriter, r *http.Request) {
	f, err := filterOf(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	list := a.srv.sessionList(f)
	slices.SortFunc(list, func(x, y SessionInfo) int { return x.Started.Compare(y.Started) })
	if list == nil {
		list = []SessionInfo{}
	}
	writeJSON(w, struct {
		Host     string        `json:"host"`
		Sessions []SessionInfo `json:"sessions"`
	}{a.srv.cfg.Hostname, list})
}

func (a *adminServer) kick(w http.ResponseWriter, r *http.Request) {
	f, err := filterOf(r)
	if err == nil && f.user == "" && f.backend == "" && !f.backendIP.IsValid() && f.vsite == "" {
		err = errors.New("user, backend or vsite is required")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n := a.srv.kickSessions(f)
	a.srv.stats.Kicked.Add(int64(n))
	a.log.Info("kick", zap.String("user", f.user), zap.String("backend", r.FormValue("backend")),
		zap.String("vsite", f.vsite), zap.Int("kicked", n), zap.String("from", r.RemoteAddr))
	writeJSON(w, struct {
		Kicked int `json:"kicked"`
	}{n})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
