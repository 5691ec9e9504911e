package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"text/tabwriter"
	"time"

	"doorman/route"
)

// The fleet's live sessions and fleet-wide kicks.
//
//	sessions [-user U] [-host H] [-vsite V] [-json]
//	    Lists the relayed sessions every live Doorman host publishes (<prefix>fleet:hosts,
//	    then each host's <prefix>fleet:sessions:{host}), sorted by host, then start. A host
//	    whose records have expired (it died) is dropped from <prefix>fleet:hosts.
//	kick (-user U | -backend H | -vsite V) [-ttl 10m]
//	    Ends the matching sessions on every host: publishes "kick <kind> <value>" on
//	    <prefix>events and leaves the backstop record <prefix>kick:<kind>:<value> for -ttl,
//	    which a host whose subscription was down reads when it comes back. -backend is an
//	    IP (every port) or IP:port.

func init() {
	register("sessions", &command{usage: "sessions [-user U] [-host H] [-vsite V] [-json]", run: sessionsCmd})
	register("kick", &command{usage: "kick (-user U | -backend H[:P] | -vsite V) [-ttl 10m]", run: kickCmd})
}

// staleHostAfter: a host listed in fleet:hosts without a session hash is dropped once its
// last refresh is this old (a live host with no session has no hash either, and a
// minute keeps a reader from racing its refresh).
const staleHostAfter = time.Minute

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors come back as usage errors
	return fs
}

func (c *ctl) fleet() (*route.Fleet, func(), error) {
	r, err := route.NewRedis(c.passdbConfig)
	if err != nil {
		return nil, nil, err
	}
	return r.Fleet(), func() { _ = r.Close() }, nil
}

func sessionsCmd(ctx context.Context, c *ctl, args []string) error {
	fs := newFlagSet("sessions")
	user := fs.String("user", "", "only this user's sessions")
	host := fs.String("host", "", "only this Doorman host's sessions")
	vsite := fs.String("vsite", "", "only this vsite's sessions")
	asJSON := fs.Bool("json", false, "print JSON, one array")
	if err := fs.Parse(args); err != nil {
		return usagef("sessions: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("sessions: unexpected %q", fs.Arg(0))
	}
	f, closeFn, err := c.fleet()
	if err != nil {
		return err
	}
	defer closeFn()
	all, err := f.ListSessions(ctx, staleHostAfter)
	if err != nil && all == nil {
		return err
	}
	list := []route.SessionRecord{}
	for _, r := range all {
		if (*user == "" || r.User == *user) && (*host == "" || r.Host == *host) && (*vsite == "" || r.Vsite == *vsite) {
			list = append(list, r)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		if e := enc.Encode(list); e != nil {
			return e
		}
		return err
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tID\tUSER\tPROTOCOL\tCLIENT\tBACKEND\tVSITE\tSTARTED\tIN\tOUT")
	for _, r := range list {
		vs := r.Vsite
		if vs == "" {
			vs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", r.Host, r.ID, r.User, r.Protocol, r.Client,
			r.Backend, vs, r.Started.Local().Format(time.RFC3339), r.ToBackend, r.ToClient)
	}
	if e := tw.Flush(); e != nil {
		return e
	}
	fmt.Fprintf(c.out, "%d sessions\n", len(list))
	return err // a record that did not parse, after the rest is shown
}

func kickCmd(ctx context.Context, c *ctl, args []string) error {
	fs := newFlagSet("kick")
	user := fs.String("user", "", "kick this user's sessions")
	backend := fs.String("backend", "", "kick the sessions on this backend (IP, or IP:port)")
	vsite := fs.String("vsite", "", "kick this vsite's sessions")
	ttl := fs.Duration("ttl", route.DefaultKickRecordTTL, "how long the backstop record lives")
	if err := fs.Parse(args); err != nil {
		return usagef("kick: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("kick: unexpected %q", fs.Arg(0))
	}
	var kind, value string
	n := 0
	for _, k := range []struct{ kind, v string }{{route.KickUser, *user}, {route.KickBackend, *backend}, {route.KickVsite, *vsite}} {
		if k.v != "" {
			kind, value = k.kind, k.v
			n++
		}
	}
	if n != 1 {
		return usagef("kick: give exactly one of -user, -backend, -vsite")
	}
	if *ttl <= 0 {
		return usagef("kick: -ttl must be positive")
	}
	if kind == route.KickBackend {
		// The hosts compare it with their sessions' backend addresses (IPs, after the
		// passdb's host was resolved): a name would match nothing.
		if _, err := netip.ParseAddrPort(value); err != nil {
			if _, err := netip.ParseAddr(value); err != nil {
				return usagef("kick: -backend %q is neither an IP nor IP:port", value)
			}
		}
	}
	f, closeFn, err := c.fleet()
	if err != nil {
		return err
	}
	defer closeFn()
	got, err := f.Kick(ctx, kind, value, time.Now(), *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "kick %s %s: received by %s hosts (subscribers of %s); backstop record %s for %v\n",
		kind, value, strconv.FormatInt(got, 10), f.EventsChannel(), f.KickKey(kind, value), *ttl)
	return nil
}
