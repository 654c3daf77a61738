package component

import (
	"net/url"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The ticket-age gauge counts from the last accepted push: an hour after
// one it says about 3,600 s, so the alert on a lost ticket push fires.
func TestTicketAgeAnHourAfterAPush(t *testing.T) {
	base, _ := url.Parse("http://api.weixin.qq.com")
	const key = "component:test-ticket-age"
	v, _, err := platforms.LoadOrNew(key, func() (caddy.Destructor, error) {
		return newPlatform(testComponentAppID, testComponentSecret, []*url.URL{base}, nil, 0, zap.NewNop())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = platforms.Delete(key) })
	age := func() float64 {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(metricCompHealth)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "caddy_wechat_component_ticket_age_seconds" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == testComponentAppID {
						return m.GetGauge().GetValue()
					}
				}
			}
		}
		t.Fatal("no ticket age for the component")
		return 0
	}
	if a := age(); a < 0 || a > 60 {
		t.Errorf("ticket age of a platform just started = %v, want its age", a)
	}
	v.(*platform).obs.lastTicket.Store(time.Now().Add(-time.Hour).UnixNano())
	if a := age(); a < 3600 || a > 3660 {
		t.Errorf("ticket age an hour after a push = %v, want about 3600", a)
	}
}
