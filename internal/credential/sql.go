package credential

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// SQL is a Backend over one table in MySQL/MariaDB or PostgreSQL:
//
//	k VARCHAR(200) PRIMARY KEY, v BLOB/BYTEA, ver BIGINT, expires_at BIGINT
//
// Expiry is in milliseconds on the database's clock (0: never), checked
// in every query, so instances with skewed clocks still agree. A counter
// row has a NULL v and its count in ver, so Incr is one upsert. Other
// writes set a random ver, so a deleted and re-added key never matches
// an old Version.
//
// Expired rows (replay marks, daily counters, leases) are deleted by a
// bounded sweep: at most sweepBatch rows, once per sweepEvery,
// piggy-backed on writes.
type SQL struct {
	db *sql.DB
	q  sqlQueries

	mu     sync.Mutex
	tabled bool // the table is known to exist
	create string

	sweepMu   sync.Mutex
	nextSweep time.Time
	sweeping  sync.WaitGroup
}

type sqlQueries struct {
	get, add, cas, deleteIf, del, incr, sweep string
	postgres                                  bool // $n placeholders, each once; incr has RETURNING
}

// OpenSQL opens driver "mysql" (MySQL, MariaDB) or "postgres" at dsn.
// MySQL's DSN gets interpolateParams, so that a query is one round trip
// instead of prepare, execute and close.
func OpenSQL(driver, dsn, table string) (*SQL, error) {
	var db *sql.DB
	switch driver {
	case "mysql":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, errors.New("sql: the mysql DSN does not parse") // the error may quote the DSN
		}
		cfg.InterpolateParams = true
		c, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, sqlErr("open", err)
		}
		db = sql.OpenDB(c)
	case "postgres":
		cfg, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, errors.New("sql: the postgres DSN does not parse") // the error may quote the DSN
		}
		db = stdlib.OpenDB(*cfg)
	default:
		return nil, fmt.Errorf("sql: driver %q: want mysql or postgres", driver)
	}
	// A few connections serve a gateway's store traffic; more would
	// only hit the server's connection limit in a burst.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	s, err := NewSQL(db, table)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

var sqlTableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// NewSQL uses db, whose driver (go-sql-driver/mysql or pgx's stdlib)
// picks the SQL dialect. The table is created on first use, so a
// database that is down at start is an error per call, as with the
// other stores, not a failed config load.
func NewSQL(db *sql.DB, table string) (*SQL, error) {
	if !sqlTableName.MatchString(table) {
		return nil, fmt.Errorf("sql: table name %q: want letters, digits and _", table)
	}
	var s *SQL
	switch db.Driver().(type) {
	case *mysql.MySQLDriver:
		s = &SQL{db: db, q: mysqlQueries, create: mysqlCreate}
	case *stdlib.Driver:
		s = &SQL{db: db, q: postgresQueries, create: pgCreate}
	default:
		return nil, fmt.Errorf("sql: driver %T is not supported (mysql or pgx)", db.Driver())
	}
	s.create = strings.ReplaceAll(s.create, "{t}", table)
	for _, q := range []*string{&s.q.get, &s.q.add, &s.q.cas, &s.q.deleteIf, &s.q.del, &s.q.incr, &s.q.sweep} {
		*q = strings.ReplaceAll(*q, "{t}", table)
	}
	return s, nil
}

// MySQL and MariaDB: ON DUPLICATE KEY UPDATE assigns left to right, each
// seeing the columns already assigned, so expires_at and v come last.
// The key is ASCII with a binary collation: keys are case-sensitive.
const (
	mysqlNow    = `CAST(UNIX_TIMESTAMP(NOW(3))*1000 AS SIGNED)`
	mysqlLive   = `(expires_at = 0 OR expires_at > ` + mysqlNow + `)`
	mysqlExp    = `IF(? = 0, 0, ` + mysqlNow + ` + ?)`
	mysqlCreate = `CREATE TABLE IF NOT EXISTS {t} (
  k VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  v LONGBLOB NULL,
  ver BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
)`
)

