package route

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Proxy holds the passdb fields that steer proxying, with Dovecot semantics
// (login-common/client-common-auth.c client_auth_parse_args() and
// auth/auth-request.c). Booleans are existence tests: proxy=N still means on.
type Proxy struct {
	Proxy, ProxyMaybe, NoPassword, NoDelay, NoLogin, ProxyNotTrusted, ProxyNoPipelining bool

	ProxyAlways bool // with proxy_maybe: still proxy (without host) when host is this server
	ProxyNoAuth bool // submission: XCLIENT LOGIN= instead of AUTH to the backend

	Host, HostIP, DestUser, Pass, Master, ProxyMech, SourceIP, Reason string

	Protocol string // LMTP only: "lmtp" (default) or "smtp"
	Code     string // failure code for the client (temp_fail, authz_fail, user_disabled, …)

	Port int // 0 = protocol default (993/995 when SSL is set, as Dovecot 2.4 decides after all fields)

	// ProxyTimeout is proxy_timeout: 0 = use login_proxy_timeout. A plain
	// integer is seconds; with a unit (e.g. "500ms", "2 mins") it is exact.
	ProxyTimeout time.Duration
	// ProxyRefresh is proxy_refresh (seconds); 0 = off.
	ProxyRefresh time.Duration
	// HostImmediateFailureAfter is proxy_host_immediate_failure_after,
	// DefaultHostImmediateFailureAfter unless the field is set; 0 disables.
	HostImmediateFailureAfter time.Duration

	// DelayUntil is delay_until=<unix>[+<N>]: hold a successful reply until
	// then. DelayJitter is N seconds; Dovecot adds a random 0..N-1 s, capped
	// at MaxDelay from now. The zero Time means no delay.
	DelayUntil  time.Time
	DelayJitter time.Duration

	// SSL and StartTLS are the raw values of ssl= and starttls= ("yes",
	// "any-cert", …). A bare flag (no value) reads as "yes", so "" always
	// means the field is absent. Any value turns TLS on; AnyCert is set when
	// either is "any-cert" (no certificate validation).
	SSL, StartTLS string
	AnyCert       bool

	// Forward holds forward_<name>=value fields as {<name>, value}, sorted by
	// name for determinism.
	Forward []KV
}

// KV is one key/value pair.
type KV struct{ Key, Value string }

const (
	// DefaultHostImmediateFailureAfter is Dovecot's
	// LOGIN_PROXY_DEFAULT_HOST_IMMEDIATE_FAILURE_AFTER_SECS.
	DefaultHostImmediateFailureAfter = 30 * time.Second
	// MaxDelay is AUTH_REQUEST_MAX_DELAY_SECS: delay_until further in the
	// future than this fails the login.
	MaxDelay = 5 * time.Minute
)

// UseTLS reports whether the backend connection uses TLS (ssl= or starttls=).
func (p *Proxy) UseTLS() bool { return p.SSL != "" || p.StartTLS != "" }

// ParseProxy reads the proxy-related fields. Fields it does not know are
// ignored (they stay in Entry.Fields). The error names the first malformed
// field: port, proxy_timeout, proxy_refresh,
// proxy_host_immediate_failure_after, delay_until, hostip, source_ip, or an
// empty forward_ name. Dovecot only logs most of these and carries on with a
// default (port 0!); Doorman refuses them so a typo cannot route a user to
// the wrong place.
func ParseProxy(fields map[string]string) (Proxy, error) {
	p := Proxy{HostImmediateFailureAfter: DefaultHostImmediateFailureAfter}
	var err error
	nforward := 0
	for k, v := range fields {
		switch k {
		case "proxy":
			p.Proxy = true
		case "proxy_maybe":
			p.ProxyMaybe = true
		case "proxy_always":
			p.ProxyAlways = true
		case "nopassword":
			p.NoPassword = true
		case "nodelay":
			p.NoDelay = true
		case "nologin":
			p.NoLogin = true
		case "proxy_not_trusted":
			p.ProxyNotTrusted = true
		case "proxy_nopipelining":
			p.ProxyNoPipelining = true
		case "proxy_noauth":
			p.ProxyNoAuth = true
		case "host":
			p.Host = v
		case "hostip":
			if err = checkIP(k, v); err != nil {
				return Proxy{}, err
			}
			p.HostIP = v
		case "source_ip":
			if err = checkIP(k, v); err != nil {
				return Proxy{}, err
			}
			p.SourceIP = v
		case "destuser":
			p.DestUser = v
		case "pass":
			p.Pass = v
		case "master":
			p.Master = v // empty = no master user, as in Dovecot
		case "proxy_mech":
			p.ProxyMech = v
		case "reason":
			p.Reason = v
		case "protocol":
			p.Protocol = v
		case "code":
			p.Code = v
		case "port":
			if p.Port, err = parsePort(v); err != nil {
				return Proxy{}, err
			}
		case "proxy_timeout":
			if p.ProxyTimeout, err = parseProxyTimeout(v); err != nil {
				return Proxy{}, err
			}
		case "proxy_refresh":
			n, perr := parseUint32(v)
			if perr != nil {
				return Proxy{}, fmt.Errorf("route: invalid proxy_refresh %q: want whole seconds", v)
			}
			p.ProxyRefresh = time.Duration(n) * time.Second
		case "proxy_host_immediate_failure_after":
			if p.HostImmediateFailureAfter, err = parseDovecotTime(v, false); err != nil {
				return Proxy{}, fmt.Errorf("route: invalid proxy_host_immediate_failure_after %q: %v", v, err)
			}
		case "delay_until":
			if p.DelayUntil, p.DelayJitter, err = parseDelayUntil(v); err != nil {
				return Proxy{}, err
			}
		case "ssl":
			p.SSL = flagValue(v)
			p.AnyCert = p.AnyCert || v == "any-cert"
		case "starttls":
			p.StartTLS = flagValue(v)
			p.AnyCert = p.AnyCert || v == "any-cert"
		default:
			if strings.HasPrefix(k, "forward_") {
				if len(k) == len("forward_") {
					return Proxy{}, errors.New("route: forward_ field without a name")
				}
				nforward++
			}
		}
	}
	if nforward > 0 {
		// Second pass so the slice is allocated once, at its final size.
		p.Forward = make([]KV, 0, nforward)
		for k, v := range fields {
			if name, ok := strings.CutPrefix(k, "forward_"); ok {
				p.Forward = append(p.Forward, KV{name, v})
			}
		}
		slices.SortFunc(p.Forward, func(a, b KV) int { return strings.Compare(a.Key, b.Key) })
	}
	return p, nil
}

