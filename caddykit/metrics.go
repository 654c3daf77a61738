package caddykit

import (
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/prometheus/client_golang/prometheus"
)

// MetricScrub counts answers the scrub had to change: WeChat (or a
// middlebox) echoed a credential. It should stay at zero; rid/get's
// field-by-field redaction is by design and not counted. Accounts and
// components count into the one series set, by their appid.
var MetricScrub = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "caddy", Subsystem: "wechat", Name: "scrub_redactions_total",
	Help: "Times the scrub replaced a credential in an answer (a header value, a body), by part.",
}, []string{"appid", "part"})

// ScrubHits are appid's scrub counters, for gateway.NewNeedles.
func ScrubHits(appid string) *gateway.Hits {
	return &gateway.Hits{Header: MetricScrub.WithLabelValues(appid, "header"), Body: MetricScrub.WithLabelValues(appid, "body")}
}
