package component

// The components' part of the gateway's status views: the root's
// /wechat/status and its page ask for it here, next to the platform it
// reads.

import (
	"context"
	"sort"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/statusview"
)

// StatusPage is the components' lines and the page of authorizers q
// asks for (of the only component when q names none), or a notice.
func StatusPage(ctx context.Context, q statusview.Query, now time.Time) (comps []statusview.Component, page *statusview.Authorizers, notice string) {
	plats := componentPlatforms()
	var chosen *platform
	for _, pl := range plats {
		if pl.appid == q.Component || (q.Component == "" && len(plats) == 1) {
			chosen = pl
		}
	}
	bad := -1 // the chosen component's unhealthy count, when its page counted them
	if chosen != nil {
		q.Component = chosen.appid
		page = &statusview.Authorizers{Query: q}
		var keep func(*credential.AuthorizerStatus) bool
		if q.Unhealthy {
			keep = statusview.Unhealthy(now)
		}
		page.Items, page.Next, page.Total = chosen.reg.Find(q.Cursor, q.Limit, q.Search, keep)
		if q.Unhealthy && q.Search == "" {
			bad = page.Total
		}
	}
	for _, pl := range plats {
		if pl == chosen {
			comps = append(comps, pl.summary(ctx, now, bad))
		} else {
			comps = append(comps, pl.summary(ctx, now, -1))
		}
	}
	switch {
	case chosen != nil:
	case q.Component != "":
		notice = "No component " + q.Component + " is configured."
	case len(plats) > 1:
		notice = "Several components: choose one above to list its authorizers."
	}
	return comps, page, notice
}

// componentPlatforms lists the pooled components in appid order.
func componentPlatforms() []*platform {
	var out []*platform
	platforms.Range(func(_, v any) bool { out = append(out, v.(*platform)); return true })
	sort.Slice(out, func(i, j int) bool { return out[i].appid < out[j].appid })
	return out
}

// summary is the component's line: its token, ticket, store and how many
// of its authorizers are unhealthy (bad, or when it is -1 counted here:
// one status read per authorizer, see BenchmarkStatusPage).
func (p *platform) summary(ctx context.Context, now time.Time, bad int) statusview.Component {
	if bad < 0 {
		_, _, bad = p.reg.Find("", 1, "", statusview.Unhealthy(now))
	}
	c := statusview.Component{AppID: p.appid, Authorizers: p.reg.Len(), Unhealthy: bad, Token: p.comp.Status(), Store: statusview.StoreOf(p.shared)}
	if v, err := p.comp.Aux().Get(ctx, credential.AuxVerifyTicket); err == nil && len(v) > 0 {
		c.TicketStored = true
	}
	return c
}

// View is a component's line in the JSON of /wechat/status.
type View struct {
	Component   string            `json:"component"`
	Authorizers int               `json:"authorizers"`
	Unhealthy   int               `json:"unhealthy_authorizers"`
	Ticket      bool              `json:"ticket_stored"`
	Token       credential.Status `json:"component_token"`
	StoreDown   bool              `json:"store_down,omitempty"`
}

// Views is the components for the JSON status (nil: none).
func Views(ctx context.Context) []View {
	var out []View
	for _, p := range componentPlatforms() {
		s := p.summary(ctx, time.Now(), -1)
		out = append(out, View{Component: s.AppID, Authorizers: s.Authorizers, Unhealthy: s.Unhealthy,
			Ticket: s.TicketStored, Token: s.Token, StoreDown: s.Store.BreakerOpen})
	}
	return out
}
