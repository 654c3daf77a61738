package fakewechat

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("wechat_fake", parseCaddyfile)
	// Ordered before respond so a demo Caddyfile needs no `order` option.
	httpcaddyfile.RegisterDirectiveOrder("wechat_fake", httpcaddyfile.Before, "respond")
}

// servers shares one fake per credential set across config reloads, so a
// reload does not forget the tokens the gateway holds.
var servers = caddy.NewUsagePool()

// Handler serves the fake WeChat API from Caddy, so a demo Caddyfile can
// run the gateway with no WeChat account. It is terminal: it never calls
// the next handler.
type Handler struct {
	AppID  string `json:"appid,omitempty"`
	Secret string `json:"secret,omitempty"`
	CorpID string `json:"corpid,omitempty"`
	// CorpSecrets maps a WeCom agent name to its corpsecret.
	CorpSecrets map[string]string `json:"corpsecrets,omitempty"`
	// TokenTTL overrides the 7200 s token lifetime (short TTLs make the
	// demo show renewals).
	TokenTTL caddy.Duration `json:"token_ttl,omitempty"`
	// Component makes the fake an open platform too (component_verify_ticket
	// pushes are driven by tests, through Server()).
	Component *HandlerComponent `json:"component,omitempty"`

	srv *Server
	key string
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_fake",
		New: func() caddy.Module { return new(Handler) },
	}
}

// HandlerComponent is the open platform part of the handler's config.
type HandlerComponent struct {
	AppID          string `json:"appid,omitempty"`
	Secret         string `json:"secret,omitempty"`
	Token          string `json:"token,omitempty"`
	EncodingAESKey string `json:"encoding_aes_key,omitempty"`
	RotateEvery    int    `json:"rotate_every,omitempty"`
}

// pooled wraps a Server for the usage pool, which needs a Destructor.
type pooled struct{ srv *Server }

func (pooled) Destruct() error { return nil }

// Provision resolves placeholders (e.g. {env.WECHAT_SECRET}) and loads or
// creates the shared fake for these credentials.
func (h *Handler) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	opts := Options{
		AppID:       repl.ReplaceKnown(h.AppID, ""),
		Secret:      repl.ReplaceKnown(h.Secret, ""),
		CorpID:      repl.ReplaceKnown(h.CorpID, ""),
		CorpSecrets: make(map[string]string, len(h.CorpSecrets)),
		TokenTTL:    time.Duration(h.TokenTTL),
	}
	for agent, sec := range h.CorpSecrets {
		opts.CorpSecrets[agent] = repl.ReplaceKnown(sec, "")
	}
	if c := h.Component; c != nil {
		opts.Component = ComponentOptions{
			AppID:          repl.ReplaceKnown(c.AppID, ""),
			Secret:         repl.ReplaceKnown(c.Secret, ""),
			Token:          repl.ReplaceKnown(c.Token, ""),
			EncodingAESKey: repl.ReplaceKnown(c.EncodingAESKey, ""),
			RotateEvery:    c.RotateEvery,
		}
		if opts.Component.AppID == "" || opts.Component.Secret == "" || len(opts.Component.EncodingAESKey) != 43 {
			return fmt.Errorf("component needs an appid, a non-empty secret and a 43-character encoding_aes_key")
		}
	}
	if err := h.checkSecrets(opts); err != nil {
		return err
	}
	h.key = poolKey(opts)
	v, loaded, err := servers.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		return pooled{New(opts)}, nil
	})
	if err != nil {
		return err
	}
	h.srv = v.(pooled).srv
	// Log the appid only: the secret must never reach a log.
	ctx.Logger().Info("fake WeChat API ready",
		zap.String("appid", opts.AppID),
		zap.String("corpid", opts.CorpID),
		zap.Bool("reused", loaded))
	return nil
}

