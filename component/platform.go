package component

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/componentcb"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddy-wechat/wechat/stores"
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The open platform (第三方平台): one component, its component_access_token
// and the tokens of every merchant that authorized it. The callback
// handler (wechat_component_callback) and the transport
// (wechat_component) share one platform per component through a pool,
// so a reload that keeps the component keeps ten thousand authorizer
// tokens.

// ComponentConfig names a component and where its credentials live. The
// callback handler and the transport must spell it the same way (appid,
// secret, store, token_endpoints) to share one platform.
type ComponentConfig struct {
	// The component (third-party platform) appid and secret; write the
	// secret as {env.*} or {file.*}.
	AppID  string `json:"appid,omitempty"`
	Secret string `json:"secret,omitempty"`

	// Base URLs of WeChat's API. Default https://api.weixin.qq.com.
	TokenEndpoints []string `json:"token_endpoints,omitempty"`

	// The durable store of the ticket, the component token and every
	// authorizer's refresh token (wechat.stores namespace). Without one,
	// they live in this process only and a restart loses refresh tokens:
	// use a durable store in production.
	Store json.RawMessage `json:"store,omitempty" caddy:"namespace=wechat.stores inline_key=module"`

	// The short form of a memcache store (not durable).
	Memcache        []string       `json:"memcache,omitempty"`
	MemcachePrefix  string         `json:"memcache_prefix,omitempty"`
	MemcacheTimeout caddy.Duration `json:"memcache_timeout,omitempty"`

	// Deadline of one token fetch. Default 10s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`
}

// platform is one component's pool entry.
type platform struct {
	appid  string
	label  string
	shared *credential.Shared
	comp   *credential.Cache
	plat   *credential.Platform
	reg    *credential.Registry
	obs    *componentObserver
	guard  componentcb.ReplayGuard // outlives config reloads

	// needles is the scrub set of calls that name no authorizer, rebuilt
	// when the component token changes (an authorizer's is kept with it).
	needles atomic.Pointer[gateway.Needles]
}

var platforms = caddy.NewUsagePool()

func (p *platform) Destruct() error {
	p.reg.Close()
	p.comp.Close()
	if p.shared != nil {
		return p.shared.Close()
	}
	return nil
}

// acquire resolves placeholders and returns the component's platform,
// creating it on first use, with the pool key to release it by.
func (c *ComponentConfig) acquire(ctx caddy.Context) (*platform, string, error) {
	repl := caddy.NewReplacer()
	appid := strings.TrimSpace(repl.ReplaceKnown(c.AppID, ""))
	secret := strings.TrimSpace(repl.ReplaceKnown(c.Secret, ""))
	if appid == "" || secret == "" {
		return nil, "", fmt.Errorf("wechat component: appid and secret are required (got appid %q after resolving placeholders)", appid)
	}
	if !strings.Contains(c.Secret, "{") {
		ctx.Logger().Warn("wechat component: the secret is written literally in the config, so the admin API's /config/ shows it; use {env.*} or {file.*}",
			zap.String("component", appid))
	}
	bases, err := gateway.ParseUpstreams(c.TokenEndpoints)
	if err != nil {
		return nil, "", err
	}
	store, err := stores.Load(ctx, c, "Store", c.Store, c.Memcache, c.MemcachePrefix, c.MemcacheTimeout)
	if err != nil {
		return nil, "", fmt.Errorf("wechat component: %v", err)
	}
	storeID := stores.Key(store)
	var ep strings.Builder
	for _, b := range bases {
		ep.WriteString(b.String() + ",")
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%d", appid, secret, storeID, ep.String(), c.FetchTimeout)
	key := "component:" + appid + ":" + hex.EncodeToString(h.Sum(nil))[:24]
	logger := ctx.Logger()
	registerComponentMetrics(ctx)
	val, _, err := platforms.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newPlatform(appid, secret, bases, store, time.Duration(c.FetchTimeout), logger)
	})
	if err != nil {
		return nil, "", fmt.Errorf("wechat component: %v", err)
	}
	return val.(*platform), key, nil
}

// componentHTTP is the platform's own client transport for token calls:
// it outlives the configs that share the platform.
func componentHTTP() http.RoundTripper {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
	}
}

func newPlatform(appid, secret string, bases []*url.URL, store stores.Provider, fetchTimeout time.Duration, logger *zap.Logger) (*platform, error) {
	seal, err := credential.NewSealer(secret, appid)
	if err != nil {
		return nil, err
	}
	p := &platform{appid: appid}
	logger = logger.With(zap.String(credential.FieldComponent, appid)) // every line of the platform names its component
	p.obs = newComponentObserver(appid)
	if store != nil {
		if p.shared, err = stores.Open(store, seal, credential.SharedOptions{Logger: logger}); err != nil {
			return nil, err
		}
	}
	p.label = seal.KeyName()[:10]
	rt := componentHTTP()
	p.comp = credential.New(credential.Config{
		Name: "component_access_token", AppID: appid, Shared: p.shared, Scheduler: caddykit.Scheduler,
		Window: credential.ComponentWindow, FetchTimeout: fetchTimeout, MinAge: caddykit.DefaultMinTokenAge, Ceiling: -1, Logger: logger,
		Source: &credential.ComponentTokenSource{RT: rt, Bases: bases, AppID: appid, Secret: secret},
	})
	p.plat = &credential.Platform{Component: p.comp, RT: rt, Bases: bases, AppID: appid, Secret: secret, Logger: logger, Events: p.obs}
	p.reg = credential.NewRegistry(p.plat, credential.RegistryConfig{
		Shared: p.shared, Scheduler: caddykit.Scheduler, FetchTimeout: fetchTimeout, MinAge: caddykit.DefaultMinTokenAge, Logger: logger,
	})
	// Warm the component token from a durable store.
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	p.comp.Warm(wctx)
	cancel()
	return p, nil
}

