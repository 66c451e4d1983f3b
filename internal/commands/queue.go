package commands

import (
	"container/heap"
	"time"
)

// open is an unfinished command this node knows of.
type open struct {
	cmd Command
	// due is the next hand-over to the broker; zero when none is
	// scheduled (the device is offline, or the command was delivered).
	due time.Time
	// flush: waiting for its first hand-over since the device connected.
	// While a device has such commands, new ones queue behind them, so
	// that the device receives its commands oldest first.
	flush  bool
	dueIdx int // index in Service.dueQ, -1 when not in it
	expIdx int // index in Service.expQ, -1 when not in it
}

// device is what the service knows of one device's commands.
type device struct {
	connected bool
	cmds      []*open // unfinished, oldest first (creation time, then id)
}

func (d *device) flushing() (time.Time, bool) {
	for _, o := range d.cmds {
		if o.flush {
			return o.due, true
		}
	}
	return time.Time{}, false
}

// older orders commands by creation: time, then id (ids grow with time
// within a process, see newID).
func older(a, b *Command) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID < b.ID
}

// dueQueue orders scheduled hand-overs by time, then by creation, so that
// one device's commands due together go out oldest first.
type dueQueue []*open

func (q dueQueue) Len() int { return len(q) }
func (q dueQueue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return older(&q[i].cmd, &q[j].cmd)
}
func (q dueQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].dueIdx, q[j].dueIdx = i, j
}
func (q *dueQueue) Push(x any) { o := x.(*open); o.dueIdx = len(*q); *q = append(*q, o) }
func (q *dueQueue) Pop() any {
	old := *q
	o := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	o.dueIdx = -1
	return o
}

// expiryQueue orders unfinished commands by expiry.
type expiryQueue []*open

func (q expiryQueue) Len() int           { return len(q) }
func (q expiryQueue) Less(i, j int) bool { return q[i].cmd.ExpiresAt.Before(q[j].cmd.ExpiresAt) }
func (q expiryQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].expIdx, q[j].expIdx = i, j
}
func (q *expiryQueue) Push(x any) { o := x.(*open); o.expIdx = len(*q); *q = append(*q, o) }
func (q *expiryQueue) Pop() any {
	old := *q
	o := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	o.expIdx = -1
	return o
}

// The methods below are called with Service.mu held.

func (s *Service) dev(id string) *device {
	d := s.devs[id]
	if d == nil {
		d = &device{}
		s.devs[id] = d
	}
	return d
}

// track adds a command to the in-memory view (if new), keeping its
// device's list oldest first.
func (s *Service) track(c Command) *open {
	if o, ok := s.byID[c.ID]; ok {
		return o
	}
	o := &open{cmd: c, dueIdx: -1, expIdx: -1}
	s.byID[c.ID] = o
	d := s.dev(c.DeviceID)
	i := len(d.cmds)
	for i > 0 && older(&c, &d.cmds[i-1].cmd) {
		i--
	}
	d.cmds = append(d.cmds, nil)
	copy(d.cmds[i+1:], d.cmds[i:])
	d.cmds[i] = o
	heap.Push(&s.expQ, o)
	return o
}

// schedule sets (or, with a zero time, clears) o's next hand-over.
func (s *Service) schedule(o *open, due time.Time) {
	o.due = due
	switch {
	case due.IsZero() && o.dueIdx >= 0:
		heap.Remove(&s.dueQ, o.dueIdx)
	case due.IsZero():
	case o.dueIdx >= 0:
		heap.Fix(&s.dueQ, o.dueIdx)
	default:
		heap.Push(&s.dueQ, o)
	}
}

// forget removes a command from the in-memory view.
func (s *Service) forget(id string) *open {
	o, ok := s.byID[id]
	if !ok {
		return nil
	}
	delete(s.byID, id)
	if o.dueIdx >= 0 {
		heap.Remove(&s.dueQ, o.dueIdx)
	}
	if o.expIdx >= 0 {
		heap.Remove(&s.expQ, o.expIdx)
	}
	if d := s.devs[o.cmd.DeviceID]; d != nil {
		for i, x := range d.cmds {
			if x == o {
				d.cmds = append(d.cmds[:i], d.cmds[i+1:]...)
				break
			}
		}
		if len(d.cmds) == 0 && !d.connected {
			delete(s.devs, o.cmd.DeviceID)
		}
	}
	return o
}

// resendable reports whether a command is handed to the broker (again)
// when due: once delivered, the device has it.
func resendable(status string) bool { return status == StatusQueued || status == StatusSent }
