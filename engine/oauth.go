package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"doorman/codec/sasl"
	"doorman/route"
)

// OAuth2 logins (XOAUTH2, OAUTHBEARER). The user comes from the SASL message and is looked
// up in the passdb as usual; what replaces the password check is:
//
//   - with oauth2_introspection_url, the token is checked there (RFC 7662) before the
//     login is routed: it must be active and name the user;
//   - without it, the passdb entry must say nopassword: Dovecot's way of letting the
//     token through to the backend (proxy_mech=%m), which checks it itself;
//   - otherwise the login is refused: a token is not a password.
//
// The token itself is never logged.

// isOAuthMech reports whether a client's mechanism carries a bearer token.
func isOAuthMech(mech string) bool { return mech == sasl.XOAuth2 || mech == sasl.OAuthBearer }

// oauthLookup is the passdb step of an OAuth2 login. Without introspection it is the
// ordinary Authenticate with a password nobody can know, so that only nopassword (an
// empty stored password) accepts; with introspection the entry is only looked up, its
// password (if any) not checked, as the token is checked instead.
func (srv *Server) oauthLookup(ctx context.Context, user string) route.Result {
	if srv.oauth == nil {
		var b [24]byte
		_, _ = rand.Read(b[:])
		res := srv.chain.Authenticate(ctx, srv.hasher, user, "\x00oauth2:"+hex.EncodeToString(b[:]))
		if res.Verdict == route.VerdictPasswordMismatch && res.Err == nil {
			res.Err = errNotNoPassword
		}
		return res
	}
	e, err := srv.chain.Lookup(ctx, user)
	switch {
	case errors.Is(err, route.ErrUnknownUser):
		return route.Result{Verdict: route.VerdictUnknownUser}
	case err != nil:
		return route.Result{Verdict: route.VerdictTempFail, Err: err}
	}
	px, err := route.ParseProxy(e.Fields)
	if err != nil {
		return route.Result{Verdict: route.VerdictTempFail, Err: fmt.Errorf("user %s: %w", e.User, err)}
	}
	return route.Result{Verdict: route.VerdictOK, Entry: e, Proxy: px}
}

// errNotNoPassword is why a token is refused without introspection.
var errNotNoPassword = errors.New("OAuth2 token refused: the passdb entry has no nopassword (and oauth2_introspection_url is not set)")

// backendMech is the mechanism of the backend login for passdb proxy_mech: "%m" (or
// "%{mech}") is the client's own, as Dovecot expands it: its LOGIN command and the LOGIN
// mechanism are PLAIN there (Dovecot's LOGIN command is PLAIN inside, and the same
// password goes in either). Anything else is taken as it is (the codec refuses what it
// can't send).
func backendMech(proxyMech, clientMech string) string {
	switch strings.ToLower(proxyMech) {
	case "%m", "%{mech}", "%lm", "%um", "%l{mech}", "%u{mech}": // as the passwd-file leaves it
		if clientMech == sasl.Login {
			return sasl.Plain
		}
		return clientMech
	}
	return proxyMech
}

// introspector checks tokens at an RFC 7662 introspection endpoint.
type introspector struct {
	url          string
	clientID     string
	clientSecret string
	attr         string // the claim naming the user
	format       string // auth_username_format, applied to the claim as to the user
	timeout      time.Duration
	client       *http.Client
}

func newIntrospector(cfg *Config) *introspector {
	if cfg.OAuth2IntrospectionURL == "" {
		return nil
	}
	return &introspector{
		url:          cfg.OAuth2IntrospectionURL,
		clientID:     cfg.OAuth2ClientID,
		clientSecret: cfg.OAuth2ClientSecret,
		attr:         cfg.OAuth2UsernameAttribute,
		format:       cfg.AuthUsernameFormat,
		timeout:      time.Duration(cfg.OAuth2Timeout),
		client: &http.Client{
			// A redirect would carry the token elsewhere: not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// errTokenRefused is an inactive token, or one for another user: an authentication
// failure. Any other error of check is the endpoint's (a temporary failure).
var errTokenRefused = errors.New("token refused")

// check asks the endpoint about token and reports nil if it is active and its username
// claim is user (both after auth_username_format). The error never holds the token.
func (in *introspector) check(ctx context.Context, token, user string) error {
	ctx, cancel := context.WithTimeout(ctx, in.timeout)
	defer cancel()
	body := url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.url, strings.NewReader(body))
	if err != nil {
		return errors.New("oauth2 introspection: bad request")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if in.clientID != "" {
		req.SetBasicAuth(url.QueryEscape(in.clientID), url.QueryEscape(in.clientSecret))
	}
	resp, err := in.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is ours, but keep the message short
		}
		return fmt.Errorf("oauth2 introspection: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("oauth2 introspection: HTTP %s", resp.Status)
	}
	var claims map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&claims); err != nil {
		return errors.New("oauth2 introspection: response is not a JSON object")
	}
	if active, _ := claims["active"].(bool); !active {
		return fmt.Errorf("%w: not active", errTokenRefused)
	}
	name, _ := claims[in.attr].(string)
	if name == "" {
		return fmt.Errorf("%w: no %s claim", errTokenRefused, in.attr)
	}
	if normalizeUser(in.format, name) != normalizeUser(in.format, user) {
		return fmt.Errorf("%w: %s claim %q is not the user", errTokenRefused, in.attr, name)
	}
	return nil
}
