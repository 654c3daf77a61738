package storetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// OpenPlatform is a fake of WeChat's open platform (第三方平台) for engine
// tests, following open-platform-rules.md: tickets live 12 h,
// api_component_token needs the latest (or a recent) ticket, authorizer
// refresh tokens rotate every RotateEvery fetches with the old one dead at
// once (61023), revoked authorizers answer 61003, and
// api_get_authorizer_info gives the current refresh token when
// InfoGivesRefresh. It is an http.Handler; Transport serves it in
// process (no sockets), so ten thousand authorizers cost no connections.
type OpenPlatform struct {
	Clock  *Clock
	AppID  string
	Secret string

	RotateEvery      int // 0: never rotate
	InfoGivesRefresh bool

	ComponentFetches, AuthorizerFetches, QueryAuths, InfoCalls, Rotations atomic.Int64
	// Probes counts get_api_domain_ip calls (authorizer tokens),
	// ComponentProbes api_get_authorizer_list calls, failed ones included.
	Probes, ComponentProbes atomic.Int64

	mu         sync.Mutex
	seq        int
	tickets    map[string]time.Time // ticket -> expiry
	ctoks      map[string]time.Time // component token -> expiry
	codes      map[string]string    // auth code -> authorizer
	auths      map[string]*fakeAuthorizer
	atoks      map[string]time.Time // authorizer token -> expiry
	atokOwner  map[string]string
	perAuthGet map[string]int
}

type fakeAuthorizer struct {
	refresh string
	fetches int
	revoked bool
}

// NewOpenPlatform returns a fake for one component.
func NewOpenPlatform(clock *Clock, appid, secret string) *OpenPlatform {
	return &OpenPlatform{Clock: clock, AppID: appid, Secret: secret, InfoGivesRefresh: true,
		tickets: map[string]time.Time{}, ctoks: map[string]time.Time{}, codes: map[string]string{},
		auths: map[string]*fakeAuthorizer{}, atoks: map[string]time.Time{}, atokOwner: map[string]string{}, perAuthGet: map[string]int{}}
}

func (f *OpenPlatform) next(prefix string) string {
	f.seq++
	return prefix + strconv.Itoa(f.seq) + "x" + strconv.FormatInt(f.Clock.Now().UnixNano()%1e6, 10)
}

// PushTicket issues a ticket as WeChat's 10-minute push would.
func (f *OpenPlatform) PushTicket() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.next("TICKET@@@")
	f.tickets[t] = f.Clock.Now().Add(12 * time.Hour)
	return t
}

// AddAuthorizer authorizes the platform for appid and returns an auth
// code for api_query_auth.
func (f *OpenPlatform) AddAuthorizer(appid string) (code string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.auths[appid]
	if a == nil || a.revoked {
		a = &fakeAuthorizer{}
		f.auths[appid] = a
	}
	a.refresh = f.next("refreshtoken@@@" + appid + "@")
	code = f.next("queryauthcode@@@")
	f.codes[code] = appid
	return code
}

// AddAuthorizers creates n authorizers and returns their appids and
// refresh tokens, as if each had been authorized and stored.
func (f *OpenPlatform) AddAuthorizers(n int) (appids, refresh []string) {
	for i := range n {
		id := fmt.Sprintf("wxa%015d", i)
		f.AddAuthorizer(id)
		appids = append(appids, id)
		refresh = append(refresh, f.RefreshToken(id))
	}
	return appids, refresh
}

// RefreshToken is the authorizer's current refresh token.
func (f *OpenPlatform) RefreshToken(appid string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.auths[appid]; a != nil {
		return a.refresh
	}
	return ""
}

// Rotate gives appid a new refresh token behind the gateway's back (a
// lost refresh token: the stored one answers 61023).
func (f *OpenPlatform) Rotate(appid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auths[appid].refresh = f.next("refreshtoken@@@" + appid + "@")
}

// Revoke is the merchant revoking the platform.
func (f *OpenPlatform) Revoke(appid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.auths[appid]; a != nil {
		a.revoked = true
	}
}

// Fetches is how many api_authorizer_token calls appid succeeded with.
func (f *OpenPlatform) Fetches(appid string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.perAuthGet[appid]
}

// Valid reports how an API call sees an authorizer or component token.
func (f *OpenPlatform) Valid(tok string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.Clock.Now()
	if e, ok := f.atoks[tok]; ok {
		a := f.auths[f.atokOwner[tok]]
		return now.Before(e) && a != nil && !a.revoked
	}
	e, ok := f.ctoks[tok]
	return ok && now.Before(e)
}

// Transport serves requests in process.
func (f *OpenPlatform) Transport() http.RoundTripper { return inProcess{f} }

type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	w := httptest.NewRecorder()
	t.h.ServeHTTP(w, req)
	return w.Result(), nil
}

// RevokeToken ends an authorizer or component token at once, as another
// system's refresh or a secret reset would.
func (f *OpenPlatform) RevokeToken(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.atoks, tok)
	delete(f.ctoks, tok)
}

