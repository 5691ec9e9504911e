package engine

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"doorman/engine/testenv"
	"doorman/route/ldaptest"
	"doorman/route/routetest"
	"doorman/route/sqltest"
)

// End-to-end tests of the sql and ldap passdbs: real PostgreSQL, MariaDB and slapd
// servers, Doorman in between, the real Dovecot backend behind.

// seedBackendIP is the loopback address of a backend of the SQL tests' own, listening on
// the standard IMAP port: the seed's table has a host column and no port, so its users go
// to host:143, as with Dovecot.
const seedBackendIP = "127.0.0.61"

var (
	seedOnce    sync.Once
	seedBackend *testenv.Dovecot
	seedErr     error
)

// sqlSeedBackend starts (once) an IMAP-only Dovecot on seedBackendIP:143 with the users
// of the shared backend.
func sqlSeedBackend(t *testing.T) *testenv.Dovecot {
	t.Helper()
	sharedBackend(t) // skips without Dovecot
	seedOnce.Do(func() {
		seedBackend, seedErr = testenv.StartDovecot(testenv.DovecotOptions{
			ListenIP: seedBackendIP, IMAPPort: 143,
			Users: []testenv.User{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "secret"}},
		})
		if seedErr == nil {
			stopAtExit = append(stopAtExit, func() { _ = seedBackend.Stop() })
		}
	})
	if seedErr != nil {
		t.Fatalf("start dovecot on %s:143: %v", seedBackendIP, seedErr)
	}
	return seedBackend
}

// The password forwarding example of the seed (Dovecot wiki's Proxying page, "Example
// password forwarding SQL configuration"): its table and its password_query, verbatim.
// MariaDB runs both as written. PostgreSQL needs the column name "user" quoted: user is
// a reserved word there (CREATE TABLE fails on it), and an unquoted user in the WHERE
// clause would be CURRENT_USER, matching no row.
const (
	seedTableMySQL = `CREATE TABLE proxy (
  user varchar(255) NOT NULL,
  host varchar(16) default NULL,
  destuser varchar(255) NOT NULL default '',
  PRIMARY KEY (user)
);`
	seedQueryMySQL = `SELECT NULL AS password, 'Y' as nopassword, host, destuser, 'Y' AS proxy FROM proxy WHERE user = '%u'`

	seedTablePgsql = `CREATE TABLE proxy (
  "user" varchar(255) NOT NULL,
  host varchar(16) default NULL,
  destuser varchar(255) NOT NULL default '',
  PRIMARY KEY ("user")
);`
	seedQueryPgsql = `SELECT NULL AS password, 'Y' as nopassword, host, destuser, 'Y' AS proxy FROM proxy WHERE "user" = '%u'`
)

// sqlProxy runs Doorman with one sql passdb.
func sqlProxy(t *testing.T, db *sqltest.Server, query, extra string) *proxy {
	t.Helper()
	return startProxy(t, "", fmt.Sprintf(`passdb:
  - driver: sql
    sql_driver: %s
    connect: %q
    password_query: %q
%s`, db.Driver, db.Connect(), query, extra))
}