var mysqlQueries = sqlQueries{
	get: `SELECT v, ver FROM {t} WHERE k = ? AND ` + mysqlLive,
	add: `INSERT INTO {t} (k, v, ver, expires_at) VALUES (?, ?, ?, ` + mysqlExp + `)
ON DUPLICATE KEY UPDATE
  v = IF(` + mysqlLive + `, v, VALUES(v)),
  ver = IF(` + mysqlLive + `, ver, VALUES(ver)),
  expires_at = IF(` + mysqlLive + `, expires_at, VALUES(expires_at))`,
	cas: `UPDATE {t} SET v = ?, ver = ?, expires_at = ` + mysqlExp + `
WHERE k = ? AND ver = ? AND ` + mysqlLive,
	deleteIf: `DELETE FROM {t} WHERE k = ? AND v = ?`,
	del:      `DELETE FROM {t} WHERE k = ?`,
	sweep:    `DELETE FROM {t} WHERE expires_at <> 0 AND expires_at <= ` + mysqlNow + ` LIMIT ` + sweepBatchSQL,
	// LAST_INSERT_ID(x) hands x back in the OK packet: the count
	// without a second query.
	incr: `INSERT INTO {t} (k, v, ver, expires_at) VALUES (?, NULL, LAST_INSERT_ID(1), ` + mysqlExp + `)
ON DUPLICATE KEY UPDATE
  ver = LAST_INSERT_ID(IF(v IS NULL AND ` + mysqlLive + `, ver + 1, 1)),
  expires_at = IF(v IS NULL AND ` + mysqlLive + `, expires_at, VALUES(expires_at)),
  v = NULL`,
}

// PostgreSQL: SET expressions see the old row.
const (
	pgNow    = `(extract(epoch from clock_timestamp()) * 1000)::bigint`
	pgLive   = `({t}.expires_at = 0 OR {t}.expires_at > ` + pgNow + `)`
	pgCreate = `CREATE TABLE IF NOT EXISTS {t} (
  k VARCHAR(200) NOT NULL PRIMARY KEY,
  v BYTEA NULL,
  ver BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
)`
)

func pgExp(n int) string {
	return fmt.Sprintf(`CASE WHEN $%d::bigint = 0 THEN 0 ELSE %s + $%d::bigint END`, n, pgNow, n)
}

var postgresQueries = sqlQueries{
	get: `SELECT v, ver FROM {t} WHERE k = $1 AND ` + pgLive,
	add: `INSERT INTO {t} (k, v, ver, expires_at) VALUES ($1, $2, $3, ` + pgExp(4) + `)
ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, ver = EXCLUDED.ver, expires_at = EXCLUDED.expires_at
WHERE NOT ` + pgLive,
	cas: `UPDATE {t} SET v = $1, ver = $2, expires_at = ` + pgExp(3) + `
WHERE k = $4 AND ver = $5 AND ` + pgLive,
	deleteIf: `DELETE FROM {t} WHERE k = $1 AND v = $2`,
	del:      `DELETE FROM {t} WHERE k = $1`,
	sweep: `DELETE FROM {t} WHERE k IN (SELECT k FROM {t} WHERE expires_at <> 0 AND expires_at <= ` + pgNow +
		` LIMIT ` + sweepBatchSQL + ` FOR UPDATE SKIP LOCKED)`,
	incr: `INSERT INTO {t} (k, v, ver, expires_at) VALUES ($1, NULL, 1, ` + pgExp(2) + `)
ON CONFLICT (k) DO UPDATE SET
  ver = CASE WHEN {t}.v IS NULL AND ` + pgLive + ` THEN {t}.ver + 1 ELSE 1 END,
  expires_at = CASE WHEN {t}.v IS NULL AND ` + pgLive + ` THEN {t}.expires_at ELSE EXCLUDED.expires_at END,
  v = NULL
RETURNING ver`,
	postgres: true,
}

// ready creates the table once; a failure is retried on the next call.
func (s *SQL) ready(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tabled {
		return nil
	}
	_, err := s.db.ExecContext(ctx, s.create)
	if err != nil {
		// Two instances creating the table at once: PostgreSQL can
		// fail the loser on its catalog's unique index. Once more.
		_, err = s.db.ExecContext(ctx, s.create)
	}
	if err != nil {
		return sqlErr("create table", err)
	}
	s.tabled = true
	return nil
}

func (s *SQL) Get(ctx context.Context, key string) ([]byte, Version, error) {
	if err := s.ready(ctx); err != nil {
		return nil, nil, err
	}
	var v []byte
	var ver int64
	err := s.db.QueryRowContext(ctx, s.q.get, key).Scan(&v, &ver)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, sqlErr("get", err)
	}
	if v == nil { // a counter
		v = strconv.AppendInt(nil, ver, 10)
	}
	return v, ver, nil
}

