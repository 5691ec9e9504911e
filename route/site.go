package route

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sites.
//
// A site is a group of backends (a physical site, a data centre) in the hash
// <prefix>site:<id>:
//
//	hosts       the site's backends (or its entry points): "ip[:port],..."
//	fallback    where its vsites go when it fails: "siteB:2,siteC:1" (weights; 1 if left out)
//	down        backends found unreachable (the watchdog, or an operator): "ip[:port],..."
//	state       "up" (or absent) or "failed" (its vsites are on the fallback sites)
//	down_since  unix seconds: since when the whole site is unreachable (the watchdog's clock)
//	up_since    unix seconds: since when a failed site is reachable again
//	changed     unix seconds of the last failover or restore
//
// Changes are announced with "site <id>" on <prefix>events.

// Site is one site as stored.
type Site struct {
	ID        string
	Hosts     []string
	Fallback  []Weighted
	Down      []string
	State     string // "up" or "failed"
	DownSince time.Time
	UpSince   time.Time
	Changed   time.Time
}

// Weighted is one fallback site and its weight.
type Weighted struct {
	Site   string
	Weight int
}

// SiteFailed is Site.State of a failed-over site.
const SiteFailed = "failed"

// SiteKey is the hash of a site.
func (f *Fleet) SiteKey(id string) string { return f.prefix + "site:" + id }

// Site reads a site; a missing site is (nil, nil).
func (f *Fleet) Site(ctx context.Context, id string) (*Site, error) {
	h, err := f.c.HGetAll(ctx, f.SiteKey(id)).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 {
		return nil, nil
	}
	return ParseSite(id, h)
}

// ParseSite reads a site's hash.
func ParseSite(id string, h map[string]string) (*Site, error) {
	s := &Site{ID: id, Hosts: splitList(h["hosts"]), Down: splitList(h["down"]), State: h["state"]}
	if s.State == "" {
		s.State = "up"
	}
	if s.State != "up" && s.State != SiteFailed {
		return nil, fmt.Errorf("site %s: state %q is neither up nor failed", id, s.State)
	}
	for _, fb := range splitList(h["fallback"]) {
		name, w, hasW := strings.Cut(fb, ":")
		n := 1
		if hasW {
			var err error
			if n, err = strconv.Atoi(w); err != nil || n < 1 {
				return nil, fmt.Errorf("site %s: fallback %q: the weight must be a positive number", id, fb)
			}
		}
		if name == "" || name == id {
			return nil, fmt.Errorf("site %s: bad fallback %q", id, fb)
		}
		s.Fallback = append(s.Fallback, Weighted{Site: name, Weight: n})
	}
	for _, t := range []struct {
		key string
		to  *time.Time
	}{{"down_since", &s.DownSince}, {"up_since", &s.UpSince}, {"changed", &s.Changed}} {
		if v := h[t.key]; v != "" {
			sec, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("site %s: %s %q is not unix seconds", id, t.key, v)
			}
			*t.to = time.Unix(sec, 0)
		}
	}
	return s, nil
}

// Healthy is the site's hosts not marked down, in their order.
func (s *Site) Healthy() []string {
	var out []string
	for _, h := range s.Hosts {
		if !slices.Contains(s.Down, h) {
			out = append(out, h)
		}
	}
	return out
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