// Component-level metrics: labels are the component appid and small
// fixed sets, never an authorizer appid (ten thousand series) or a token.
var (
	metricCompRenewals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "component_authorizer_renewals_total",
		Help: "api_authorizer_token calls, by result (ok, error).",
	}, []string{"component", "result"})
	metricCompFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "component_authorizer_failures_total",
		Help: "Failed authorizer token renewals by WeChat errcode (-1: network or protocol).",
	}, []string{"component", "errcode"})
	metricCompRotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "component_refresh_token_rotations_total",
		Help: "New authorizer_refresh_tokens stored after WeChat rotated one.",
	}, []string{"component"})
	metricCompRecoveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "component_refresh_token_recoveries_total",
		Help: "61023 recoveries through api_get_authorizer_info, by result.",
	}, []string{"component", "result"})
	metricCompForgotten = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "component_authorizers_forgotten_total",
		Help: "Authorizers forgotten, by reason (revoked: 61003; unauthorized: the event).",
	}, []string{"component", "reason"})
	metricCompCallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "component_callbacks_total",
		Help: "Pushes to the component callback, by info_type and result.",
	}, []string{"component", "info_type", "result"})
	metricCompRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "component_requests_total",
		Help: "Requests through the component transport, by kind (authorizer, component) and result.",
	}, []string{"component", "kind", "result"})
	metricCompKnown = &platformCollector{desc: prometheus.NewDesc("caddy_wechat_component_authorizers",
		"Authorizers held by this instance (created on first use).", []string{"component"}, nil)}
)

type platformCollector struct{ desc *prometheus.Desc }

func (c *platformCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *platformCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]int{}
	platforms.Range(func(_, v any) bool {
		p := v.(*platform)
		seen[p.appid] += p.reg.Len()
		return true
	})
	for appid, n := range seen {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), appid)
	}
}

func registerComponentMetrics(ctx caddy.Context) {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{metricCompRenewals, metricCompFailures, metricCompRotations, metricCompRecoveries,
		metricCompForgotten, metricCompCallbacks, metricCompRequests, metricCompKnown, caddykit.MetricScrub, metricCompHealth} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				ctx.Logger().Warn("wechat component: registering metrics failed")
			}
		}
	}
}

// componentObserver feeds the metrics from the engine and the callback.
type componentObserver struct {
	appid                       string
	ok, failed, rotations       prometheus.Counter
	recovered, notRecovered     prometheus.Counter
	revoked, unauthorized, othr prometheus.Counter
	scrub                       *gateway.Hits
	started                     time.Time
	lastTicket                  atomic.Int64 // unix nanoseconds of the last ticket push accepted here
}

func newComponentObserver(appid string) *componentObserver {
	return &componentObserver{
		appid:        appid,
		ok:           metricCompRenewals.WithLabelValues(appid, "ok"),
		failed:       metricCompRenewals.WithLabelValues(appid, "error"),
		rotations:    metricCompRotations.WithLabelValues(appid),
		recovered:    metricCompRecoveries.WithLabelValues(appid, "ok"),
		notRecovered: metricCompRecoveries.WithLabelValues(appid, "failed"),
		revoked:      metricCompForgotten.WithLabelValues(appid, "revoked"),
		unauthorized: metricCompForgotten.WithLabelValues(appid, "unauthorized"),
		othr:         metricCompForgotten.WithLabelValues(appid, "other"),
		scrub:        caddykit.ScrubHits(appid),
		started:      time.Now(),
	}
}

func (o *componentObserver) Renewed(err error) {
	if err == nil {
		o.ok.Inc()
		return
	}
	o.failed.Inc()
	code := -1
	var ae *credential.APIError
	if errors.As(err, &ae) {
		code = ae.Code
	}
	metricCompFailures.WithLabelValues(o.appid, strconv.Itoa(code)).Inc()
}

func (o *componentObserver) Rotated() { o.rotations.Inc() }

func (o *componentObserver) Recovered(ok bool) {
	if ok {
		o.recovered.Inc()
	} else {
		o.notRecovered.Inc()
	}
}

func (o *componentObserver) Forgotten(reason string) {
	switch reason {
	case "revoked":
		o.revoked.Inc()
	case "unauthorized":
		o.unauthorized.Inc()
	default:
		o.othr.Inc()
	}
}

func (o *componentObserver) Callback(infoType, result string) {
	metricCompCallbacks.WithLabelValues(o.appid, infoType, result).Inc()
	if infoType == "component_verify_ticket" && result == "ok" {
		o.lastTicket.Store(time.Now().UnixNano())
	}
}
