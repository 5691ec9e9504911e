// Package login holds what every protocol's login-phase codec shares with the engine:
// the actions a client-side session asks for, the credentials it collects, the answers the
// engine gives it, and the parameters and outcomes of a login at the backend. It is pure:
// types and small helpers only.
package login

// Frontend is a client-side login state machine (IMAP, POP3, Submission, ManageSieve).
// Feed is given every byte not yet consumed; after an ActAuth it consumes nothing until
// Resume, so bytes the client pipelined after its login stay for the backend.
type Frontend interface {
	Greeting() []byte
	Feed(in []byte) (consumed int, actions []Action, err error)
	Resume(r AuthResult) []Action
	Timeout() []Action
}

// Backend is a backend-side login state machine: Feed is given every backend byte not yet
// consumed and returns the bytes to send to the backend now and the outcome so far.
type Backend interface {
	Feed(in []byte) (consumed int, out []byte, res BackendResult)
	State() string
}

// ClientInfo is who the client is, for the ID or XCLIENT a backend login sends first.
type ClientInfo struct {
	SessionID  string
	RemoteIP   string
	RemotePort int
	LocalIP    string
	LocalPort  int
	TTL        int  // the TTL to send: this hop's TTL minus one
	Forward    []KV // forward_<name> passdb fields, Key without the prefix
}

// KV is one name/value pair.
type KV struct{ Key, Value string }

// SessionInfo is what the engine knows about the connection.
type SessionInfo struct {
	// Secured: TLS, loopback (remote IP == local IP) or login_trusted_networks.
	// Plaintext authentication is always allowed on a secured connection.
	Secured bool
	// PlaintextAllowed is !disable_plaintext_auth.
	PlaintextAllowed bool
	// TLSAvailable: STARTTLS can be offered. When false STARTTLS is answered with
	// "BAD TLS support isn't enabled." and not advertised.
	TLSAvailable bool
	// TLS: the connection is already encrypted (implicit TLS). Implies Secured.
	TLS bool
	// Trusted: the client is in login_trusted_networks, so it may say who the real client
	// is (IMAP ID x-* keys, XCLIENT): the codec reports that as an ActID with the ID key
	// names (x-originating-ip, x-originating-port, x-connected-ip, x-connected-port,
	// x-session-id, x-proxy-ttl, x-forward-<name>), whatever its protocol calls them.
	Trusted bool
	// SASLNonce is fresh random printable text (no ","; base64 of 18 random bytes) for
	// the challenges of CRAM-MD5 and SCRAM-SHA-256: the codec makes it unique per
	// attempt. Empty: those mechanisms are neither advertised nor accepted.
	SASLNonce string
	// SASLHost is the host name in CRAM-MD5's challenge "<nonce@host>" (Dovecot's
	// hostname).
	SASLHost string
}

// ActionKind says what the engine must do.
type ActionKind uint8

const (
	// ActWrite: send Data to the client.
	ActWrite ActionKind = iota + 1
	// ActAuth: the credentials are complete (Creds). Until Resume, Feed consumes nothing:
	// bytes that follow are the client's pipelined commands for the backend.
	ActAuth
	// ActClose: send Data (may be empty), then close. Reason says why, for the logs.
	ActClose
	// ActID: the client sent ID (or, in POP3, Submission and ManageSieve, a trusted
	// client's XCLIENT, in ID's key names); IDParams holds its pairs (NIL values as "").
	ActID
	// ActStartTLS: STARTTLS was accepted (the OK is in an ActWrite before it). Feed
	// consumes nothing until TLSStarted. The engine must drop every byte the client
	// sent after the STARTTLS line (they came in plaintext and could have been
	// injected), do the handshake, then call TLSStarted.
	ActStartTLS
	// ActSecret: a challenge-response mechanism (CRAM-MD5, SCRAM-SHA-256) needs the
	// stored password of Creds.User (Creds.Mech says which mechanism; Pass is empty).
	// Until Resume, Feed consumes nothing. The engine answers with AuthResult Status
	// AuthOK and Secret, or with a failure (unknown user, unusable scheme), which ends
	// the exchange with the failure's reply. Once the codec has checked the client's
	// proof with the secret, an ActAuth follows with Creds.Verified.
	ActSecret
)

var actionKindNames = [...]string{"", "write", "auth", "close", "id", "starttls", "secret"}

func (k ActionKind) String() string {
	if int(k) < len(actionKindNames) && k != 0 {
		return actionKindNames[k]
	}
	return "unknown"
}

