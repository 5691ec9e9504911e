package route

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// SQL is Dovecot's sql passdb for PostgreSQL ("pgsql") and MySQL/MariaDB
// ("mysql"): one password_query per lookup, the first row's columns
// becoming the entry.
//
// Result rules, as in Dovecot's passdb-sql.c: no row is an unknown user;
// more than one row, or a result without a "password" (or
// "password_noscheme") column, is a temporary failure ("Password query
// returned multiple matches" / "must return a field named 'password'").
// Column names are lower-cased. A NULL value sets nothing: NULL AS password
// means no password. Every other non-NULL column is an extra field with its
// value as text; Dovecot's boolean fields are existence tests, so 'Y' AS
// proxy turns proxy on, and so would 'N'. A user, username or domain column
// rewrites the user name, in column order. The :protected and :remove
// suffixes work as in passwd-file.
//
// Variables: the query may use the %-variables of Template (%u %n %d %s %r
// %l and their long forms, %L / %U, %%). %s, %r and %l come from the
// LookupInfo in the lookup's context. Dovecot pastes escaped values into
// the query text; Doorman instead turns every quoted string that holds a
// variable into one bind parameter whose value is the string expanded
// ('%n@%d' becomes one parameter "alice@example.com"), so a user name never
// becomes query text, whatever it contains. The drivers interpolate the
// parameter client-side as a literal (pgx's simple protocol, which requires
// standard_conforming_strings=on; go-sql-driver's interpolateParams, which
// follows the server's NO_BACKSLASH_ESCAPES), so the server sees the same
// SQL Dovecot would send, in one round trip. (go-sql-driver falls back to
// a server-side prepared statement when the query text holds a '?' of its
// own; the result is the same.) A variable outside a
// '...'-quoted string, or inside E'...', "...", `...` or $$...$$, is a
// configuration error.
//
// Hosts: each host= in the connect string has its own pool. Lookups go
// round robin over the hosts that are up; a host that fails to connect (or
// refuses the login) is set aside for 1 s, doubling to 30 s while it keeps
// failing, and the lookup moves on to the next host within the same
// QueryTimeout. A host set aside is still tried when no other host answers.
//
// Every failure other than "no such user" is a *TempError: connection
// refused, authentication failure, SQL errors, and a query that does not
// answer within QueryTimeout.
type SQL struct {
	name          string
	driver        string
	hosts         []*sqlHost
	query         string     // with placeholders
	params        []Template // one per placeholder
	defaultScheme string
	timeout       time.Duration
	next          atomic.Uint32 // round robin
	now           func() time.Time
}

var _ Passdb = (*SQL)(nil)

// SQLConfig configures NewSQL. Field names follow dovecot-sql.conf.ext.
type SQLConfig struct {
	// Driver is "pgsql" or "mysql" (MariaDB too).
	Driver string
	// Connect is Dovecot's connect string: space-separated key=value pairs,
	// values optionally in single quotes ('a b', with \' and \\).
	//
	// Both drivers: host= (repeatable; a value starting with '/' is a
	// unix socket: the directory for pgsql, the socket file for mysql),
	// port=, dbname=, user=, password=, connect_timeout= (seconds),
	// maxconns= (pool size per host, Dovecot's default 5).
	// pgsql: every other key goes to the driver with libpq's meaning
	// (sslmode=, sslrootcert=, application_name=, …).
	// mysql: also ssl_ca=, ssl_cert=, ssl_key=, ssl_verify_server_cert=yes
	// and character_set=; other keys are an error.
	Connect string
	// PasswordQuery is Dovecot's password_query.
	PasswordQuery string
	// DefaultScheme is the scheme of passwords without a {SCHEME} prefix:
	// Dovecot's default_pass_scheme, whose default for sql is MD5.
	DefaultScheme string
	// QueryTimeout bounds a whole lookup: waiting for a pooled connection,
	// connecting, failing over, and the query. Default 1s: a login should
	// fail fast with a temporary error rather than hang on a stuck database.
	QueryTimeout time.Duration
	// ConnectTimeout bounds one connection attempt to one host; default
	// half of QueryTimeout, so a dead first host leaves time for the next.
	// connect_timeout= in Connect sets it too (this field wins).
	ConnectTimeout time.Duration
	// MaxConns is the pool size per host (open and idle); 0: maxconns= from
	// Connect, else 5.
	MaxConns int
}

