package store

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// durablePrefixes are the keys that do not rebuild themselves: a damaged
// store file is searched for them before a new one starts: the DMARC
// report rows, the marks of reports sent, the suppression list and the
// reports received (rin...).
var durablePrefixes = []string{"rrow:", "rdef:", "rsent:", "rsup:", "rin"}

// salvage reads the durable keys of a damaged store file page by page,
// without trusting its meta pages or its tree: every page that looks like
// a leaf page is decoded with bounds checks, and its elements kept if
// their key is durable and their record has not expired. A page may
// appear in several versions (bbolt leaves freed pages as they were);
// counts only grow, so of the versions of a Counters value the largest
// wins, which is the newest.
func salvage(path string, now time.Time) (map[string][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pageSize := 4096
	if len(data) >= 28 {
		if ps := int(binary.LittleEndian.Uint32(data[24:])); ps >= 512 && ps <= 1<<16 && ps&(ps-1) == 0 {
			pageSize = ps
		}
	}
	out := map[string][]byte{}
	for off := 0; off+16 <= len(data); off += pageSize {
		const leafPage = 0x02
		flags := binary.LittleEndian.Uint16(data[off+8:])
		count := int(binary.LittleEndian.Uint16(data[off+10:]))
		overflow := int(binary.LittleEndian.Uint32(data[off+12:]))
		if flags != leafPage || count == 0 {
			continue
		}
		end := min(off+(1+overflow)*pageSize, len(data))
		if overflow > 1<<20 {
			end = min(off+pageSize, len(data))
		}
		page := data[off:end]
		for i := range count {
			e := 16 + 16*i
			if e+16 > len(page) {
				break
			}
			eflags := binary.LittleEndian.Uint32(page[e:])
			pos := int(binary.LittleEndian.Uint32(page[e+4:]))
			ksize := int(binary.LittleEndian.Uint32(page[e+8:]))
			vsize := int(binary.LittleEndian.Uint32(page[e+12:]))
			k := e + pos
			if eflags&0x01 != 0 || pos < 0 || ksize <= 0 || vsize < 8 || k+ksize+vsize > len(page) || k < e {
				continue // a nested bucket, or garbage
			}
			key := string(page[k : k+ksize])
			if !durable(key) {
				continue
			}
			rec := page[k+ksize : k+ksize+vsize]
			if exp := expiry(rec); exp != 0 && exp <= now.UnixNano() {
				continue
			}
			if old, ok := out[key]; ok && !newer(key, rec, old) {
				continue
			}
			out[key] = append([]byte(nil), rec...)
		}
	}
	return out, nil
}

func durable(key string) bool {
	for _, p := range durablePrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// newer says whether rec is a later version of key than old: the larger
// count of a Counters value, else the later expiry.
func newer(key string, rec, old []byte) bool {
	if strings.HasPrefix(key, "rrow:") {
		a, b := parseCounters(rec[8:]), parseCounters(old[8:])
		if len(a) > 0 && len(b) > 0 && a[0] != b[0] {
			return a[0] > b[0]
		}
	}
	return expiry(rec) > expiry(old)
}

// salvageInto copies what salvage found in the file at from into db.
func salvageInto(db *bolt.DB, from string, now time.Time) (int, error) {
	keys, err := salvage(from, now)
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV)
		for k, rec := range keys {
			if err := b.Put([]byte(k), rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: salvage: %w", err)
	}
	return len(keys), nil
}
