package stores

import (
	"time"

	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
)

func init() {
	caddy.RegisterModule(Storage{})
}

// Storage keeps the shared credentials in Caddy's storage: the file
// system by default, or the storage module that the cluster already
// shares certificates through. Durable.
//
//	store storage {
//	    storage file_system {
//	        root /var/lib/caddy-wechat
//	    }
//	    prefix wechat/
//	}
type Storage struct {
	// A caddy.storage module; default: Caddy's configured storage.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`
	// Path prefix of every key. Default "wechat/".
	Prefix string `json:"prefix,omitempty"`

	storage certmagic.Storage
	id      string
}

// CaddyModule returns the Caddy module information.
func (Storage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "wechat.stores.storage", New: func() caddy.Module { return new(Storage) }}
}

// Provision loads the nested storage module, or takes Caddy's.
func (s *Storage) Provision(ctx caddy.Context) error {
	if s.Prefix == "" {
		s.Prefix = "wechat/"
	}
	if s.StorageRaw == nil {
		s.storage = ctx.Storage()
		s.id = "storage:default"
	} else {
		sum := sha256.Sum256(s.StorageRaw) // the config may hold a secret: name it by hash
		val, err := ctx.LoadModule(s, "StorageRaw")
		if err != nil {
			return fmt.Errorf("storage store: loading the storage module: %v", err)
		}
		if s.storage, err = val.(caddy.StorageConverter).CertMagicStorage(); err != nil {
			return fmt.Errorf("storage store: %v", err)
		}
		s.id = "storage:" + hex.EncodeToString(sum[:8])
	}
	if fs, ok := s.storage.(*certmagic.FileStorage); ok {
		s.id = "storage:file_system:" + fs.Path
	}
	s.id += ":" + s.Prefix
	return nil
}

// StoreID names the storage (a file_system root, or a hash of the
// storage's config) and the prefix.
func (s *Storage) StoreID() string { return s.id }

// OpenBackend wraps the storage; closing the backend leaves the storage
// to Caddy.
func (s *Storage) OpenBackend() (credential.Backend, error) {
	return credential.NewStorage(s.storage, s.Prefix), nil
}

// UnmarshalCaddyfile reads the block after `store storage`; the
// dispenser is at the store name.
func (s *Storage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch name := d.Val(); name {
		case "storage":
			if !d.NextArg() {
				return d.ArgErr()
			}
			modName := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "caddy.storage."+modName)
			if err != nil {
				return err
			}
			if _, ok := unm.(caddy.StorageConverter); !ok {
				return d.Errf("module %s is not a caddy.StorageConverter", modName)
			}
			s.StorageRaw = caddyconfig.JSONModuleObject(unm, "module", modName, nil)
		case "prefix":
			if err := oneArg(d, &s.Prefix); err != nil {
				return err
			}
		default:
			return d.Errf("unknown storage store option %q", name)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Storage)(nil)
	_ caddyfile.Unmarshaler = (*Storage)(nil)
	_ Provider              = (*Storage)(nil)
)

// OpTimeout bounds each engine call to the storage. Writes take the
// storage's own lock and fsync (about 10 ms on a local disk), and
// certmagic's file lock is polled, so allow 2 s rather than a cache's
// 100 ms.
func (s *Storage) OpTimeout() time.Duration { return 2 * time.Second }

// Durable: files survive restarts, so a restarted gateway adopts the
// stored token on provision.
func (s *Storage) Durable() bool { return true }
