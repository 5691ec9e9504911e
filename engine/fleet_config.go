package engine

import (
	"time"

	"doorman/route"
)

// FleetConfig is what a host does with the other hosts of its fleet, through Redis: the
// first redis passdb's server and key_prefix (as auth_penalty). It needs a redis passdb.
type FleetConfig struct {
	// enabled: publish this host's sessions and act on fleet kicks (default: yes when a
	// redis passdb exists).
	Enabled *bool `yaml:"enabled"`
	// refresh_interval: how often this host's session records are written in full and
	// their expiry renewed (default 10s); changes in between go out each second.
	RefreshInterval Duration `yaml:"refresh_interval"`
	// session_ttl: the expiry of this host's session records: a host silent this long
	// drops out of the fleet view (default 30s).
	SessionTTL Duration `yaml:"session_ttl"`
	// kick_record_ttl: how long a kick's backstop record is honoured (default 10m).
	KickRecordTTL Duration `yaml:"kick_record_ttl"`
	// director_site: the site whose backends users with proxy but no host (and no site
	// of their own) are assigned to by consistent hashing; "" = none.
	DirectorSite string `yaml:"director_site"`
	// director_user_expire: how long a user's backend assignment outlives the user's
	// last session (Dovecot's director_user_expire, 15 min).
	DirectorUserExpire Duration `yaml:"director_user_expire"`

	Watchdog WatchdogConfig `yaml:"watchdog"`
}

// WatchdogConfig is the opt-in site watchdog.
type WatchdogConfig struct {
	Enabled bool `yaml:"enabled"`
	// interval: how often each site's backends are checked (default 10s).
	Interval Duration `yaml:"interval"`
	// down_after: how long a site must have been unreachable before it is failed over
	// (default 5m, as Dovecot's proxy document advises).
	DownAfter Duration `yaml:"down_after"`
	// up_after: how long a failed site must have been reachable again before it is
	// restored (default 1m).
	UpAfter Duration `yaml:"up_after"`
	// restore_pause: the pause between two vsites brought back (default 30s).
	RestorePause Duration `yaml:"restore_pause"`
	// restore_delay: the delay_until a vsite gets as it comes back, so its users' new
	// logins wait while their sessions on the fallback site end (default 31s, the
	// seed's "now + ~31 s"; "0" keeps Doorman's default, a negative value is refused).
	RestoreDelay Duration `yaml:"restore_delay"`
	// check_timeout: one health check's connect timeout (default 3s).
	CheckTimeout Duration `yaml:"check_timeout"`
	// sites: the sites watched; empty = every site that has fallback sites.
	Sites []string `yaml:"sites"`
}

func (c *Config) defaultsFleet() {
	f := &c.Fleet
	if f.Enabled == nil {
		on := c.hasRedis()
		f.Enabled = &on
	}
	if f.RefreshInterval == 0 {
		f.RefreshInterval = Duration(10 * time.Second)
	}
	if f.SessionTTL == 0 {
		f.SessionTTL = Duration(30 * time.Second)
	}
	if f.KickRecordTTL == 0 {
		f.KickRecordTTL = Duration(route.DefaultKickRecordTTL)
	}
	if f.DirectorUserExpire == 0 {
		f.DirectorUserExpire = Duration(15 * time.Minute)
	}
	w := &f.Watchdog
	if w.Interval == 0 {
		w.Interval = Duration(10 * time.Second)
	}
	if w.DownAfter == 0 {
		w.DownAfter = Duration(5 * time.Minute)
	}
	if w.UpAfter == 0 {
		w.UpAfter = Duration(time.Minute)
	}
	if w.RestorePause == 0 {
		w.RestorePause = Duration(30 * time.Second)
	}
	if w.RestoreDelay == 0 {
		w.RestoreDelay = Duration(route.DefaultMoveDelay)
	}
	if w.CheckTimeout == 0 {
		w.CheckTimeout = Duration(3 * time.Second)
	}
}

func (c *Config) validateFleet(add func(path, format string, a ...any)) {
	f := &c.Fleet
	needRedis := (f.Enabled != nil && *f.Enabled) || f.DirectorSite != "" || f.Watchdog.Enabled
	if needRedis && !c.hasRedis() {
		add("fleet", "needs a redis passdb (the fleet's records live in its Redis)")
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"fleet.refresh_interval", f.RefreshInterval}, {"fleet.session_ttl", f.SessionTTL},
		{"fleet.kick_record_ttl", f.KickRecordTTL}, {"fleet.director_user_expire", f.DirectorUserExpire},
		{"fleet.watchdog.interval", f.Watchdog.Interval}, {"fleet.watchdog.down_after", f.Watchdog.DownAfter},
		{"fleet.watchdog.up_after", f.Watchdog.UpAfter}, {"fleet.watchdog.restore_pause", f.Watchdog.RestorePause},
		{"fleet.watchdog.check_timeout", f.Watchdog.CheckTimeout}, {"fleet.watchdog.restore_delay", f.Watchdog.RestoreDelay},
	} {
		if d.v < 0 {
			add(d.key, "must not be negative")
		}
	}
	if f.SessionTTL < f.RefreshInterval*2 {
		add("fleet.session_ttl", "must be at least twice refresh_interval (else a live host's records expire between refreshes)")
	}
	if c.ShutdownTimeout < 0 || c.ShutdownSpread < 0 {
		add("shutdown_timeout", "shutdown_timeout and shutdown_spread must not be negative")
	}
}
