package deadline

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

type key struct{}

func TestDeadline(t *testing.T) {
	bg := context.WithValue(context.Background(), key{}, "v")
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"before the deadline, unwaited", func(t *testing.T) {
			c, cancel := Timeout(bg, time.Hour)
			defer cancel()
			if c.Err() != nil || c.Value(key{}) != "v" {
				t.Fatal(c.Err(), c.Value(key{}))
			}
			if d, ok := c.Deadline(); !ok || time.Until(d) < 59*time.Minute {
				t.Fatal(d, ok)
			}
		}},
		{"past the deadline, unwaited: Err says so", func(t *testing.T) {
			c, cancel := Timeout(bg, 10*time.Millisecond)
			defer cancel()
			time.Sleep(20 * time.Millisecond)
			if !errors.Is(c.Err(), context.DeadlineExceeded) {
				t.Fatal(c.Err())
			}
			select {
			case <-c.Done():
			case <-time.After(time.Second):
				t.Fatal("Done asked for after the deadline did not close")
			}
		}},
		{"waited: Done closes at the deadline", func(t *testing.T) {
			c, cancel := Timeout(bg, 30*time.Millisecond)
			defer cancel()
			start := time.Now()
			<-c.Done()
			if d := time.Since(start); d < 25*time.Millisecond || !errors.Is(c.Err(), context.DeadlineExceeded) {
				t.Fatal(d, c.Err())
			}
		}},
		{"the parent canceled, unwaited and waited", func(t *testing.T) {
			p, pcancel := context.WithCancel(bg)
			c, cancel := Timeout(p, time.Hour)
			defer cancel()
			c2, cancel2 := Timeout(p, time.Hour)
			defer cancel2()
			done := c2.Done()
			pcancel()
			if !errors.Is(c.Err(), context.Canceled) {
				t.Fatal(c.Err())
			}
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Fatal("not closed with the parent")
			}
		}},
		{"canceled before Done", func(t *testing.T) {
			c, cancel := Timeout(bg, time.Hour)
			cancel()
			if !errors.Is(c.Err(), context.Canceled) {
				t.Fatal(c.Err())
			}
			select {
			case <-c.Done():
			default:
				t.Fatal("Done of a canceled context is open")
			}
		}},
		{"the parent's earlier deadline stands", func(t *testing.T) {
			p, pcancel := context.WithTimeout(bg, time.Minute)
			defer pcancel()
			c, cancel := Timeout(p, time.Hour)
			defer cancel()
			if d, _ := c.Deadline(); time.Until(d) > 2*time.Minute {
				t.Fatal(d)
			}
		}},
		{"a child context ends at our deadline", func(t *testing.T) {
			c, cancel := Timeout(bg, 20*time.Millisecond)
			defer cancel()
			child, ccancel := context.WithCancel(c)
			defer ccancel()
			select {
			case <-child.Done():
			case <-time.After(time.Second):
				t.Fatal("the child outlived the deadline")
			}
			if child.Value(key{}) != "v" {
				t.Fatal("value lost")
			}
		}},
		{"a lazy parent of a lazy child", func(t *testing.T) {
			p, pcancel := Timeout(bg, 20*time.Millisecond)
			defer pcancel()
			c, cancel := Timeout(p, time.Hour) // the parent ends first
			defer cancel()
			c2, cancel2 := With(bg, time.Now().Add(time.Hour))
			defer cancel2()
			c3, cancel3 := Timeout(c2, 20*time.Millisecond)
			defer cancel3()
			for _, x := range []context.Context{c, c3} {
				select {
				case <-x.Done():
				case <-time.After(time.Second):
					t.Fatal("not ended")
				}
			}
		}},
	} {
		t.Run(tc.name, tc.run)
	}
}

// Done, Err, Value and cancel from many goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	c, cancel := Timeout(context.Background(), 50*time.Millisecond)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if i%2 == 0 {
				<-c.Done()
			} else {
				for c.Err() == nil {
					c.Value(key{})
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	cancel()
}

func BenchmarkLazy(b *testing.B) {
	for b.Loop() {
		c, cancel := Timeout(context.Background(), time.Second)
		_ = c.Err()
		cancel()
	}
}

func BenchmarkStd(b *testing.B) {
	for b.Loop() {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.Err()
		cancel()
	}
}

// A lazy context under a lazy parent that ends first makes no timer
// until waited on: the parent's channel is not asked for.
func TestNestedStaysLazy(t *testing.T) {
	p, pcancel := Timeout(context.Background(), time.Minute)
	defer pcancel()
	c, cancel := Timeout(p, time.Hour)
	defer cancel()
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
	if p.(*ctx).inner != nil || c.(*ctx).inner != nil {
		t.Fatal("a timer was made without anyone waiting")
	}
	if d, _ := c.Deadline(); time.Until(d) > 2*time.Minute {
		t.Fatalf("deadline %v, want the parent's", d)
	}
}