func (s *SQL) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	defer s.maybeSweep()
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	value = nonNil(value)
	ms := ttl.Milliseconds()
	var res sql.Result
	var err error
	if s.q.postgres {
		res, err = s.exec(ctx, s.q.add, key, value, randomVersion(), ms)
	} else {
		res, err = s.exec(ctx, s.q.add, key, value, randomVersion(), ms, ms)
	}
	return affected(res, err, "add")
}

func (s *SQL) CompareAndSwap(ctx context.Context, key string, ver Version, value []byte, ttl time.Duration) (bool, error) {
	old, ok := ver.(int64)
	if !ok {
		return false, fmt.Errorf("sql: compare-and-swap: version of type %T is not from this store", ver)
	}
	defer s.maybeSweep()
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	value = nonNil(value)
	ms := ttl.Milliseconds()
	var res sql.Result
	var err error
	if s.q.postgres {
		res, err = s.db.ExecContext(ctx, s.q.cas, value, randomVersion(), ms, key, old)
	} else {
		res, err = s.db.ExecContext(ctx, s.q.cas, value, randomVersion(), ms, ms, key, old)
	}
	return affected(res, err, "compare-and-swap")
}

func (s *SQL) DeleteIf(ctx context.Context, key string, value []byte) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.q.deleteIf, key, nonNil(value))
	return sqlErr("delete-if", err)
}

func (s *SQL) Delete(ctx context.Context, key string) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, s.q.del, key)
	return sqlErr("delete", err)
}

func (s *SQL) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	ms := ttl.Milliseconds()
	if s.q.postgres {
		var n int64
		err := s.db.QueryRowContext(ctx, s.q.incr, key, ms).Scan(&n)
		if deadlocked(err) {
			err = s.db.QueryRowContext(ctx, s.q.incr, key, ms).Scan(&n)
		}
		return n, sqlErr("incr", err)
	}
	res, err := s.exec(ctx, s.q.incr, key, ms, ms)
	if err != nil {
		return 0, sqlErr("incr", err)
	}
	n, err := res.LastInsertId()
	return n, sqlErr("incr", err)
}

// Close waits for a sweep in flight, then closes the database.
func (s *SQL) Close() error {
	s.sweeping.Wait()
	return s.db.Close()
}

// sweepBatchSQL is sweepBatch in a query.
const sweepBatchSQL = "256"

// maybeSweep starts a sweep if none ran for sweepEvery.
func (s *SQL) maybeSweep() {
	now := time.Now()
	s.sweepMu.Lock()
	if now.Before(s.nextSweep) {
		s.sweepMu.Unlock()
		return
	}
	s.nextSweep = now.Add(sweepEvery)
	s.sweeping.Add(1)
	s.sweepMu.Unlock()
	go func() {
		defer s.sweeping.Done()
		ctx, cancel := context.WithTimeout(context.Background(), sweepTimeout)
		defer cancel()
		_, _ = s.Sweep(ctx)
	}()
}

// Sweep deletes up to sweepBatch expired rows (on the database's clock)
// and reports how many.
func (s *SQL) Sweep(ctx context.Context) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	res, err := s.db.ExecContext(ctx, s.q.sweep)
	if err != nil {
		return 0, sqlErr("sweep", err)
	}
	n, err := res.RowsAffected()
	return n, sqlErr("sweep", err)
}

// exec runs a write, once more if the database chose it as a deadlock
// victim: concurrent upserts on one key can deadlock in InnoDB, and the
// retry is the documented answer.
func (s *SQL) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	res, err := s.db.ExecContext(ctx, q, args...)
	if deadlocked(err) {
		res, err = s.db.ExecContext(ctx, q, args...)
	}
	return res, err
}

func deadlocked(err error) bool {
	var my *mysql.MySQLError
	if errors.As(err, &my) {
		return my.Number == 1213 // ER_LOCK_DEADLOCK
	}
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "40P01" // deadlock_detected
}

func affected(res sql.Result, err error, op string) (bool, error) {
	if err != nil {
		return false, sqlErr(op, err)
	}
	n, err := res.RowsAffected()
	return n > 0, sqlErr(op, err)
}

// randomVersion is positive, so it never looks like a fresh counter.
func randomVersion() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:]) >> 1)
}

// nonNil keeps an empty value apart from a counter's NULL.
func nonNil(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

// sqlErr names the operation. Driver errors name the server and the
// user at most, never the password.
func sqlErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sql %s: %w", op, err)
}
