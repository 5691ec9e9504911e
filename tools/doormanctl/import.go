package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/route"
)

// batchSize is how many commands go in one pipeline.
const batchSize = 1000

// user is one user to write: its login name and hash fields.
type user struct {
	name   string
	fields map[string]string
}

// replaceHash deletes the hash and sets its new fields in one step, so a
// reader never finds the key missing in between. A script (not MULTI) so
// that it pipelines on Redis Cluster too: its one key decides the node.
var replaceHash = redis.NewScript(`redis.call('DEL', KEYS[1]); return redis.call('HSET', KEYS[1], unpack(ARGV))`)

func (c *ctl) importCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "passwd", "file format: passwd (Dovecot passwd-file) or csv")
	merge := fs.Bool("merge", false, "only set the file's fields, keeping a user's other fields (default: replace the user's hash)")
	scheme := fs.String("default-scheme", route.DefaultPasswdFileScheme, "passwd format: scheme of passwords without {SCHEME}")
	if err := fs.Parse(args); err != nil {
		return usagef("import: %v", err)
	}
	if fs.NArg() != 1 {
		return usagef("import: want one FILE")
	}
	if *format != "passwd" && *format != "csv" {
		return usagef("import: unknown -format %q (passwd or csv)", *format)
	}
	name := fs.Arg(0)
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	var users []user
	switch *format {
	case "passwd":
		users, err = readPasswd(f, name, *scheme)
	default:
		users, err = readCSV(f, name)
	}
	if err != nil {
		return err
	}
	start := time.Now()
	if err := c.writeUsers(ctx, users, !*merge); err != nil {
		return err
	}
	took := time.Since(start)
	if err := c.publish(ctx, "flush"); err != nil {
		return fmt.Errorf("imported %d users but could not publish flush: %w", len(users), err)
	}
	fmt.Fprintf(c.out, "imported %d users from %s in %v (%.0f users/s); published flush on %s\n",
		len(users), name, took.Round(time.Millisecond), float64(len(users))/max(took.Seconds(), 1e-9), c.eventsChannel())
	return nil
}

// writeUsers writes the users in pipelines of batchSize commands.
func (c *ctl) writeUsers(ctx context.Context, users []user, replace bool) error {
	if replace {
		// EVALSHA in the pipelines; load the script first (on every
		// master, for Cluster) so none of them meets NOSCRIPT.
		if err := replaceHash.Load(ctx, c.rdb).Err(); err != nil {
			return fmt.Errorf("loading the replace script: %w", err)
		}
	}
	for len(users) > 0 {
		batch := users[:min(batchSize, len(users))]
		users = users[len(batch):]
		cmds, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, u := range batch {
				args := make([]any, 0, 2*len(u.fields))
				for _, k := range sortedKeys(u.fields) {
					args = append(args, k, u.fields[k])
				}
				if replace {
					replaceHash.EvalSha(ctx, p, []string{c.userKey(u.name)}, args...)
				} else {
					p.HSet(ctx, c.userKey(u.name), args...)
				}
			}
			return nil
		})
		if err != nil {
			for i, cmd := range cmds {
				if cmd.Err() != nil {
					return fmt.Errorf("user %q: %w", batch[i].name, cmd.Err())
				}
			}
			return err
		}
	}
	return nil
}

// readPasswd reads a Dovecot passwd-file as the passwd-file passdb does.
// Every user gets a password field (possibly empty) so that its hash exists.
func readPasswd(r io.Reader, name, defaultScheme string) ([]user, error) {
	if !route.SchemeSupported(defaultScheme) {
		return nil, usagef("import: unknown -default-scheme %q", defaultScheme)
	}
	entries, err := route.ParsePasswdFile(r, name, defaultScheme)
	if err != nil {
		return nil, err
	}
	users := make([]user, 0, len(entries))
	for _, n := range sortedKeys(entries) {
		e := entries[n]
		fields := make(map[string]string, len(e.Fields)+1)
		for k, v := range e.Fields {
			fields[k] = v
		}
		fields["password"] = e.Password
		users = append(users, user{name: n, fields: fields})
	}
	return users, nil
}

// readCSV reads a CSV file whose header names the fields; "user" is the
// login name. Empty cells are left out.
func readCSV(r io.Reader, name string) ([]user, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	header, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%s: empty file (want a header line)", name)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	userCol := -1
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		switch {
		case h == "":
			return nil, fmt.Errorf("%s:1: column %d has no name", name, i+1)
		case slices.Index(header[:i], h) >= 0:
			return nil, fmt.Errorf("%s:1: column %q appears twice", name, h)
		case h == "user":
			userCol = i
		}
	}
	if userCol < 0 {
		return nil, fmt.Errorf("%s:1: no \"user\" column in the header %q", name, header)
	}
	var users []user
	var errs []error
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		u := user{name: rec[userCol], fields: map[string]string{}}
		for i, v := range rec {
			if i != userCol && v != "" {
				u.fields[header[i]] = v
			}
		}
		msg := ""
		switch {
		case u.name == "":
			msg = "empty user"
		case seen[u.name] != 0:
			msg = fmt.Sprintf("user %q exists more than once (first on line %d)", u.name, seen[u.name])
		case len(u.fields) == 0:
			msg = fmt.Sprintf("user %q has no fields", u.name)
		default:
			if _, err := route.ParseProxy(u.fields); err != nil {
				msg = fmt.Sprintf("user %q: %v", u.name, strings.TrimPrefix(err.Error(), "route: "))
			}
		}
		if msg != "" {
			if len(errs) < 20 {
				errs = append(errs, &route.ParseError{File: name, Line: line, Msg: msg})
			}
			continue
		}
		seen[u.name] = line
		users = append(users, u)
	}
	return users, errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