func (f *OpenPlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in := map[string]string{}
	if r.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		var raw map[string]any
		_ = json.Unmarshal(b, &raw)
		for k, v := range raw {
			if s, ok := v.(string); ok {
				in[k] = s
			}
		}
	}
	var ans map[string]any
	if r.URL.Path == "/cgi-bin/get_api_domain_ip" {
		// An authorizer token is used like an account's access_token.
		f.Probes.Add(1)
		ans = map[string]any{"errcode": 0, "ip_list": []string{"101.226.103.0/25"}}
		if !f.Valid(r.URL.Query().Get("access_token")) {
			ans = errAns(40001, "invalid credential, access_token is invalid or not latest")
		}
	} else {
		if r.URL.Path == "/cgi-bin/component/api_get_authorizer_list" {
			f.ComponentProbes.Add(1)
		}
		ans = f.answer(r.URL.Path, r.URL.Query().Get("component_access_token"), in)
	}
	w.Header().Set("Content-Type", "text/plain")
	_ = json.NewEncoder(w).Encode(ans)
}

func errAns(code int, msg string) map[string]any {
	return map[string]any{"errcode": code, "errmsg": msg + " rid: 6500-fake"}
}

func (f *OpenPlatform) answer(path, ctok string, in map[string]string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.Clock.Now()
	if path != "/cgi-bin/component/api_component_token" {
		e, ok := f.ctoks[ctok]
		if !ok {
			return errAns(40001, "invalid credential, access_token is invalid or not latest")
		}
		if !now.Before(e) {
			return errAns(42001, "access_token expired")
		}
		if in["component_appid"] != f.AppID {
			return errAns(40013, "invalid appid")
		}
	}
	switch path {
	case "/cgi-bin/component/api_component_token":
		if in["component_appid"] != f.AppID {
			return errAns(40013, "invalid appid")
		}
		if in["component_appsecret"] != f.Secret {
			return errAns(40125, "invalid appsecret")
		}
		e, ok := f.tickets[in["component_verify_ticket"]]
		if !ok {
			return errAns(61006, "component ticket is invalid")
		}
		if !now.Before(e) {
			return errAns(61005, "component ticket is expired")
		}
		f.ComponentFetches.Add(1)
		for t, e := range f.ctoks {
			if e.After(now.Add(5 * time.Minute)) {
				f.ctoks[t] = now.Add(5 * time.Minute)
			}
		}
		t := f.next("componenttoken@@@")
		f.ctoks[t] = now.Add(2 * time.Hour)
		return map[string]any{"component_access_token": t, "expires_in": 7200}
	case "/cgi-bin/component/api_query_auth":
		id, ok := f.codes[in["authorization_code"]]
		if !ok {
			return errAns(61010, "code is expired or invalid")
		}
		delete(f.codes, in["authorization_code"])
		f.QueryAuths.Add(1)
		a := f.auths[id]
		t := f.issue(id, now)
		return map[string]any{"authorization_info": map[string]any{
			"authorizer_appid": id, "authorizer_access_token": t, "expires_in": 7200, "authorizer_refresh_token": a.refresh}}
	case "/cgi-bin/component/api_authorizer_token":
		id := in["authorizer_appid"]
		a := f.auths[id]
		if a == nil || a.revoked {
			return errAns(61003, "component is not authorized by this account")
		}
		if in["authorizer_refresh_token"] != a.refresh {
			return errAns(61023, "refresh_token is invalid")
		}
		f.AuthorizerFetches.Add(1)
		f.perAuthGet[id]++
		a.fetches++
		if f.RotateEvery > 0 && a.fetches%f.RotateEvery == 0 {
			a.refresh = f.next("refreshtoken@@@" + id + "@")
			f.Rotations.Add(1)
		}
		t := f.issue(id, now)
		return map[string]any{"authorizer_access_token": t, "expires_in": 7200, "authorizer_refresh_token": a.refresh}
	case "/cgi-bin/component/api_get_authorizer_list":
		list := []map[string]any{}
		for id, a := range f.auths {
			if !a.revoked && len(list) == 0 {
				list = append(list, map[string]any{"authorizer_appid": id, "refresh_token": a.refresh, "auth_time": 1558000607})
			}
		}
		return map[string]any{"total_count": len(f.auths), "list": list}
	case "/cgi-bin/component/api_get_authorizer_info":
		f.InfoCalls.Add(1)
		id := in["authorizer_appid"]
		a := f.auths[id]
		if a == nil || a.revoked {
			return errAns(61003, "component is not authorized by this account")
		}
		info := map[string]any{"authorizer_appid": id}
		if f.InfoGivesRefresh {
			info["authorizer_refresh_token"] = a.refresh
		}
		return map[string]any{"authorizer_info": map[string]any{"nick_name": "fake"}, "authorization_info": info}
	}
	return errAns(40066, "invalid url")
}

// issue makes a new authorizer token; earlier ones keep working until
// they expire.
func (f *OpenPlatform) issue(id string, now time.Time) string {
	t := f.next("authorizertoken@@@" + id + "@")
	f.atoks[t] = now.Add(2 * time.Hour)
	f.atokOwner[t] = id
	return t
}