func TestSQLPassdbE2E(t *testing.T) {
	for _, tc := range []struct {
		driver      string
		start       func(testing.TB) *sqltest.Server
		table       string
		query       string
		user        string // the query's user column, as the dialect writes it
		stuckSelect string
	}{
		{"pgsql", sqltest.StartPostgres, seedTablePgsql, seedQueryPgsql, `"user"`, "pg_sleep(30)"},
		{"mysql", sqltest.StartMariaDB, seedTableMySQL, seedQueryMySQL, "user", "SLEEP(30)"},
	} {
		t.Run(tc.driver, func(t *testing.T) {
			sqlSeedBackend(t)
			db := tc.start(t)
			db.Exec(t, tc.table,
				fmt.Sprintf("INSERT INTO proxy (%s, host, destuser) VALUES ('alice', '%s', '')", tc.user, seedBackendIP))

			// The seed's query: password forwarding to host:143, the backend checks it.
			p := sqlProxy(t, db, tc.query, "")
			c := dial(t, p.addr, "")
			c.send("a LOGIN alice secret\r\n")
			expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK [CAPABILITY IMAP4rev1")
			c.send("b SELECT INBOX\r\n")
			expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK [READ-WRITE]")
			c.send("c LOGOUT\r\n")
			c.until("c", 10*time.Second)

			// The backend refuses a wrong password; a user without a row is unknown.
			c = dial(t, p.addr, "")
			c.send("a LOGIN alice wrong\r\n")
			expectPrefix(t, last(c.until("a", 10*time.Second)), "a NO [AUTHENTICATIONFAILED]")
			c.send("b LOGIN bob secret\r\n")
			expectPrefix(t, last(c.until("b", 10*time.Second)), "b NO [AUTHENTICATIONFAILED]")

			if tc.driver == "mysql" {
				// A real client: curl lists the mailboxes through Doorman.
				out, err := exec.Command("curl", "-sS", "--max-time", "20", "--url", "imap://"+p.addr+"/",
					"--user", "alice:secret").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "INBOX") {
					t.Fatalf("curl: %v\n%s", err, out)
				}
			}

			// %s, %r and %l come from the login: the service, the client's and the
			// listener's addresses.
			infoQuery := fmt.Sprintf("SELECT NULL AS password, 'Y' AS nopassword, host, 'Y' AS proxy FROM proxy"+
				" WHERE %s = '%%u' AND '%%s' = 'imap' AND '%%r' = '127.0.0.9' AND '%%l' = '127.0.0.1'", tc.user)
			p2 := sqlProxy(t, db, infoQuery, "")
			c = dial(t, p2.addr, "127.0.0.9")
			c.send("a LOGIN alice secret\r\n")
			expectPrefix(t, last(c.until("a", 10*time.Second)), "a OK")
			c = dial(t, p2.addr, "127.0.0.10")
			c.send("a LOGIN alice secret\r\n")
			expectPrefix(t, last(c.until("a", 10*time.Second)), "a NO [AUTHENTICATIONFAILED]")

			// A stuck database: the lookup gives up after query_timeout and the client
			// gets the temporary failure reply at once (no failure delay).
			stuck := fmt.Sprintf("SELECT %s AS stuck, NULL AS password, 'Y' AS nopassword, host, 'Y' AS proxy"+
				" FROM proxy WHERE %s = '%%u'", tc.stuckSelect, tc.user)
			p3 := sqlProxy(t, db, stuck, "    query_timeout: 300ms\n")
			c = dial(t, p3.addr, "")
			start := time.Now()
			c.send("a LOGIN alice secret\r\n")
			got := last(c.until("a", 10*time.Second))
			if !strings.HasPrefix(got, "a NO [UNAVAILABLE] Temporary authentication failure.") {
				t.Fatalf("stuck database: %q", got)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("stuck database: the reply took %v", d)
			}
		})
	}
}

// ssha is {SSHA}: base64(SHA1(password salt) salt).
func ssha(password string) string {
	salt := []byte("doorman!")
	h := sha1.Sum(append([]byte(password), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h[:], salt...))
}

