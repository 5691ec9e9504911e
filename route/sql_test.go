package route

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"doorman/route/sqltest"
)

func TestCompileSQLQuery(t *testing.T) {
	for _, tc := range []struct {
		driver, query, want string
		params              []string // expanded for alice@example.com, imap, 192.0.2.1, 198.51.100.2
		err                 string
	}{
		{"pgsql", `SELECT NULL AS password, 'Y' as nopassword, host, destuser, 'Y' AS proxy FROM proxy WHERE "user" = '%u'`,
			`SELECT NULL AS password, 'Y' as nopassword, host, destuser, 'Y' AS proxy FROM proxy WHERE "user" = $1`,
			[]string{"alice@example.com"}, ""},
		{"mysql", `SELECT NULL AS password, host FROM proxy WHERE user = '%u'`,
			`SELECT NULL AS password, host FROM proxy WHERE user = ?`, []string{"alice@example.com"}, ""},
		{"pgsql", `SELECT x FROM t WHERE u = '%n' AND d = '%d' AND s='%{service}' AND r='%r' AND l='%{lip}'`,
			`SELECT x FROM t WHERE u = $1 AND d = $2 AND s=$3 AND r=$4 AND l=$5`,
			[]string{"alice", "example.com", "imap", "192.0.2.1", "198.51.100.2"}, ""},
		// One parameter per string, whatever it holds; '' and %% inside it.
		{"pgsql", `SELECT x FROM t WHERE a = '%n@%d' AND b = 'it''s %Lu 100%%'`,
			`SELECT x FROM t WHERE a = $1 AND b = $2`, []string{"alice@example.com", "it's alice@example.com 100%"}, ""},
		{"mysql", `SELECT x FROM t WHERE b = 'it\'s %Un'`, `SELECT x FROM t WHERE b = ?`, []string{"it's ALICE"}, ""},
		// Strings without variables stay, with %% expanded as Dovecot does.
		{"pgsql", `SELECT 'a''b' AS x, '100%%' AS y FROM t WHERE a = '%u' AND b LIKE 'x%%'`,
			`SELECT 'a''b' AS x, '100%' AS y FROM t WHERE a = $1 AND b LIKE 'x%'`, []string{"alice@example.com"}, ""},
		// Quotes in comments and quoted names do not start strings.
		{"pgsql", "SELECT \"it's\" -- don't\n, '%u' /* isn't */", "SELECT \"it's\" -- don't\n, $1 /* isn't */", []string{"alice@example.com"}, ""},
		{"mysql", "SELECT `it's` # don't\n, '%u'", "SELECT `it's` # don't\n, ?", []string{"alice@example.com"}, ""},
		{"pgsql", `SELECT $$it's$$, '%u'`, `SELECT $$it's$$, $1`, []string{"alice@example.com"}, ""},
		{"pgsql", `SELECT 5 %% 2`, `SELECT 5 % 2`, nil, ""},

		{"pgsql", `SELECT x FROM t WHERE u = %u`, "", nil, "outside a quoted string"},
		{"mysql", `SELECT x FROM t WHERE u = "%u"`, "", nil, "quoted name"},
		{"pgsql", `SELECT x FROM t WHERE u = E'%u'`, "", nil, "prefixed string"},
		{"pgsql", `SELECT x FROM t WHERE u = '%x'`, "", nil, "unsupported variable %x"},
		{"pgsql", `SELECT x FROM t WHERE u = '%u`, "", nil, "unterminated string"},
		{"pgsql", `SELECT $$%u$$`, "", nil, "in a $$ string"},
	} {
		q, params, err := compileSQLQuery(tc.query, tc.driver)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %q: err %v, want %q", tc.driver, tc.query, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %q: %v", tc.driver, tc.query, err)
			continue
		}
		if q != tc.want {
			t.Errorf("%s %q:\n got %q\nwant %q", tc.driver, tc.query, q, tc.want)
		}
		v := &Vars{User: "alice@example.com", LookupInfo: LookupInfo{Service: "imap", RemoteIP: "192.0.2.1", LocalIP: "198.51.100.2"}}
		var got []string
		for _, p := range params {
			got = append(got, p.Expand(v))
		}
		if !reflect.DeepEqual(got, tc.params) {
			t.Errorf("%s %q: params %q, want %q", tc.driver, tc.query, got, tc.params)
		}
	}
}

