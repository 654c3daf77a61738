package testserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Small InnoDB files: a data directory copies in well under a second.
// The template and every server must use the same file sizes.
var mariadbInnoDB = []string{
	"--innodb-log-file-size=4M",
	"--innodb-data-file-path=ibdata1:4M:autoextend",
	"--innodb-buffer-pool-size=16M",
	"--innodb-undo-tablespaces=0",
}

// MariaDB starts mariadbd with grant tables off (any user, no password)
// and a database "wechat"; DSN is for go-sql-driver/mysql. Durable.
func MariaDB(t testing.TB) *Server {
	t.Helper()
	bin := lookPath(t, "mariadbd", "mariadb-server", "/usr/sbin")
	install := lookPath(t, "mariadb-install-db", "mariadb-server", "/usr/bin", "/usr/sbin")
	s := &Server{Name: "mariadbd", Dir: t.TempDir()}
	tmpl := cachedTemplate(t, "mariadb", bin, nil, func(data string) error {
		args := append([]string{"--no-defaults", "--datadir=" + data, "--skip-test-db",
			"--auth-root-authentication-method=normal"}, mariadbInnoDB...)
		if os.Geteuid() == 0 {
			args = append(args, "--user=root")
		}
		return run(install, args...)
	})
	data := filepath.Join(s.Dir, "data")
	if err := run("cp", "-a", tmpl, data); err != nil {
		t.Fatalf("testserver: copying the MariaDB template: %v", err)
	}
	sockDir := shortTempDir(t)
	var port int
	s.launchArgs = func() (string, []string) {
		args := append([]string{"--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(port),
			"--bind-address=127.0.0.1", "--socket=" + filepath.Join(sockDir, "sock"),
			"--pid-file=" + filepath.Join(s.Dir, "pid"), "--tmpdir=" + s.Dir,
			"--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin",
			"--innodb-flush-log-at-trx-commit=2", "--innodb-temp-data-file-path=ibtmp1:4M:autoextend"},
			mariadbInnoDB...)
		if os.Geteuid() == 0 {
			args = append(args, "--user=root") // mariadbd refuses root otherwise
		}
		return bin, args
	}
	s.ready = func(ctx context.Context) error {
		return pingSQL(ctx, "mysql", "root@tcp("+s.Addr+")/", "CREATE DATABASE IF NOT EXISTS wechat")
	}
	s.start(t, func(p int) {
		port = p
		s.DSN = "root@tcp(" + net127(p) + ")/wechat"
	})
	return s
}

// Postgres starts PostgreSQL with trust authentication; DSN is for
// pgx. initdb and postgres refuse root, so as root they run as the
// postgres OS user (runuser) in a directory that user owns. Durable.
func Postgres(t testing.TB) *Server {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	bin := lookPath(t, "postgres", "postgresql", dirs...)
	initdb := lookPath(t, "initdb", "postgresql", filepath.Dir(bin))
	s := &Server{Name: "postgres"}
	var owner *user.User
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			if ci() {
				t.Fatalf("testserver: no postgres OS user to run PostgreSQL as: %v", err)
			}
			t.Skipf("SKIPPED: testserver: no postgres OS user to run PostgreSQL as: %v", err)
		}
		owner, s.asUser = u, "postgres"
	}
	s.Dir = shortTempDir(t)
	if owner != nil {
		chown(t, s.Dir, owner)
	}
	tmpl := cachedTemplate(t, "postgres", bin, owner, func(data string) error {
		args := []string{"-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "--no-instructions"}
		if owner != nil {
			args = append([]string{"-u", "postgres", "--", initdb}, args...)
			return run("runuser", args...)
		}
		return run(initdb, args...)
	})
	data := filepath.Join(s.Dir, "data")
	if err := run("cp", "-a", tmpl, data); err != nil {
		t.Fatalf("testserver: copying the PostgreSQL template: %v", err)
	}
	var port int
	s.launchArgs = func() (string, []string) {
		return bin, []string{"-D", data, "-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
			"-c", "fsync=off", "-c", "full_page_writes=off", // a killed process loses nothing; the OS keeps its writes
			"-c", "shared_buffers=16MB", "-c", "max_connections=50", "-c", "logging_collector=off"}
	}
	s.ready = func(ctx context.Context) error {
		return pingSQL(ctx, "pgx", "postgres://postgres@"+s.Addr+"/postgres?sslmode=disable")
	}
	s.start(t, func(p int) {
		port = p
		s.DSN = "postgres://postgres@" + net127(p) + "/postgres?sslmode=disable"
	})
	return s
}

func net127(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// shortTempDir is a temporary directory with a short path (Unix socket
// paths are limited to 107 bytes; t.TempDir's names the test), removed
// at cleanup.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tsrv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func chown(t testing.TB, dir string, u *user.User) {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// cachedTemplate returns a data directory made once per machine by init
// and copied by each test: mariadb-install-db and initdb take seconds,
// a copy a fraction of one. The cache is keyed by the server binary, so
// an upgrade makes a new one; a crash mid-init leaves no half template,
// since it is made aside and renamed into place.
func cachedTemplate(t testing.TB, name, bin string, owner *user.User, init func(data string) error) string {
	t.Helper()
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte(fmt.Sprint(bin, st.Size(), st.ModTime().UnixNano(), strings.Join(mariadbInnoDB, " "))))
	root := filepath.Join(os.TempDir(), "caddy-wechat-testserver")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(root, name+"-"+hex.EncodeToString(h[:6]))
	if _, err := os.Stat(filepath.Join(final, "ready")); err == nil {
		return filepath.Join(final, "data")
	}
	// One test process makes it while the others (go test runs packages
	// in parallel) wait, instead of all of them initialising at once.
	lock, err := os.OpenFile(final+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(filepath.Join(final, "ready")); err == nil {
		return filepath.Join(final, "data")
	}
	tmp, err := os.MkdirTemp(root, name+"-init-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp) // after a successful rename, nothing is left
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if owner != nil {
		chown(t, tmp, owner)
	}
	if err := init(filepath.Join(tmp, "data")); err != nil {
		t.Fatalf("testserver: initialising the %s template: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another test process made it first: use theirs.
		if _, serr := os.Stat(filepath.Join(final, "ready")); serr != nil {
			t.Fatalf("testserver: %s template: %v", name, err)
		}
	}
	return filepath.Join(final, "data")
}

// run runs a command and returns its output with its error.
func run(bin string, args ...string) error {
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		o := string(out)
		if len(o) > 2000 {
			o = "..." + o[len(o)-2000:]
		}
		return fmt.Errorf("%s: %v: %s", filepath.Base(bin), err, o)
	}
	return nil
}
