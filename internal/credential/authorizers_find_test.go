package credential_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Find pages through the authorizers that match a search and a filter,
// in appid order, with the cursor exclusive, and counts the matches of
// the whole registry whatever the cursor.
func TestRegistryFind(t *testing.T) {
	reg := credential.NewRegistry(&credential.Platform{}, credential.RegistryConfig{})
	defer reg.Close()
	for i := range 30 {
		id := fmt.Sprintf("wxfind%02d", i)
		tok := credential.NewToken("tok"+id, 7200, time.Now(), "store")
		if err := reg.Authorize(context.Background(), &credential.Authorization{AuthorizerAppID: id, RefreshToken: "r" + id, Token: tok}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(p []credential.AuthorizerStatus) string {
		var s []string
		for _, a := range p {
			s = append(s, a.AppID)
		}
		return strings.Join(s, ",")
	}
	// A filter that reads the status: appids ending in 7.
	sevens := func(s *credential.AuthorizerStatus) bool {
		if s.Name == "" || s.FetchedAt.IsZero() {
			t.Errorf("%s: the filter got no status", s.AppID)
		}
		return strings.HasSuffix(s.AppID, "7")
	}
	p, next, total := reg.Find("", 2, "", sevens)
	if ids(p) != "wxfind07,wxfind17" || next != "wxfind17" || total != 3 {
		t.Fatalf("page 1: %s next %q total %d", ids(p), next, total)
	}
	p, next, total = reg.Find(next, 2, "", sevens)
	if ids(p) != "wxfind27" || next != "" || total != 3 {
		t.Fatalf("page 2: %s next %q total %d", ids(p), next, total)
	}
	// A search: substring of the appid, combined with the filter.
	p, next, total = reg.Find("", 10, "find2", nil)
	if len(p) != 10 || p[0].AppID != "wxfind20" || next != "" || total != 10 {
		t.Fatalf("search: %s next %q total %d", ids(p), next, total)
	}
	p, _, total = reg.Find("", 10, "find2", sevens)
	if ids(p) != "wxfind27" || total != 1 {
		t.Fatalf("search and filter: %s total %d", ids(p), total)
	}
	if p, next, total = reg.Find("", 10, "nobody", nil); len(p) != 0 || next != "" || total != 0 {
		t.Fatalf("no match: %d next %q total %d", len(p), next, total)
	}
	// No filter: every status is filled in; limit 0 is the default 100.
	p, next, total = reg.Find("", 0, "", nil)
	if len(p) != 30 || next != "" || total != 30 || p[29].AppID != "wxfind29" || p[3].ExpiresAt.IsZero() {
		t.Fatalf("all: %d next %q total %d", len(p), next, total)
	}
	// Without search or filter, Find is Page: every limit, every cursor
	// (the heap that picks a page against the full sort).
	for limit := 1; limit <= 31; limit++ {
		for c := -1; c < 30; c += 3 {
			cursor := ""
			if c >= 0 {
				cursor = fmt.Sprintf("wxfind%02d", c)
			}
			want, wnext := reg.Page(cursor, limit)
			got, gnext, _ := reg.Find(cursor, limit, "", nil)
			if ids(got) != ids(want) || gnext != wnext {
				t.Fatalf("cursor %q limit %d: Find %s next %q; Page %s next %q", cursor, limit, ids(got), gnext, ids(want), wnext)
			}
		}
	}
}
