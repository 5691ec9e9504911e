// Package sqltest starts private PostgreSQL and MariaDB servers for tests:
// a fresh data directory in a temporary directory, a free 127.0.0.1 port, a
// private unix socket, and a database "mail" owned by a role "dovecot" with
// password "secret" (checked over TCP). Each server is stopped and its
// files removed when the test ends.
//
// Without the server binaries the test is skipped, unless the CI
// environment variable is set, in which case it fails (Debian packages:
// postgresql, mariadb-server).
//
// It is imported only from _test.go files.
package sqltest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// The database, role and password every server is set up with.
const (
	DBName   = "mail"
	User     = "dovecot"
	Password = "secret"
)

// Server is one running test database server.
type Server struct {
	Driver string // Dovecot's driver name: "pgsql" or "mysql"
	Host   string // "127.0.0.1"
	Port   int
	Socket string // unix socket: its directory (pgsql) or file (mysql)

	admin *sql.DB // for Exec, over the unix socket
	stop  func()
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Connect is a Dovecot connect string for the server over TCP, as the
// dovecot role, to the mail database.
func (s *Server) Connect() string {
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s", s.Host, s.Port, DBName, User, Password)
}

// Exec runs each statement in the mail database, over the unix socket,
// as a role whose tables the dovecot role can read (pgsql: dovecot itself,
// the database's owner; mysql: root), and fails the test on the first error.
func (s *Server) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := s.admin.ExecContext(ctx, q)
		cancel()
		if err != nil {
			t.Fatalf("sqltest: %s: %v", q, err)
		}
	}
}

// Stop stops the server now (to test an outage); it is also called when
// the test ends. Calling it again does nothing.
func (s *Server) Stop() { s.stop() }

// require finds a binary (on PATH or in dirs) or skips / fails the test.
func require(t testing.TB, pkg string, names []string, dirs ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, pattern := range dirs {
			matches, _ := filepath.Glob(filepath.Join(pattern, name))
			sort.Strings(matches) // highest version last
			if len(matches) > 0 {
				return matches[len(matches)-1]
			}
		}
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s not installed (apt-get install -y %s)", names[0], pkg)
	}
	t.Fatalf("%s not installed and CI is set", names[0])
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer collects a server's output for error messages.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() < 64<<10 {
		b.b.Write(p)
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.b.String())
}

// runAs sets cmd to run as cred (nil: as we are) in its own process group.
func runAs(cmd *exec.Cmd, cred *syscall.Credential) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

// start runs cmd and returns a stop function that sends sig, waits up to
// 10 s and then kills the process group.
func start(t testing.TB, cmd *exec.Cmd, sig syscall.Signal) (stop func(), exited <-chan struct{}, err error) {
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(sig)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		})
	}
	t.Cleanup(stop)
	return stop, done, nil
}

// waitFor pings db until it answers, the process exits, or 60 s pass.
func waitFor(db *sql.DB, exited <-chan struct{}, log *syncBuffer) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("server exited: %s", log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within 60s (%v): %s", err, log.String())
		}
	}
}

