package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// A gateway per store, each with a private server on loopback, so that
// issue 11's promise (no store round trip per request) is checked with
// each server's own counters rather than the gateway's word for it.

// storeNames are the stores -stores accepts, in the order they run.
var storeNames = []string{"memcache", "redis", "mysql", "postgres", "storage"}

// storeBench is one store's server, its gateway and its counters.
type storeBench struct {
	name  string
	block string                  // the store's lines in the wechat block
	read  func() map[string]int64 // the server's own counters
	// own is what one call of read adds to the counters: the bench's
	// own questions, not the gateway's.
	own map[string]int64
	// calls are the counters that add up to round trips; nil: all.
	calls []string
	t     *target
	// restart kills the server, runs down (the outage), and starts the
	// server again on the same port and data dir (the soak's store
	// restart); nil for a store without a server.
	restart func(down func())
	initial map[string]int64 // before the gateway started
	before  map[string]int64 // before the timed runs
}

func parseStores(list string) []string {
	var out []string
	for s := range strings.SplitSeq(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(storeNames, s) {
			fatalf("-stores: unknown store %q (want some of %s)", s, strings.Join(storeNames, ","))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// startStore starts the server of one store in dir.
func startStore(name, dir string) *storeBench {
	switch name {
	case "memcache":
		addr, restart := startMemcached(dir)
		calls := []string{"cmd_get", "cmd_set", "cmd_touch", "incr_hits", "incr_misses", "decr_hits", "decr_misses", "delete_hits", "delete_misses"}
		show := append([]string{"get_hits", "get_misses", "cas_hits", "cas_misses", "cas_badval"}, calls...)
		return &storeBench{name: name, block: "\t\tstore memcache {\n\t\t\tservers " + addr + "\n\t\t}\n",
			read: func() map[string]int64 {
				all, out := mcStats(addr), map[string]int64{}
				for _, k := range show {
					out[k] = all[k]
				}
				return out
			}, calls: calls, restart: restart}
	case "redis":
		return startRedis(dir)
	case "mysql":
		return startMariaDB(dir)
	case "postgres":
		return startPostgres(dir)
	case "storage":
		root, log := filepath.Join(dir, "storage"), filepath.Join(dir, "storage-ops.log")
		return &storeBench{name: name,
			block: fmt.Sprintf("\t\tstore storage {\n\t\t\tstorage wechat_bench_count {\n\t\t\t\troot %s\n\t\t\t\tlog %s\n\t\t\t}\n\t\t}\n", root, log),
			read:  func() map[string]int64 { return storageOps(log) }}
	}
	fatalf("unknown store %q", name)
	return nil
}

func mustLook(bin, pkg string, dirs ...string) string {
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, bin)); err == nil && !st.IsDir() {
			return filepath.Join(d, bin)
		}
	}
	fatalf("%s not found (apt-get install %s), or leave its store out of -stores", bin, pkg)
	return ""
}

// waitReady polls ready until it succeeds or the server exits.
func waitReady(p *proc, ready func(ctx context.Context) error) {
	var err error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(p.log)
			fatalf("%s exited; its log:\n%s", p.name, tail(log))
		case <-time.After(100 * time.Millisecond):
		}
	}
	log, _ := os.ReadFile(p.log)
	fatalf("%s not ready: %v; its log:\n%s", p.name, err, tail(log))
}

func tail(b []byte) []byte {
	if len(b) > 3000 {
		return b[len(b)-3000:]
	}
	return b
}

// startRedis runs redis-server without persistence; its counters are
// INFO commandstats.
func startRedis(dir string) *storeBench {
	bin := mustLook("redis-server", "redis-server")
	port := freePort()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	launch := func() *proc {
		p := start(dir, "redis", bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no",
			"--unixsocket", "", "--daemonize", "no", "--loglevel", "warning")
		waitPort(p, addr)
		return p
	}
	return &storeBench{name: "redis", block: "\t\tstore redis {\n\t\t\taddress " + addr + "\n\t\t}\n",
		read: func() map[string]int64 { return redisStats(addr) }, own: map[string]int64{"info": 1},
		restart: restarter(launch(), syscall.SIGKILL, launch)}
}

