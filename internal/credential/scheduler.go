package credential

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// Scheduler runs the refresh-ahead of every Cache that names it, with one
// goroutine and a timer heap, so goroutines do not grow with accounts
// (the open platform holds thousands of authorizer caches). The goroutine
// exits when the heap is empty and starts again on the next schedule.
// Due renewals run on a small bounded pool of short-lived goroutines.
type Scheduler struct {
	now func() time.Time

	mu      sync.Mutex
	h       jobHeap
	running bool
	wake    chan struct{}
	sem     chan struct{}
	wg      sync.WaitGroup // ticks in flight
	ticking atomic.Int64   // the same, readable without waiting
}

type job struct {
	c     *Cache
	at    time.Time
	index int
}

// maxConcurrentTicks bounds the renewals in flight at once.
const maxConcurrentTicks = 16

// NewScheduler returns a Scheduler on the given clock (nil: time.Now).
func NewScheduler(now func() time.Time) *Scheduler {
	if now == nil {
		now = time.Now
	}
	return &Scheduler{now: now, wake: make(chan struct{}, 1), sem: make(chan struct{}, maxConcurrentTicks)}
}

// Len is the number of caches scheduled.
func (s *Scheduler) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.h)
}

// schedule sets when c ticks next; a zero at unschedules it.
func (s *Scheduler) schedule(c *Cache, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Checked under the lock: Close cancels, then removes under it, so a
	// tick finishing concurrently cannot put a closed cache back.
	if at.IsZero() || c.ctx.Err() != nil {
		s.removeLocked(c)
		return
	}
	if c.job != nil {
		c.job.at = at
		heap.Fix(&s.h, c.job.index)
	} else {
		c.job = &job{c: c, at: at}
		heap.Push(&s.h, c.job)
	}
	if !s.running {
		s.running = true
		go s.loop()
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Kick makes the loop read its clock again: after a fake clock moved (a
// benchmark on simulated time), or a suspended machine woke up.
func (s *Scheduler) Kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Idle reports whether no renewal is due on the scheduler's clock and
// none is running.
func (s *Scheduler) Idle() bool {
	s.mu.Lock()
	due := len(s.h) > 0 && !s.h[0].at.After(s.now())
	s.mu.Unlock()
	return !due && s.ticking.Load() == 0
}

func (s *Scheduler) remove(c *Cache) {
	s.mu.Lock()
	s.removeLocked(c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Scheduler) removeLocked(c *Cache) {
	if c.job != nil {
		heap.Remove(&s.h, c.job.index)
		c.job = nil
	}
}

func (s *Scheduler) loop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if len(s.h) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		wait := s.h[0].at.Sub(s.now())
		s.mu.Unlock()
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-s.wake:
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
				continue
			}
		}
		s.runDue()
	}
}

// runDue pops every due job and ticks it on the pool. A job whose tick is
// in flight is out of the heap until the tick reschedules it.
func (s *Scheduler) runDue() {
	now := s.now()
	for {
		s.mu.Lock()
		if len(s.h) == 0 || s.h[0].at.After(now) {
			s.mu.Unlock()
			return
		}
		j := heap.Pop(&s.h).(*job)
		j.c.job = nil
		s.wg.Add(1)
		s.ticking.Add(1)
		s.mu.Unlock()
		s.sem <- struct{}{} // bounded: waits for a free slot
		go func(c *Cache) {
			defer func() { <-s.sem; s.ticking.Add(-1); s.wg.Done() }()
			c.tick()
		}(j.c)
	}
}

type jobHeap []*job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h jobHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *jobHeap) Push(x any)        { j := x.(*job); j.index = len(*h); *h = append(*h, j) }
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	*h = old[:len(old)-1]
	return j
}