// SQL defaults.
const (
	DefaultSQLScheme       = "MD5"
	DefaultSQLQueryTimeout = time.Second
	DefaultSQLMaxConns     = 5
)

type sqlHost struct {
	addr      string
	db        *sql.DB
	downUntil atomic.Int64 // unix nanoseconds; 0: up
	fails     atomic.Int32 // consecutive connection failures
}

// NewSQL parses the connect string and the query and builds one pool per
// host. It does not connect: a database that is down at start-up costs
// temporary failures, not a failed start.
func NewSQL(cfg SQLConfig) (*SQL, error) {
	if cfg.Driver != "pgsql" && cfg.Driver != "mysql" {
		return nil, fmt.Errorf("route: sql: driver %q: want pgsql or mysql", cfg.Driver)
	}
	if strings.TrimSpace(cfg.PasswordQuery) == "" {
		return nil, errors.New("route: sql: password_query is empty")
	}
	if cfg.QueryTimeout < 0 || cfg.ConnectTimeout < 0 || cfg.MaxConns < 0 {
		return nil, errors.New("route: sql: query timeout, connect timeout and max conns must not be negative")
	}
	if cfg.DefaultScheme == "" {
		cfg.DefaultScheme = DefaultSQLScheme
	}
	if !SchemeSupported(cfg.DefaultScheme) {
		return nil, fmt.Errorf("route: sql: %w %q", ErrUnknownScheme, cfg.DefaultScheme)
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = DefaultSQLQueryTimeout
	}
	query, params, err := compileSQLQuery(cfg.PasswordQuery, cfg.Driver)
	if err != nil {
		return nil, fmt.Errorf("route: sql: password_query: %w", err)
	}
	cs, err := parseConnect(cfg.Connect)
	if err != nil {
		return nil, fmt.Errorf("route: sql: connect: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = cs.connectTimeout
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = cfg.QueryTimeout / 2
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = cs.maxConns
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultSQLMaxConns
	}
	s := &SQL{
		name:          "sql:" + cfg.Driver,
		driver:        cfg.Driver,
		query:         query,
		params:        params,
		defaultScheme: cfg.DefaultScheme,
		timeout:       cfg.QueryTimeout,
		now:           time.Now,
	}
	hosts := cs.hosts
	if len(hosts) == 0 {
		hosts = []string{""} // the driver's default (localhost)
	}
	for _, host := range hosts {
		var db *sql.DB
		var err error
		if cfg.Driver == "pgsql" {
			db, err = openPgsql(host, cs, cfg.ConnectTimeout)
		} else {
			db, err = openMysql(host, cs, cfg.ConnectTimeout, cfg.QueryTimeout)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("route: sql: connect: %w", err)
		}
		db.SetMaxOpenConns(cfg.MaxConns)
		db.SetMaxIdleConns(cfg.MaxConns)
		addr := host
		if addr == "" {
			addr = "localhost"
		}
		s.hosts = append(s.hosts, &sqlHost{addr: addr, db: db})
	}
	return s, nil
}

// Name is "sql:pgsql" or "sql:mysql".
func (s *SQL) Name() string { return s.name }

// Query is the password query as sent, with the driver's placeholders
// ($1 or ?) where the quoted strings with variables were.
func (s *SQL) Query() string { return s.query }

// Close closes every pool.
func (s *SQL) Close() error {
	var errs []error
	for _, h := range s.hosts {
		errs = append(errs, h.db.Close())
	}
	return errors.Join(errs...)
}

// Ping connects to every host and reports the ones that fail, as a
// *TempError (nil when all answer).
func (s *SQL) Ping(ctx context.Context) error {
	var errs []error
	for _, h := range s.hosts {
		pctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := h.db.PingContext(pctx)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.addr, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &TempError{Passdb: s.name, Err: err}
	}
	return nil
}

// errMultipleRows and errNoPasswordColumn are Dovecot's password_query
// result errors.
var (
	errMultipleRows     = errors.New("password query returned multiple matches")
	errNoPasswordColumn = errors.New("password query must return a field named 'password'")
)

// Lookup runs the password query with the variables of user and of the
// LookupInfo in ctx.
func (s *SQL) Lookup(ctx context.Context, user string) (*Entry, error) {
	if user == "" {
		return nil, ErrUnknownUser
	}
	vars := Vars{User: user, LookupInfo: LookupInfoFrom(ctx)}
	args := make([]any, len(s.params))
	for i, p := range s.params {
		args[i] = p.Expand(&vars)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	var lastErr error
	for _, h := range s.order() {
		e, err := s.lookupOn(ctx, h, user, args)
		if err == nil || errors.Is(err, ErrUnknownUser) {
			h.fails.Store(0)
			h.downUntil.Store(0)
			return e, err
		}
		if ctx.Err() != nil {
			// The budget is spent: no other host would get a fair try.
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("%s: no answer within %v: %w", h.addr, s.timeout, ctx.Err())
			}
			return nil, &TempError{Passdb: s.name, Err: err}
		}
		err = fmt.Errorf("%s: %w", h.addr, err)
		if !sqlHostError(err) {
			// The query or its result is wrong: every host would say the same.
			return nil, &TempError{Passdb: s.name, Err: err}
		}
		s.setAside(h)
		lastErr = err
	}
	return nil, &TempError{Passdb: s.name, Err: lastErr}
}

// order returns the hosts to try: those up, round robin, then those set
// aside, soonest back first.
func (s *SQL) order() []*sqlHost {
	n := len(s.hosts)
	if n == 1 {
		return s.hosts
	}
	start := int(s.next.Add(1)-1) % n
	now := s.now().UnixNano()
	up := make([]*sqlHost, 0, n)
	var down []*sqlHost
	for i := range n {
		h := s.hosts[(start+i)%n]
		if h.downUntil.Load() > now {
			down = append(down, h)
		} else {
			up = append(up, h)
		}
	}
	for i := 1; i < len(down); i++ { // insertion sort: n is tiny
		for j := i; j > 0 && down[j].downUntil.Load() < down[j-1].downUntil.Load(); j-- {
			down[j], down[j-1] = down[j-1], down[j]
		}
	}
	return append(up, down...)
}

// setAside marks h down for 1 s, doubling per consecutive failure, at most 30 s.
func (s *SQL) setAside(h *sqlHost) {
	f := h.fails.Add(1)
	d := time.Second << min(f-1, 5)
	d = min(d, 30*time.Second)
	h.downUntil.Store(s.now().Add(d).UnixNano())
}

func (s *SQL) lookupOn(ctx context.Context, h *sqlHost, user string, args []any) (*Entry, error) {
	rows, err := h.db.QueryContext(ctx, s.query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, ErrUnknownUser
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	if rows.Next() {
		return nil, errMultipleRows
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return entryFromRow(user, cols, vals, s.defaultScheme)
}

// entryFromRow builds an Entry from one result row.
func entryFromRow(user string, cols []string, vals []sql.NullString, defaultScheme string) (*Entry, error) {
	e := &Entry{User: user}
	hasPassword := false
	for i, col := range cols {
		col = strings.ToLower(col)
		switch col {
		case "password", "password_noscheme":
			hasPassword = true
		}
		if !vals[i].Valid {
			continue
		}
		v := vals[i].String
		switch col {
		case "password":
			e.Password = storedPassword(v, defaultScheme)
			continue
		case "password_noscheme":
			e.Password = ""
			if v != "" {
				e.Password = "{" + defaultScheme + "}" + v
			}
			continue
		}
		if k, ok := strings.CutSuffix(col, ":protected"); ok && k != "" {
			if _, set := e.Fields[k]; set {
				continue
			}
			col = k
		} else if k, ok := strings.CutSuffix(col, ":remove"); ok && k != "" {
			delete(e.Fields, k)
			continue
		}
		if u, ok := updatedUser(e.User, col, v); ok {
			if u == "" {
				return nil, fmt.Errorf("%w: %s", ErrUnknownUser, errEmptyUser)
			}
			e.User = u
		}
		if e.Fields == nil {
			e.Fields = make(map[string]string, len(cols))
		}
		e.Fields[col] = v
	}
	if !hasPassword {
		return nil, errNoPasswordColumn
	}
	return e, nil
}

// SetMySQLLogger sends the MySQL driver's own log lines (a connection
// that broke while idle, a malformed packet) to print instead of the
// standard logger on stderr. It is process-wide and meant to be called
// once at start-up. The pgsql driver does not log.
func SetMySQLLogger(print func(msg string)) {
	_ = mysql.SetLogger(mysqlLogger(print))
}

type mysqlLogger func(msg string)

func (l mysqlLogger) Print(v ...any) { l(strings.TrimSpace(fmt.Sprint(v...))) }

// sqlHostError reports whether err is the host's fault (unreachable,
// refusing logins, shutting down, missing database) rather than the
// query's: only then is the host set aside and the next one tried.
func sqlHostError(err error) bool {
	if errors.Is(err, errMultipleRows) || errors.Is(err, errNoPasswordColumn) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", // connection exception
			"28", // invalid authorization
			"3D", // invalid catalog name: no such database
			"53", // insufficient resources: too many connections
			"57": // operator intervention: shutdown, cannot connect now
			return true
		}
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1040, // too many connections
			1044, 1045, // access denied
			1049,       // unknown database
			1053,       // server shutdown in progress
			1129, 1130, // host blocked / not allowed
			1203: // max user connections
			return true
		}
		return false
	}
	// Not an answer from the server: the network or the server process.
	return true
}

