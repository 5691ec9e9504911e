package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"doorman/route"
)

// Moves, sites, failover and restore:
//
//	move (-host H [-port P] | -vsite V) [-delay 31s] [-jitter 0] (USER... | -file F)
//	    Dovecot's recipe for moving users: per user, atomically, the new host (or vsite)
//	    and delay_until=now+delay[+jitter]; then each is kicked on every proxy and dropped
//	    from their auth caches. New logins wait until delay_until, then go to the new
//	    place. -file reads one user a line ("-": standard input).
//	site set S [hosts=IP[:PORT],...] [fallback=B:2,C:1] [down=IP[:PORT],...] [state=up|failed]
//	    Sets the fields given in <prefix>site:S (an empty value deletes the field) and
//	    publishes "site S".
//	site show S / site list
//	failover -site S
//	    Moves the vsites of site S to its fallback sites, spread by weight.
//	restore -site S [-pause 30s] [-delay 31s]
//	    Brings them back one vsite at a time, pausing between two.

func init() {
	register("move", &command{
		usage: "move (-host H [-port P] | -vsite V) [-delay 31s] [-jitter 0] (USER... | -file F)",
		run:   func(ctx context.Context, c *ctl, a []string) error { return c.move(ctx, a) },
	})
	register("site", &command{
		usage: "site set S [hosts=IP[:PORT],...] [fallback=B:2,C:1] [down=...] [state=up|failed]\nsite show S\nsite list",
		run:   func(ctx context.Context, c *ctl, a []string) error { return c.site(ctx, a) },
	})
	register("failover", &command{usage: "failover -site S", run: func(ctx context.Context, c *ctl, a []string) error { return c.failover(ctx, a) }})
	register("restore", &command{usage: "restore -site S [-pause 30s] [-delay 31s]", run: func(ctx context.Context, c *ctl, a []string) error { return c.restore(ctx, a) }})
}

// stdin is where "-file -" reads (a variable for the tests).
var stdin io.Reader = os.Stdin

// siteFleet opens the fleet records (sessions.go has the same for its commands).
func (c *ctl) siteFleet() (*route.Fleet, func(), error) {
	r, err := route.NewRedis(c.passdbConfig)
	if err != nil {
		return nil, nil, err
	}
	return r.Fleet(), func() { r.Close() }, nil
}

func siteFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func (c *ctl) move(ctx context.Context, args []string) error {
	fs := siteFlags("move")
	host := fs.String("host", "", "")
	port := fs.Int("port", 0, "")
	vsite := fs.String("vsite", "", "")
	delay := fs.Duration("delay", route.DefaultMoveDelay, "")
	jitter := fs.Duration("jitter", 0, "")
	file := fs.String("file", "", "")
	if err := fs.Parse(args); err != nil {
		return usagef("move: %v", err)
	}
	to := route.MoveTarget{Host: *host, Port: *port, Vsite: *vsite}
	if (to.Host == "") == (to.Vsite == "") {
		return usagef("move: give -host or -vsite")
	}
	if *delay < 0 || *jitter < 0 {
		return usagef("move: -delay and -jitter must not be negative")
	}
	if *delay == 0 {
		*delay = -1 // no delay_until
	}
	users := fs.Args()
	if *file != "" {
		if len(users) > 0 {
			return usagef("move: users on the command line or -file, not both")
		}
		var err error
		if users, err = readUsers(*file); err != nil {
			return err
		}
	}
	if len(users) == 0 {
		return usagef("move: no users")
	}
	f, closeFn, err := c.siteFleet()
	if err != nil {
		return err
	}
	defer closeFn()
	start := time.Now()
	res, err := f.Move(ctx, users, to, route.MoveOptions{Delay: *delay, Jitter: *jitter})
	if err != nil {
		return fmt.Errorf("%w (%d users moved before the error)", err, res.Moved)
	}
	where := "host " + to.Host
	if to.Port != 0 {
		where += " port " + strconv.Itoa(to.Port)
	}
	if to.Vsite != "" {
		where = "vsite " + to.Vsite
	}
	fmt.Fprintf(c.out, "moved %d users to %s in %v (kicked, caches flushed)", res.Moved, where, time.Since(start).Round(time.Millisecond))
	if *delay > 0 {
		fmt.Fprintf(c.out, "; their new logins wait %v", *delay)
	}
	fmt.Fprintln(c.out)
	for _, u := range res.NotFound {
		fmt.Fprintf(c.out, "not found: %s\n", u)
	}
	if len(res.NotFound) > 0 {
		return fmt.Errorf("%d users not found", len(res.NotFound))
	}
	return nil
}

// readUsers reads one user a line; blank lines and lines starting with # are skipped.
func readUsers(name string) ([]string, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var users []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			users = append(users, l)
		}
	}
	return users, sc.Err()
}

