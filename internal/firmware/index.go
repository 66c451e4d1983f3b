package firmware

import (
	"container/heap"
	"time"
)

// The scheduler's pass must not cost O(devices) per tick: a rollout keeps
// its updates counted by state and by phase, its queued updates per phase
// in a heap by rollout order, its updates in progress in a heap by their
// next deadline, and its notices to publish again in a heap by time. The
// heaps are lazy: an entry that no longer describes its update (the
// update moved on) is dropped when it comes up, so that every change is
// O(log n) and a pass looks only at what is due.

// dlEntry is an update's next deadline; current while gen is the
// update's generation (active.gen).
type dlEntry struct {
	at  time.Time
	id  string
	gen int
}

type dlHeap []dlEntry

func (h dlHeap) Len() int           { return len(h) }
func (h dlHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dlHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dlHeap) Push(x any)        { *h = append(*h, x.(dlEntry)) }
func (h *dlHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// qEntry is a queued update, by rollout order.
type qEntry struct {
	order int
	id    string
}

type qHeap []qEntry

func (h qHeap) Len() int           { return len(h) }
func (h qHeap) Less(i, j int) bool { return h[i].order < h[j].order }
func (h qHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *qHeap) Push(x any)        { *h = append(*h, x.(qEntry)) }
func (h *qHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// tally adds d (1 or -1) to the counts of u's state and phase.
func (a *active) tally(u *DeviceUpdate, d int) {
	a.count[u.State] += d
	for len(a.open) <= u.Phase {
		a.open = append(a.open, 0)
		a.queued = append(a.queued, nil)
	}
	if !u.State.Terminal() {
		a.open[u.Phase] += d
	}
	if u.Phase == 0 && u.State.failure() {
		a.phase0Failed += d
	}
}

// setState moves u to st, keeping the counts and the queues.
func (a *active) setState(u *DeviceUpdate, st State) {
	a.tally(u, -1)
	u.State = st
	a.tally(u, 1)
	if st == Queued {
		heap.Push(&a.queued[u.Phase], qEntry{u.Order, u.DeviceID})
	}
}

// deadline is when u's update must have moved on: its total timeout, and
// its step timeout or, once it rebooted, its health window or settle
// time. false when u is not in progress.
func deadline(u *DeviceUpdate, sp Spec) (time.Time, bool) {
	if !u.State.InProgress() {
		return time.Time{}, false
	}
	var d time.Time
	set := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if u.StartedAt != nil {
		set(u.StartedAt.Add(sp.TotalTimeout))
	}
	switch u.State {
	case Rebooting, Confirming:
		if u.ConfirmedAt != nil {
			set(u.ConfirmedAt.Add(sp.Settle))
		} else if u.RebootAt != nil {
			set(u.RebootAt.Add(sp.HealthWindow))
		}
	default:
		set(u.StateSince.Add(sp.StepTimeout))
	}
	return d, !d.IsZero()
}

// track notes that u changed: its earlier deadline entries lapse and, if
// it is in progress, its next deadline is queued.
func (a *active) track(u *DeviceUpdate) {
	a.gen[u.DeviceID]++
	if d, ok := deadline(u, a.r.Spec); ok {
		heap.Push(&a.deadlines, dlEntry{d, u.DeviceID, a.gen[u.DeviceID]})
	}
}

// setDue schedules the device's notice to be published again at t.
func (a *active) setDue(id string, t time.Time) {
	a.due[id] = t
	heap.Push(&a.dueQ, dlEntry{at: t, id: id})
}

// currentPhase is the lowest phase with an update not finished, -1 if
// none.
func (a *active) currentPhase() int {
	for p, n := range a.open {
		if n > 0 {
			return p
		}
	}
	return -1
}

// finishedCounts are the counts the abort and completion rules use.
func (a *active) finishedCounts() (finished, failures, open int) {
	failures = a.count[Failed] + a.count[TimedOut]
	finished = failures + a.count[Updated]
	open = len(a.updates) - finished - a.count[Canceled] - a.count[Skipped]
	return finished, failures, open
}