// connectString is a parsed Dovecot connect string.
type connectString struct {
	hosts          []string
	port           string
	dbname         string
	user           string
	password       string
	connectTimeout time.Duration
	maxConns       int
	other          [][2]string // remaining key=value pairs, in order
}

// parseConnect splits a connect string into its pairs. Values may be
// quoted with single quotes, with \ escaping the next character (libpq's
// syntax, a superset of Dovecot's space splitting).
func parseConnect(s string) (connectString, error) {
	var cs connectString
	for i := 0; i < len(s); {
		if s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' {
			i++
			continue
		}
		eq := strings.IndexByte(s[i:], '=')
		if eq <= 0 {
			return cs, fmt.Errorf("expected key=value at %q", s[i:])
		}
		key := strings.TrimSpace(s[i : i+eq])
		if strings.ContainsAny(key, " \t") {
			return cs, fmt.Errorf("expected key=value at %q", s[i:])
		}
		i += eq + 1
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				i++
				if c == '\\' && i < len(s) {
					val.WriteByte(s[i])
					i++
					continue
				}
				if c == '\'' {
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return cs, fmt.Errorf("unterminated quoted value of %s", key)
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		v := val.String()
		switch key {
		case "host":
			if v == "" {
				return cs, errors.New("empty host")
			}
			cs.hosts = append(cs.hosts, v)
		case "port":
			if n, err := strconv.Atoi(v); err != nil || n <= 0 || n > 65535 {
				return cs, fmt.Errorf("bad port %q", v)
			}
			cs.port = v
		case "dbname":
			cs.dbname = v
		case "user":
			cs.user = v
		case "password":
			cs.password = v
		case "connect_timeout":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return cs, fmt.Errorf("bad connect_timeout %q (seconds)", v)
			}
			cs.connectTimeout = time.Duration(n) * time.Second
		case "maxconns":
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return cs, fmt.Errorf("bad maxconns %q", v)
			}
			cs.maxConns = n
		default:
			cs.other = append(cs.other, [2]string{key, v})
		}
	}
	return cs, nil
}

