package route

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Moving users.
//
// Dovecot's recipe for moving a user to another backend (proxies.rst, "Moving users
// between backends/clusters"): set the new host together with delay_until=<now+~31s>
// atomically, kick the user's sessions, flush the auth cache. New logins then wait in
// the proxy until the old backend's processes have ended, and go to the new host.
// Fleet.Move does that for any number of users, pipelined in batches.

// DefaultMoveDelay is the delay_until of a move: about what Dovecot advises (31 s).
const DefaultMoveDelay = 31 * time.Second

// MoveBatch is how many users one round trip moves.
const MoveBatch = 500

// MoveTarget is where users move: a host (with a port, or the protocol's default) or a
// vsite. Exactly one of Host and Vsite is set.
type MoveTarget struct {
	Host  string
	Port  int // 0: the protocol's default port
	Vsite string
}

func (t MoveTarget) check() error {
	switch {
	case (t.Host == "") == (t.Vsite == ""):
		return errors.New("route: move: give a host or a vsite")
	case t.Port < 0 || t.Port > 65535:
		return fmt.Errorf("route: move: bad port %d", t.Port)
	case t.Vsite != "" && t.Port != 0:
		return errors.New("route: move: a port goes with a host, not a vsite")
	case strings.ContainsAny(t.Host+t.Vsite, " \t\r\n,"):
		return fmt.Errorf("route: move: bad target %q", t.Host+t.Vsite)
	case t.Host != "" && !isIP(t.Host):
		// The move drops hostip, and Doorman connects to host itself: a name would
		// fail every login of the moved users.
		return fmt.Errorf("route: move: host %q is not an IP address", t.Host)
	}
	return nil
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// MoveOptions tune a move; the zero value is Dovecot's recipe.
type MoveOptions struct {
	Delay   time.Duration // delay_until = now + Delay (default DefaultMoveDelay; < 0: no delay_until)
	Jitter  time.Duration // delay_until's +N: each login waits up to N seconds more, at random
	KickTTL time.Duration // the kick records' expiry (default DefaultKickRecordTTL)
	Now     time.Time     // default time.Now()
}

// MoveResult says what a move did.
type MoveResult struct {
	Moved    int
	NotFound []string // users without a hash: nothing was written for them
}

// moveUser rewrites one user hash if it exists. ARGV: "host"|"vsite", the target, the
// port ("" = none), delay_until ("" = none).
var moveUser = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == 'host' then
  redis.call('HSET', KEYS[1], 'host', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'port', ARGV[3]) else redis.call('HDEL', KEYS[1], 'port') end
  redis.call('HDEL', KEYS[1], 'vsite', 'hostip')
  -- A user with a vsite was proxied through it; on a host of their own too.
  if redis.call('HEXISTS', KEYS[1], 'proxy') == 0 and redis.call('HEXISTS', KEYS[1], 'proxy_maybe') == 0 then
    redis.call('HSET', KEYS[1], 'proxy', '')
  end
else
  redis.call('HSET', KEYS[1], 'vsite', ARGV[2])
  redis.call('HDEL', KEYS[1], 'host', 'hostip', 'port')
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'delay_until', ARGV[4]) end
return 1`)

// UserKey is the hash of a user.
func (f *Fleet) UserKey(name string) string { return f.prefix + "user:" + name }

// delayUntil is the delay_until value for now+delay with jitter: "<unix>[+<N>]".
func delayUntil(now time.Time, delay, jitter time.Duration) string {
	v := strconv.FormatInt(int64(math.Ceil(float64(now.Add(delay).UnixNano())/1e9)), 10)
	if s := int64(math.Ceil(jitter.Seconds())); s > 0 {
		v += "+" + strconv.FormatInt(s, 10)
	}
	return v
}

// Move sends users to a host or a vsite: per user, atomically and only if the user
// exists, the new routing and delay_until; then each moved user is kicked fleet-wide
// and dropped from the proxies' auth caches ("user <name>"). Users go MoveBatch to a
// round trip. On an error, the users of earlier batches stay moved (and kicked); the
// result counts them, and running the move again is harmless.
func (f *Fleet) Move(ctx context.Context, users []string, to MoveTarget, opt MoveOptions) (MoveResult, error) {
	var res MoveResult
	if err := to.check(); err != nil {
		return res, err
	}
	for _, u := range users {
		if u == "" || strings.ContainsAny(u, " \t\r\n") {
			return res, fmt.Errorf("route: move: bad user name %q", u)
		}
	}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	if opt.Delay == 0 {
		opt.Delay = DefaultMoveDelay
	}
	if opt.Delay+opt.Jitter > MaxDelay {
		// Past it, the moved users' logins would fail ("delay_until too far") instead of waiting.
		return res, fmt.Errorf("route: move: delay %v + jitter %v is more than delay_until's limit of %v", opt.Delay, opt.Jitter, MaxDelay)
	}
	if to.Vsite != "" {
		n, err := f.c.Exists(ctx, f.VsiteKey(to.Vsite)).Result()
		if err != nil {
			return res, err
		}
		if n == 0 {
			// The passdb fails a user whose vsite it does not know.
			return res, fmt.Errorf("route: move: vsite %q does not exist (no hash %s)", to.Vsite, f.VsiteKey(to.Vsite))
		}
	}
	delay := ""
	if opt.Delay > 0 {
		delay = delayUntil(opt.Now, opt.Delay, opt.Jitter)
	}
	mode, target, port := "host", to.Host, ""
	if to.Vsite != "" {
		mode, target = "vsite", to.Vsite
	} else if to.Port != 0 {
		port = strconv.Itoa(to.Port)
	}
	for start := 0; start < len(users); start += MoveBatch {
		batch := users[start:min(start+MoveBatch, len(users))]
		cmds := make([]*redis.Cmd, len(batch))
		_, err := f.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, u := range batch {
				cmds[i] = moveUser.Eval(ctx, p, []string{f.UserKey(u)}, mode, target, port, delay)
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("route: move: %w", err)
		}
		var moved []string
		for i, c := range cmds {
			if n, _ := c.Int(); n == 1 {
				moved = append(moved, batch[i])
			} else {
				res.NotFound = append(res.NotFound, batch[i])
			}
		}
		// Only now, with the new routing stored: drop the cached entry, then kick, so a
		// client reconnecting at once already finds the new host and delay_until.
		_, err = f.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, u := range moved {
				p.Publish(ctx, f.EventsChannel(), "user "+u)
				f.kickPipe(ctx, p, KickUser, u, opt.Now, opt.KickTTL)
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("route: move: %d users moved but not all kicked: %w", res.Moved+len(moved), err)
		}
		res.Moved += len(moved)
	}
	return res, nil
}

// kickPipe is Kick queued on a pipeline (the same record and message), for bulk kicks.
func (f *Fleet) kickPipe(ctx context.Context, p redis.Pipeliner, kind, value string, at time.Time, ttl time.Duration) {
	if ttl <= 0 {
		ttl = DefaultKickRecordTTL
	}
	p.Set(ctx, f.KickKey(kind, value), strconv.FormatInt(at.UnixMilli(), 10), ttl)
	p.Publish(ctx, f.EventsChannel(), "kick "+kind+" "+value)
}
