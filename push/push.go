// Package push is the Caddy module http.handlers.wechat_push: WeChat's
// message pushes (消息推送) for an official account, a mini program or a
// WeCom app, verified, decrypted and de-duplicated before the next
// handler (typically reverse_proxy to the app) sees them as plaintext, and
// the app's passive reply encrypted and signed on the way back. The app
// never holds the callback Token or the EncodingAESKey.
//
// The work is done by internal/push; this package only configures it. It
// imports nothing from the root package, which imports it (imports.go);
// a store is any wechat.stores module (stores.Provider), its optional
// KeyPrefix and OpTimeout used when present.
package push

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	ipush "github.com/caddy-wechat/wechat/internal/push"
	"github.com/caddy-wechat/wechat/stores"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the module http.handlers.wechat_push, one per account.
// Several accounts on one site are chosen by path (handle_path, route
// matchers), one wechat_push each.
type Handler struct {
	// Kind: official_account (default), mini_program or wecom.
	Kind string `json:"kind,omitempty"`

	// AppID of the official account or mini program; for WeCom, CorpID
	// (a self-built app) or SuiteID (a third-party app): the receiver id
	// inside encrypted messages. {env.*} and {file.*} are resolved at
	// provision.
	AppID   string `json:"appid,omitempty"`
	CorpID  string `json:"corpid,omitempty"`
	SuiteID string `json:"suite_id,omitempty"`

	// Token and EncodingAESKey of the server configuration (服务器配置);
	// write them as {env.*} or {file.*}.
	Token          string `json:"token,omitempty"`
	EncodingAESKey string `json:"encoding_aes_key,omitempty"`

	// Mode: safe (the default with an encoding_aes_key), compatible, or
	// plain (the default without).
	Mode string `json:"mode,omitempty"`

	// Format of a mini program's pushes: xml (default) or json.
	Format string `json:"format,omitempty"`

	// OriginalID (gh_…), if set, must be every message's ToUserName.
	OriginalID string `json:"original_id,omitempty"`

	// AgentID (WeCom), if set, refuses pushes for the corp's other apps.
	AgentID string `json:"agent_id,omitempty"`

	// Largest push body. Default 64 KiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// How far a push's timestamp may be from now, either way. Default 5m.
	MaxSkew caddy.Duration `json:"max_skew,omitempty"`

	// How long the app may take to answer. Default 13s: WeChat's three
	// tries of 5 s each.
	AppTimeout caddy.Duration `json:"app_timeout,omitempty"`

	// The store that de-duplicates a message across a cluster (module in
	// the wechat.stores namespace: memcache, redis, sql, storage). Without
	// one, each instance de-duplicates on its own.
	Store json.RawMessage `json:"store,omitempty" caddy:"namespace=wechat.stores inline_key=module"`

	gw      *ipush.Gateway
	backend credential.Backend
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wechat_push",
		New: func() caddy.Module { return new(Handler) },
	}
}

// localMarks are one account's in-process marks, kept across config
// reloads so that a reload forgets no message.
type localMarks struct{ *ipush.MemMarks }

func (localMarks) Destruct() error { return nil }

var locals = caddy.NewUsagePool()