func TestLDAPPassdbE2E(t *testing.T) {
	be := sharedBackend(t)
	port := portOf(be.IMAPAddr)
	// dave: a password Doorman (or, with auth_bind, slapd) checks, and a mailHost.
	// erin: no host of her own, a virtual site whose ipHost entry has the address.
	srv := ldaptest.StartSlapd(t, fmt.Sprintf(`dn: uid=dave,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: inetLocalMailRecipient
uid: dave
cn: Dave
sn: Dave
uidNumber: 2001
gidNumber: 2001
homeDirectory: /home/dave
mailHost: 127.0.0.1
userPassword: %s

dn: uid=erin,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: doormanUser
uid: erin
cn: Erin
sn: Erin
uidNumber: 2002
gidNumber: 2002
homeDirectory: /home/erin
doormanVsite: siteE
userPassword: %s

dn: cn=siteE,ou=vsites,dc=example,dc=com
objectClass: device
objectClass: ipHost
cn: siteE
ipHostNumber: 127.0.0.1
`, ssha("secret"), ssha("secret")))

	ldapPassdb := func(extra string) string {
		return fmt.Sprintf(`passdb:
  - driver: ldap
    uris: %s
    dn: %q
    dnpass: %q
    base: "ou=people,dc=example,dc=com"
    pass_filter: "(&(objectClass=posixAccount)(uid=%%u))"
%s`, srv.URI, ldaptest.ServiceDN, ldaptest.ServicePassword, extra)
	}
	login := func(t *testing.T, p *proxy, user, pass, want string) {
		t.Helper()
		c := dial(t, p.addr, "")
		c.send("a LOGIN " + user + " " + pass + "\r\n")
		got := last(c.until("a", 10*time.Second))
		expectPrefix(t, got, "a "+want)
		if want == "OK" {
			c.send("b SELECT INBOX\r\n")
			expectPrefix(t, last(c.until("b", 10*time.Second)), "b OK [READ-WRITE]")
		}
	}

	t.Run("password in the directory", func(t *testing.T) {
		p := startProxy(t, "", ldapPassdb(fmt.Sprintf(
			"    pass_attrs: \"uid=user,userPassword=password,mailHost=host,=proxy=y,=port=%s\"\n", port)))
		login(t, p, "dave", "secret", "OK")
		login(t, p, "dave", "wrong", "NO [AUTHENTICATIONFAILED]")
		login(t, p, "nobody", "secret", "NO [AUTHENTICATIONFAILED]")
	})

	t.Run("auth_bind", func(t *testing.T) {
		p := startProxy(t, "", ldapPassdb(fmt.Sprintf(
			"    auth_bind: yes\n    pass_attrs: \"uid=user,mailHost=host,=proxy=y,=port=%s\"\n", port)))
		login(t, p, "dave", "secret", "OK")
		login(t, p, "dave", "wrong", "NO [AUTHENTICATIONFAILED]")
		login(t, p, "nobody", "secret", "NO [AUTHENTICATIONFAILED]")
		// A mismatch in the directory moves on to the next passdb, as Dovecot's
		// result_failure=continue: dave's other password, in the file, logs in there
		// (through the backend's master user, the backend knowing only "secret").
		p = startProxy(t, passwdLine("dave", "{PLAIN}filepw", "proxy host=127.0.0.1 port="+port+" master=proxy pass=masterpw"),
			ldapPassdb(fmt.Sprintf("    auth_bind: yes\n    pass_attrs: \"uid=user,mailHost=host,=proxy=y,=port=%s\"\n", port))+
				"  - {driver: passwd-file, path: users.passwd}\n")
		login(t, p, "dave", "secret", "OK")
		login(t, p, "dave", "filepw", "OK")
		login(t, p, "dave", "wrong", "NO [AUTHENTICATIONFAILED]")
	})

	t.Run("virtual site", func(t *testing.T) {
		p := startProxy(t, "", ldapPassdb(fmt.Sprintf(`    pass_attrs: "uid=user,userPassword=password,doormanVsite=vsite"
    vsite_base: "ou=vsites,dc=example,dc=com"
    vsite_filter: "(&(objectClass=ipHost)(cn=%%$))"
    vsite_attrs: "ipHostNumber=host,=port=%s"
`, port)))
		login(t, p, "erin", "secret", "OK")
		// A real client over the vsite route.
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "--url", "imap://"+p.addr+"/",
			"--user", "erin:secret").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "INBOX") {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		login(t, p, "erin", "wrong", "NO [AUTHENTICATIONFAILED]")
	})
}

