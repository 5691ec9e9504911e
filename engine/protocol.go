package engine

import (
	"doorman/codec/imap"
	"doorman/codec/login"
	"doorman/codec/managesieve"
	"doorman/codec/pop3"
	"doorman/codec/submission"
)

// protocol is what the engine needs to know of one mail protocol: how to run its login
// phase with a client, how to log in at a backend, and the backend's default port.
type protocol struct {
	name        string
	defaultPort int
	// defaultSSLPort is the port for passdb ssl=yes without port= (Dovecot: IMAP 993,
	// POP3 995; submission and ManageSieve have none).
	defaultSSLPort int
	newFrontend    func(srv *Server, info login.SessionInfo) login.Frontend
	newBackend     func(p *login.BackendParams) login.Backend
}

// protocols are the login-phase protocols, by their listener `protocol:` name. LMTP is not
// among them: it has no login phase (see lmtp.go).
var protocols = map[string]*protocol{
	"imap": {
		name:           "imap",
		defaultPort:    143,
		defaultSSLPort: 993,
		newFrontend: func(srv *Server, info login.SessionInfo) login.Frontend {
			return imap.NewSession(&srv.imapCfg, info)
		},
		newBackend: func(p *login.BackendParams) login.Backend { return imap.NewBackendLogin(p) },
	},
	"pop3": {
		name:           "pop3",
		defaultPort:    110,
		defaultSSLPort: 995,
		newFrontend: func(srv *Server, info login.SessionInfo) login.Frontend {
			return pop3.NewSession(&srv.pop3Cfg, info)
		},
		newBackend: func(p *login.BackendParams) login.Backend { return pop3.NewBackendLogin(p) },
	},
	"submission": {
		name:        "submission",
		defaultPort: 587,
		newFrontend: func(srv *Server, info login.SessionInfo) login.Frontend {
			return submission.NewSession(&srv.submissionCfg, info)
		},
		newBackend: func(p *login.BackendParams) login.Backend { return submission.NewBackendLogin(p) },
	},
	"managesieve": {
		name:        "managesieve",
		defaultPort: 4190,
		newFrontend: func(srv *Server, info login.SessionInfo) login.Frontend {
			return managesieve.NewSession(&srv.managesieveCfg, info)
		},
		newBackend: func(p *login.BackendParams) login.Backend { return managesieve.NewBackendLogin(p) },
	},
}
