package stores

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

func init() {
	caddy.RegisterModule(SQL{})
}

// SQL keeps the shared credentials in one table of MySQL/MariaDB or
// PostgreSQL, created if missing: durable, so tokens survive a restart
// of the whole cluster.
//
//	store sql {
//	    driver mysql            # or postgres
//	    dsn    {env.WECHAT_DSN} # user:pass@tcp(db:3306)/app  or  postgres://user:pass@db/app
//	    table  wechat_store
//	    timeout 1s
//	}
type SQL struct {
	// "mysql" (MySQL, MariaDB) or "postgres".
	Driver string `json:"driver,omitempty"`
	// The data source name, in the driver's own syntax. It holds the
	// password: write it as {env.X} or {file.X}, resolved at
	// provision, so /config/ shows only the placeholder.
	DSN string `json:"dsn,omitempty"`
	// Default "wechat_store".
	Table string `json:"table,omitempty"`
	// Connect (and for mysql read and write) timeout. Default: the
	// driver's; the engine's deadline per call applies anyway.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	dsn, table, id string
}

// CaddyModule returns the Caddy module information.
func (SQL) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "wechat.stores.sql", New: func() caddy.Module { return new(SQL) }}
}

// Provision resolves the DSN and derives the store's ID from it. Errors
// never quote the DSN, which holds the password.
func (s *SQL) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	s.dsn = strings.TrimSpace(repl.ReplaceKnown(s.DSN, ""))
	s.table = s.Table
	if s.table == "" {
		s.table = "wechat_store"
	}
	if s.dsn == "" {
		return fmt.Errorf("sql store: dsn is required")
	}
	timeout := time.Duration(s.Timeout)
	switch s.Driver {
	case "mysql":
		cfg, err := mysql.ParseDSN(s.dsn)
		if err != nil {
			return fmt.Errorf("sql store: the mysql dsn does not parse (want user:password@tcp(host:3306)/database)")
		}
		if timeout > 0 {
			cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = timeout, timeout, timeout
			s.dsn = cfg.FormatDSN()
		}
		s.id = "sql:mysql:" + cfg.User + "@" + cfg.Net + "(" + cfg.Addr + ")/" + cfg.DBName + "/" + s.table
	case "postgres":
		cfg, err := pgx.ParseConfig(s.dsn)
		if err != nil {
			return fmt.Errorf("sql store: the postgres dsn does not parse (want postgres://user:password@host:5432/database)")
		}
		if timeout > 0 && !strings.Contains(s.dsn, "connect_timeout") {
			s.dsn = withConnectTimeout(s.dsn, timeout)
		}
		s.id = fmt.Sprintf("sql:postgres:%s@%s:%d/%s/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database, s.table)
	default:
		return fmt.Errorf("sql store: driver %q: want mysql or postgres", s.Driver)
	}
	return nil
}

// withConnectTimeout adds connect_timeout (whole seconds, at least 1) to
// a URL or keyword/value DSN.
func withConnectTimeout(dsn string, d time.Duration) string {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return fmt.Sprintf("%s%sconnect_timeout=%d", dsn, sep, secs)
	}
	return fmt.Sprintf("%s connect_timeout=%d", dsn, secs)
}

// StoreID names the driver, server, user, database and table: never the
// password.
func (s *SQL) StoreID() string { return s.id }

// OpenBackend opens a connection pool; the table is created on first use.
func (s *SQL) OpenBackend() (credential.Backend, error) {
	return credential.OpenSQL(s.Driver, s.dsn, s.table)
}

// UnmarshalCaddyfile reads the block after `store sql`; the dispenser is
// at the store name.
func (s *SQL) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		name := d.Val()
		var err error
		switch name {
		case "driver":
			if err = oneArg(d, &s.Driver); err == nil && s.Driver != "mysql" && s.Driver != "postgres" {
				err = d.Errf("sql store: driver %q: want mysql or postgres", s.Driver)
			}
		case "dsn":
			err = oneArg(d, &s.DSN)
		case "table":
			err = oneArg(d, &s.Table)
		case "timeout":
			err = ParseDuration(d, d.RemainingArgs(), &s.Timeout)
		default:
			err = d.Errf("unknown sql store option %q", name)
		}
		if err != nil {
			return err
		}
	}
	if s.Driver == "" {
		return d.Err("sql store: driver (mysql or postgres) is required")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*SQL)(nil)
	_ caddyfile.Unmarshaler = (*SQL)(nil)
	_ Provider              = (*SQL)(nil)
)

// OpTimeout bounds each engine call to the database: the configured
// timeout, or 500 ms, which leaves room for a commit's fsync.
func (s *SQL) OpTimeout() time.Duration {
	if s.Timeout > 0 {
		return time.Duration(s.Timeout)
	}
	return 500 * time.Millisecond
}

// Durable: rows survive restarts of the database and of the gateway, so a
// restarted gateway adopts the stored token on provision.
func (s *SQL) Durable() bool { return true }