func TestParseConnect(t *testing.T) {
	cs, err := parseConnect(`host=sqlhost1 host=sqlhost2  dbname=mail user=dovecot password='se cr\'et' port=5433 connect_timeout=3 maxconns=7 sslmode=require`)
	if err != nil {
		t.Fatal(err)
	}
	want := connectString{
		hosts: []string{"sqlhost1", "sqlhost2"}, port: "5433", dbname: "mail", user: "dovecot",
		password: "se cr'et", connectTimeout: 3 * time.Second, maxConns: 7,
		other: [][2]string{{"sslmode", "require"}},
	}
	if !reflect.DeepEqual(cs, want) {
		t.Errorf("got %+v\nwant %+v", cs, want)
	}
	for _, bad := range []string{"host", "port=x", "password='open", "maxconns=0", "=x"} {
		if _, err := parseConnect(bad); err == nil {
			t.Errorf("parseConnect(%q): no error", bad)
		}
	}
	if _, err := NewSQL(SQLConfig{Driver: "mysql", Connect: "host=a sslmode=require", PasswordQuery: "SELECT 1"}); err == nil {
		t.Error("mysql with sslmode: no error")
	}
	if _, err := NewSQL(SQLConfig{Driver: "oracle", PasswordQuery: "SELECT 1"}); err == nil {
		t.Error("driver oracle: no error")
	}
}

// seedQuery is the password_query of Dovecot's proxy example, for the
// seed's table; quoteUser is how the "user" column must be written.
func seedQuery(user string) string {
	return `SELECT NULL AS password, 'Y' as nopassword, host, destuser, 'Y' AS proxy FROM proxy WHERE ` + user + ` = '%u'`
}

func TestSQLPostgres(t *testing.T) {
	t.Parallel()
	srv := sqltest.StartPostgres(t)
	// The seed's table; "user" is a reserved word in PostgreSQL.
	srv.Exec(t, `CREATE TABLE proxy (
		"user" varchar(255) NOT NULL,
		host varchar(16) default NULL,
		destuser varchar(255) NOT NULL default '',
		PRIMARY KEY ("user"))`)
	testSQL(t, srv, `"user"`, "SELECT NULL AS password, pg_sleep(5)")

	t.Run("UnquotedUserIsCurrentUser", func(t *testing.T) {
		// Written as in the seed (WHERE user = '%u'), PostgreSQL compares
		// CURRENT_USER, not the column: every row matches for the role's
		// own name, none for real users. Quote the column.
		db := newTestSQL(t, srv, seedQuery("user"))
		if _, err := db.Lookup(context.Background(), "john"); !errors.Is(err, ErrUnknownUser) {
			t.Errorf("john: %v, want unknown user", err)
		}
		if _, err := db.Lookup(context.Background(), sqltest.User); !errors.Is(err, ErrTempFail) || !strings.Contains(err.Error(), "multiple matches") {
			t.Errorf("%s: %v, want multiple matches", sqltest.User, err)
		}
	})
}