func (c *ctl) site(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("site: set, show or list")
	}
	f, closeFn, err := c.siteFleet()
	if err != nil {
		return err
	}
	defer closeFn()
	switch {
	case args[0] == "list" && len(args) == 1:
		sites, err := f.Sites(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SITE\tSTATE\tHOSTS\tDOWN\tFALLBACK")
		for _, s := range sites {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, orDash(strings.Join(s.Hosts, ",")),
				orDash(strings.Join(s.Down, ",")), orDash(fallbackString(s.Fallback)))
		}
		return tw.Flush()
	case args[0] == "show" && len(args) == 2:
		s, err := f.Site(ctx, args[1])
		if err != nil {
			return err
		}
		if s == nil {
			return fmt.Errorf("site %q not found (no hash %s)", args[1], f.SiteKey(args[1]))
		}
		return c.printSite(ctx, f, s)
	case args[0] == "set" && len(args) >= 3:
		id := args[1]
		set, del := map[string]string{}, []string{}
		h := map[string]string{}
		for _, a := range args[2:] {
			k, v, ok := strings.Cut(a, "=")
			switch k {
			case "hosts", "fallback", "down", "state":
			default:
				return usagef("site set: %q: the fields are hosts, fallback, down and state", a)
			}
			if !ok {
				return usagef("site set: %q is not key=value", a)
			}
			if v == "" {
				del = append(del, k)
			} else {
				set[k] = v
			}
			h[k] = v
		}
		if _, err := route.ParseSite(id, h); err != nil {
			return usagef("site set: %v", err)
		}
		if err := f.UpdateSite(ctx, id, set, del...); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "site %s set (%s); published %q\n", id, f.SiteKey(id), "site "+id)
		return nil
	}
	return usagef("site: want set S key=value..., show S or list")
}

func (c *ctl) printSite(ctx context.Context, f *route.Fleet, s *route.Site) error {
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "site\t%s\n", s.ID)
	fmt.Fprintf(tw, "state\t%s\n", s.State)
	fmt.Fprintf(tw, "hosts\t%s\n", orDash(strings.Join(s.Hosts, ",")))
	fmt.Fprintf(tw, "down\t%s\n", orDash(strings.Join(s.Down, ",")))
	fmt.Fprintf(tw, "fallback\t%s\n", orDash(fallbackString(s.Fallback)))
	if s.FailedBy != "" {
		fmt.Fprintf(tw, "failed_by\t%s\n", s.FailedBy)
	}
	for _, t := range []struct {
		k string
		v time.Time
	}{{"down_since", s.DownSince}, {"up_since", s.UpSince}, {"changed", s.Changed}} {
		if !t.v.IsZero() {
			fmt.Fprintf(tw, "%s\t%s (%v ago)\n", t.k, t.v.UTC().Format(time.RFC3339), time.Since(t.v).Round(time.Second))
		}
	}
	vs, err := f.Vsites(ctx)
	if err != nil {
		return err
	}
	home, away, guests := 0, 0, 0
	for _, h := range vs {
		switch {
		case h["home_site"] == s.ID:
			away++
		case h["site"] == s.ID && h["home_site"] != "":
			guests++
		case h["site"] == s.ID:
			home++
		}
	}
	fmt.Fprintf(tw, "vsites\t%d home, %d failed over elsewhere, %d guests from failed sites\n", home, away, guests)
	return tw.Flush()
}

func fallbackString(ws []route.Weighted) string {
	var parts []string
	for _, w := range ws {
		parts = append(parts, w.Site+":"+strconv.Itoa(w.Weight))
	}
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *ctl) failover(ctx context.Context, args []string) error {
	fs := siteFlags("failover")
	site := fs.String("site", "", "")
	if err := fs.Parse(args); err != nil || *site == "" || fs.NArg() > 0 {
		return usagef("failover: want -site S")
	}
	f, closeFn, err := c.siteFleet()
	if err != nil {
		return err
	}
	defer closeFn()
	res, err := f.Failover(ctx, *site, route.SiteOptions{Owner: ctlOwner(), Progress: c.progress})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "site %s failed over: %d vsites moved", *site, len(res.Moved))
	if len(res.Failed) > 0 {
		fmt.Fprintf(c.out, ", %d left in place", len(res.Failed))
	}
	fmt.Fprintln(c.out)
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d vsites of site %s could not be moved", len(res.Failed), *site)
	}
	return nil
}

func (c *ctl) restore(ctx context.Context, args []string) error {
	fs := siteFlags("restore")
	site := fs.String("site", "", "")
	pause := fs.Duration("pause", 30*time.Second, "")
	delay := fs.Duration("delay", route.DefaultMoveDelay, "")
	if err := fs.Parse(args); err != nil || *site == "" || fs.NArg() > 0 || *pause < 0 || *delay < 0 {
		return usagef("restore: want -site S [-pause 30s] [-delay 31s]")
	}
	if *delay == 0 {
		*delay = -1
	}
	f, closeFn, err := c.siteFleet()
	if err != nil {
		return err
	}
	defer closeFn()
	res, err := f.Restore(ctx, *site, route.SiteOptions{Owner: ctlOwner(), Pause: *pause, Delay: *delay, Progress: c.progress})
	if err != nil {
		if res != nil && errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted after %d vsites; run it again to carry on", len(res.Moved))
		}
		return err
	}
	fmt.Fprintf(c.out, "site %s restored: %d vsites back\n", *site, len(res.Moved))
	return nil
}

func (c *ctl) progress(m route.VsiteMove) {
	if m.Err != nil {
		fmt.Fprintf(c.out, "vsite %s: left on %s (%s): %v\n", m.Vsite, m.FromSite, m.From, m.Err)
		return
	}
	fmt.Fprintf(c.out, "%s vsite %s: %s (%s) -> %s (%s)\n", m.At.UTC().Format("15:04:05"), m.Vsite, m.FromSite, orDash(m.From), m.ToSite, orDash(m.To))
}

// ctlOwner names who holds a site lock taken by doormanctl.
func ctlOwner() string {
	h, _ := os.Hostname()
	return "doormanctl@" + h
}
