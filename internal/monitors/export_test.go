package monitors

// TailStats returns the events and the estimated bytes s's tail holds, and
// the Seq after which it holds every event.
func TailStats(s *Service) (n int, bytes int64, covered int64) {
	n, bytes = s.tail.stats()
	s.tail.mu.Lock()
	defer s.tail.mu.Unlock()
	return n, bytes, s.tail.covered
}
