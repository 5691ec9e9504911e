//go:build linux

package relay

import (
	"testing"
	"unsafe"
)

// Every idle relayed session holds one sess: it must stay in the 176-byte size class
// (the login leftovers live behind sess.pre, dropped once written).
func TestSessSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(sess{}); n > 176 {
		t.Fatalf("sess is %d bytes: past the 176-byte size class, every idle session pays the next one", n)
	}
}