// redisStats reads INFO commandstats: calls per command.
func redisStats(addr string) map[string]int64 {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		fatalf("redis stats: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "INFO commandstats\r\n"); err != nil {
		fatalf("redis stats: %v", err)
	}
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") {
		fatalf("redis stats: answer %q: %v", head, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(head[1:]))
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		fatalf("redis stats: %v", err)
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(string(body), "\r\n") {
		// cmdstat_get:calls=2,usec=...
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(k, "cmdstat_") {
			continue
		}
		for f := range strings.SplitSeq(v, ",") {
			if c, ok := strings.CutPrefix(f, "calls="); ok {
				out[strings.TrimPrefix(k, "cmdstat_")], _ = strconv.ParseInt(c, 10, 64)
			}
		}
	}
	return out
}

// startMariaDB initialises a data directory and runs mariadbd with grant
// tables off; its counters are SHOW GLOBAL STATUS (Questions, Com_*).
func startMariaDB(dir string) *storeBench {
	bin := mustLook("mariadbd", "mariadb-server", "/usr/sbin")
	install := mustLook("mariadb-install-db", "mariadb-server", "/usr/bin", "/usr/sbin")
	data := filepath.Join(dir, "mariadb")
	root := os.Geteuid() == 0
	args := []string{"--no-defaults", "--datadir=" + data, "--skip-test-db", "--auth-root-authentication-method=normal",
		"--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M"}
	if root {
		args = append(args, "--user=root")
	}
	if out, err := exec.Command(install, args...).CombinedOutput(); err != nil {
		fatalf("mariadb-install-db: %v\n%s", err, tail(out))
	}
	port := freePort()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	sargs := []string{"--no-defaults", "--datadir=" + data, "--port=" + strconv.Itoa(port),
		"--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "mysql.sock"),
		"--pid-file=" + filepath.Join(dir, "mysql.pid"), "--tmpdir=" + dir,
		"--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin",
		"--innodb-log-file-size=4M", "--innodb-buffer-pool-size=16M"}
	if root {
		sargs = append(sargs, "--user=root")
	}
	db, err := sql.Open("mysql", "root@tcp("+addr+")/")
	if err != nil {
		fatalf("mariadb: %v", err)
	}
	db.SetMaxOpenConns(1)
	launch := func() *proc {
		p := start(dir, "mariadb", bin, sargs...)
		p.stop = syscall.SIGTERM // mariadbd ignores SIGINT
		waitReady(p, func(ctx context.Context) error {
			_, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS wechat")
			return err
		})
		return p
	}
	p := launch()
	read := func() map[string]int64 {
		out := map[string]int64{}
		rows, err := db.Query("SHOW GLOBAL STATUS WHERE Variable_name = 'Questions' OR Variable_name LIKE 'Com\\_%'")
		if err != nil {
			fatalf("mariadb status: %v", err)
		}
		defer rows.Close()
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				fatalf("mariadb status: %v", err)
			}
			out[k], _ = strconv.ParseInt(v, 10, 64)
		}
		return out
	}
	os.Setenv("BENCH_MYSQL_DSN", "root@tcp("+addr+")/wechat")
	return &storeBench{name: "mysql",
		block: "\t\tstore sql {\n\t\t\tdriver mysql\n\t\t\tdsn {env.BENCH_MYSQL_DSN}\n\t\t}\n",
		read:  read, own: map[string]int64{"Questions": 1, "Com_show_status": 1}, calls: []string{"Questions"},
		restart: restarter(p, syscall.SIGKILL, launch)}
}