// Action is one thing for the engine to do. Data and IDParams are valid until the next
// call on the Session; Creds until the next ActAuth.
type Action struct {
	Kind     ActionKind
	Data     []byte
	Reason   string
	Creds    *Credentials
	IDParams []IDParam
}

// IDParam is one key/value pair of the client's ID command.
type IDParam struct{ Key, Value string }

// Credentials is a complete login. Its strings are copies: they outlive the input.
type Credentials struct {
	Tag     string // the client's tag of LOGIN/AUTHENTICATE
	Mech    string // "LOGIN" for the LOGIN command, else the SASL mechanism: "PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "SCRAM-SHA-256"
	Authzid string // SASL PLAIN authorization id; empty when none or equal to User
	User    string // authentication id / LOGIN user; XOAUTH2's user=, OAUTHBEARER's a= (decoded)
	Pass    string // empty for XOAUTH2 and OAUTHBEARER
	// Token is the bearer token of XOAUTH2 and OAUTHBEARER (empty otherwise): the engine
	// has it verified (passdb, as Dovecot's oauth2 passdb would) and/or forwards it to
	// the backend (BackendParams.Mech = Mech, BackendParams.Token = Token). Never logged.
	Token          string
	CapabilitySeen bool // the client sent CAPABILITY before logging in (and before any STARTTLS)
	// Verified is for CRAM-MD5 and SCRAM-SHA-256 (after an ActSecret): the codec checked
	// the client's proof against the stored secret and it matched. False for those
	// mechanisms: the proof did not match, the login fails. Pass is empty: the backend
	// login needs a passdb `pass` or `master`.
	Verified bool
}

// AuthStatus is the outcome of a login the engine tried.
type AuthStatus uint8

const (
	AuthOK          AuthStatus = iota + 1
	AuthFailed                 // wrong user or password
	AuthTempFail               // passdb temporarily failing
	AuthUnavailable            // backend could not be reached or logged in to (Dovecot's INTERNAL, CONNECT)
	AuthServerBug              // the backend can't be logged in to as configured (REMOTE_CONFIG)
	AuthDisabled               // nologin, or no proxy destination
	AuthAuthzFailed            // authorization (authzid) refused
)

var authStatusNames = [...]string{"", "ok", "failed", "tempfail", "unavailable", "serverbug", "disabled", "authzfailed"}

func (st AuthStatus) String() string {
	if int(st) < len(authStatusNames) && st != 0 {
		return authStatusNames[st]
	}
	return "unknown"
}

// AuthResult answers an ActAuth or an ActSecret.
type AuthResult struct {
	Status AuthStatus
	// Secret answers an ActSecret with Status AuthOK: the user's stored password with
	// its scheme, "{PLAIN}...", "{CRAM-MD5}<hex>" or "{SCRAM-SHA-256}<Dovecot's
	// format>". Never logged.
	Secret string
	// Reply, if not nil, is sent as it is (it is already tagged, e.g. the backend's
	// answer made by BackendLogin). Otherwise the codec sends Dovecot's reply for
	// Status.
	Reply []byte
	// Text, if set (and Reply is nil), replaces the default text of a failure:
	// "NO [<code>] <Text>", where code is Status's (ALERT for AuthFailed, CONTACTADMIN
	// for AuthDisabled, as Dovecot does for a passdb reason), or "NO <Text>" when Text
	// starts with "[" and so brings its own code.
	Text string
}

