package route

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Director assignments.
//
// A user that the passdb proxies without a host gets one of a site's healthy backends by
// consistent hashing (ring.go), and the choice is kept in <prefix>director:<user> (the
// host, "ip" or "ip:port") so that every proxy host sends the user's sessions to the same
// backend, even while the site's list changes under them. The record outlives the user's
// last session by director_user_expire (Dovecot's director keeps its user table so); the
// hosts holding sessions renew it while they last.

// DirectorKey is the assignment record of a user.
func (f *Fleet) DirectorKey(user string) string { return f.prefix + "director:" + user }

// assignScript stores ARGV[2] (expiring in ARGV[3] ms) unless someone else stored another
// host since the caller read ARGV[1] ("" = no record): a compare-and-set, so two proxy
// hosts assigning the same user at once agree on one host. It returns the stored host.
var assignScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if (v == false and ARGV[1] == '') or v == ARGV[1] then
	redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
	return ARGV[2]
end
return v`)

// Assignment is the outcome of Assign.
type Assignment struct {
	Host   string // "ip" or "ip:port", canonical
	Stored bool   // this call wrote the record (none existed, or it named an unhealthy host)
	Moved  bool   // the record named a host that is no longer healthy: the user moved
}

// Assign returns the user's backend among healthy (a site's usable hosts): the stored one
// if it is still healthy, else the ring's choice over healthy, which is stored with expiry
// ttl. A stored host that is no longer healthy is replaced (its users re-hash; users of the
// other hosts keep theirs). When another proxy host stores a different healthy host first,
// that one wins.
func (f *Fleet) Assign(ctx context.Context, user string, healthy []string, ttl time.Duration) (Assignment, error) {
	return f.AssignRing(ctx, user, NewRing(healthy), ttl)
}

// AssignRing is Assign with the ring of the healthy hosts already built (the director
// keeps one per site and rebuilds it only when the site changes).
func (f *Fleet) AssignRing(ctx context.Context, user string, ring *Ring, ttl time.Duration) (Assignment, error) {
	healthy := ring.Hosts()
	if len(healthy) == 0 {
		return Assignment{}, errors.New("route: director: the site has no healthy backend")
	}
	key := f.DirectorKey(user)
	stored, err := f.c.Get(ctx, key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Assignment{}, err
	}
	if stored != "" && slices.Contains(healthy, canonicalHost(stored)) {
		return Assignment{Host: canonicalHost(stored)}, nil
	}
	want := ring.Host(user)
	ms := max(ttl.Milliseconds(), 1)
	moved := stored != ""
	for range 3 {
		got, err := assignScript.Run(ctx, f.c, []string{key}, stored, want, ms).Text()
		if err != nil {
			return Assignment{}, err
		}
		if got == want {
			return Assignment{Host: want, Stored: true, Moved: moved}, nil
		}
		if slices.Contains(healthy, canonicalHost(got)) {
			// Another proxy host stored first: its choice stands.
			return Assignment{Host: canonicalHost(got), Moved: moved}, nil
		}
		// Another host stored one that is not healthy in our view (its view of the site
		// is older or newer than ours): replace it in turn, at most a few times.
		stored = got
	}
	return Assignment{Host: want, Moved: moved}, nil
}

// DirectorLookup reads a user's assignment: the host and its remaining time to live; ""
// when there is none.
func (f *Fleet) DirectorLookup(ctx context.Context, user string) (host string, ttl time.Duration, err error) {
	pipe := f.c.Pipeline()
	get := pipe.Get(ctx, f.DirectorKey(user))
	pttl := pipe.PTTL(ctx, f.DirectorKey(user))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return "", 0, err
	}
	host, err = get.Result()
	if errors.Is(err, redis.Nil) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	return host, pttl.Val(), nil
}

// DirectorTouch sets the expiry of the users' assignments to ttl, in one round trip (a
// pipeline; in Cluster, one per node). A user without a record is left without one.
func (f *Fleet) DirectorTouch(ctx context.Context, users []string, ttl time.Duration) error {
	if len(users) == 0 {
		return nil
	}
	pipe := f.c.Pipeline()
	for _, u := range users {
		pipe.PExpire(ctx, f.DirectorKey(u), ttl)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// DirectorForget drops a user's assignment (the next login re-hashes).
func (f *Fleet) DirectorForget(ctx context.Context, user string) error {
	return f.c.Del(ctx, f.DirectorKey(user)).Err()
}