// libpqQuote quotes a value for a libpq keyword/value string.
func libpqQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// openPgsql opens a pool to one PostgreSQL host. The settings go through
// pgx's own parser as a libpq string, so every libpq key it knows works.
func openPgsql(host string, cs connectString, connectTimeout time.Duration) (*sql.DB, error) {
	var b strings.Builder
	add := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k + "=" + libpqQuote(v))
	}
	if host != "" {
		add("host", host)
	}
	for _, kv := range [...][2]string{{"port", cs.port}, {"dbname", cs.dbname}, {"user", cs.user}, {"password", cs.password}} {
		if kv[1] != "" {
			add(kv[0], kv[1])
		}
	}
	for _, kv := range cs.other {
		add(kv[0], kv[1])
	}
	cfg, err := pgx.ParseConfig(b.String())
	if err != nil {
		// pgx's errors may quote the connect string: keep the password out.
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("pgsql %s: %s", host, pe.Unwrap())
		}
		return nil, fmt.Errorf("pgsql %s: bad connect string", host)
	}
	cfg.ConnectTimeout = connectTimeout
	// Parameters are interpolated by pgx as SQL literals (see SQL): one
	// round trip, no prepared statements, the same SQL Dovecot sends.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return stdlib.OpenDB(*cfg), nil
}