// Provision resolves the settings, opens the store and builds the gateway.
func (h *Handler) Provision(ctx caddy.Context) error {
	repl := caddy.NewReplacer()
	resolve := func(s string) string { return strings.TrimSpace(repl.ReplaceKnown(s, "")) }
	for name, v := range map[string]string{"token": h.Token, "encoding_aes_key": h.EncodingAESKey} {
		if v != "" && !strings.Contains(v, "{") {
			ctx.Logger().Warn("wechat_push: a secret is written literally in the config, so the admin API's /config/ shows it; use {env.*} or {file.*}",
				zap.String("field", name))
		}
	}
	cfg := ipush.Config{
		Token: resolve(h.Token), AESKey: resolve(h.EncodingAESKey),
		OriginalID: resolve(h.OriginalID), AgentID: resolve(h.AgentID),
		MaxBody: h.MaxBody, MaxSkew: time.Duration(h.MaxSkew), AppTimeout: time.Duration(h.AppTimeout),
		Logger: ctx.Logger(),
	}
	switch h.Kind {
	case "", "official_account":
		cfg.Kind = ipush.OfficialAccount
	case "mini_program":
		cfg.Kind = ipush.MiniProgram
	case "wecom":
		cfg.Kind = ipush.WeCom
	default:
		return fmt.Errorf("wechat_push: kind %q: want official_account, mini_program or wecom", h.Kind)
	}
	ids := 0
	for _, v := range []string{h.AppID, h.CorpID, h.SuiteID} {
		if v != "" {
			ids++
			cfg.AppID = resolve(v)
		}
	}
	switch {
	case ids != 1:
		return errors.New("wechat_push: give exactly one of appid, corpid, suite_id")
	case cfg.Kind == ipush.WeCom && h.AppID != "":
		return errors.New("wechat_push: a WeCom app is named by corpid (or suite_id), not appid")
	case cfg.Kind != ipush.WeCom && h.AppID == "":
		return errors.New("wechat_push: corpid and suite_id are WeCom's: set kind wecom")
	}
	switch h.Mode {
	case "":
		if cfg.AESKey == "" {
			cfg.Mode = ipush.Plain
		}
	case "safe":
		cfg.Mode = ipush.Safe
	case "compatible":
		cfg.Mode = ipush.Compatible
	case "plain":
		cfg.Mode = ipush.Plain
	default:
		return fmt.Errorf("wechat_push: mode %q: want safe, compatible or plain", h.Mode)
	}
	switch h.Format {
	case "", "xml":
	case "json":
		cfg.Format = ipush.JSON
	default:
		return fmt.Errorf("wechat_push: format %q: want xml or json", h.Format)
	}

	registerMetrics(ctx)
	cfg.Events = newEvents(cfg.AppID)
	if len(h.Store) > 0 {
		mod, err := ctx.LoadModule(h, "Store")
		if err != nil {
			return fmt.Errorf("wechat_push: loading store: %v", err)
		}
		sp, ok := mod.(stores.Provider)
		if !ok {
			return fmt.Errorf("wechat_push: store module %T is not a wechat store", mod)
		}
		b, err := sp.OpenBackend()
		if err != nil {
			return fmt.Errorf("wechat_push: opening the store: %v", err)
		}
		h.backend = b
		cfg.Marks = b
		if p, ok := mod.(interface{ KeyPrefix() string }); ok {
			cfg.Prefix = p.KeyPrefix()
		}
		if p, ok := mod.(interface{ OpTimeout() time.Duration }); ok {
			cfg.OpTimeout = p.OpTimeout()
		}
		// The fallback while the store fails: this handler's own, so two
		// handlers on one store share nothing in process.
		cfg.Local = ipush.NewMemMarks(0, 0, nil)
	} else {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%d\x00%s\x00%s\x00%s", cfg.Kind, cfg.AppID, cfg.Token, cfg.AESKey)))
		h.poolKey = "push:" + cfg.AppID + ":" + hex.EncodeToString(sum[:12])
		v, _, _ := locals.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
			return localMarks{ipush.NewMemMarks(0, 0, nil)}, nil
		})
		cfg.Local = v.(localMarks).MemMarks
	}
	gw, err := ipush.New(cfg)
	if err != nil {
		_ = h.Cleanup()
		return fmt.Errorf("wechat_push: %v", err) // never quotes a secret
	}
	h.gw = gw
	return nil
}

// Cleanup closes the store's connections and releases the marks.
func (h *Handler) Cleanup() error {
	var err error
	if h.backend != nil {
		err = h.backend.Close()
		h.backend = nil
	}
	if h.poolKey != "" {
		_, _ = locals.Delete(h.poolKey)
		h.poolKey = ""
	}
	return err
}

// ServeHTTP answers WeChat: the URL check itself, a push through next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	h.gw.ServeHTTP(w, r, next.ServeHTTP)
	return nil
}

// Metrics: labels are the configured appid (or corpid) and the bounded
// result set of internal/push, never an openid or a message field.
var (
	metricPushes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "push_requests_total",
		Help: "Requests from WeChat to wechat_push, by result (ok, url_check, retry_waited, retry_stored, app_error, ... or the reason of a refusal).",
	}, []string{"appid", "result"})
	metricPushStore = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "push_store_errors_total",
		Help: "Failed calls to the store of message marks (the push was then de-duplicated in process).",
	}, []string{"appid"})
)

func registerMetrics(ctx caddy.Context) {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{metricPushes, metricPushStore} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				ctx.Logger().Warn("wechat_push: registering metrics failed")
			}
		}
	}
}

// events resolves the counters once, so a push pays no label lookup.
type events struct {
	byResult map[string]prometheus.Counter
	store    prometheus.Counter
	other    prometheus.Counter
}

func newEvents(appid string) *events {
	e := &events{byResult: map[string]prometheus.Counter{}, store: metricPushStore.WithLabelValues(appid),
		other: metricPushes.WithLabelValues(appid, "error")}
	for _, r := range ipush.Results {
		e.byResult[r] = metricPushes.WithLabelValues(appid, r)
	}
	return e
}

func (e *events) Push(result string) {
	if c, ok := e.byResult[result]; ok {
		c.Inc()
		return
	}
	e.other.Inc()
}

func (e *events) StoreError() { e.store.Inc() }

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
