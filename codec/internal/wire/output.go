package wire

import "doorman/codec/login"

// MaxOutput bounds what one call may produce. A client that pipelines commands without
// reading the answers is cut off, as Dovecot cuts it off when its 4 KiB output buffer
// overflows; ours is larger so that no real client ever meets it.
const MaxOutput = 64 << 10

// firstBuffer is the output buffer's first size: enough for any ordinary answer.
// keepBuffer is the largest one kept between calls; a larger one, grown by an unusual
// burst, is dropped so an idle session doesn't hold it.
const (
	firstBuffer = 512
	keepBuffer  = 4 << 10
)

// Output is what one call on a Session produces: the bytes written (B) and the actions
// they are cut into. Writers append to B; Emit and Close cut what was written since the
// last action into an ActWrite (or the ActClose's Data). It must not be copied once
// used: its first actions live in it, so an ordinary call allocates nothing for them.
type Output struct {
	B       []byte
	flushed int
	acts    []login.Action
	arr     [2]login.Action
}

// Begin starts a call: the previous call's Data is no longer valid.
func (o *Output) Begin() {
	if cap(o.B) > keepBuffer || o.B == nil {
		o.B = make([]byte, 0, firstBuffer)
	}
	o.B, o.flushed = o.B[:0], 0
	if o.acts == nil {
		o.acts = o.arr[:0]
	}
	clear(o.acts)
	o.acts = o.acts[:0]
}

// Full reports whether the call has written more than MaxOutput bytes.
func (o *Output) Full() bool { return len(o.B) > MaxOutput }

// Flush turns what was written since the last action into an ActWrite.
func (o *Output) Flush() {
	if len(o.B) > o.flushed {
		o.acts = append(o.acts, login.Action{Kind: login.ActWrite, Data: o.B[o.flushed:len(o.B):len(o.B)]})
		o.flushed = len(o.B)
	}
}

// Emit adds a non-write action, after whatever was written so far.
func (o *Output) Emit(a login.Action) {
	o.Flush()
	o.acts = append(o.acts, a)
}

// Close adds an ActClose whose Data is what was written since the last action (maybe
// nothing). Whether the session was already closed is the caller's to check.
func (o *Output) Close(reason string) {
	data := o.B[o.flushed:len(o.B):len(o.B)]
	o.flushed = len(o.B)
	o.acts = append(o.acts, login.Action{Kind: login.ActClose, Data: data, Reason: reason})
}

// End finishes a call and returns its actions, nil if none.
func (o *Output) End() []login.Action {
	o.Flush()
	if len(o.acts) == 0 {
		return nil
	}
	return o.acts
}