func flagValue(v string) string {
	if v == "" {
		return "yes"
	}
	return v
}

func checkIP(field, v string) error {
	if v == "" {
		return nil
	}
	if _, err := netip.ParseAddr(v); err != nil {
		return fmt.Errorf("route: invalid %s %q: not an IP address", field, v)
	}
	return nil
}

// parsePort follows net_str2port(): decimal 1..65535.
func parsePort(v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 || !allDigits(v) {
		return 0, fmt.Errorf("route: invalid port %q", v)
	}
	return int(n), nil
}

// parseProxyTimeout: "backwards compatibility: plain number is seconds",
// otherwise a Dovecot time interval with milliseconds allowed.
func parseProxyTimeout(v string) (time.Duration, error) {
	if n, err := parseUint32(v); err == nil {
		if uint64(n)*1000 > math.MaxUint32 {
			return 0, fmt.Errorf("route: invalid proxy_timeout %q: too large", v)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := parseDovecotTime(v, true)
	if err != nil {
		return 0, fmt.Errorf("route: invalid proxy_timeout %q: %v", v, err)
	}
	return d, nil
}

// parseDelayUntil reads <unix-ts>[+<N>].
func parseDelayUntil(v string) (time.Time, time.Duration, error) {
	ts, extra, hasExtra := strings.Cut(v, "+")
	var jitter time.Duration
	if hasExtra {
		n, err := parseUint32(extra)
		if err != nil {
			return time.Time{}, 0, fmt.Errorf("route: invalid delay_until randomness %q", extra)
		}
		jitter = time.Duration(n) * time.Second
	}
	if !allDigits(ts) {
		return time.Time{}, 0, fmt.Errorf("route: invalid delay_until timestamp %q", ts)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec > math.MaxInt64/int64(time.Second) {
		return time.Time{}, 0, fmt.Errorf("route: invalid delay_until timestamp %q", ts)
	}
	return time.Unix(sec, 0), jitter, nil
}

// parseUint32 is str_to_uint(): decimal digits only, no sign, no spaces.
func parseUint32(v string) (uint32, error) {
	if !allDigits(v) {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseUint(v, 10, 32)
	return uint32(n), err
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseDovecotTime is settings_get_time() / settings_get_time_msecs()
// (lib-settings/settings-parser.c): a number, optional spaces, and a unit
// given as any prefix of secs/seconds, mins/minutes, hours, days, weeks or
// (with milliseconds) msecs/mseconds/millisecs/milliseconds. "m" is minutes.
// A non-zero number needs a unit. Seconds-only settings accept a millisecond
// value that is a whole number of seconds.
func parseDovecotTime(v string, milliseconds bool) (time.Duration, error) {
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New("invalid time interval")
	}
	num, err := strconv.ParseUint(v[:i], 10, 64)
	if err != nil {
		return 0, errors.New("invalid time interval")
	}
	unit := strings.TrimLeft(v[i:], " ")
	if unit == "" {
		if num != 0 {
			return 0, errors.New("time interval is missing units (add e.g. 's' for seconds)")
		}
		return 0, nil
	}
	var mult time.Duration
	switch {
	case unitPrefix(unit, "secs", "seconds"):
		mult = time.Second
	case unitPrefix(unit, "mins", "minutes"):
		mult = time.Minute
	case unitPrefix(unit, "msecs", "mseconds", "millisecs", "milliseconds"):
		if !milliseconds && num%1000 != 0 {
			return 0, errors.New("milliseconds not supported for this setting")
		}
		mult = time.Millisecond
	case unitPrefix(unit, "hours"):
		mult = time.Hour
	case unitPrefix(unit, "days"):
		mult = 24 * time.Hour
	case unitPrefix(unit, "weeks"):
		mult = 7 * 24 * time.Hour
	default:
		return 0, errors.New("invalid time interval")
	}
	// Dovecot keeps the result in an unsigned int (seconds or msecs).
	limit := time.Duration(math.MaxUint32) * time.Second
	if milliseconds {
		limit = time.Duration(math.MaxUint32) * time.Millisecond
	}
	if num > uint64(limit/mult) {
		return 0, errors.New("time interval is too large")
	}
	return time.Duration(num) * mult, nil
}

// unitPrefix reports whether u is a case-insensitive prefix of one of words.
func unitPrefix(u string, words ...string) bool {
	for _, w := range words {
		if len(u) <= len(w) && strings.EqualFold(u, w[:len(u)]) {
			return true
		}
	}
	return false
}
