package wechat

import (
	"errors"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// The collectors are created once per process and registered into each
// config's registry (ctx.GetMetricsRegistry()), so counts survive reloads.
// Labels are bounded: the configured appid and a small result set, never a
// URL, an openid or a token.
var (
	metricFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "token_fetches_total",
		Help: "Calls to WeChat's token endpoint, by token API and result.",
	}, []string{"appid", "api", "result"})
	metricEndpointErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "token_endpoint_errors_total",
		Help: "Errors from WeChat's token endpoint, by errcode (-1 for network or protocol errors).",
	}, []string{"appid", "errcode"})
	metricRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "invalid_token_retries_total",
		Help: "Requests that met an invalid-token errcode, by what the replay did.",
	}, []string{"appid", "outcome"})
	metricRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "requests_total",
		Help: "Requests proxied by the gateway, by result.",
	}, []string{"appid", "result"})
	metricMemcacheErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "memcache_errors_total",
		Help: "Failed memcache operations, by operation.",
	}, []string{"appid", "op"})
	metricAccounts = &accountCollector{
		age: prometheus.NewDesc("caddy_wechat_token_age_seconds",
			"Seconds since the current token was issued.", []string{"appid", "api"}, nil),
		ttl: prometheus.NewDesc("caddy_wechat_token_expiry_seconds",
			"Seconds until the current token expires.", []string{"appid", "api"}, nil),
		breaker: prometheus.NewDesc("caddy_wechat_memcache_breaker_open",
			"1 while the memcache breaker is open (memcache skipped).", []string{"appid", "api"}, nil),
		today: prometheus.NewDesc("caddy_wechat_token_fetches_today",
			"Token fetches counted today (shared across the cluster with memcache).", []string{"appid", "api"}, nil),
	}
)

// metrics is one account's view of the collectors, with the hot-path
// counters resolved once so a request pays no label lookup.
type metrics struct {
	appid    string
	requests map[string]prometheus.Counter
	retries  map[string]prometheus.Counter
}

var requestResults = []string{"ok", "wechat_error", "token_error", "token_unavailable", "upstream_5xx", "blocked", "placeholder", "error"}
var retryOutcomes = []string{"ok", "failed", "no_fresh_token", "not_replayable", "error"}

// newMetrics registers the collectors in this config's registry and
// returns the account's counters.
func newMetrics(ctx caddy.Context, appid string) *metrics {
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, c := range []prometheus.Collector{metricFetches, metricEndpointErrors, metricRetries, metricRequests, metricMemcacheErrors, metricAccounts} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					ctx.Logger().Warn("wechat: registering metrics failed")
				}
			}
		}
	}
	m := &metrics{appid: appid, requests: map[string]prometheus.Counter{}, retries: map[string]prometheus.Counter{}}
	for _, r := range requestResults {
		m.requests[r] = metricRequests.WithLabelValues(appid, r)
	}
	for _, o := range retryOutcomes {
		m.retries[o] = metricRetries.WithLabelValues(appid, o)
	}
	return m
}

func (m *metrics) request(result string) {
	if m != nil {
		m.requests[result].Inc()
	}
}

func (m *metrics) retry(outcome string) {
	if m != nil {
		m.retries[outcome].Inc()
	}
}

func (m *metrics) memcacheError(op string) {
	if m != nil {
		metricMemcacheErrors.WithLabelValues(m.appid, op).Inc()
	}
}

// countFetch records one call to the token endpoint in the metrics and in
// the daily budget.
func (a *account) countFetch(api string, force bool, err error) {
	result := "ok"
	if err != nil {
		code := -1
		var we *wechatError
		if errors.As(err, &we) {
			code = we.Code
		}
		result = "error"
		metricEndpointErrors.WithLabelValues(a.appid, strconv.Itoa(code)).Inc()
	}
	if force {
		api += "_force"
	}
	metricFetches.WithLabelValues(a.appid, api, result).Inc()
	a.budgetCount(force)
}

// accountCollector reports gauges read from the live accounts at scrape
// time, so they are never stale and cost nothing between scrapes.
type accountCollector struct {
	age, ttl, breaker, today *prometheus.Desc
}

func (c *accountCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.age
	ch <- c.ttl
	ch <- c.breaker
	ch <- c.today
}

func (c *accountCollector) Collect(ch chan<- prometheus.Metric) {
	accounts.Range(func(_, v any) bool {
		a := v.(*account)
		now := a.now()
		if e := a.cur.Load(); e != nil {
			ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, now.Sub(e.FetchedAt).Seconds(), a.appid, a.api)
			ch <- prometheus.MustNewConstMetric(c.ttl, prometheus.GaugeValue, e.ExpiresAt.Sub(now).Seconds(), a.appid, a.api)
		}
		if a.store != nil {
			open := 0.0
			if a.store.breakerOpen(now) {
				open = 1
			}
			ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, open, a.appid, a.api)
		}
		ch <- prometheus.MustNewConstMetric(c.today, prometheus.GaugeValue, float64(a.fetchesToday()), a.appid, a.api)
		return true
	})
}