// startPostgres initialises a cluster and runs postgres (as the postgres
// OS user when we are root) with pg_stat_statements; its counters are
// pg_stat_database's xact_commit and pg_stat_statements' calls for the
// gateway's database, read from another database so the bench's own
// queries do not count.
func startPostgres(dir string) *storeBench {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	bin := mustLook("postgres", "postgresql", dirs...)
	initdb := mustLook("initdb", "postgresql", filepath.Dir(bin))
	pgdir := filepath.Join(dir, "pg")
	if err := os.Mkdir(pgdir, 0o700); err != nil {
		fatalf("%v", err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			fatalf("postgres refuses root and there is no postgres OS user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		_ = os.Chmod(dir, 0o711) // let that user reach pgdir
		if err := os.Chown(pgdir, uid, gid); err != nil {
			fatalf("%v", err)
		}
	}
	data := filepath.Join(pgdir, "data")
	ic := exec.Command(initdb, "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
	ic.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := ic.CombinedOutput(); err != nil {
		fatalf("initdb: %v\n%s", err, tail(out))
	}
	port := freePort()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	db, err := sql.Open("pgx", "postgres://postgres@"+addr+"/postgres?sslmode=disable")
	if err != nil {
		fatalf("postgres: %v", err)
	}
	db.SetMaxOpenConns(1)
	launch := func() *proc {
		p := startAs(dir, "postgres", cred, bin, "-D", data, "-p", strconv.Itoa(port),
			"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
			"-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.track=all",
			"-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "logging_collector=off")
		waitReady(p, func(ctx context.Context) error { return db.PingContext(ctx) })
		return p
	}
	p := launch()
	if _, err := db.Exec("CREATE DATABASE wechat"); err != nil {
		fatalf("postgres: %v", err)
	}
	if _, err := db.Exec("CREATE EXTENSION pg_stat_statements"); err != nil {
		fatalf("postgres: %v", err)
	}
	read := func() map[string]int64 {
		// Backends flush pg_stat_database at most once a second.
		time.Sleep(1500 * time.Millisecond)
		var commit, rollback, calls int64
		err := db.QueryRow(`SELECT xact_commit, xact_rollback,
			(SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s WHERE s.dbid = d.datid)
			FROM pg_stat_database d WHERE datname = 'wechat'`).Scan(&commit, &rollback, &calls)
		if err != nil {
			fatalf("postgres stats: %v", err)
		}
		return map[string]int64{"xact_commit": commit, "xact_rollback": rollback, "statements": calls}
	}
	os.Setenv("BENCH_PG_DSN", "postgres://postgres@"+addr+"/wechat?sslmode=disable")
	return &storeBench{name: "postgres",
		block: "\t\tstore sql {\n\t\t\tdriver postgres\n\t\t\tdsn {env.BENCH_PG_DSN}\n\t\t}\n",
		read:  read, calls: []string{"statements"},
		// SIGQUIT is postgres' immediate shutdown: no checkpoint, crash
		// recovery at the next start (SIGKILL would leave its backends).
		restart: restarter(p, syscall.SIGQUIT, launch)}
}

// storageOps counts the calls the counting storage logged, by name.
func storageOps(log string) map[string]int64 {
	out := map[string]int64{}
	b, _ := os.ReadFile(log)
	for op := range strings.FieldsSeq(string(b)) {
		out[op]++
	}
	return out
}

// storeReport prints what each server counted during the timed runs, per
// 1,000 requests through its gateway and per minute: only the refresher's
// once-a-minute peek should show.
func storeReport(stores []*storeBench, elapsed time.Duration) {
	fmt.Printf("== store servers' own counters during the timed runs (%s) ==\n", elapsed.Round(time.Second))
	for _, s := range stores {
		fmt.Printf("%s: before the timed runs (provision, first fetch, warm-up):", s.name)
		var ks []string
		for k := range s.before {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			if d := s.before[k] - s.initial[k] - s.own[k]; d != 0 {
				fmt.Printf(" %s %d", k, d)
			}
		}
		fmt.Println()
		after := s.read()
		var keys []string
		var total int64
		for k, v := range after {
			d := v - s.before[k] - s.own[k]
			if d == 0 {
				continue
			}
			keys = append(keys, k)
			if s.calls == nil || slices.Contains(s.calls, k) {
				total += d
			}
		}
		sort.Strings(keys)
		fmt.Printf("%s: %d requests through gateway+%s\n", s.name, s.t.total, s.name)
		for _, k := range keys {
			d := after[k] - s.before[k] - s.own[k]
			fmt.Printf("  %-20s %6d  (%.4f per 1,000 requests, %.2f per minute)\n", k, d,
				1000*float64(d)/float64(max(s.t.total, 1)), float64(d)/elapsed.Minutes())
		}
		fmt.Printf("  round trips: %d, %.4f per 1,000 requests, %.2f per minute %s\n", total, 1000*float64(total)/float64(max(s.t.total, 1)),
			float64(total)/elapsed.Minutes(), verdict(total*1000 < s.t.total, "< 1 per 1,000 requests"))
	}
	fmt.Println()
}

// restarter returns a store's restart: it ends p with sig (a crash, not a
// clean stop), runs down, and runs launch again, which reuses the port and
// the data dir.
func restarter(p *proc, sig os.Signal, launch func() *proc) func(down func()) {
	return func(down func()) {
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		down()
		p = launch()
	}
}