// tempDir makes a directory that cred's user can use (t.TempDir's parent
// is private to us), removed when the test ends.
func tempDir(t testing.TB, prefix string, cred *syscall.Credential) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// StartPostgres starts a private PostgreSQL cluster: initdb (as the
// postgres user when we are root, since postgres refuses to run as root),
// then postgres on a free 127.0.0.1 port with a private socket directory,
// trust on the socket and scram-sha-256 over TCP, durability off.
func StartPostgres(t testing.TB) *Server {
	t.Helper()
	began := time.Now()
	dirs := []string{"/usr/lib/postgresql/*/bin"}
	initdb := require(t, "postgresql", []string{"initdb"}, dirs...)
	postgres := require(t, "postgresql", []string{"postgres"}, dirs...)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("sqltest: running as root needs a postgres user to run the server: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir := tempDir(t, "sqltest-pg-", cred)
	data := filepath.Join(dir, "data")
	var log syncBuffer
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "--auth-local=trust",
		"--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &log, &log
	runAs(cmd, cred)
	if err := cmd.Run(); err != nil {
		t.Fatalf("sqltest: initdb: %v: %s", err, log.String())
	}
	var lastErr error
	for range 3 { // the free port may be taken before postgres binds it
		s, err := startPostgres(t, postgres, dir, cred)
		if err == nil {
			t.Logf("sqltest: postgres on %s, socket %s, ready in %v", s.Addr(), s.Socket, time.Since(began).Round(time.Millisecond))
			return s
		}
		lastErr = err
	}
	t.Fatalf("sqltest: postgres did not start: %v", lastErr)
	return nil
}

func startPostgres(t testing.TB, bin, dir string, cred *syscall.Credential) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var log syncBuffer
	cmd := exec.Command(bin, "-D", filepath.Join(dir, "data"), "-p", strconv.Itoa(port),
		"-k", dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=50", "-c", "logging_collector=off")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &log, &log
	runAs(cmd, cred)
	// SIGQUIT: immediate shutdown, no checkpoint; the data is thrown away.
	stop, exited, err := start(t, cmd, syscall.SIGQUIT)
	if err != nil {
		return nil, err
	}
	open := func(db, user string) (*sql.DB, error) {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", dir, port, user, db))
		if err != nil {
			return nil, err
		}
		return stdlib.OpenDB(*cfg), nil
	}
	boot, err := open("postgres", "postgres")
	if err != nil {
		stop()
		return nil, err
	}
	defer boot.Close()
	if err := waitFor(boot, exited, &log); err != nil {
		stop()
		return nil, err
	}
	for _, q := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", User, Password),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", DBName, User),
	} {
		if _, err := boot.Exec(q); err != nil {
			stop()
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	admin, err := open(DBName, User)
	if err != nil {
		stop()
		return nil, err
	}
	s := &Server{Driver: "pgsql", Host: "127.0.0.1", Port: port, Socket: dir, admin: admin}
	s.stop = func() { _ = admin.Close(); stop() }
	t.Cleanup(s.stop)
	return s, nil
}

// StartMariaDB starts a private MariaDB (or MySQL) server:
// mariadb-install-db into a temporary directory, then mariadbd on a free
// 127.0.0.1 port with a private socket, binary log off and durability off.
func StartMariaDB(t testing.TB) *Server {
	t.Helper()
	began := time.Now()
	dirs := []string{"/usr/sbin", "/usr/bin", "/usr/local/mysql/bin"}
	server := require(t, "mariadb-server", []string{"mariadbd", "mysqld"}, dirs...)
	install := require(t, "mariadb-server", []string{"mariadb-install-db", "mysql_install_db"}, dirs...)
	dir := tempDir(t, "sqltest-mariadb-", nil)
	data := filepath.Join(dir, "data")
	args := []string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	var log syncBuffer
	cmd := exec.Command(install, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("sqltest: %s: %v: %s", filepath.Base(install), err, log.String())
	}
	var lastErr error
	for range 3 {
		s, err := startMariaDB(t, server, dir)
		if err == nil {
			t.Logf("sqltest: mariadbd on %s, socket %s, ready in %v", s.Addr(), s.Socket, time.Since(began).Round(time.Millisecond))
			return s
		}
		lastErr = err
	}
	t.Fatalf("sqltest: mariadbd did not start: %v", lastErr)
	return nil
}

func startMariaDB(t testing.TB, bin, dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	socket := filepath.Join(dir, "mysqld.sock")
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"),
		"--socket=" + socket, "--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1",
		"--pid-file=" + filepath.Join(dir, "mysqld.pid"), "--skip-name-resolve",
		"--skip-log-bin", "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0",
		"--innodb-doublewrite=0", "--log-error=" + filepath.Join(dir, "error.log")}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	var log syncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &log, &log
	runAs(cmd, nil)
	// SIGKILL: the data is thrown away, and a clean InnoDB shutdown is slow.
	stop, exited, err := start(t, cmd, syscall.SIGKILL)
	if err != nil {
		return nil, err
	}
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User = "unix", socket, "root"
	cfg.Timeout = time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		stop()
		return nil, err
	}
	boot := sql.OpenDB(conn)
	defer boot.Close()
	if err := waitFor(boot, exited, &log); err != nil {
		if b, rerr := os.ReadFile(filepath.Join(dir, "error.log")); rerr == nil {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(b)))
		}
		stop()
		return nil, err
	}
	for _, q := range []string{
		"CREATE DATABASE " + DBName,
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", User, Password),
		fmt.Sprintf("GRANT ALL ON %s.* TO '%s'@'%%'", DBName, User),
	} {
		if _, err := boot.Exec(q); err != nil {
			stop()
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	cfg.DBName = DBName
	conn, err = mysql.NewConnector(cfg)
	if err != nil {
		stop()
		return nil, err
	}
	admin := sql.OpenDB(conn)
	s := &Server{Driver: "mysql", Host: "127.0.0.1", Port: port, Socket: socket, admin: admin}
	s.stop = func() { _ = admin.Close(); stop() }
	t.Cleanup(s.stop)
	return s, nil
}
