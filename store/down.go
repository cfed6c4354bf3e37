package store

import (
	"context"
	"fmt"
	"time"
)

// Down is a store that could not be opened (a read-only file system, a
// directory wehr may not write): every call fails with ErrUnavailable,
// so that each check that needs the store takes its store-down fallback
// (policyd.on_store_error) while the rest of wehr keeps working.
type Down struct {
	Err error // why the store is down
}

func (d Down) err() error { return fmt.Errorf("%w: %v", ErrUnavailable, d.Err) }

func (d Down) Get(context.Context, string) ([]byte, bool, error) { return nil, false, d.err() }
func (d Down) Do(context.Context, []Op) error                    { return d.err() }
func (d Down) Set(context.Context, string, []byte, time.Duration) error {
	return d.err()
}
func (d Down) Delete(context.Context, string) error { return d.err() }
func (d Down) Incr(context.Context, string, int64, time.Duration) (int64, error) {
	return 0, d.err()
}
func (d Down) Counters(context.Context, string, []int64, time.Duration) ([]int64, error) {
	return nil, d.err()
}
func (d Down) Window(context.Context, string, time.Time, time.Duration, int64) (int64, error) {
	return 0, d.err()
}
func (d Down) Greylist(context.Context, string, time.Time, GreylistPolicy) (GreylistEntry, error) {
	return GreylistEntry{}, d.err()
}
func (d Down) Lock(context.Context, string, string, time.Time, time.Duration) (int64, bool, error) {
	return 0, false, d.err()
}
func (d Down) Unlock(context.Context, string, string) error        { return d.err() }
func (d Down) Scan(context.Context, string, int) ([]string, error) { return nil, d.err() }
func (d Down) Ping(context.Context) error                          { return d.err() }
func (d Down) Close() error                                        { return nil }

var _ Store = Down{}
