package gateway

import "testing"

func TestClassifyOwnCredential(t *testing.T) {
	for q, want := range map[string]Route{
		"component_access_token=x":      RouteOwnCred,
		"a=1&SUITE_ACCESS_TOKEN=x":      RouteOwnCred,
		"provider%5Faccess%5Ftoken=x":   RouteOwnCred,
		"+provider_access_token=x":      RouteOwnCred,
		"access_token=x":                RouteToken,
		"component_access_tokenx=1":     RouteToken,
		"openid=component_access_token": RouteToken,
		"":                              RouteToken,
		"x=1&y=2":                       RouteToken, // scanned to its last byte, and no further
		"media_id=abc":                  RouteToken,
	} {
		if got := ClassifyRequest("/cgi-bin/component/api_query_auth", q); got != want {
			t.Errorf("%q: route %d, want %d", q, got, want)
		}
	}
	if got := ClassifyRequest("/cgi-bin/token", "component_access_token=x"); got != RouteBlocked {
		t.Errorf("token endpoint with own credential: route %d, want blocked", got)
	}
	if got := ClassifyRequest("/sns/component/jscode2session", "component_access_token=x"); got != RouteOwnCred {
		t.Errorf("component login: route %d, want own (no secret added)", got)
	}
}
