package monitors

// TailStats returns the events and the estimated bytes s's tail holds, and
// the Seq after which it holds every event.
func TailStats(s *Service) (n int, bytes int64, covered int64) {
	n, bytes = s.tail.stats()
	s.tail.mu.Lock()
	defer s.tail.mu.Unlock()
	return n, bytes, s.tail.covered
}

// QueueStats returns the events and the estimated bytes in the queue of
// monitor id's running send loop (0, 0 if none).
func QueueStats(s *Service, id string) (n int, bytes int64) {
	e, err := s.entry(id)
	if err != nil {
		return 0, 0
	}
	e.mu.Lock()
	sd := e.sender
	e.mu.Unlock()
	if sd == nil {
		return 0, 0
	}
	if q := sd.qp.Load(); q != nil {
		return q.stats()
	}
	return 0, 0
}

// RetainedSize is retainedSize.
var RetainedSize = retainedSize
