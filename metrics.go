package wechat

import (
	"errors"
	"strconv"
	"time"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The collectors are created once per process and registered into each
// config's registry (ctx.GetMetricsRegistry()), so counts survive reloads.
// Labels are bounded: the configured appid, the account label (a short
// keyed hash that tells two accounts of one appid apart), and small result
// sets; never a URL, an openid or a token.
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
	metricStoreErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "store_errors_total",
		Help: "Failed operations on the shared credential store, by operation.",
	}, []string{"appid", "account", "op"})
	metricCeiling = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "wechat", Name: "fetch_ceiling_refusals_total",
		Help: "Fetches refused because the account reached its daily fetch ceiling.",
	}, []string{"appid", "account", "credential"})
	metricAccounts = &accountCollector{
		age: prometheus.NewDesc("caddy_wechat_token_age_seconds",
			"Seconds since the current token was issued.", accountLabels, nil),
		ttl: prometheus.NewDesc("caddy_wechat_token_expiry_seconds",
			"Seconds until the current token expires.", accountLabels, nil),
		breaker: prometheus.NewDesc("caddy_wechat_store_breaker_open",
			"1 while the store's breaker is open (store skipped).", accountLabels, nil),
		today: prometheus.NewDesc("caddy_wechat_token_fetches_today",
			"Token fetches counted today (shared across the cluster with a store).", accountLabels, nil),
		ceiling: prometheus.NewDesc("caddy_wechat_fetch_ceiling_reached",
			"1 once the account has reached today's fetch ceiling.", accountLabels, nil),
		limit: prometheus.NewDesc("caddy_wechat_fetch_ceiling",
			"The account's daily fetch ceiling (absent when there is none).", accountLabels, nil),
		forced: prometheus.NewDesc("caddy_wechat_force_refreshes_today",
			"force_refresh calls counted today (stable_token only; WeChat allows 20 a day).", accountLabels, nil),
		failing: prometheus.NewDesc("caddy_wechat_token_fetch_failing",
			"1 from a failed token fetch until one succeeds (the account is backing off).", accountLabels, nil),
	}
	accountLabels = []string{"appid", "account", "api"}
)

// metrics is one config's view of the collectors, with the hot-path
// counters resolved once so a request pays no label lookup.
type metrics struct {
	appid     string
	account   string
	quotaWarn float64
	requests  map[string]prometheus.Counter
	retries   map[string]prometheus.Counter
}

var requestResults = []string{"ok", "wechat_error", "token_error", "token_unavailable", "upstream_5xx", "blocked", "placeholder", "error"}
var retryOutcomes = []string{"ok", "failed", "no_fresh_token", "not_replayable", "error"}

// newMetrics registers the collectors in this config's registry and
// returns the account's counters.
func newMetrics(ctx caddy.Context, appid, account string) *metrics {
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, c := range []prometheus.Collector{metricFetches, metricEndpointErrors, metricRetries, metricRequests, metricStoreErrors, metricCeiling, caddykit.MetricScrub, metricAccounts} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					ctx.Logger().Warn("registering metrics failed")
				}
			}
		}
	}
	m := &metrics{appid: appid, account: account, requests: map[string]prometheus.Counter{}, retries: map[string]prometheus.Counter{}}
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

func (m *metrics) storeError(a *sharedAccount, op string) {
	metricStoreErrors.WithLabelValues(a.appid, a.label, op).Inc()
}

func (m *metrics) ceiling(a *sharedAccount, name string) {
	metricCeiling.WithLabelValues(a.appid, a.label, name).Inc()
}

// fetched records one call to a token or ticket endpoint, and warns once
// a day when fetches use up a share of WeChat's quota.
func (m *metrics) fetched(a *sharedAccount, name string, force bool, err error) {
	if name != "access_token" {
		return
	}
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
	api := a.api
	if force {
		api += "_force"
	}
	metricFetches.WithLabelValues(a.appid, api, result).Inc()
	a.quotaCheck(m)
}

// WeChat's daily quotas: classic fetches, and stable force_refresh calls.
const (
	quotaClassic = 2000
	quotaForce   = 20
	// budgetWarnShare is the default share of a quota past which a
	// warning is logged.
	budgetWarnShare = 0.5
)

// quotaCheck warns once a day past the quota_warn share: classic
// fetches count against 2000/day; with stable only force_refresh is
// scarce (20/day).
func (a *sharedAccount) quotaCheck(m *metrics) {
	st := a.tokens.Status()
	quota, used := int64(quotaClassic), st.Fetches
	if a.api != tokenAPIClassic {
		quota, used = quotaForce, st.Forced
	}
	share := budgetWarnShare
	if m != nil && m.quotaWarn > 0 {
		share = m.quotaWarn
	}
	if used == 0 || float64(used) < share*float64(quota) {
		return
	}
	a.mu.Lock()
	first := a.warnedDay != st.Day
	a.warnedDay = st.Day
	a.mu.Unlock()
	if first {
		a.log().Warn("token fetches are using up the daily quota", credential.Event(credential.EventQuotaWarning),
			zap.String(credential.FieldAppID, a.appid), zap.String(credential.FieldTokenAPI, a.api),
			zap.Int64(credential.FieldUsed, used), zap.Int64(credential.FieldQuota, quota), zap.String(credential.FieldDay, st.Day))
	}
}

// accountCollector reports gauges read from the live accounts at scrape
// time, so they are never stale and cost nothing between scrapes.
type accountCollector struct {
	age, ttl, breaker, today, ceiling *prometheus.Desc
	limit, forced, failing            *prometheus.Desc
}

func (c *accountCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.age
	ch <- c.ttl
	ch <- c.breaker
	ch <- c.today
	ch <- c.ceiling
	ch <- c.limit
	ch <- c.forced
	ch <- c.failing
}

func (c *accountCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	accounts.Range(func(_, v any) bool {
		a := v.(*sharedAccount)
		// Two pool entries can share a label only if they differ in what
		// the label leaves out (e.g. fetch_timeout); report one.
		if seen[a.appid+a.label+a.api] {
			return true
		}
		seen[a.appid+a.label+a.api] = true
		lv := []string{a.appid, a.label, a.api}
		now := a.now()
		st := a.tokens.Status()
		if e := a.tokens.Current(); e != nil {
			ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, now.Sub(e.FetchedAt).Seconds(), lv...)
			ch <- prometheus.MustNewConstMetric(c.ttl, prometheus.GaugeValue, e.ExpiresAt.Sub(now).Seconds(), lv...)
		}
		if a.shared != nil {
			open := 0.0
			if st.StoreDown {
				open = 1
			}
			ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, open, lv...)
		}
		ch <- prometheus.MustNewConstMetric(c.today, prometheus.GaugeValue, float64(fetchesToday(st, now)), lv...)
		reached := 0.0
		if st.CeilingReached {
			reached = 1
		}
		ch <- prometheus.MustNewConstMetric(c.ceiling, prometheus.GaugeValue, reached, lv...)
		if st.Ceiling > 0 {
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(st.Ceiling), lv...)
		}
		if a.api == tokenAPIStable {
			forced := st.Forced
			if st.Day != now.In(quotaDayZone).Format("2006-01-02") {
				forced = 0
			}
			ch <- prometheus.MustNewConstMetric(c.forced, prometheus.GaugeValue, float64(forced), lv...)
		}
		failing := 0.0
		if st.LastError != "" {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, failing, lv...)
		return true
	})
}

// quotaDayZone is where WeChat's daily quotas reset (Beijing time).
var quotaDayZone = time.FixedZone("UTC+8", 8*3600)
