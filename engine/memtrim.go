package engine

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// The memory trim (memory_trim_interval): once a burst of logins is over, a garbage
// collection and the free heap returned to the kernel (debug.FreeOSMemory), so that an
// idle proxy's RSS is what its sessions hold, not the login phase's garbage as well. Go
// alone keeps it: with GOGC=100 the heap's goal is twice the live heap and the background
// scavenger returns only what lies above that goal, so after a burst of logins a
// relay-mostly process, which then allocates next to nothing, stays at about twice its
// live heap until the next burst.
//
// The signal is the heap's allocations (runtime/metrics /gc/heap/allocs:bytes), not the
// login counters: they count every source of garbage (failed logins, TLS handshakes that
// fail, refused connections, LMTP, the admin API) in the bytes a trim is about, whatever
// one login costs (a TLS login allocates several times a plain one, an LDAP lookup more
// than a passwd-file one). A trim runs when all of these hold:
//
//   - at least memory_trim_interval since the last one: the bound on its cost, at most
//     one trim (two collections of the live heap, a few ms for 4,000 sessions) per
//     interval;
//   - it would return at least trimMinBytes and at least a quarter of the live heap: a
//     collection costs in proportion to the live heap, so a smaller gain is not worth
//     one; a steady trickle of logins is trimmed at most once per quarter of the live
//     heap it allocates, where Go collects once per live heap allocated anyway;
//   - the process is quiet: at the rate it allocated over the last trimQuiet, it would
//     take at least trimRefill to fill what the trim returns again. A burst allocates far
//     faster than that, so no trim runs during one (the memory would be taken back at
//     once); a light trickle of logins does not keep trims away for ever, as a "no login
//     for 2 s" rule would on a busy server.
//
// It runs on its own goroutine, never on an event loop; the collection is concurrent,
// so the loops go on while it marks.
type memTrimmer struct {
	log      *zap.Logger
	interval time.Duration // memory_trim_interval
	tick     time.Duration // how often the heap is looked at
	quiet    int           // ticks in the quiet window

	stopc chan struct{}
	done  chan struct{}
	trims atomic.Int64
}

const (
	trimTick   = 500 * time.Millisecond
	trimQuiet  = 2 * time.Second
	trimRefill = 32 * time.Second // 16 quiet windows
)

// trimMinBytes is the least a trim must return: below it the heap is small (its goal is
// never under 4 MiB) and a trim not worth a log line. A variable for the tests, whose
// heap is that small.
var trimMinBytes uint64 = 2 << 20

// startMemTrim starts the trim; nil (off) when memory_trim_interval is 0.
func startMemTrim(interval time.Duration, log *zap.Logger) *memTrimmer {
	if interval <= 0 {
		return nil
	}
	m := &memTrimmer{
		log:      log,
		interval: interval,
		tick:     trimTick,
		quiet:    int(trimQuiet / trimTick),
		stopc:    make(chan struct{}),
		done:     make(chan struct{}),
	}
	go m.run()
	return m
}

// stop ends the goroutine and waits for it; nil-safe.
func (m *memTrimmer) stop() {
	if m == nil {
		return
	}
	close(m.stopc)
	<-m.done
}

// heapState is what a trim decision reads from runtime/metrics.
type heapState struct {
	allocs     uint64 // bytes allocated since the process started
	live       uint64 // the live heap at the last collection
	returnable uint64 // free heap pages not yet returned, plus what was allocated since the last collection
}

var trimSamples = [...]string{
	"/gc/heap/allocs:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
}

func readHeap() heapState {
	var s [len(trimSamples)]metrics.Sample
	for i, name := range trimSamples {
		s[i].Name = name
	}
	metrics.Read(s[:])
	h := heapState{allocs: s[0].Value.Uint64(), live: s[1].Value.Uint64()}
	// The objects not yet collected above the live heap are garbage or new; a collection
	// frees the garbage, and FreeOSMemory returns it with the free pages.
	h.returnable = s[2].Value.Uint64()
	if objects := s[3].Value.Uint64(); objects > h.live {
		h.returnable += objects - h.live
	}
	return h
}

// worthTrim is the decision past the interval: h now, recent the bytes allocated over the
// quiet window.
func worthTrim(h heapState, recent uint64) bool {
	if h.returnable < trimMinBytes || h.returnable < h.live/4 {
		return false
	}
	return recent*uint64(trimRefill/trimQuiet) <= h.returnable
}

func (m *memTrimmer) run() {
	defer close(m.done)
	t := time.NewTicker(m.tick)
	defer t.Stop()
	// allocs[i%len] is the allocation total at tick i: the oldest entry is the one a
	// quiet window ago.
	allocs := make([]uint64, m.quiet+1)
	var last time.Time // the last trim's end; zero: none yet
	var allocsAtLast uint64
	for i := 0; ; i++ {
		select {
		case <-m.stopc:
			return
		case <-t.C:
		}
		h := readHeap()
		allocs[i%len(allocs)] = h.allocs
		if i < m.quiet {
			continue
		}
		recent := h.allocs - allocs[(i+1)%len(allocs)]
		if (!last.IsZero() && time.Since(last) < m.interval) || !worthTrim(h, recent) {
			continue
		}
		m.trim(h, h.allocs-allocsAtLast)
		last, allocsAtLast = time.Now(), h.allocs
	}
}

// trim is one trim, logged; allocated is what was allocated since the last one (or the
// start).
func (m *memTrimmer) trim(before heapState, allocated uint64) {
	rssBefore, _ := residentBytes()
	start := time.Now()
	// Two collections, as SIGUSR1 runs them: the first only moves the sync.Pools' contents
	// (the login phase's buffers among them) to their victim caches, the second frees
	// them; FreeOSMemory then returns every free page.
	runtime.GC()
	debug.FreeOSMemory()
	took := time.Since(start)
	rssAfter, _ := residentBytes()
	m.trims.Add(1)
	m.log.Debug("memory returned to the kernel after a burst",
		zap.Int64("rss_before", rssBefore),
		zap.Int64("rss_after", rssAfter),
		zap.Int64("returned", rssBefore-rssAfter),
		zap.Uint64("heap_live", readHeap().live),
		zap.Uint64("estimated", before.returnable),
		zap.Uint64("allocated_since_last", allocated),
		zap.Duration("took", took),
	)
}
