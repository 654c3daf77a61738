package component

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metricCompHealth reports, at scrape time, what the alerts need about
// each component: how long since a component_verify_ticket push, whether
// the component token is failing, and the store's breaker. One series
// per component appid; never an authorizer appid.
var metricCompHealth = &platformHealthCollector{
	ticketAge: prometheus.NewDesc("caddy_wechat_component_ticket_age_seconds",
		"Seconds since this instance accepted a component_verify_ticket push (since it started, before the first). WeChat pushes every 10 minutes; a cluster's pushes land on one instance each, so alert on the minimum.",
		[]string{"component"}, nil),
	failing: prometheus.NewDesc("caddy_wechat_component_token_fetch_failing",
		"1 from a failed component_access_token fetch until one succeeds.", []string{"component"}, nil),
	breaker: prometheus.NewDesc("caddy_wechat_component_store_breaker_open",
		"1 while the component store's breaker is open (store skipped).", []string{"component"}, nil),
}

type platformHealthCollector struct{ ticketAge, failing, breaker *prometheus.Desc }

func (c *platformHealthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ticketAge
	ch <- c.failing
	ch <- c.breaker
}

func (c *platformHealthCollector) Collect(ch chan<- prometheus.Metric) {
	type health struct {
		last             time.Time
		failing, breaker float64
		shared           bool
	}
	seen := map[string]*health{}
	platforms.Range(func(_, v any) bool {
		p := v.(*platform)
		h := seen[p.appid]
		if h == nil {
			h = &health{}
			seen[p.appid] = h
		}
		last := p.obs.started
		if n := p.obs.lastTicket.Load(); n != 0 {
			last = time.Unix(0, n)
		}
		if last.After(h.last) {
			h.last = last
		}
		if p.comp.Status().LastError != "" {
			h.failing = 1
		}
		if p.shared != nil {
			h.shared = true
			if p.shared.BreakerOpen() {
				h.breaker = 1
			}
		}
		return true
	})
	now := time.Now()
	for appid, h := range seen {
		ch <- prometheus.MustNewConstMetric(c.ticketAge, prometheus.GaugeValue, now.Sub(h.last).Seconds(), appid)
		ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, h.failing, appid)
		if h.shared {
			ch <- prometheus.MustNewConstMetric(c.breaker, prometheus.GaugeValue, h.breaker, appid)
		}
	}
}
