package lmtp

import (
	"bytes"
	"testing"
)

// BenchmarkSessionBody is the hot path of a message: Feed in data state, 64 KB reads,
// then re-encoding for the backends. Steady state allocates nothing.
func BenchmarkSessionBody(b *testing.B) {
	s := NewSession(&Config{Hostname: "mx.test"})
	var acts []Action
	feed := func(in []byte) {
		_, acts, _ = s.Feed(in)
	}
	feed([]byte("MAIL FROM:<a@b>\r\nRCPT TO:<x>\r\n"))
	s.ResumeRcpt(NewReply(250, "2.1.5", "OK"))
	feed([]byte("DATA\r\n"))
	chunk := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n.dot\r\n"), 64<<10/76)
	var enc DotEncoder
	out := make([]byte, 0, 2*len(chunk))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		feed(chunk)
		for _, a := range acts {
			if a.Kind == ActBody {
				out = enc.Append(out[:0], a.Data)
			}
		}
	}
}
