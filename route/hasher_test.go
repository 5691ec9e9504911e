package route

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

const testSHA512Crypt = "{SHA512-CRYPT}$6$mBVar4Tg19MlFPKE$6WFWHtYMIeGd1zmJ/qzD.hr/spEjU.kEmnw0b9uwoURXCJVtz6Gwly9OMeCqw8.m6/GHP83QFvkcat2ysxzLg."

// waitFor yields until cond holds. It waits for goroutines to reach a
// state; nothing is asserted about how long that takes.
func waitFor(cond func() bool) {
	for !cond() {
		runtime.Gosched()
	}
}

func TestHasherBoundsConcurrency(t *testing.T) {
	const workers, callers = 3, 20
	h := NewHasher(workers)
	var inside, peak atomic.Int32
	release := make(chan struct{})
	h.inSlot = func() {
		n := inside.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		inside.Add(-1)
	}
	var wg sync.WaitGroup
	var matched atomic.Int32
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := h.Verify(context.Background(), testSHA512Crypt, "secret")
			if err != nil {
				t.Error(err)
			}
			if ok {
				matched.Add(1)
			}
		}()
	}
	// Every slot gets taken; the other callers queue.
	waitFor(func() bool { return inside.Load() == workers })
	if n := len(h.slots); n != workers {
		t.Errorf("slots held = %d; want %d", n, workers)
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p != workers {
		t.Errorf("peak concurrency = %d; want exactly %d", p, workers)
	}
	if matched.Load() != callers {
		t.Errorf("%d of %d verifications matched", matched.Load(), callers)
	}
	if len(h.slots) != 0 {
		t.Errorf("%d slots still held", len(h.slots))
	}
}

func TestHasherWaitRespectsContext(t *testing.T) {
	h := NewHasher(1)
	entered := make(chan struct{})
	release := make(chan struct{})
	h.inSlot = func() {
		entered <- struct{}{}
		<-release
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.Verify(context.Background(), testSHA512Crypt, "secret")
		done <- err
	}()
	<-entered // the only slot is taken

	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		_, err := h.Verify(ctx, testSHA512Crypt, "secret")
		waiting <- err
	}()
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Errorf("waiting Verify err = %v; want context.Canceled", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Error(err)
	}

	// An already-ended ctx fails before taking a slot.
	h.inSlot = func() { t.Error("slot taken with an ended ctx") }
	if _, err := h.Verify(ctx, testSHA512Crypt, "secret"); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with ended ctx err = %v", err)
	}
}

func TestHasherCheapSchemesSkipSlots(t *testing.T) {
	h := NewHasher(1)
	h.slots <- struct{}{} // every slot busy
	h.inSlot = func() { t.Error("cheap scheme took a slot") }
	for _, stored := range []string{"{PLAIN}secret", "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols="} {
		if ok, err := h.Verify(context.Background(), stored, "secret"); !ok || err != nil {
			t.Errorf("Verify(%q) = %v, %v", stored, ok, err)
		}
	}
}

func TestHasherNilAndDefaults(t *testing.T) {
	var h *Hasher
	if ok, err := h.Verify(context.Background(), testSHA512Crypt, "secret"); !ok || err != nil {
		t.Errorf("nil Hasher: %v, %v", ok, err)
	}
	if NewHasher(0).Workers() != runtime.GOMAXPROCS(0) || NewHasher(5).Workers() != 5 || h.Workers() != 0 {
		t.Error("Workers()")
	}
	if ok, _ := NewHasher(1).Verify(context.Background(), "{PLAIN}secret", "secret\x00x"); ok {
		t.Error("password with NUL matched")
	}
}

func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct{ name, stored string }{
		{"PLAIN", "{PLAIN}secret"},
		{"SSHA512", "{SSHA512}XBj4yJWHzZImrq3lTK8HbMVmHK6wLZfbkWguaij5YLeTc/6oN5aSU9w9eJTPJc37zXygnRtKk3Ze0R/z8ekSxnMCzX4="},
		{"SHA512-CRYPT", testSHA512Crypt},
		{"BLF-CRYPT-5", "{BLF-CRYPT}$2y$05$KaS4ZF.bqsLurGRgn70fP.Z4EXVi1/aobuaBDU7nZtzLuF7JrDsiK"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := NewHasher(1)
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := h.Verify(ctx, bc.stored, "secret"); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
