package tiered

// This file holds the flights of this process that wait for another node's
// lease on a key, and wakes them when the value lands (a Wake message, or a
// write of the key here).

// addWaiter registers a flight of key as waiting for a lease. There is
// usually one flight per key, but a write makes later callers start a new
// flight while older ones finish (see written), so waiters are per flight.
func (c *Cache[V]) addWaiter(key string) chan struct{} {
	ch := make(chan struct{}, 1)
	c.waitMu.Lock()
	if c.waiters[key] == nil {
		c.waiters[key] = make(map[chan struct{}]struct{})
	}
	c.waiters[key][ch] = struct{}{}
	c.waitMu.Unlock()
	return ch
}

func (c *Cache[V]) removeWaiter(key string, ch chan struct{}) {
	c.waitMu.Lock()
	delete(c.waiters[key], ch)
	if len(c.waiters[key]) == 0 {
		delete(c.waiters, key)
	}
	c.waitMu.Unlock()
}

// wake tells the flights waiting for keys' leases to look again.
func (c *Cache[V]) wake(keys ...string) {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	if len(c.waiters) == 0 {
		return
	}
	for _, k := range keys {
		for ch := range c.waiters[k] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}
