package route

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

// The hash values below were computed outside Go (python3 hashlib.md5, first four bytes
// big endian), from Dovecot's documented rule.
func TestUserHashKnownValues(t *testing.T) {
	for _, c := range []struct {
		user string
		want uint32
	}{
		{"alice", 1669653170},
		{"ALICE", 1669653170}, // %Lu: lower-cased first
		{"Bob@Example.COM", 1268496390},
	} {
		if got := UserHash(c.user); got != c.want {
			t.Errorf("UserHash(%q) = %d, want %d", c.user, got, c.want)
		}
	}
}

// independentHash is the rule written out again with crypto/md5, byte by byte.
func independentHash(s string) uint32 {
	sum := md5.Sum([]byte(s))
	h := uint32(sum[0])<<24 | uint32(sum[1])<<16 | uint32(sum[2])<<8 | uint32(sum[3])
	if h == 0 {
		h = 1
	}
	return h
}

// naiveLookup walks every point of every host: the host with the smallest point ≥ hash,
// else the host with the smallest point overall; ties by host order (IPs compared).
func naiveLookup(hosts []string, hash uint32) string {
	best, bestHash, found := "", uint32(0), false
	low, lowHash := "", uint32(math.MaxUint32)
	for _, h := range hosts {
		for i := 0; i < VhostCount; i++ {
			p := independentHash(fmt.Sprintf("%s-%d", h, i))
			if p >= hash && (!found || p < bestHash || p == bestHash && compareHosts(h, best) < 0) {
				best, bestHash, found = h, p, true
			}
			if p < lowHash || p == lowHash && compareHosts(h, low) < 0 {
				low, lowHash = h, p
			}
		}
	}
	if found {
		return best
	}
	return low
}

func TestRingMatchesTheRule(t *testing.T) {
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.7.40:1143"}
	r := NewRing(hosts)
	for i := 0; i < 300; i++ {
		user := fmt.Sprintf("User%d@example.org", i)
		want := naiveLookup(hosts, independentHash(strings.ToLower(user)))
		if got := r.Host(user); got != want {
			t.Fatalf("%s: ring says %s, the rule says %s", user, got, want)
		}
	}
	// The ends of the ring: hash 1 and the largest hash wrap correctly.
	for _, h := range []uint32{1, math.MaxUint32} {
		if got, want := r.Lookup(h), naiveLookup(hosts, h); got != want {
			t.Errorf("Lookup(%d) = %s, want %s", h, got, want)
		}
	}
	// The ring's lowest point is the lowest MD5("<host>-<i>") of all.
	lowest := uint32(math.MaxUint32)
	for _, h := range hosts {
		for i := 0; i < VhostCount; i++ {
			sum := md5.Sum([]byte(fmt.Sprintf("%s-%d", h, i)))
			lowest = min(lowest, binary.BigEndian.Uint32(sum[:4]))
		}
	}
	if r.points[0].hash != lowest || len(r.points) != len(hosts)*VhostCount {
		t.Errorf("ring points: first %d (want %d), %d points", r.points[0].hash, lowest, len(r.points))
	}
}

func TestRingSameUserSameHost(t *testing.T) {
	// Two processes build their rings from the site's list in different orders and forms.
	a := NewRing([]string{"10.0.0.1", "10.0.0.2", "10.0.0.3"})
	b := NewRing([]string{" 10.0.0.3", "::ffff:10.0.0.1", "10.0.0.2", "10.0.0.2"})
	if !slices.Equal(b.Hosts(), []string{"10.0.0.3", "10.0.0.1", "10.0.0.2"}) {
		t.Fatalf("hosts not canonical or not deduplicated: %v", b.Hosts())
	}
	for i := 0; i < 2000; i++ {
		u := fmt.Sprintf("u%d", i)
		if a.Host(u) != b.Host(u) {
			t.Fatalf("%s: %s vs %s", u, a.Host(u), b.Host(u))
		}
		if a.Host(u) != a.Host(strings.ToUpper(u)) {
			t.Fatalf("%s: the name's case changed its host", u)
		}
	}
}

func TestRingRemovingABackendMovesOnlyItsUsers(t *testing.T) {
	hosts := []string{"10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"}
	full := NewRing(hosts)
	const users = 20000
	for _, gone := range hosts {
		rest := slices.DeleteFunc(slices.Clone(hosts), func(h string) bool { return h == gone })
		less := NewRing(rest)
		moved, had := 0, 0
		for i := 0; i < users; i++ {
			u := fmt.Sprintf("user%d@example.org", i)
			before, after := full.Host(u), less.Host(u)
			if before == gone {
				had++
				if after == gone {
					t.Fatalf("%s still on removed %s", u, gone)
				}
			}
			if before != after {
				moved++
				if before != gone {
					t.Fatalf("%s moved from %s to %s though only %s was removed", u, before, after, gone)
				}
			}
		}
		// Every user of the removed backend moved, nobody else; and that is about 1/N.
		if moved != had {
			t.Fatalf("removing %s: %d moved, %d had it", gone, moved, had)
		}
		share := float64(moved) / users
		if share < 0.5/float64(len(hosts)) || share > 1.6/float64(len(hosts)) {
			t.Errorf("removing %s moved %.1f%% of users; expected about %.0f%%", gone, share*100, 100/float64(len(hosts)))
		}
	}
	// And adding one back moves only users onto it.
	less := NewRing(hosts[:4])
	for i := 0; i < users; i++ {
		u := fmt.Sprintf("user%d@example.org", i)
		if b, a := less.Host(u), full.Host(u); b != a && a != hosts[4] {
			t.Fatalf("adding %s moved %s from %s to %s", hosts[4], u, b, a)
		}
	}
}

func TestRingEmpty(t *testing.T) {
	if h := NewRing(nil).Host("alice"); h != "" {
		t.Fatalf("empty ring gave %q", h)
	}
	if h := NewRing([]string{"", "  "}).Host("alice"); h != "" {
		t.Fatalf("ring of blanks gave %q", h)
	}
}

// FuzzRing: any user on any host set lands on one of the hosts, the same one whatever the
// order of the list, and a host removed never keeps or gains users it did not have.
func FuzzRing(f *testing.F) {
	f.Add("alice", "10.0.0.1,10.0.0.2,10.0.0.3", uint8(1))
	f.Add("Bob@Example.COM", "::1,127.0.0.1:143", uint8(0))
	f.Add("", "a,b", uint8(5))
	f.Fuzz(func(t *testing.T, user, list string, drop uint8) {
		hosts := strings.Split(list, ",")
		if len(hosts) > 8 {
			hosts = hosts[:8]
		}
		r := NewRing(hosts)
		got := r.Host(user)
		if len(r.Hosts()) == 0 {
			if got != "" {
				t.Fatalf("empty ring gave %q", got)
			}
			return
		}
		if !slices.Contains(r.Hosts(), got) {
			t.Fatalf("%q not one of %v", got, r.Hosts())
		}
		rev := slices.Clone(hosts)
		slices.Reverse(rev)
		if g := NewRing(rev).Host(user); g != got {
			t.Fatalf("order changed the host: %q vs %q", g, got)
		}
		gone := r.Hosts()[int(drop)%len(r.Hosts())]
		rest := slices.DeleteFunc(slices.Clone(r.Hosts()), func(h string) bool { return h == gone })
		after := NewRing(rest).Host(user)
		if got != gone && after != got {
			t.Fatalf("removing %q moved %q from %q to %q", gone, user, got, after)
		}
		if after == gone {
			t.Fatalf("removed %q still chosen", gone)
		}
	})
}
