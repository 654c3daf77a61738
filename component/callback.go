package component

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/componentcb"
	"github.com/caddy-wechat/wechat/internal/wxcrypto"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(ComponentCallback{})
}

// ComponentCallback is the handler "wechat_component_callback": the
// open platform's 授权事件接收URL. It verifies, decrypts and stores
// WeChat's pushes (component_verify_ticket, authorized, updateauthorized,
// unauthorized) and answers "success"; anything forged, stale, replayed
// (to this instance or, with a store, to any instance sharing it) or
// oversized gets a 4xx and changes nothing.
type ComponentCallback struct {
	ComponentConfig

	// The message-check Token (消息校验Token) and the 43-character
	// EncodingAESKey of the platform; write them as {env.*} or {file.*}.
	Token  string `json:"token,omitempty"`
	AESKey string `json:"aes_key,omitempty"`

	// Largest body accepted. Default 64 KiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// How far a push's timestamp may be from now. Default 5m.
	MaxSkew caddy.Duration `json:"max_skew,omitempty"`

	h       *componentcb.Handler
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (ComponentCallback) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_component_callback",
		New: func() caddy.Module { return new(ComponentCallback) },
	}
}

// Provision checks the crypto settings and attaches to the platform.
func (c *ComponentCallback) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	token := strings.TrimSpace(repl.ReplaceKnown(c.Token, ""))
	key := strings.TrimSpace(repl.ReplaceKnown(c.AESKey, ""))
	appid := strings.TrimSpace(repl.ReplaceKnown(c.AppID, ""))
	if token == "" || key == "" {
		return fmt.Errorf("wechat_component_callback: token and aes_key are required")
	}
	for name, v := range map[string]string{"token": c.Token, "aes_key": c.AESKey} {
		if !strings.Contains(v, "{") {
			ctx.Logger().Warn("wechat_component_callback: a secret is written literally in the config; use {env.*} or {file.*}", zap.String("field", name))
		}
	}
	cr, err := wxcrypto.New(token, key, appid)
	if err != nil {
		return fmt.Errorf("wechat_component_callback: %v", err) // never quotes the key
	}
	p, poolKey, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	c.poolKey = poolKey
	c.h = &componentcb.Handler{Crypter: cr, Component: p.comp, Platform: p.plat, Registry: p.reg,
		MaxBody: c.MaxBody, MaxSkew: time.Duration(c.MaxSkew), Logger: ctx.Logger(), Events: p.obs, Guard: &p.guard,
		Shared: p.shared} // nil without a store: the process's guard alone
	return nil
}

// Cleanup releases the platform.
func (c *ComponentCallback) Cleanup() error {
	if c.poolKey != "" {
		_, err := platforms.Delete(c.poolKey)
		return err
	}
	return nil
}

// ServeHTTP answers the push; it never calls next.
func (c *ComponentCallback) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	c.h.ServeHTTP(w, r)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ComponentCallback)(nil)
	_ caddy.CleanerUpper          = (*ComponentCallback)(nil)
	_ caddyhttp.MiddlewareHandler = (*ComponentCallback)(nil)
)
