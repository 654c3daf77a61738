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
	// The page is the limit smallest appids after cursor: a max-heap of
	// that size keeps them, so ten thousand candidates cost about one
	// comparison each instead of a sort of them all.
	top := make([]candidate, 0, min(limit, 1024))
	n := 0
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
			if k <= cursor {
				continue
			}
			n++
			switch {
			case len(top) < limit:
				top = append(top, candidate{k, a})
				siftUp(top, len(top)-1)
			case k < top[0].k:
				top[0] = candidate{k, a}
				siftDown(top, 0)
			}
		}
	}
	slices.SortFunc(top, func(a, b candidate) int { return strings.Compare(a.k, b.k) })
	if n > limit {
		next = top[len(top)-1].k
	}
	items = make([]AuthorizerStatus, len(top))
	for i, c := range top {
		items[i] = c.a.status()
	}
	return items, next, total
}

type candidate struct {
	k string
	a *Authorizer
}

// siftUp and siftDown keep h a max-heap on k.
func siftUp(h []candidate, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].k >= h[i].k {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func siftDown(h []candidate, i int) {
	for {
		l, big := 2*i+1, i
		if l < len(h) && h[l].k > h[big].k {
			big = l
		}
		if r := l + 1; r < len(h) && h[r].k > h[big].k {
			big = r
		}
		if big == i {
			return
		}
		h[i], h[big] = h[big], h[i]
		i = big
	}
}

func (a *Authorizer) status() AuthorizerStatus {
	return AuthorizerStatus{AppID: a.src.AppID, Status: a.cache.Status(), RefreshUnsaved: a.src.unsaved.Load() != nil}
}