// BackendParams is what the engine knows when it starts a backend login: the client's
// tag (IMAP) and the passdb fields that shape the login. Fields a protocol has no use
// for are ignored by it.
type BackendParams struct {
	ClientTag string // tag of the client's LOGIN/AUTHENTICATE; the final reply uses it
	User      string // login user at the backend (destuser, or the client's user)
	Pass      string // password to send (the client's own, or passdb `pass`)
	Master    string // passdb `master`: AUTHENTICATE PLAIN with authzid=User, authcid=Master
	Mech      string // passdb `proxy_mech`: "" (LOGIN, or PLAIN with Master), "PLAIN", "XOAUTH2" or "OAUTHBEARER" (in any case); others fail as BackendInternal
	// Token is the bearer token sent with Mech XOAUTH2 or OAUTHBEARER (proxy_mech=%m
	// forwarding the client's Credentials.Token, with User). Empty: Pass is sent as the
	// token, as Dovecot does (there the token is the auth request's password). Never
	// logged.
	Token string
	ID    []BackendIDField // ordered pairs for `I ID (...)`, built by the engine; empty: no ID is sent
	// NotTrusted is passdb proxy_not_trusted: never send ID.
	NotTrusted bool
	// ClientSentCapability: the client issued CAPABILITY before logging in, so it
	// may ignore a CAPABILITY resp-code. The backend is asked `C CAPABILITY` and the
	// client gets `* CAPABILITY <caps>` before its tagged OK.
	ClientSentCapability bool
	// NoPipelining is passdb proxy_nopipelining: send one command, wait for its tagged
	// reply, then the next.
	NoPipelining bool
	// TLS: the connection to the backend is TLS from its start (passdb ssl=yes|any-cert).
	// Like StartTLS, it lets LOGIN go ahead even if the backend advertised LOGINDISABLED.
	TLS bool
	// StartTLS is passdb starttls=yes|any-cert: send `S STARTTLS` after the banner (and
	// ID); Feed then returns BackendStartTLS, see there.
	StartTLS bool
	// Client is who the client is: IMAP sends it in ID (the engine builds ID from it);
	// POP3, Submission and ManageSieve in XCLIENT when the backend offers it.
	Client ClientInfo
	// NoAuth is passdb proxy_noauth (Submission): XCLIENT LOGIN= instead of AUTH.
	NoAuth bool
}

// BackendIDField is one key/value pair of the ID command sent to the backend.
type BackendIDField struct{ Key, Value string }

// BackendOutcome says where a backend login stands.
type BackendOutcome uint8

const (
	// BackendPending: feed more backend bytes.
	BackendPending BackendOutcome = iota
	// BackendOK: logged in. ClientReply goes to the client, then both sides are relayed.
	BackendOK
	// BackendAuthFailed: the backend refused the login (Dovecot's AUTH failure, also any
	// NO with a resp-code other than UNAVAILABLE, and BAD). Not retried.
	BackendAuthFailed
	// BackendTempFail: `NO [UNAVAILABLE]` (Dovecot's AUTH_TEMPFAIL). Retried; ClientReply
	// is for after the last attempt.
	BackendTempFail
	// BackendProtocolError: invalid banner, too long line, bad AUTHENTICATE exchange,
	// STARTTLS refused (Dovecot's PROTOCOL and REMOTE failures). Retried.
	BackendProtocolError
	// BackendRemoteConfig: the backend can't be logged in to as configured
	// (LOGINDISABLED without TLS, STARTTLS not advertised). Not retried.
	BackendRemoteConfig
	// BackendInternal: our own configuration is unusable (unsupported proxy_mech,
	// NUL in a SASL PLAIN field). Not retried. Known before any byte is fed.
	BackendInternal
	// BackendStartTLS: the backend accepted `S STARTTLS`. Not final. Consumed ends right
	// after the `S OK` line; the engine must drop every byte read after it (they were
	// sent in plaintext and could be injected), do the TLS handshake, then call
	// TLSStarted and Feed the bytes read over TLS.
	BackendStartTLS
)

var backendOutcomeNames = [...]string{
	"pending", "ok", "auth-failed", "tempfail", "protocol-error", "remote-config", "internal", "starttls",
}

func (o BackendOutcome) String() string {
	if int(o) < len(backendOutcomeNames) {
		return backendOutcomeNames[o]
	}
	return "unknown"
}

// Final reports whether the login is over (successfully or not).
func (o BackendOutcome) Final() bool { return o != BackendPending && o != BackendStartTLS }

// Retryable reports whether Dovecot would reconnect and try again after this outcome.
func (o BackendOutcome) Retryable() bool {
	return o == BackendTempFail || o == BackendProtocolError
}

// BackendResult is the outcome of a backend login so far.
type BackendResult struct {
	Outcome BackendOutcome
	// ClientReply, set for every final outcome, is what the client must get: the
	// untagged lines the backend sent during the login that Dovecot forwards (all `* ...`
	// but CAPABILITY, ID and BYE), then the tagged reply with ClientTag. For outcomes
	// where Dovecot makes the reply up itself it is `NO [UNAVAILABLE] Account is
	// temporarily unavailable.` (ProtocolError, Internal) or `NO [SERVERBUG] ...`
	// (RemoteConfig). It is owned by the BackendLogin: valid until Reset.
	ClientReply []byte
	// Text is a short reason for the logs, Dovecot's wording: "Invalid banner: ...",
	// "Too long input line", the backend's text after `NO ` on a refused login, ...
	// Empty on success. Never holds the password or the SASL payload.
	Text string
}
