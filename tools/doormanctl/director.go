package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/route"
)

// The director, as doveadm director status USER shows it:
//
//	director status [-site S] USER
//	    The user's hash (director_username_hash %Lu), the site (-site, else the user's
//	    site=, else its vsite's site=), the site's healthy backends, the ring's choice over
//	    them, and the stored assignment with its time to live. The site of
//	    fleet.director_site is not known here: give it with -site.
//	director forget USER
//	    Drops the user's assignment: the next login re-hashes.

func init() {
	register("director", &command{
		usage: "director status [-site S] USER\ndirector forget USER",
		run:   func(ctx context.Context, c *ctl, a []string) error { return c.director(ctx, a) },
	})
}

func (c *ctl) director(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("director: want status or forget")
	}
	r, err := route.NewRedis(c.passdbConfig)
	if err != nil {
		return err
	}
	defer r.Close()
	fl := r.Fleet()
	switch args[0] {
	case "forget":
		if len(args) != 2 {
			return usagef("director forget: want USER")
		}
		if err := fl.DirectorForget(ctx, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "assignment of %s dropped (%s)\n", args[1], fl.DirectorKey(args[1]))
		return nil
	case "status":
		fs := flag.NewFlagSet("director status", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		site := fs.String("site", "", "the site (default: the user's, or its vsite's)")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
			return usagef("director status: want [-site S] USER")
		}
		return c.directorStatus(ctx, fl, fs.Arg(0), *site)
	}
	return usagef("director: unknown %q", args[0])
}

func (c *ctl) directorStatus(ctx context.Context, fl *route.Fleet, user, siteID string) error {
	fmt.Fprintf(c.out, "user:      %s\nhash:      %d\n", user, route.UserHash(user))
	if siteID == "" {
		fields, err := c.rdb.HGetAll(ctx, c.userKey(user)).Result()
		if err != nil {
			return err
		}
		siteID = fields["site"]
		if v := fields["vsite"]; v != "" {
			vs, err := c.rdb.HGet(ctx, c.vsiteKey(v), "site").Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			siteID = vs // a vsite's routing replaces the user's own
		}
	}
	host, ttl, err := fl.DirectorLookup(ctx, user)
	if err != nil {
		return err
	}
	if host == "" {
		fmt.Fprintf(c.out, "stored:    (none)\n")
	} else {
		fmt.Fprintf(c.out, "stored:    %s (expires in %s)\n", host, ttl.Round(time.Second))
	}
	if siteID == "" {
		fmt.Fprintf(c.out, "site:      (none: the user has no site=; give fleet.director_site with -site)\n")
		return nil
	}
	s, err := fl.Site(ctx, siteID)
	if err != nil {
		return err
	}
	if s == nil {
		fmt.Fprintf(c.out, "site:      %s (does not exist)\n", siteID)
		return nil
	}
	healthy := s.Healthy()
	fmt.Fprintf(c.out, "site:      %s (state %s)\nhosts:     %s\nhealthy:   %s\n", s.ID, s.State,
		strings.Join(s.Hosts, ","), strings.Join(healthy, ","))
	ring := route.NewRing(healthy)
	choice := ring.Host(user)
	if choice == "" {
		choice = "(none: no healthy backend)"
	}
	fmt.Fprintf(c.out, "hashed:    %s\n", choice)
	switch {
	case host == "":
		fmt.Fprintf(c.out, "next login: %s (the ring's choice)\n", choice)
	case containsHost(ring.Hosts(), host):
		fmt.Fprintf(c.out, "next login: %s (stored, healthy)\n", host)
	default:
		fmt.Fprintf(c.out, "next login: %s (the stored backend is not healthy: the user moves)\n", choice)
	}
	return nil
}

func containsHost(hosts []string, h string) bool {
	for _, x := range hosts {
		if x == h || strings.TrimPrefix(x, "::ffff:") == h {
			return true
		}
	}
	return false
}
