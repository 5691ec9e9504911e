package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// One host's admin API (engine/admin.go), for what concerns that host alone: its metrics,
// its sessions as it sees them now (live byte counts), a kick there only.
//
//	host [-admin ADDR] [-token-file F] metrics
//	host [-admin ADDR] [-token-file F] sessions [-user U] [-backend IP[:PORT]] [-vsite V] [-json]
//	host [-admin ADDR] [-token-file F] kick (-user U | -backend IP[:PORT] | -vsite V)
//
// ADDR is the admin.address of the Doorman (ip:port or unix:/path; default
// $DOORMAN_ADMIN, else 127.0.0.1:9100). The token is the first line of -token-file, else
// $DOORMAN_ADMIN_TOKEN; it is never taken from the command line (it would show in ps).

func init() {
	register("host", &command{
		usage: "host [-admin ADDR] [-token-file F] metrics | sessions [-user U] [-backend B] [-vsite V] [-json] | kick (-user U | -backend B | -vsite V)",
		run:   hostCmd,
	})
}

// adminClient talks to one host's admin API.
type adminClient struct {
	base  string // "http://host:port" or "http://unix" for a socket
	token string
	hc    *http.Client
}

func newAdminClient(addr, tokenFile string) (*adminClient, error) {
	tok := os.Getenv("DOORMAN_ADMIN_TOKEN")
	if tokenFile != "" {
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, err
		}
		tok, _, _ = strings.Cut(string(data), "\n")
		tok = strings.TrimSpace(tok)
	}
	tr := &http.Transport{}
	a := &adminClient{token: tok, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", p)
		}
		a.base = "http://unix"
	} else {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usagef("host: -admin %q is neither ip:port nor unix:/path", addr)
		}
		a.base = "http://" + addr
	}
	return a, nil
}

// do sends one request and returns the body of a 200 answer.
func (a *adminClient) do(ctx context.Context, method, path string, q url.Values) ([]byte, error) {
	u := a.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errors.New("the admin API refused the token (set -token-file or DOORMAN_ADMIN_TOKEN)")
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func hostCmd(ctx context.Context, c *ctl, args []string) error {
	fs := newFlagSet("host")
	def := os.Getenv("DOORMAN_ADMIN")
	if def == "" {
		def = "127.0.0.1:9100"
	}
	addr := fs.String("admin", def, "the Doorman's admin.address")
	tokenFile := fs.String("token-file", "", "file whose first line is the admin token")
	if err := fs.Parse(args); err != nil {
		return usagef("host: %v", err)
	}
	if fs.NArg() == 0 {
		return usagef("host: want metrics, sessions or kick")
	}
	a, err := newAdminClient(*addr, *tokenFile)
	if err != nil {
		return err
	}
	sub, rest := fs.Arg(0), fs.Args()[1:]
	switch sub {
	case "metrics":
		if len(rest) > 0 {
			return usagef("host metrics: no arguments")
		}
		body, err := a.do(ctx, http.MethodGet, "/metrics", nil)
		if err != nil {
			return err
		}
		_, err = c.out.Write(body)
		return err
	case "sessions", "kick":
		sf := newFlagSet("host " + sub)
		user := sf.String("user", "", "a user's sessions")
		backend := sf.String("backend", "", "sessions to this backend: IP or IP:PORT")
		vsite := sf.String("vsite", "", "sessions of this vsite")
		asJSON := sf.Bool("json", false, "print the API's JSON")
		if err := sf.Parse(rest); err != nil || sf.NArg() > 0 {
			return usagef("host %s: bad arguments %q", sub, rest)
		}
		q := url.Values{}
		for k, v := range map[string]string{"user": *user, "backend": *backend, "vsite": *vsite} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if sub == "kick" {
			if len(q) == 0 {
				return usagef("host kick: want -user, -backend or -vsite")
			}
			body, err := a.do(ctx, http.MethodPost, "/kick", q)
			if err != nil {
				return err
			}
			var r struct {
				Kicked int `json:"kicked"`
			}
			if err := json.Unmarshal(body, &r); err != nil {
				return fmt.Errorf("kick: bad answer: %w", err)
			}
			fmt.Fprintf(c.out, "%d sessions kicked\n", r.Kicked)
			return nil
		}
		body, err := a.do(ctx, http.MethodGet, "/sessions", q)
		if err != nil {
			return err
		}
		if *asJSON {
			_, err = c.out.Write(body)
			return err
		}
		var r struct {
			Host     string `json:"host"`
			Sessions []struct {
				ID        string    `json:"id"`
				User      string    `json:"user"`
				Protocol  string    `json:"protocol"`
				Client    string    `json:"client"`
				Backend   string    `json:"backend"`
				Vsite     string    `json:"vsite"`
				Started   time.Time `json:"started"`
				ToClient  int64     `json:"to_client"`
				ToBackend int64     `json:"to_backend"`
			} `json:"sessions"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("sessions: bad answer: %w", err)
		}
		tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSER\tPROTOCOL\tCLIENT\tBACKEND\tVSITE\tSTARTED\tIN\tOUT")
		for _, s := range r.Sessions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", s.ID, s.User, s.Protocol, s.Client,
				s.Backend, orDash(s.Vsite), s.Started.Format(time.RFC3339), s.ToBackend, s.ToClient)
		}
		tw.Flush()
		fmt.Fprintf(c.out, "%d sessions on %s\n", len(r.Sessions), r.Host)
		return nil
	default:
		return usagef("host: unknown %q (metrics, sessions, kick)", sub)
	}
}
