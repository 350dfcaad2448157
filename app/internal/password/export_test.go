package password

// Test-only views of a Hasher's internals.

// InFlight returns how many hashes h is computing right now.
func InFlight(h *Hasher) int { return len(h.slots) }

// HoldSlot occupies one of h's slots until release is called.
func HoldSlot(h *Hasher) (release func()) {
	h.slots <- struct{}{}
	return func() { <-h.slots }
}

// DummyParams returns the parameters of h's dummy hash.
func DummyParams(h *Hasher) Params {
	p, _, _, err := decode(h.dummy)
	if err != nil {
		panic(err)
	}
	return p
}
