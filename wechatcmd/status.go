package wechatcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/statusview"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// statusJSON is what /wechat/status answers.
type statusJSON struct {
	Accounts []struct {
		AppID    string `json:"appid"`
		Account  string `json:"account"`
		TokenAPI string `json:"token_api"`
		Store    bool   `json:"store"`
		credential.Status
		HasToken bool                `json:"has_token"`
		Tickets  []credential.Status `json:"tickets"`
	} `json:"accounts"`
	Components []struct {
		Component   string            `json:"component"`
		Authorizers int               `json:"authorizers"`
		Unhealthy   int               `json:"unhealthy_authorizers"`
		Ticket      bool              `json:"ticket_stored"`
		Token       credential.Status `json:"component_token"`
	} `json:"components"`
}

type authorizersJSON struct {
	Matched    *int                          `json:"matched"`
	Items      []credential.AuthorizerStatus `json:"items"`
	NextCursor string                        `json:"next_cursor"`
}

// Status prints the running gateway's accounts, components and
// unhealthy authorizers (at most 1,000 per component) as tables, read
// from the admin API at addr. It returns the exit status.
func Status(w io.Writer, addr string) (int, error) {
	var st statusJSON
	if err := adminGet(addr, "/wechat/status", &st); err != nil {
		return 1, err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tAPI\tCREDENTIAL\tSTATE\tSOURCE\tAGE\tEXPIRES\tNEXT RENEWAL\tFETCHES TODAY\tFORCED\tSTORE\tLAST ERROR")
	for _, a := range st.Accounts {
		store := "-"
		if a.Store {
			store = "shared"
			if a.StoreDown {
				store = "DOWN"
			}
		}
		for _, c := range append([]credential.Status{a.Status}, a.Tickets...) {
			r := statusview.Describe(c, a.TokenAPI, now)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.AppID, a.TokenAPI, c.Name, r.State, strings.ReplaceAll(r.Source, "—", "-"),
				dash(r.Age), dash(r.Expires), dash(r.Renew), r.Fetches, r.Forced, store, errWords(r))
		}
	}
	if len(st.Accounts) == 0 {
		fmt.Fprintln(tw, "(no account)")
	}
	tw.Flush()
	for _, c := range st.Components {
		r := statusview.Describe(c.Token, "", now)
		ticket := "ticket stored"
		if !c.Ticket {
			ticket = "NO TICKET STORED"
		}
		fmt.Fprintf(w, "\ncomponent %s: %d authorizers, %d unhealthy; component token %s; %s%s\n",
			c.Component, c.Authorizers, c.Unhealthy, r.State, ticket, prefixed("; ", errWords(r)))
		if c.Unhealthy == 0 {
			continue
		}
		var page authorizersJSON
		q := url.Values{"component": {c.Component}, "unhealthy": {"1"}, "limit": {fmt.Sprint(statusview.MaxLimit)}}
		if err := adminGet(addr, "/wechat/status/authorizers?"+q.Encode(), &page); err != nil {
			return 1, err
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "AUTHORIZER\tSTATE\tAGE\tEXPIRES\tNEXT RENEWAL\tLAST ERROR")
		for _, it := range page.Items {
			r := statusview.Describe(it.Status, "", now)
			state := r.State
			if it.RefreshUnsaved {
				state += ", refresh token unsaved"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.AppID, state, dash(r.Age), dash(r.Expires), dash(r.Renew), errWords(r))
		}
		tw.Flush()
		if page.NextCursor != "" {
			fmt.Fprintf(w, "(more: the status page lists them all, ?component=%s&unhealthy=1)\n", c.Component)
		}
	}
	return 0, nil
}

func adminGet(addr, uri string, v any) error {
	resp, err := caddycmd.AdminAPIRequest(addr, "GET", uri, nil, nil)
	if err != nil {
		return fmt.Errorf("reading %s from the admin API at %s: %v", uri, addr, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return fmt.Errorf("reading %s: %v (is the wechat module in this Caddy?)", uri, err)
	}
	return nil
}

func errWords(r statusview.Row) string {
	if r.Error == "" {
		return ""
	}
	if r.Advice != "" {
		return r.Advice + " (" + r.Error + ")"
	}
	return r.Error
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + strings.TrimSpace(s)
}