func TestSQLLDAPConfigValidate(t *testing.T) {
	base := "listeners:\n  - {name: imap, protocol: imap, address: \"127.0.0.1:1143\"}\npassdb:\n"
	for _, tc := range []struct {
		passdb string
		want   []string // each must be in the error; none: valid
	}{
		{`  - {driver: sql, sql_driver: pgsql, connect: "host=db1 host=db2 dbname=mail", password_query: "SELECT password FROM users WHERE userid = '%u'"}`, nil},
		{`  - {driver: sql, sql_driver: mysql, password_query: "SELECT NULL AS password FROM t WHERE u = '%u'", default_pass_scheme: SHA512-CRYPT, query_timeout: 300ms, connect_timeout: 1, max_conns: 3}`, nil},
		{`  - {driver: sql, password_query: "SELECT 1"}`, []string{"passdb[0].sql_driver: is required"}},
		{`  - {driver: sql, sql_driver: oracle}`, []string{`passdb[0].sql_driver: unknown sql driver "oracle"`, "passdb[0].password_query: is required"}},
		{`  - {driver: sql, sql_driver: pgsql, password_query: "SELECT password FROM users WHERE userid = %u"}`, []string{"passdb[0].password_query: "}},
		{`  - {driver: sql, sql_driver: pgsql, connect: "host='db1", password_query: "SELECT 1"}`, []string{"passdb[0].connect: "}},
		{`  - {driver: sql, sql_driver: pgsql, password_query: "SELECT 1", default_pass_scheme: NOPE, max_conns: -1}`, []string{`passdb[0].default_pass_scheme: unknown scheme "NOPE"`, "passdb[0].max_conns: must not be negative"}},
		{`  - {driver: ldap, uris: "ldap://a ldap://b", base: "dc=example,dc=com", pass_attrs: "userPassword=password,mailHost=host,=proxy=y", auth_bind: yes, vsite_filter: "(cn=%$)", vsite_attrs: "ipHostNumber=host", vsite_cache_ttl: 30s, timeout: 2s, pool_size: 8}`, nil},
		{`  - {driver: ldap, uris: [ldap://a, "ldaps://b:636"], base: "dc=x", tls: yes, tls_require_cert: never}`, nil},
		{`  - {driver: ldap, base: "dc=x", pass_filter: "(uid=%u", scope: deep}`, []string{"passdb[0].uris: none", "passdb[0].pass_filter: ", `passdb[0].scope: "deep"`}},
		{`  - {driver: ldap, uris: "http://a", base: "dc=x", vsite_filter: "(cn=%$)"}`, []string{"passdb[0].uris: ", "passdb[0].vsite_attrs: none"}},
		{`  - {driver: ldap, uris: ldap://a, base: "dc=x", default_scheme: SSHA}`, []string{"passdb[0].default_scheme: "}},
		{`  - {driver: mongo}`, []string{`passdb[0].driver: unknown driver "mongo" (supported: passwd-file, redis, sql, ldap)`}},
	} {
		_, err := ParseConfig([]byte(base+tc.passdb+"\n"), t.TempDir())
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.passdb, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", tc.passdb)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.passdb, err, w)
			}
		}
	}
}

// The sql and ldap example of the README parses.
func TestREADMESQLLDAPExampleParses(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(passdb:\n  - driver: sql\n.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no sql/ldap yaml example in README.md")
	}
	yml := "listeners:\n  - {name: imap, protocol: imap, address: \"127.0.0.1:1143\"}\n" + string(m[1])
	cfg, err := ParseConfig([]byte(yml), t.TempDir())
	if err != nil {
		t.Fatalf("README sql/ldap example: %v", err)
	}
	if len(cfg.Passdb) != 2 || cfg.Passdb[0].SQLDriver != "mysql" || len(cfg.Passdb[1].URIs) != 2 {
		t.Fatalf("passdb: %+v", cfg.Passdb)
	}
}

// The auth cache fronts an sql passdb too, and the Redis events channel empties it on every
// host: a user whose row changed keeps the cached route until a "flush" (or the TTL).
func TestSQLPassdbBehindAuthCache(t *testing.T) {
	sqlSeedBackend(t)
	db := sqltest.StartMariaDB(t)
	db.Exec(t, seedTableMySQL,
		fmt.Sprintf("INSERT INTO proxy (user, host, destuser) VALUES ('alice', '%s', '')", seedBackendIP))
	raddr, _ := routetest.StartRedis(t)
	p := startProxy(t, "", fmt.Sprintf(`passdb:
  - driver: sql
    sql_driver: mysql
    connect: %q
    password_query: %q
  - {driver: redis, addrs: [%q]}
auth_cache_size: 100
auth_cache_ttl: 1h
auth_penalty: no
login_proxy_max_reconnects: 0`, db.Connect(), seedQueryMySQL, raddr))
	login := func(want string) {
		t.Helper()
		c := dial(t, p.addr, "")
		c.send("a LOGIN alice secret\r\n")
		expectPrefix(t, last(c.until("a", 10*time.Second)), want)
	}
	login("a OK")
	// Send alice somewhere nothing listens: the cached row still routes her.
	db.Exec(t, "UPDATE proxy SET host = '127.0.0.62' WHERE user = 'alice'")
	login("a OK")
	rc := redis.NewClient(&redis.Options{Addr: raddr})
	defer rc.Close()
	waitFor(t, func() bool {
		if err := rc.Publish(context.Background(), "doorman:events", "flush").Err(); err != nil {
			return false
		}
		c := dial(t, p.addr, "")
		c.send("a LOGIN alice secret\r\n")
		return strings.HasPrefix(last(c.until("a", 10*time.Second)), "a NO [UNAVAILABLE]")
	}, "after a flush on the events channel the changed row is read")
}
