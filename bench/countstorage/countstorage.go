// Package countstorage is a Caddy storage module for the load benchmark
// only: file_system, plus one line per call appended to a log, so the
// bench can count the storage store's round trips as it counts the other
// servers' own counters. It is built into the bench's Caddy, never into
// cmd/caddy.
package countstorage

import (
	"context"
	"os"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
)

func init() { caddy.RegisterModule(Storage{}) }

// Storage is caddy.storage.wechat_bench_count.
type Storage struct {
	Root string `json:"root"`
	Log  string `json:"log"`
}

// CaddyModule returns the Caddy module information.
func (Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.wechat_bench_count", New: func() caddy.Module { return new(Storage) }}
}

// CertMagicStorage wraps Caddy's file storage at Root.
func (s *Storage) CertMagicStorage() (certmagic.Storage, error) {
	f, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &counting{Storage: &certmagic.FileStorage{Path: s.Root}, log: f}, nil
}

// UnmarshalCaddyfile reads `wechat_bench_count { root DIR; log FILE }`.
func (s *Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	for d.NextBlock(0) {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "root":
			s.Root = d.Val()
		case "log":
			s.Log = d.Val()
		default:
			return d.Errf("unknown option %q", opt)
		}
	}
	return nil
}

// counting logs the name of every call before passing it on.
type counting struct {
	certmagic.Storage
	mu  sync.Mutex
	log *os.File
}

func (c *counting) note(op string) {
	c.mu.Lock()
	_, _ = c.log.WriteString(op + "\n")
	c.mu.Unlock()
}

func (c *counting) Lock(ctx context.Context, name string) error {
	c.note("lock")
	return c.Storage.Lock(ctx, name)
}

func (c *counting) Unlock(ctx context.Context, name string) error {
	c.note("unlock")
	return c.Storage.Unlock(ctx, name)
}

func (c *counting) Store(ctx context.Context, key string, value []byte) error {
	c.note("store")
	return c.Storage.Store(ctx, key, value)
}

func (c *counting) Load(ctx context.Context, key string) ([]byte, error) {
	c.note("load")
	return c.Storage.Load(ctx, key)
}

func (c *counting) Delete(ctx context.Context, key string) error {
	c.note("delete")
	return c.Storage.Delete(ctx, key)
}

func (c *counting) Exists(ctx context.Context, key string) bool {
	c.note("exists")
	return c.Storage.Exists(ctx, key)
}

func (c *counting) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	c.note("list")
	return c.Storage.List(ctx, path, recursive)
}

func (c *counting) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	c.note("stat")
	return c.Storage.Stat(ctx, key)
}

var (
	_ caddy.StorageConverter = (*Storage)(nil)
	_ certmagic.Storage      = (*counting)(nil)
	_ caddyfile.Unmarshaler  = (*Storage)(nil)
)