func TestSQLMariaDB(t *testing.T) {
	t.Parallel()
	srv := sqltest.StartMariaDB(t)
	// The seed's table, exactly as written.
	srv.Exec(t, `CREATE TABLE proxy (
		user varchar(255) NOT NULL,
		host varchar(16) default NULL,
		destuser varchar(255) NOT NULL default '',
		PRIMARY KEY (user))`)
	testSQL(t, srv, "user", "SELECT NULL AS password, SLEEP(5)")

	t.Run("BackslashInjection", func(t *testing.T) {
		db := newTestSQL(t, srv, seedQuery("user"))
		for _, u := range []string{`x\' OR 1=1 -- `, `x\\' OR 1=1 -- `, "x\\", `\`} {
			if e, err := db.Lookup(context.Background(), u); !errors.Is(err, ErrUnknownUser) {
				t.Errorf("%q: %+v, %v; want unknown user", u, e, err)
			}
		}
	})
}

func newTestSQL(t *testing.T, srv *sqltest.Server, query string) *SQL {
	t.Helper()
	return newTestSQLConnect(t, srv, srv.Connect(), query)
}

func newTestSQLConnect(t *testing.T, srv *sqltest.Server, connect, query string) *SQL {
	t.Helper()
	db, err := NewSQL(SQLConfig{Driver: srv.Driver, Connect: connect, PasswordQuery: query, QueryTimeout: 2 * time.Second, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testSQL runs the tests common to both servers. The proxy table exists.
func testSQL(t *testing.T, srv *sqltest.Server, userCol, sleepQuery string) {
	srv.Exec(t,
		`INSERT INTO proxy VALUES ('john', '192.168.0.1', '')`,
		`INSERT INTO proxy VALUES ('joe', '192.168.0.2', 'joe@example.com')`,
		`INSERT INTO proxy VALUES ('Mixed@Example.com', '192.168.0.3', '')`,
	)
	ctx := context.Background()
	seed := newTestSQL(t, srv, seedQuery(userCol))

	t.Run("Seed", func(t *testing.T) {
		for _, tc := range []struct {
			user string
			want *Entry
		}{
			{"john", &Entry{User: "john", Fields: map[string]string{"nopassword": "Y", "host": "192.168.0.1", "destuser": "", "proxy": "Y"}}},
			{"joe", &Entry{User: "joe", Fields: map[string]string{"nopassword": "Y", "host": "192.168.0.2", "destuser": "joe@example.com", "proxy": "Y"}}},
		} {
			e, err := seed.Lookup(ctx, tc.user)
			if err != nil {
				t.Fatalf("%s: %v", tc.user, err)
			}
			if !reflect.DeepEqual(e, tc.want) {
				t.Errorf("%s: got %+v, want %+v", tc.user, e, tc.want)
			}
			px, err := ParseProxy(e.Fields)
			if err != nil || !px.Proxy || !px.NoPassword || px.Host != tc.want.Fields["host"] {
				t.Errorf("%s: ParseProxy: %+v, %v", tc.user, px, err)
			}
		}
		// nopassword with a NULL password: any password logs in.
		h := NewHasher(1)
		if r := NewChain(seed).Authenticate(ctx, h, "joe", "anything"); r.Verdict != VerdictOK || r.Proxy.DestUser != "joe@example.com" {
			t.Errorf("Authenticate joe: %v %+v %v", r.Verdict, r.Proxy, r.Err)
		}
	})

	t.Run("Unknown", func(t *testing.T) {
		for _, u := range []string{"nobody", "x' OR '1'='1", "x' OR 1=1 -- ", "john'--", "'"} {
			if e, err := seed.Lookup(ctx, u); !errors.Is(err, ErrUnknownUser) {
				t.Errorf("%q: %+v, %v; want unknown user", u, e, err)
			}
		}
	})

	t.Run("Variables", func(t *testing.T) {
		db := newTestSQL(t, srv, `SELECT 'secret' AS password, '%n' AS n, '%d' AS d, '%s' AS s, '%r' AS r,
			'%l' AS l, '%Lu' AS lower, '%{username}@%{domain}' AS nd, '100%%' AS pct, NULL AS empty, 'x' AS "MiXeD"
			FROM proxy WHERE `+userCol+` = '%u'`)
		lctx := WithLookupInfo(ctx, LookupInfo{Service: "imap", RemoteIP: "192.0.2.1", LocalIP: "198.51.100.2"})
		e, err := db.Lookup(lctx, "Mixed@Example.com")
		if err != nil {
			t.Fatal(err)
		}
		want := &Entry{User: "Mixed@Example.com", Password: "{MD5}secret", Fields: map[string]string{
			"n": "Mixed", "d": "Example.com", "s": "imap", "r": "192.0.2.1", "l": "198.51.100.2",
			"lower": "mixed@example.com", "nd": "Mixed@Example.com", "pct": "100%", "mixed": "x",
		}}
		if !reflect.DeepEqual(e, want) {
			t.Errorf("got  %+v\nwant %+v", e, want)
		}
	})

	t.Run("UserRewrite", func(t *testing.T) {
		db := newTestSQL(t, srv, `SELECT '{PLAIN}pw' AS password, LOWER('%u') AS user, host FROM proxy WHERE `+userCol+` = '%u'`)
		e, err := db.Lookup(ctx, "Mixed@Example.com")
		if err != nil {
			t.Fatal(err)
		}
		if e.User != "mixed@example.com" || e.Password != "{PLAIN}pw" {
			t.Errorf("got %+v", e)
		}
	})

	t.Run("BadResults", func(t *testing.T) {
		for _, q := range []string{
			"SELECT NULL AS password, host FROM proxy",          // several rows
			"SELECT host FROM proxy WHERE host = '%u'",          // no password column
			"SELECT NULL AS password FROM no_such_table",        // SQL error
			"SELECT NULL AS password, 1/0 AS x FROM proxy",      // runtime error (pgsql)
			"SELECT NULL AS password FROM proxy WHERE x = '%u'", // no such column
		} {
			db := newTestSQL(t, srv, q)
			e, err := db.Lookup(ctx, "192.168.0.1")
			if srv.Driver == "mysql" && strings.Contains(q, "1/0") {
				continue // MySQL answers NULL
			}
			if !errors.Is(err, ErrTempFail) {
				t.Errorf("%s: %+v, %v; want a temporary failure", q, e, err)
			}
		}
	})

	t.Run("Stuck", func(t *testing.T) {
		db, err := NewSQL(SQLConfig{Driver: srv.Driver, Connect: srv.Connect(), PasswordQuery: sleepQuery, QueryTimeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for range 2 { // the second on a fresh connection: the first was closed
			start := time.Now()
			_, err = db.Lookup(ctx, "john")
			took := time.Since(start)
			if !errors.Is(err, ErrTempFail) || !IsTemporary(err) {
				t.Errorf("err %v, want a temporary failure", err)
			}
			if took > time.Second {
				t.Errorf("took %v with a 300ms query timeout", took)
			}
			t.Logf("stuck query failed after %v: %v", took, err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u := []string{"john", "joe", "nobody"}[i%3]
				_, err := seed.Lookup(ctx, u)
				if err != nil && !(u == "nobody" && errors.Is(err, ErrUnknownUser)) {
					errs <- fmt.Errorf("%s: %w", u, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		connect := strings.Replace(srv.Connect(), "password="+sqltest.Password, "password=wrong", 1)
		db := newTestSQLConnect(t, srv, connect, seedQuery(userCol))
		if _, err := db.Lookup(ctx, "john"); !errors.Is(err, ErrTempFail) {
			t.Errorf("err %v, want a temporary failure", err)
		} else if strings.Contains(err.Error(), "wrong") {
			t.Errorf("error shows the password: %v", err)
		}
	})

	t.Run("Failover", func(t *testing.T) {
		// 127.0.0.2 reaches this machine but nothing listens there: refused.
		connect := fmt.Sprintf("host=127.0.0.2 host=127.0.0.1 port=%d dbname=%s user=%s password=%s",
			srv.Port, sqltest.DBName, sqltest.User, sqltest.Password)
		db := newTestSQLConnect(t, srv, connect, seedQuery(userCol))
		for i := range 6 {
			start := time.Now()
			e, err := db.Lookup(ctx, "john")
			if err != nil || e.Fields["host"] != "192.168.0.1" {
				t.Fatalf("lookup %d: %+v, %v", i, e, err)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("lookup %d took %v", i, took)
			}
		}
		if h := db.hosts[0]; h.downUntil.Load() == 0 || h.fails.Load() != 1 {
			t.Errorf("dead host: downUntil %d fails %d; want set aside once", h.downUntil.Load(), h.fails.Load())
		}

		// Every host down: a temporary failure, fast.
		dead := newTestSQLConnect(t, srv, fmt.Sprintf("host=127.0.0.2 host=127.0.0.3 port=%d dbname=mail user=u password=p", srv.Port), seedQuery(userCol))
		start := time.Now()
		if _, err := dead.Lookup(ctx, "john"); !errors.Is(err, ErrTempFail) {
			t.Errorf("all down: %v, want a temporary failure", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("all down took %v", took)
		}
	})
}

func TestSQLOrder(t *testing.T) {
	now := time.Unix(1000, 0)
	s := &SQL{now: func() time.Time { return now }}
	for _, a := range []string{"a", "b", "c"} {
		s.hosts = append(s.hosts, &sqlHost{addr: a})
	}
	names := func() string {
		var b strings.Builder
		for _, h := range s.order() {
			b.WriteString(h.addr)
		}
		return b.String()
	}
	for _, want := range []string{"abc", "bca", "cab", "abc"} {
		if got := names(); got != want {
			t.Errorf("order %s, want %s", got, want)
		}
	}
	s.setAside(s.hosts[1]) // b down for 1s
	s.setAside(s.hosts[0])
	s.setAside(s.hosts[0]) // a down for 2s
	if got := names(); got != "cba" {
		t.Errorf("with a and b down: %s, want cba", got)
	}
	now = now.Add(1500 * time.Millisecond) // b is back
	if got := names(); got != "bca" && got != "cba" {
		t.Errorf("with a down: %s", got)
	}
	for range 10 {
		s.setAside(s.hosts[2])
	}
	if d := time.Duration(s.hosts[2].downUntil.Load() - now.UnixNano()); d != 30*time.Second {
		t.Errorf("backoff after 10 failures: %v, want 30s", d)
	}
}
