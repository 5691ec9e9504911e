package engine

import (
	"net/netip"
	"sync"
	"time"
)

// disconnectSpreader is login_proxy_max_disconnect_delay: when a backend drops its sessions
// (it died, or was restarted), their clients are disconnected spread over up to that long
// instead of all at once, so they do not all reconnect in the same second. A "wave" is the
// drops from one backend address that follow each other; the k-th drop of a wave over n
// sessions waits k/n of the delay.
type disconnectSpreader struct {
	max time.Duration
	mu  sync.Mutex
	by  map[netip.AddrPort]*spreadState
}

type spreadState struct {
	active   int       // relayed sessions to this backend
	lastDrop time.Time // the wave goes on while drops follow each other within max
	dropped  int       // drops in this wave
	total    int       // sessions the wave can reach: active at its start
}

func newDisconnectSpreader(max time.Duration) *disconnectSpreader {
	return &disconnectSpreader{max: max, by: map[netip.AddrPort]*spreadState{}}
}

// started counts a relayed session to target; ended uncounts it.
func (d *disconnectSpreader) started(target netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.by[target]
	if st == nil {
		st = &spreadState{}
		d.by[target] = st
	}
	st.active++
}

func (d *disconnectSpreader) ended(target netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st := d.by[target]; st != nil {
		if st.active--; st.active <= 0 && time.Since(st.lastDrop) > d.max {
			delete(d.by, target)
		}
	}
}

// delay is how long a client whose backend at target ended its side waits for its own close.
func (d *disconnectSpreader) delay(target netip.AddrPort, now time.Time) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.by[target]
	if st == nil {
		return 0
	}
	if now.Sub(st.lastDrop) > d.max || st.dropped >= st.total {
		st.dropped, st.total = 0, st.active
	}
	st.lastDrop = now
	st.dropped++
	if st.total <= 1 {
		return 0
	}
	return time.Duration(int64(d.max) * int64(st.dropped-1) / int64(st.total))
}
