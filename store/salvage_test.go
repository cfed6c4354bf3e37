package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzSalvage: whatever a damaged file holds, salvage reads it without
// panicking, and keeps only durable keys with a record.
func FuzzSalvage(f *testing.F) {
	page := make([]byte, 4096)
	page[8], page[10] = 0x02, 1 // a leaf page of one element
	copy(page[16:], []byte{0, 0, 0, 0, 16, 0, 0, 0, 9, 0, 0, 0, 12, 0, 0, 0})
	copy(page[32:], "rdef:abcd\x00\x00\x00\x00\x00\x00\x00\x00{}{}")
	f.Add(page)
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		keys, err := salvage(p, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for k, rec := range keys {
			if !durable(k) || len(rec) < 8 {
				t.Fatalf("kept %q %q", k, rec)
			}
		}
	})
}
