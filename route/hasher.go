package route

import (
	"context"
	"runtime"
	"strings"
)

// Hasher verifies passwords with at most a fixed number of expensive
// verifications running at once, so a burst of logins (or an attack) queues
// instead of taking every CPU from the relay. Cheap schemes (PLAIN, the
// plain and salted SHA/MD5 digests) run inline without a slot.
//
// A nil *Hasher verifies inline without any limit.
type Hasher struct {
	slots chan struct{}
	// inSlot, when set by tests, runs while a slot is held.
	inSlot func()
}

// NewHasher returns a Hasher running at most workers verifications at once;
// workers <= 0 means GOMAXPROCS.
func NewHasher(workers int) *Hasher {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return &Hasher{slots: make(chan struct{}, workers)}
}

// Workers is the concurrency limit.
func (h *Hasher) Workers() int {
	if h == nil {
		return 0
	}
	return cap(h.slots)
}

// Verify reports whether password matches stored ("{SCHEME}data"; without a
// scheme, CRYPT). A password containing a NUL byte never matches. Waiting for a slot ends early, with ctx.Err(), when ctx
// ends. Other errors wrap ErrUnknownScheme (cannot check this hash) or
// ErrInvalidHash (the stored data is broken); neither says anything about the
// password.
func (h *Hasher) Verify(ctx context.Context, stored, password string) (bool, error) {
	if strings.IndexByte(password, 0) >= 0 {
		// Dovecot handles passwords as C strings, and HMAC (PBKDF2) pads
		// keys with NULs: never let "secret\x00…" stand in for "secret".
		return false, nil
	}
	s, enc, explicit, data, err := schemeOf(stored)
	if err != nil {
		return false, err
	}
	if h == nil || s.cheap {
		return verifyDecoded(s, enc, explicit, data, password)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-h.slots }()
	if h.inSlot != nil {
		h.inSlot()
	}
	return verifyDecoded(s, enc, explicit, data, password)
}

func verifyDecoded(s *scheme, enc encoding, explicit bool, data, password string) (bool, error) {
	raw, err := decode(s, enc, explicit, data)
	if err != nil {
		return false, err
	}
	return s.verify(raw, password)
}
