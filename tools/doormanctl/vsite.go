package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"

	"doorman/route"
)

// vsiteSet replaces <prefix>vsite:ID with the key=value arguments and
// publishes "vsite ID".
func (c *ctl) vsiteSet(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return usagef("vsite set: want ID host=H [port=P] [ssl=yes] [site=S]")
	}
	id := args[0]
	if id == "" || strings.ContainsAny(id, " \t\r\n") {
		return usagef("vsite set: bad ID %q", id)
	}
	fields := map[string]string{}
	for _, a := range args[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usagef("vsite set: %q is not key=value", a)
		}
		if _, dup := fields[k]; dup {
			return usagef("vsite set: %s given twice", k)
		}
		fields[k] = v
	}
	if fields["host"] == "" {
		return usagef("vsite set: host= is required")
	}
	if p, ok := fields["port"]; ok {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return usagef("vsite set: port %q is not a number from 1 to 65535", p)
		}
	}
	args2 := make([]any, 0, 2*len(fields))
	for _, k := range sortedKeys(fields) {
		args2 = append(args2, k, fields[k])
	}
	if err := replaceHash.Run(ctx, c.rdb, []string{c.vsiteKey(id)}, args2...).Err(); err != nil {
		return err
	}
	if err := c.publish(ctx, "vsite "+id); err != nil {
		return fmt.Errorf("vsite %s stored but could not publish: %w", id, err)
	}
	fmt.Fprintf(c.out, "vsite %s set (%s); published %q on %s\n", id, c.vsiteKey(id), "vsite "+id, c.eventsChannel())
	return nil
}

// route prints the user's hash and its vsite's hash as stored, then the
// routing the Redis passdb makes of them (route.Redis.Lookup with the vsite
// loaded): with a vsite, the vsite's host, hostip, port, ssl, starttls and
// site replace the user's own.
func (c *ctl) route(ctx context.Context, name string) error {
	u, err := c.rdb.HGetAll(ctx, c.userKey(name)).Result()
	if err != nil {
		return err
	}
	if len(u) == 0 {
		return fmt.Errorf("user %q not found (no hash %s)", name, c.userKey(name))
	}
	fmt.Fprintf(c.out, "user %s (%s)\n", name, c.userKey(name))
	c.printHash(u)
	id, hasVsite := u["vsite"]
	if hasVsite {
		vs, err := c.rdb.HGetAll(ctx, c.vsiteKey(id)).Result()
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("user %q names vsite %q, which does not exist (no hash %s): its logins fail temporarily", name, id, c.vsiteKey(id))
		}
		fmt.Fprintf(c.out, "vsite %s (%s)\n", id, c.vsiteKey(id))
		c.printHash(vs)
	}

	pdb, err := route.NewRedis(c.passdbConfig)
	if err != nil {
		return err
	}
	defer pdb.Close()
	if hasVsite {
		if err := pdb.ReloadVsite(ctx, id); err != nil {
			return err
		}
	}
	e, err := pdb.Lookup(ctx, name)
	if err != nil {
		return fmt.Errorf("the Redis passdb's lookup of %q: %w", name, err)
	}
	p, err := route.ParseProxy(e.Fields)
	if err != nil {
		return fmt.Errorf("user %q: %w", name, err)
	}
	fmt.Fprintln(c.out, "routing:")
	if e.User != name {
		fmt.Fprintf(c.out, "  login name:   %s (renamed by the user's fields)\n", e.User)
	}
	from := "user"
	if hasVsite {
		from = "vsite " + id
		var ignored []string
		for _, k := range []string{"host", "hostip", "port", "ssl", "starttls", "site"} {
			if _, ok := u[k]; ok {
				ignored = append(ignored, k)
			}
		}
		if len(ignored) > 0 {
			fmt.Fprintf(c.out, "  ignored:      the user's own %s (the vsite's routing wins)\n", strings.Join(ignored, ", "))
		}
	}
	switch {
	case !p.Proxy && !p.ProxyMaybe:
		fmt.Fprintln(c.out, "  destination:  none (not proxied: no proxy or proxy_maybe field)")
		return nil
	case p.Host == "":
		fmt.Fprintln(c.out, "  destination:  none (no host)")
		return nil
	}
	port := "protocol default port"
	if p.Port != 0 {
		port = "port " + strconv.Itoa(p.Port)
	}
	dest := p.Host
	if p.Port != 0 {
		dest = net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	}
	fmt.Fprintf(c.out, "  destination:  %s (%s, from %s)\n", dest, port, from)
	if p.HostIP != "" {
		fmt.Fprintf(c.out, "  connects to:  %s\n", p.HostIP)
	}
	switch {
	case p.SSL != "":
		fmt.Fprintf(c.out, "  tls:          ssl=%s\n", p.SSL)
	case p.StartTLS != "":
		fmt.Fprintf(c.out, "  tls:          starttls=%s\n", p.StartTLS)
	}
	return nil
}

// printHash prints fields sorted, one per line, with passwords hidden.
func (c *ctl) printHash(h map[string]string) {
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	for _, k := range sortedKeys(h) {
		v := h[k]
		if k == "password" || k == "password_noscheme" {
			v = "<hidden>"
		} else if v == "" {
			v = `""`
		}
		fmt.Fprintf(tw, "  %s\t%s\n", k, v)
	}
	tw.Flush()
}