// openMysql opens a pool to one MySQL/MariaDB host.
func openMysql(host string, cs connectString, connectTimeout, queryTimeout time.Duration) (*sql.DB, error) {
	cfg := mysql.NewConfig()
	switch {
	case strings.HasPrefix(host, "/"):
		cfg.Net, cfg.Addr = "unix", host
	case host == "":
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort("localhost", orString(cs.port, "3306"))
	default:
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(host, orString(cs.port, "3306"))
	}
	cfg.User, cfg.Passwd, cfg.DBName = cs.user, cs.password, cs.dbname
	cfg.Timeout = connectTimeout
	// A backstop only: the lookup's context ends a stuck query first.
	cfg.ReadTimeout = queryTimeout + time.Second
	cfg.WriteTimeout = queryTimeout + time.Second
	// Parameters are interpolated by the driver, which escapes them for the
	// server's NO_BACKSLASH_ESCAPES mode; no prepared statements.
	cfg.InterpolateParams = true
	var tlsCfg *tls.Config
	verify := false
	for _, kv := range cs.other {
		k, v := kv[0], kv[1]
		switch k {
		case "ssl_ca", "ssl_cert", "ssl_key":
			if tlsCfg == nil {
				tlsCfg = &tls.Config{}
			}
		}
		switch k {
		case "ssl_ca":
			pem, err := os.ReadFile(v)
			if err != nil {
				return nil, fmt.Errorf("mysql: ssl_ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("mysql: ssl_ca %s: no certificate", v)
			}
			tlsCfg.RootCAs = pool
		case "ssl_cert", "ssl_key":
			// Loaded together below.
		case "ssl_verify_server_cert":
			verify = v == "yes" || v == "1" || v == "true"
		case "character_set":
			cfg.Params = map[string]string{"charset": v}
		default:
			return nil, fmt.Errorf("mysql: unknown connect key %q (known: host port dbname user password connect_timeout maxconns ssl_ca ssl_cert ssl_key ssl_verify_server_cert character_set)", k)
		}
	}
	if tlsCfg != nil {
		var certFile, keyFile string
		for _, kv := range cs.other {
			switch kv[0] {
			case "ssl_cert":
				certFile = kv[1]
			case "ssl_key":
				keyFile = kv[1]
			}
		}
		if certFile != "" || keyFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("mysql: ssl_cert/ssl_key: %w", err)
			}
			tlsCfg.Certificates = []tls.Certificate{cert}
		}
		// Dovecot (libmysqlclient) verifies the server's name only with
		// ssl_verify_server_cert=yes.
		tlsCfg.InsecureSkipVerify = !verify
		if verify && cfg.Net == "tcp" {
			tlsCfg.ServerName, _, _ = net.SplitHostPort(cfg.Addr)
		}
		cfg.TLS = tlsCfg
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql %s: %w", host, err)
	}
	return sql.OpenDB(conn), nil
}

