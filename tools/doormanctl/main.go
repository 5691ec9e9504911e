// Command doormanctl manages the users and virtual sites Doorman reads from Redis
// (standalone, Sentinel with -master-name, or Cluster with several -redis addresses).
//
//	doormanctl [-redis ADDR[,ADDR...]] [-master-name NAME] [-prefix doorman:] COMMAND ...
//
//	import [-format passwd|csv] [-merge] [-default-scheme CRYPT] FILE
//	    Bulk-imports users, pipelined in batches of 1000. A passwd file has Dovecot's
//	    passwd-file lines (user:{SCHEME}password:uid:gid:gecos:home:shell:extra_fields)
//	    and is read exactly as Doorman's passwd-file passdb reads it (route.ParsePasswdFile);
//	    a password without {SCHEME} is stored with the file's default scheme (CRYPT), so it
//	    keeps its meaning whatever scheme the Redis passdb defaults to. A CSV file starts
//	    with a header of field names; "user" is required, the other columns (password,
//	    host, port, vsite, proxy, ...) become hash fields, empty cells are left out (a
//	    flag such as proxy is on when its cell is not empty). The whole file is checked
//	    before anything is written. Each user's hash is replaced atomically (a concurrent
//	    lookup sees the old or the new fields, never a missing user); -merge only sets
//	    the file's fields and keeps the others. Afterwards "flush" is published on
//	    <prefix>events so the proxies drop their caches.
//	vsite set ID host=H [port=P] [ssl=yes] [site=S] [key=value ...]
//	    Replaces the hash <prefix>vsite:ID and publishes "vsite ID".
//	route USER
//	    Shows how USER would be routed, without logging in: the user's hash (passwords
//	    hidden), its vsite's hash if it has vsite=ID, and the routing Doorman's Redis
//	    passdb makes of them (its own lookup: the vsite's host, port, ssl, ... replace
//	    the user's), ending in the destination host:port.
//	user flush USER
//	    Publishes "user USER" so the proxies drop what they cached about USER.
//	sessions [-user U] [-host H] [-vsite V] [-json]
//	    The fleet's relayed sessions, from every live host's records in Redis.
//	kick (-user U | -backend IP[:PORT] | -vsite V) [-ttl 10m]
//	    Ends the matching sessions on every host (pub/sub), with a backstop record for
//	    hosts that miss the message.
//	move (-host H [-port P] | -vsite V) [-delay 31s] [-jitter 0] (USER... | -file F)
//	    Moves users atomically with delay_until, kicks them and drops their cache entries.
//	site set S key=value... | site show S | site list
//	    A site's backends (hosts=), fallback sites with weights (fallback=B:2,C:1), down=.
//	failover -site S / restore -site S [-pause 30s]
//	    Spreads a site's vsites over its fallback sites / brings them back one at a time.
//	director status [-site S] USER | director forget USER
//	    The director's view of a user: hash, ring choice and stored assignment.
//	host [-admin ADDR] [-token-file F] metrics | sessions [...] | kick (...)
//	    One Doorman's admin API (admin.address; the token from -token-file or
//	    $DOORMAN_ADMIN_TOKEN): its metrics, its sessions with live byte counts, a local kick.
//
// The Redis password, if any, is read from the environment (REDIS_PASSWORD, with
// REDIS_USERNAME for an ACL user), never from the command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"doorman/route"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// go-redis logs each failed dial itself; the command reports the error once.
	redis.SetLogger(quietLogger{})
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

var usage = `usage: doormanctl [-redis ADDR[,ADDR...]] [-master-name NAME] [-prefix doorman:] COMMAND
commands:
  import [-format passwd|csv] [-merge] [-default-scheme CRYPT] FILE
  vsite set ID host=H [port=P] [ssl=yes] [site=S] [key=value ...]
  route USER
  user flush USER
`

// command is a subcommand that lives in its own file and registers itself (init) with
// register: its usage lines join the usage text.
type command struct {
	usage string // "name args...", one or more lines without the leading spaces
	run   func(ctx context.Context, c *ctl, args []string) error
}

var commands = map[string]*command{}

func register(name string, cmd *command) {
	commands[name] = cmd
	for _, l := range strings.Split(strings.TrimRight(cmd.usage, "\n"), "\n") {
		usage += "  " + l + "\n"
	}
}

// ctl is one invocation: the client, the key prefix and where output goes.
type ctl struct {
	rdb    redis.UniversalClient
	prefix string
	out    io.Writer

	passdbConfig route.RedisConfig // for route: the passdb's own view of a user
}

func (c *ctl) userKey(name string) string { return c.prefix + "user:" + name }
func (c *ctl) vsiteKey(id string) string  { return c.prefix + "vsite:" + id }
func (c *ctl) eventsChannel() string      { return c.prefix + "events" }
func (c *ctl) publish(ctx context.Context, msg string) error {
	return c.rdb.Publish(ctx, c.eventsChannel(), msg).Err()
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doormanctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	addrs := fs.String("redis", "127.0.0.1:6379", "Redis address; several (comma-separated) mean Cluster, or Sentinels with -master-name")
	master := fs.String("master-name", "", "Sentinel master name")
	prefix := fs.String("prefix", "doorman:", "key prefix (the Redis passdb's key_prefix)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	var addrList []string
	for _, a := range strings.Split(*addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrList = append(addrList, a)
		}
	}
	if len(addrList) == 0 || *prefix == "" {
		fmt.Fprintln(stderr, "doormanctl: -redis and -prefix must not be empty")
		return exitUsage
	}
	opts := &redis.UniversalOptions{
		Addrs:                    addrList,
		MasterName:               *master,
		Username:                 os.Getenv("REDIS_USERNAME"),
		Password:                 os.Getenv("REDIS_PASSWORD"),
		DialTimeout:              2 * time.Second,
		ReadTimeout:              10 * time.Second, // a pipeline of 1000 commands on a busy server
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	rdb := redis.NewUniversalClient(opts)
	defer rdb.Close()
	c := &ctl{rdb: rdb, prefix: *prefix, out: stdout, passdbConfig: route.RedisConfig{
		Addrs: opts.Addrs, MasterName: opts.MasterName, Username: opts.Username, Password: opts.Password,
		KeyPrefix: *prefix, DialTimeout: opts.DialTimeout, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
	}}

	var err error
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch {
	case cmd == "import":
		err = c.importCmd(ctx, rest, stderr)
	case cmd == "vsite" && len(rest) > 0 && rest[0] == "set":
		err = c.vsiteSet(ctx, rest[1:])
	case cmd == "route" && len(rest) == 1:
		err = c.route(ctx, rest[0])
	case cmd == "user" && len(rest) == 2 && rest[0] == "flush":
		err = c.publish(ctx, "user "+rest[1])
		if err == nil {
			fmt.Fprintf(stdout, "published %q on %s\n", "user "+rest[1], c.eventsChannel())
		}
	case commands[cmd] != nil:
		err = commands[cmd].run(ctx, c, rest)
	default:
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "doormanctl: %v\n%s", err, usage)
		return exitUsage
	case err != nil:
		fmt.Fprintf(stderr, "doormanctl: %v\n", err)
		return exitFail
	}
	return exitOK
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }
