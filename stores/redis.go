package stores

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/redis/go-redis/v9"
)

func init() {
	caddy.RegisterModule(Redis{})
}

// Redis keeps the shared credentials in Redis: what most WeChat
// backends already run. Not durable unless the server persists.
//
//	store redis {
//	    address  127.0.0.1:6379
//	    username default
//	    password {env.REDIS_PASSWORD}
//	    db       0
//	    prefix   wechat:
//	    timeout  100ms
//	    tls
//	}
type Redis struct {
	// host:port. Default 127.0.0.1:6379.
	Address string `json:"address,omitempty"`
	// ACL user (Redis 6+); empty: the default user.
	Username string `json:"username,omitempty"`
	// Write it as {env.X} or {file.X}: resolved at provision, so
	// /config/ shows only the placeholder.
	Password string `json:"password,omitempty"`
	DB       int    `json:"db,omitempty"`
	// Prefix of every key. Default "wechat:".
	Prefix string `json:"prefix,omitempty"`
	// Connect with TLS (managed Redis services), verifying the
	// server's certificate against the system roots.
	TLS bool `json:"tls,omitempty"`
	// Dial, read and write timeout of the client. Default 1s; the
	// engine's own deadline per call may be shorter.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	address, username, password, prefix string
}

// CaddyModule returns the Caddy module information.
func (Redis) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "wechat.stores.redis", New: func() caddy.Module { return new(Redis) }}
}

// Provision resolves placeholders into unexported fields.
func (s *Redis) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	s.address = strings.TrimSpace(repl.ReplaceKnown(s.Address, ""))
	if s.address == "" {
		s.address = "127.0.0.1:6379"
	}
	s.username = repl.ReplaceKnown(s.Username, "")
	s.password = repl.ReplaceKnown(s.Password, "")
	s.prefix = repl.ReplaceKnown(s.Prefix, "")
	if s.Prefix == "" {
		s.prefix = "wechat:"
	}
	return nil
}

// Validate checks the resolved address (never echoing the password).
func (s *Redis) Validate() error {
	if _, _, err := net.SplitHostPort(s.address); err != nil {
		return fmt.Errorf("redis store: address %q: want host:port", s.address)
	}
	if s.DB < 0 {
		return fmt.Errorf("redis store: db %d: want 0 or more", s.DB)
	}
	return nil
}

// StoreID names the server, database and prefix: never the password.
func (s *Redis) StoreID() string {
	scheme := "redis:"
	if s.TLS {
		scheme = "rediss:"
	}
	return scheme + s.username + "@" + s.address + "/" + strconv.Itoa(s.DB) + "/" + s.prefix
}

// OpenBackend opens a client; it connects on first use.
func (s *Redis) OpenBackend() (credential.Backend, error) {
	timeout := time.Duration(s.Timeout)
	if timeout <= 0 {
		timeout = time.Second
	}
	opts := &redis.Options{
		Addr: s.address, Username: s.username, Password: s.password, DB: s.DB,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
	}
	if s.TLS {
		host, _, _ := net.SplitHostPort(s.address)
		opts.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return credential.NewRedis(opts, s.prefix), nil
}

// UnmarshalCaddyfile reads the block after `store redis`; the dispenser
// is at the store name. An address may also follow the name.
func (s *Redis) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store name
	if d.NextArg() {
		s.Address = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for d.NextBlock(0) {
		name := d.Val()
		var err error
		switch name {
		case "address":
			err = oneArg(d, &s.Address)
		case "username":
			err = oneArg(d, &s.Username)
		case "password":
			err = oneArg(d, &s.Password)
		case "prefix":
			err = oneArg(d, &s.Prefix)
		case "db":
			var v string
			if err = oneArg(d, &v); err == nil {
				if s.DB, err = strconv.Atoi(v); err != nil || s.DB < 0 {
					err = d.Errf("db %q: want a number, 0 or more", v)
				}
			}
		case "timeout":
			err = ParseDuration(d, d.RemainingArgs(), &s.Timeout)
		case "tls":
			if d.NextArg() {
				return d.ArgErr()
			}
			s.TLS = true
		default:
			err = d.Errf("unknown redis store option %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// oneArg reads exactly one argument of the current option.
func oneArg(d *caddyfile.Dispenser, into *string) error {
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.ArgErr()
	}
	*into = args[0]
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Redis)(nil)
	_ caddy.Validator       = (*Redis)(nil)
	_ caddyfile.Unmarshaler = (*Redis)(nil)
	_ Provider              = (*Redis)(nil)
)

// OpTimeout bounds each engine call to Redis: the configured timeout, or
// 100 ms, so that a black-holed server costs one short wait before the
// breaker keeps requests local.
func (s *Redis) OpTimeout() time.Duration {
	if s.Timeout > 0 {
		return time.Duration(s.Timeout)
	}
	return 100 * time.Millisecond
}

// Durable: Redis keeps its data across its own restarts when persistence
// is on (its default), so a restarted gateway adopts the stored token on
// provision instead of waiting for the first request; with nothing stored
// that costs one read.
func (s *Redis) Durable() bool { return true }
