// Package deadline makes contexts that end at a deadline but start no
// timer until something waits on them. A message's verification sets a
// deadline for itself and one for each check; on the common path every
// DNS answer comes from the cache, nothing ever waits on a context's
// channel, and the timers context.WithDeadline starts and stops (with
// their locks and allocations) were 4 % of the milter's CPU a message.
//
// A context made here behaves as context.WithDeadline's: Err reports the
// deadline once it has passed, and Done's channel closes at the deadline
// or with the parent. Only the timer behind Done is made on the first
// call to Done.
package deadline

import (
	"context"
	"sync"
	"time"
)

// ctx is the lazy context: parent and d until Done is asked for, then
// inner, a context.WithDeadline of them.
type ctx struct {
	context.Context // the parent
	d               time.Time

	mu       sync.Mutex
	inner    context.Context
	cancel   context.CancelFunc
	canceled bool // canceled before inner was made
}

// With returns a context that ends at d or when parent ends, and its
// cancel function, which must be called as context.WithDeadline's.
func With(parent context.Context, d time.Time) (context.Context, context.CancelFunc) {
	if pd, ok := parent.Deadline(); ok && pd.Before(d) {
		// The parent ends first, at its own deadline: so does this one
		// (context.WithCancel would ask the parent for its channel now).
		d = pd
	}
	c := &ctx{Context: parent, d: d}
	return c, c.stop
}

// Timeout is With(parent, now + d).
func Timeout(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return With(parent, time.Now().Add(d))
}

func (c *ctx) Deadline() (time.Time, bool) { return c.d, true }

// make makes inner; c.mu is held.
func (c *ctx) make() context.Context {
	if c.inner == nil {
		c.inner, c.cancel = context.WithDeadline(c.Context, c.d)
		if c.canceled {
			c.cancel()
		}
	}
	return c.inner
}

func (c *ctx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.make().Done()
}

func (c *ctx) Err() error {
	c.mu.Lock()
	inner, canceled := c.inner, c.canceled
	c.mu.Unlock()
	switch {
	case inner != nil:
		return inner.Err()
	case canceled:
		return context.Canceled
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.d) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value answers from inner once it exists: context.WithCancel of this
// context then finds inner's cancelCtx and hangs on it, with no
// goroutine of its own.
func (c *ctx) Value(key any) any {
	c.mu.Lock()
	inner := c.inner
	c.mu.Unlock()
	if inner != nil {
		return inner.Value(key)
	}
	return c.Context.Value(key)
}

func (c *ctx) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.canceled = true
	if c.cancel != nil {
		c.cancel()
	}
}

func (c *ctx) String() string { return "deadline.With(" + c.d.String() + ")" }