// checkSecrets refuses an empty secret: a fake that accepts one would let
// a demo run with an unset {env.X} and fail later in a confusing way.
func (h *Handler) checkSecrets(o Options) error {
	if o.AppID != "" && o.Secret == "" {
		if h.Secret == "" {
			return fmt.Errorf("appid %s has no secret; add `secret {env.DEMO_SECRET}` and set the variable", o.AppID)
		}
		return fmt.Errorf("the secret of appid %s is empty: %s resolved to nothing (is the environment variable set? e.g. DEMO_SECRET=demo-secret)", o.AppID, h.Secret)
	}
	for agent, sec := range o.CorpSecrets {
		if sec == "" {
			return fmt.Errorf("corpsecret %s is empty: %s resolved to nothing", agent, h.CorpSecrets[agent])
		}
	}
	return nil
}

// poolKey hashes the credentials so secrets are not kept as map keys in
// the clear (they could show up in a debugger or a panic dump).
func poolKey(o Options) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q\x00%q\x00%q\x00%d\x00", o.AppID, o.Secret, o.CorpID, o.TokenTTL)
	fmt.Fprintf(h, "%+v\x00", o.Component)
	agents := make([]string, 0, len(o.CorpSecrets))
	for a := range o.CorpSecrets {
		agents = append(agents, a)
	}
	sort.Strings(agents)
	for _, a := range agents {
		fmt.Fprintf(h, "%q=%q\x00", a, o.CorpSecrets[a])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Validate requires at least one credential set.
func (h *Handler) Validate() error {
	if h.srv == nil {
		return fmt.Errorf("not provisioned")
	}
	if h.srv.opts.AppID == "" && h.srv.opts.CorpID == "" && h.srv.open == nil {
		return fmt.Errorf("appid, corpid or component is required")
	}
	return nil
}

// Cleanup drops this config's reference; the fake lives on while a newer
// config still uses it.
func (h *Handler) Cleanup() error {
	if h.key == "" {
		return nil
	}
	_, err := servers.Delete(h.key)
	return err
}

// Server returns the provisioned fake, for tests that drive Caddy.
func (h *Handler) Server() *Server { return h.srv }

// ServeHTTP serves the request from the fake and ends the chain.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.srv.ServeHTTP(w, r)
	return nil
}

// UnmarshalCaddyfile parses:
//
//	wechat_fake {
//	    appid      <appid>
//	    secret     <secret>
//	    corpid     <corpid>
//	    corpsecret <agent> <corpsecret>
//	    token_ttl  <duration>
//	    component  <appid> <secret> <token> <encoding_aes_key> [rotate_every]
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		key := d.Val()
		var arg string
		switch key {
		case "appid", "secret", "corpid", "token_ttl":
			if !d.Args(&arg) || d.NextArg() {
				return d.ArgErr()
			}
		}
		switch key {
		case "appid":
			h.AppID = arg
		case "secret":
			h.Secret = arg
		case "corpid":
			h.CorpID = arg
		case "token_ttl":
			dur, err := caddy.ParseDuration(arg)
			if err != nil || dur <= 0 {
				return d.Errf("bad token_ttl %q", arg)
			}
			h.TokenTTL = caddy.Duration(dur)
		case "component":
			args := d.RemainingArgs()
			if len(args) != 4 && len(args) != 5 {
				return d.ArgErr()
			}
			c := &HandlerComponent{AppID: args[0], Secret: args[1], Token: args[2], EncodingAESKey: args[3]}
			if len(args) == 5 {
				n, err := strconv.Atoi(args[4])
				if err != nil || n < 0 {
					return d.Errf("bad rotate_every %q", args[4])
				}
				c.RotateEvery = n
			}
			h.Component = c
		case "corpsecret":
			var agent, sec string
			if !d.Args(&agent, &sec) || d.NextArg() {
				return d.ArgErr()
			}
			if h.CorpSecrets == nil {
				h.CorpSecrets = make(map[string]string)
			}
			h.CorpSecrets[agent] = sec
		default:
			return d.Errf("unknown wechat_fake option %q", key)
		}
	}
	return nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Handler
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
