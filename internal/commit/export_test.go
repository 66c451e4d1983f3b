package commit

import "time"

// SetStopHooks has c call enqueue in every Enqueue once it found c running
// and before it queues its ticket, stopping once Run closed its stopping
// channel, and draining just before Run drains the queue. Call it before
// Run and before any Enqueue.
func SetStopHooks(c *Committer, enqueue, stopping, draining func()) {
	c.hooks = &hooks{enqueue: enqueue, stopping: stopping, draining: draining}
}

// EnqueuesHeldOff reports whether Run is waiting for the Enqueues under
// way to finish: then a new Enqueue cannot start (a writer waits for the
// RWMutex, which makes TryRLock fail).
func EnqueuesHeldOff(c *Committer) bool {
	if c.enqueuing.TryRLock() {
		c.enqueuing.RUnlock()
		return false
	}
	return true
}

// SetSlowBatch sets the wait from which c logs a batch as slow.
func SetSlowBatch(c *Committer, d time.Duration) { c.slowBatch = d }

// SetClock sets the time c's slow-batch log limiter is given.
func SetClock(c *Committer, now func() time.Time) { c.clock = now }