// orString returns v, or def when v is empty.
func orString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// compileSQLQuery turns a password_query into the query sent to the
// driver and the templates of its parameters. Every '...' string with a
// variable becomes one placeholder ($n for pgsql, ? for mysql). %% outside
// such strings becomes %, as Dovecot's expansion does; a variable outside
// them is an error.
func compileSQLQuery(q, driver string) (string, []Template, error) {
	mysqlLex := driver == "mysql"
	var out strings.Builder
	var params []Template
	// constant copies text that must not hold variables, expanding %%.
	constant := func(text, what string) error {
		if strings.IndexByte(text, '%') < 0 {
			out.WriteString(text)
			return nil
		}
		t, err := ParseTemplate(text)
		if err != nil {
			return err
		}
		if t.HasVars() {
			return fmt.Errorf("variable %s in %q: write it inside a '...' string", what, text)
		}
		out.WriteString(t.Expand(&Vars{}))
		return nil
	}
	isIdent := func(c byte) bool {
		return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
	}
	plain := 0 // start of text not yet copied
	flush := func(end int) error {
		err := constant(q[plain:end], "outside a quoted string")
		plain = end
		return err
	}
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'':
			end, body, err := scanSQLString(q, i, mysqlLex)
			if err != nil {
				return "", nil, err
			}
			prefixed := i > 0 && isIdent(q[i-1]) // E'', U&'', N'', _utf8mb4'', X''
			if err := flush(i); err != nil {
				return "", nil, err
			}
			t, terr := ParseTemplate(body)
			if terr != nil || !t.HasVars() {
				// Not a parameter: copy it, expanding %% as Dovecot would.
				if err := constant(q[i:end], "in a string"); err != nil {
					return "", nil, err
				}
			} else {
				if prefixed {
					return "", nil, fmt.Errorf("variable in a prefixed string %q: use a plain '...' string", q[i-1:end])
				}
				params = append(params, t)
				if mysqlLex {
					out.WriteByte('?')
				} else {
					out.WriteString("$" + strconv.Itoa(len(params)))
				}
			}
			plain = end
			i = end
		case c == '"' || mysqlLex && c == '`':
			end := strings.IndexByte(q[i+1:], c)
			if end < 0 {
				return "", nil, fmt.Errorf("unterminated %c in %q", c, q)
			}
			end += i + 2
			if err := flush(i); err != nil {
				return "", nil, err
			}
			if err := constant(q[i:end], "in a "+string(c)+"-quoted name"); err != nil {
				return "", nil, err
			}
			plain, i = end, end
		case c == '-' && strings.HasPrefix(q[i:], "--"), mysqlLex && c == '#':
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				end = len(q)
			} else {
				end += i
			}
			i = end // comments are copied with the text around them
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				return "", nil, fmt.Errorf("unterminated /* in %q", q)
			}
			i += end + 4
		case !mysqlLex && c == '$' && (i == 0 || !isIdent(q[i-1])):
			// Dollar quoting: $tag$ … $tag$.
			j := i + 1
			for j < len(q) && isIdent(q[j]) && !(j == i+1 && q[j] >= '0' && q[j] <= '9') {
				j++
			}
			if j >= len(q) || q[j] != '$' {
				i++
				continue
			}
			tag := q[i : j+1]
			end := strings.Index(q[j+1:], tag)
			if end < 0 {
				return "", nil, fmt.Errorf("unterminated %s string in %q", tag, q)
			}
			end += j + 1 + len(tag)
			if err := flush(i); err != nil {
				return "", nil, err
			}
			if err := constant(q[i:end], "in a "+tag+" string"); err != nil {
				return "", nil, err
			}
			plain, i = end, end
		default:
			i++
		}
	}
	if err := flush(len(q)); err != nil {
		return "", nil, err
	}
	return out.String(), params, nil
}

// scanSQLString reads the '...' string starting at q[start] and returns the
// index after its closing quote and its value. A doubled quote is a quote; with
// backslashes (MySQL's default mode) \ escapes as in MySQL.
func scanSQLString(q string, start int, backslashes bool) (end int, body string, err error) {
	var b strings.Builder
	for i := start + 1; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			if i+1 < len(q) && q[i+1] == '\'' {
				b.WriteByte('\'')
				i++
				continue
			}
			return i + 1, b.String(), nil
		case c == '\\' && backslashes && i+1 < len(q):
			i++
			switch e := q[i]; e {
			case '0':
				b.WriteByte(0)
			case 'b':
				b.WriteByte('\b')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'Z':
				b.WriteByte(0x1a)
			case '%', '_':
				b.WriteByte('\\') // kept for LIKE
				b.WriteByte(e)
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return 0, "", fmt.Errorf("unterminated string in %q", q)
}
