package credential

import (
	"slices"
	"strings"
)

// Find is Page with a search and a filter, for the status views: up to
// limit authorizers in appid order after cursor whose appid contains q
// ("" for any) and that keep accepts (nil for all), the cursor of the
// next page ("" at the end), and how many authorizers of the whole
// registry pass both (the cursor aside), so a view can say "5 of 10,000".
//
// It reads each candidate's status only when keep needs it, and sorts
// only the candidates that passed: the unhealthy few among ten thousand
// cost one status read each and a small sort.
func (r *Registry) Find(cursor string, limit int, q string, keep func(*AuthorizerStatus) bool) (items []AuthorizerStatus, next string, total int) {
	if limit <= 0 {
		limit = 100
	}
	var ids []*Authorizer
	var st AuthorizerStatus
	for i := range r.shards {
		m := r.shards[i].m.Load()
		if m == nil {
			continue
		}
		for k, a := range *m {
			if q != "" && !strings.Contains(k, q) {
				continue
			}
			if keep != nil {
				st = a.status()
				if !keep(&st) {
					continue
				}
			}
			total++
			if k > cursor {
				ids = append(ids, a)
			}
		}
	}
	slices.SortFunc(ids, func(a, b *Authorizer) int { return strings.Compare(a.src.AppID, b.src.AppID) })
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1].src.AppID
	}
	items = make([]AuthorizerStatus, len(ids))
	for i, a := range ids {
		items[i] = a.status()
	}
	return items, next, total
}

func (a *Authorizer) status() AuthorizerStatus {
	return AuthorizerStatus{AppID: a.src.AppID, Status: a.cache.Status(), RefreshUnsaved: a.src.unsaved.Load() != nil}
}
