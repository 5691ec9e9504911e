package route

import (
	"crypto/md5"
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Consistent hashing, as Dovecot's director (2.3) does it, so a user's backend is the one
// a director would have chosen:
//
//   - the user's hash is mail_user_hash with director_username_hash = %Lu: the first four
//     bytes, big endian, of the MD5 of the lower-cased name; 0 becomes 1;
//   - each backend puts VhostCount points on a ring: the first four bytes of
//     MD5("<ip>-<i>") for i = 0..VhostCount-1;
//   - a user goes to the backend of the first point at or after the user's hash, wrapping
//     around; two backends on the same point are ordered by address.
//
// Adding or removing a backend moves only the users whose point changes hands: those of
// the removed backend, or about 1/N of all users to a new one.
//
// Doorman's hosts may carry a port ("ip:port"); such a host's points hash the whole
// "ip:port" string, so a plain IP hashes exactly as in Dovecot.

// VhostCount is Dovecot's VHOST_MULTIPLIER: the ring points of one backend.
const VhostCount = 100

// UserHash is the director's hash of a user name (director_username_hash %Lu).
func UserHash(user string) uint32 {
	sum := md5.Sum([]byte(strings.ToLower(user)))
	h := binary.BigEndian.Uint32(sum[:4])
	if h == 0 {
		h = 1
	}
	return h
}

// Ring is the consistent-hashing ring of a set of backends. It is immutable: build a new
// one when the set changes.
type Ring struct {
	hosts  []string
	points []ringPoint // sorted by hash, then by host
}

type ringPoint struct {
	hash uint32
	host int32 // index into hosts
}

// NewRing builds the ring of hosts ("ip" or "ip:port"). Duplicates count once; order does
// not matter.
func NewRing(hosts []string) *Ring {
	r := &Ring{}
	for _, h := range hosts {
		h = canonicalHost(h)
		if h != "" && !slices.Contains(r.hosts, h) {
			r.hosts = append(r.hosts, h)
		}
	}
	r.points = make([]ringPoint, 0, len(r.hosts)*VhostCount)
	buf := make([]byte, 0, 64)
	for i, h := range r.hosts {
		for v := 0; v < VhostCount; v++ {
			buf = append(append(append(buf[:0], h...), '-'), strconv.Itoa(v)...)
			sum := md5.Sum(buf)
			r.points = append(r.points, ringPoint{hash: binary.BigEndian.Uint32(sum[:4]), host: int32(i)})
		}
	}
	slices.SortFunc(r.points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return compareHosts(r.hosts[a.host], r.hosts[b.host])
	})
	return r
}

// Hosts are the ring's backends, canonical, in the order given.
func (r *Ring) Hosts() []string { return r.hosts }

// Lookup is the backend of hash: the host of the first point at or after it, wrapping; ""
// for an empty ring.
func (r *Ring) Lookup(hash uint32) string {
	if len(r.points) == 0 {
		return ""
	}
	i, _ := slices.BinarySearchFunc(r.points, hash, func(p ringPoint, h uint32) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	if i == len(r.points) {
		i = 0
	}
	return r.hosts[r.points[i].host]
}

// Host is the backend of a user name.
func (r *Ring) Host(user string) string { return r.Lookup(UserHash(user)) }

// canonicalHost writes an IP (or IP:port) as Dovecot's net_ip2addr would; anything else is
// kept as written (trimmed).
func canonicalHost(h string) string {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return h
}

// compareHosts orders two hosts on the same ring point as Dovecot's net_ip_cmp does (IPv4
// before IPv6, then by bytes), then by port; non-IP hosts by their text, after all IPs.
func compareHosts(a, b string) int {
	pa, oka := hostAddrPort(a)
	pb, okb := hostAddrPort(b)
	switch {
	case oka && okb:
		if c := pa.Addr().Compare(pb.Addr()); c != 0 {
			return c
		}
		return int(pa.Port()) - int(pb.Port())
	case oka:
		return -1
	case okb:
		return 1
	}
	return strings.Compare(a, b)
}

func hostAddrPort(h string) (netip.AddrPort, bool) {
	if a, err := netip.ParseAddr(h); err == nil {
		return netip.AddrPortFrom(a, 0), true
	}
	ap, err := netip.ParseAddrPort(h)
	return ap, err == nil
}
