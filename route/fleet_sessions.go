package route

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// The fleet's live-session view.
//
//	<prefix>fleet:hosts              zset: member a host's name, score the unix seconds of
//	                                 its last full refresh
//	<prefix>fleet:sessions:{<host>}  hash: session id -> SessionRecord (JSON), with an
//	                                 expiry the host renews: a dead host's records vanish
//
// The {<host>} hash tag keeps a host's keys in one Redis Cluster slot, so a host can
// replace its hash in one MULTI. Each host writes only its own hash; readers (doormanctl)
// read the zset, then each host's hash.

// SessionRecord is one relayed session as a host publishes it.
type SessionRecord struct {
	Host      string    `json:"host"`
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Protocol  string    `json:"protocol"`
	Listener  string    `json:"listener"`
	Client    string    `json:"client"`
	Backend   string    `json:"backend"`
	Vsite     string    `json:"vsite,omitempty"`
	Started   time.Time `json:"started"`
	ToClient  int64     `json:"to_client"`
	ToBackend int64     `json:"to_backend"`
}

// sessionChunk is how many fields one HSET carries when a hash is written whole.
const sessionChunk = 1000

// HostsKey is the zset of the hosts that publish sessions.
func (f *Fleet) HostsKey() string { return f.prefix + "fleet:hosts" }

// SessionsKey is the hash of one host's sessions.
func (f *Fleet) SessionsKey(host string) string { return f.prefix + "fleet:sessions:{" + host + "}" }

func encodeSessions(recs []SessionRecord) ([]any, error) {
	args := make([]any, 0, 2*len(recs))
	for i := range recs {
		b, err := json.Marshal(&recs[i])
		if err != nil {
			return nil, err
		}
		args = append(args, recs[i].ID, b)
	}
	return args, nil
}

// WriteSessions applies a host's changes since its last write: set adds or updates
// records, del removes session ids; the hash's expiry is renewed to ttl. One pipeline.
func (f *Fleet) WriteSessions(ctx context.Context, host string, set []SessionRecord, del []string, ttl time.Duration) error {
	if len(set) == 0 && len(del) == 0 {
		return nil
	}
	args, err := encodeSessions(set)
	if err != nil {
		return err
	}
	key := f.SessionsKey(host)
	_, err = f.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := 0; i < len(args); i += 2 * sessionChunk {
			p.HSet(ctx, key, args[i:min(i+2*sessionChunk, len(args))]...)
		}
		for i := 0; i < len(del); i += sessionChunk {
			p.HDel(ctx, key, del[i:min(i+sessionChunk, len(del))]...)
		}
		p.Expire(ctx, key, ttl)
		return nil
	})
	return err
}

// ReplaceSessions replaces a host's hash with recs (in one MULTI, so a reader sees the
// old hash or the new one), sets its expiry and marks the host live in the hosts zset.
func (f *Fleet) ReplaceSessions(ctx context.Context, host string, recs []SessionRecord, ttl time.Duration, now time.Time) error {
	args, err := encodeSessions(recs)
	if err != nil {
		return err
	}
	key := f.SessionsKey(host)
	_, err = f.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		for i := 0; i < len(args); i += 2 * sessionChunk {
			p.HSet(ctx, key, args[i:min(i+2*sessionChunk, len(args))]...)
		}
		p.Expire(ctx, key, ttl)
		return nil
	})
	if err != nil {
		return err
	}
	return f.c.ZAdd(ctx, f.HostsKey(), redis.Z{Score: float64(now.Unix()), Member: host}).Err()
}

// TouchSessions renews a host's hash expiry and marks the host live, without rewriting
// its records: the refresh between two full rewrites. It reports whether the hash
// exists (a Redis that lost its data has none: the host must rewrite it).
func (f *Fleet) TouchSessions(ctx context.Context, host string, ttl time.Duration, now time.Time) (bool, error) {
	var exp *redis.BoolCmd
	_, err := f.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		exp = p.Expire(ctx, f.SessionsKey(host), ttl)
		p.ZAdd(ctx, f.HostsKey(), redis.Z{Score: float64(now.Unix()), Member: host})
		return nil
	})
	if err != nil {
		return false, err
	}
	return exp.Val(), nil
}

// DeleteSessions removes a host's hash and its entry in the hosts zset (a host that
// stops cleanly).
func (f *Fleet) DeleteSessions(ctx context.Context, host string) error {
	err := f.c.Del(ctx, f.SessionsKey(host)).Err()
	return errors.Join(err, f.c.ZRem(ctx, f.HostsKey(), host).Err())
}

// ListSessions reads every live host's sessions, sorted by host, then start. A host in
// the zset whose hash is gone (it died, and its records expired; or it has no sessions)
// and whose last refresh is older than staleAfter is dropped from the zset; staleAfter 0
// drops it at once (a live host adds itself back at its next refresh). A record that
// does not parse is skipped and reported in the error (the rest are still returned).
func (f *Fleet) ListSessions(ctx context.Context, staleAfter time.Duration) ([]SessionRecord, error) {
	hosts, err := f.c.ZRangeWithScores(ctx, f.HostsKey(), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	var (
		out  []SessionRecord
		errs []error
	)
	now := time.Now()
	for _, z := range hosts {
		host, _ := z.Member.(string)
		m, err := f.c.HGetAll(ctx, f.SessionsKey(host)).Result()
		if err != nil {
			return nil, err
		}
		if len(m) == 0 {
			if now.Sub(time.Unix(int64(z.Score), 0)) >= staleAfter {
				_ = f.c.ZRem(ctx, f.HostsKey(), host).Err()
			}
			continue
		}
		for id, v := range m {
			var r SessionRecord
			if err := json.Unmarshal([]byte(v), &r); err != nil {
				errs = append(errs, fmt.Errorf("host %s session %s: %w", host, id, err))
				continue
			}
			if r.Host == "" {
				r.Host = host
			}
			if r.ID == "" {
				r.ID = id
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		if !out[i].Started.Equal(out[j].Started) {
			return out[i].Started.Before(out[j].Started)
		}
		return out[i].ID < out[j].ID
	})
	return out, errors.Join(errs...)
}

// Ping checks that the fleet's Redis answers.
func (f *Fleet) Ping(ctx context.Context) error { return f.c.Ping(ctx).Err() }
