package hub

// HoldConfigObserver holds h's configuration observer back until hold is
// closed; call it before Run.
func HoldConfigObserver(h *Hub, hold <-chan struct{}) { h.observerHold = hold }
