//go:build soak

package integration

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/wehr/wehr/store/storetest"
)

// TestSoak (make soak; built only with -tags soak, never by make test)
// sends mail through a Postfix + wehr + Redis + Dovecot world of its own
// for WEHR_SOAK_DURATION (default 1h) at half the rate measured in a
// calibration run first, samples wehr's memory, goroutines, open files
// and CPU every WEHR_SOAK_INTERVAL (10s), writes them to
// WEHR_SOAK_OUT/soak.csv, and checks what a daemon that runs for years
// needs: after the warm-up its resident memory stays within ±10 %, its
// goroutines and open files do not grow, nothing is logged as an error,
// and every accepted message is delivered exactly once (spoofs of a
// p=reject domain, a tenth of the mix, must be refused every time).
func TestSoak(t *testing.T) {
	dur := envDuration(t, "WEHR_SOAK_DURATION", time.Hour)
	interval := envDuration(t, "WEHR_SOAK_INTERVAL", 10*time.Second)
	warm := min(max(dur/10, 30*time.Second), 5*time.Minute)
	out := os.Getenv("WEHR_SOAK_OUT")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	sw := startSoakWorld(t)
	defer sw.stop()

	// Calibration: as fast as 8 senders go, for 30 s.
	cal := sw.load(t, 0, 8, 30*time.Second, nil)
	maxRate := float64(cal.accepted.Load()+cal.refused.Load()) / 30
	rate := maxRate / 2
	t.Logf("calibration: %.0f messages/s at most (8 senders); soak at %.0f/s for %v (warm-up %v)", maxRate, rate, dur, warm)
	if cal.smtpErrors.Load() > 0 || cal.temp.Load() > 0 {
		t.Fatalf("calibration: %d SMTP errors, %d 4xx", cal.smtpErrors.Load(), cal.temp.Load())
	}
	// Let the calibration's mail drain before measuring.
	sw.waitDelivered(t, cal, 2*time.Minute)

	csvPath := filepath.Join(out, "soak.csv")
	csv, err := os.Create(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	defer csv.Close()
	fmt.Fprintln(csv, "seconds,sent,accepted,refused,temp,smtp_errors,delivered,queue,rss_mb,goroutines,fds,cpu_seconds,heap_mb,sent_per_s,delivered_per_s,cpu_percent")
	var samples []soakSample
	start := time.Now()
	base := sw.deliveredCount()
	sample := func(st *soakStats) {
		s := sw.sample(t, st)
		s.seconds = time.Since(start).Seconds()
		s.delivered -= base
		prev := soakSample{cpu: s.cpu}
		if len(samples) > 0 {
			prev = samples[len(samples)-1]
		}
		span := max(s.seconds-prev.seconds, 1)
		samples = append(samples, s)
		fmt.Fprintf(csv, "%.0f,%d,%d,%d,%d,%d,%d,%d,%.1f,%.0f,%.0f,%.2f,%.1f,%.1f,%.1f,%.1f\n", s.seconds, s.sent, s.accepted, s.refused, s.temp,
			s.smtpErrors, s.delivered, s.queue, s.rssMB, s.goroutines, s.fds, s.cpu, s.heapMB,
			float64(s.sent-prev.sent)/span, float64(s.delivered-prev.delivered)/span, (s.cpu-prev.cpu)/span*100)
	}
	stats := &soakStats{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				sample(stats)
			}
		}
	}()
	sw.load(t, rate, 16, dur, stats)
	cancel()
	<-done
	sw.waitDelivered(t, stats, 3*time.Minute)
	sample(stats)

	// The verdict.
	var after []soakSample
	for _, s := range samples {
		if s.seconds >= warm.Seconds() {
			after = append(after, s)
		}
	}
	if len(after) < 4 {
		t.Fatalf("%d samples after the warm-up: run longer", len(after))
	}
	ref := (after[0].rssMB + after[1].rssMB + after[2].rssMB) / 3
	lo, hi := after[0].rssMB, after[0].rssMB
	for _, s := range after {
		lo, hi = min(lo, s.rssMB), max(hi, s.rssMB)
	}
	last := samples[len(samples)-1]
	sent := last.sent
	summary := fmt.Sprintf(`soak of %v at %.0f messages/s (half of %.0f measured; %.1f/s reached), warm-up %v
messages: %d sent, %d accepted, %d refused (the spoofs), %d 4xx, %d SMTP errors, %d delivered, %d delivered twice
wehr RSS after warm-up: %.1f MB at first, %.1f–%.1f MB (%+.1f %% / %+.1f %%), heap %.1f → %.1f MB
goroutines: %.0f → %.0f (first and last quarter after warm-up: %.0f, %.0f)
open files: %.0f → %.0f (first and last quarter after warm-up: %.0f, %.0f)
wehr CPU: %.0f s for %d messages: %.0f µs per message
wehr log: %d ERROR lines, %d WARN lines
%s`, dur, rate, maxRate, float64(sent)/dur.Seconds(), warm,
		sent, last.accepted, last.refused, last.temp, last.smtpErrors, last.delivered, sw.twice(),
		ref, lo, hi, (lo-ref)/ref*100, (hi-ref)/ref*100, after[0].heapMB, last.heapMB,
		after[0].goroutines, last.goroutines, quarterMean(after, true, func(s soakSample) float64 { return s.goroutines }), quarterMean(after, false, func(s soakSample) float64 { return s.goroutines }),
		after[0].fds, last.fds, quarterMean(after, true, func(s soakSample) float64 { return s.fds }), quarterMean(after, false, func(s soakSample) float64 { return s.fds }),
		last.cpu-after[0].cpu, last.sent-after[0].sent, (last.cpu-after[0].cpu)/float64(max(1, last.sent-after[0].sent))*1e6,
		sw.logCount("level=ERROR"), sw.logCount("level=WARN"), sw.logLines("level=WARN", 5))
	t.Log("\n" + summary)
	if err := os.WriteFile(filepath.Join(out, "summary.txt"), []byte(summary), 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("samples in %s", csvPath)

	for _, s := range after {
		if d := (s.rssMB - ref) / ref; d > 0.10 || d < -0.10 {
			t.Errorf("at %.0f s RSS %.1f MB is %+.1f %% from %.1f MB after the warm-up", s.seconds, s.rssMB, d*100, ref)
			break
		}
	}
	flat := func(what string, f func(soakSample) float64) {
		first, lastQ := quarterMean(after, true, f), quarterMean(after, false, f)
		if lastQ > first*1.10+5 {
			t.Errorf("%s grew: %.0f in the first quarter after the warm-up, %.0f in the last", what, first, lastQ)
		}
	}
	flat("goroutines", func(s soakSample) float64 { return s.goroutines })
	flat("open files", func(s soakSample) float64 { return s.fds })
	if n := sw.logCount("level=ERROR"); n > 0 {
		t.Errorf("wehr logged %d errors:\n%s", n, sw.logLines("level=ERROR", 10))
	}
	if last.smtpErrors > 0 || last.temp > 0 {
		t.Errorf("%d SMTP errors and %d 4xx replies (a soak at half the maximum must see neither)", last.smtpErrors, last.temp)
	}
	sw.checkDeliveries(t, cal, stats)
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// quarterMean is the mean of f over the first (or last) quarter.
func quarterMean(s []soakSample, first bool, f func(soakSample) float64) float64 {
	n := max(1, len(s)/4)
	part := s[len(s)-n:]
	if first {
		part = s[:n]
	}
	var sum float64
	for _, x := range part {
		sum += f(x)
	}
	return sum / float64(n)
}

type soakSample struct {
	seconds                             float64
	sent, accepted, refused, temp       int64
	smtpErrors, delivered, queue        int64
	rssMB, goroutines, fds, cpu, heapMB float64
}

// soakStats counts one load run's outcomes; outcome[seq] is 'a'
// (accepted), 'r' (refused 5xx), 't' (4xx) or 'e' (no reply).
type soakStats struct {
	sent, accepted, refused, temp, smtpErrors atomic.Int64
	mu                                        sync.Mutex
	outcome                                   map[int64]byte
}

func (s *soakStats) record(seq int64, o byte) {
	s.mu.Lock()
	if s.outcome == nil {
		s.outcome = map[int64]byte{}
	}
	s.outcome[seq] = o
	s.mu.Unlock()
}

type soakWorld struct {
	dir         string
	postfix     *Postfix
	dovecot     *Dovecot
	wehr        *Wehr
	redis       *storetest.Redis
	metricsPort int
	templates   []string // pre-signed messages by kind, without X-Soak-Seq
	seq         atomic.Int64

	mu        sync.Mutex
	delivered map[int64]int
	// deliveries is the sum of delivered's counts.
	deliveries int64
	folder     map[int64]string
	stopScan   chan struct{}
	scanDone   chan struct{}
}

const soakUser = "soak@example.test"

func startSoakWorld(t *testing.T) *soakWorld {
	dir, err := WorkDir("wsoak")
	if err != nil {
		t.Fatal(err)
	}
	sw := &soakWorld{dir: dir, delivered: map[int64]int{}, folder: map[int64]string{}}
	// The senders: 50 hosts of soak.example at 192.0.2.100-149, each
	// with forward-confirmed reverse DNS; SPF and DKIM pass, p=reject.
	zone := "soak.example. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n_dmarc.soak.example. 300 IN TXT \"v=DMARC1; p=reject\"\n"
	for i := 100; i < 150; i++ {
		zone += fmt.Sprintf("%d.2.0.192.in-addr.arpa. 300 IN PTR mail-%d.soak.example.\nmail-%d.soak.example. 300 IN A 192.0.2.%d\n", i, i, i, i)
	}
	if err := w.dns.AddZone(zone); err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	w.dns.AddTXT("s1._domainkey.soak.example", "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))
	_, ek, _ := ed25519.GenerateKey(rand.Reader)
	w.dns.AddTXT("s2._domainkey.soak.example", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(ek.Public().(ed25519.PublicKey)))
	sign := func(msg, sel string, key crypto.Signer) string {
		var b strings.Builder
		err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: "soak.example", Selector: sel, Signer: key,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
			HeaderKeys: []string{"From", "To", "Subject", "Date"}})
		if err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	body := strings.Repeat("A line of a message that is not empty, to hash a body of some size.\r\n", 30)
	msg := func(from string) string {
		return "From: " + from + "\r\nTo: " + soakUser + "\r\nSubject: soak\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n\r\n" + body
	}
	// Kinds, by sequence number mod 10: 0-5 RSA-signed, 6-7 Ed25519 and
	// RSA, 8 unsigned (SPF alone aligns), 9 a spoof of bank.example.
	rsaMsg := sign(msg("News <news@soak.example>"), "s1", rk)
	dual := sign(sign(msg("News <news@soak.example>"), "s1", rk), "s2", ek)
	sw.templates = []string{rsaMsg, rsaMsg, rsaMsg, rsaMsg, rsaMsg, rsaMsg, dual, dual,
		msg("News <news@soak.example>"), msg("CEO <ceo@bank.example>")}

	ports, err := FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	smtpPort, milterPort, lmtpPort := ports[0], ports[1], ports[2]
	sw.metricsPort = ports[3]
	policyPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	if sw.redis, err = storetest.NewRedis(filepath.Join(dir, "redis"), ""); err != nil {
		t.Fatal(err)
	}
	if sw.dovecot, err = StartDovecot(filepath.Join(dir, "dovecot"), DovecotConfig{
		LMTPPort: lmtpPort, Users: []string{soakUser}, SieveBefore: sieveJunkRule, Name: "wehr-soak",
	}); err != nil {
		sw.stop()
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "dkim")
	if err := os.MkdirAll(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`authserv_id: soak.example.test
hostname: soak.example.test
log:
  level: info
milter:
  listen: inet:127.0.0.1:%d
dkim:
  keys_dir: %s
store:
  backend: redis
  redis:
    mode: single
    addrs: [%s]
policyd:
  listen: inet:127.0.0.1:%d
  local_domains: [example.test]
metrics:
  listen: inet:127.0.0.1:%d
`, milterPort, keys, sw.redis.Addr, policyPort, sw.metricsPort)
	bin := filepath.Join(w.dir, "wehr")
	if sw.wehr, err = StartWehr(bin, dir, config, w.dns.Addr(), milterPort); err != nil {
		sw.stop()
		t.Fatal(err)
	}
	if sw.postfix, err = StartPostfix(filepath.Join(dir, "mx"), PostfixConfig{
		Hostname: "soak.example.test", SMTPPort: smtpPort, MilterAddr: fmt.Sprintf("inet:127.0.0.1:%d", milterPort),
		LMTPPort: lmtpPort, Domain: "example.test", Users: []string{"soak"},
		PolicyAddr: fmt.Sprintf("inet:127.0.0.1:%d", policyPort),
	}); err != nil {
		sw.stop()
		t.Fatal(err)
	}
	sw.stopScan, sw.scanDone = make(chan struct{}), make(chan struct{})
	go sw.scan()
	return sw
}

func (sw *soakWorld) stop() {
	if sw.stopScan != nil {
		close(sw.stopScan)
		<-sw.scanDone
		sw.stopScan = nil
	}
	if sw.postfix != nil {
		sw.postfix.Stop()
	}
	if sw.wehr != nil {
		sw.wehr.Stop()
	}
	if sw.dovecot != nil {
		sw.dovecot.Stop()
	}
	if sw.redis != nil {
		sw.redis.Stop()
	}
	if os.Getenv("WEHR_KEEP") == "" {
		os.RemoveAll(sw.dir)
	}
}

// load sends messages at rate per second (0: as fast as it can) from
// senders connections at once, for dur; it counts into st (a new one if
// nil) and returns it.
func (sw *soakWorld) load(t *testing.T, rate float64, senders int, dur time.Duration, st *soakStats) *soakStats {
	if st == nil {
		st = &soakStats{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	tokens := make(chan struct{}, 1024)
	go func() {
		defer close(tokens)
		if rate <= 0 {
			for {
				select {
				case <-ctx.Done():
					return
				case tokens <- struct{}{}:
				}
			}
		}
		every := time.Duration(float64(time.Second) / rate)
		next := time.Now()
		for {
			next = next.Add(every)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(next)):
			}
			select {
			case <-ctx.Done():
				return
			case tokens <- struct{}{}:
			}
		}
	}()
	var wg sync.WaitGroup
	addr := fmt.Sprintf("127.0.0.1:%d", sw.postfix.SMTPPort)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tokens {
				seq := sw.seq.Add(1)
				kind := seq % 10
				host := 100 + seq%50
				c := Client{IP: fmt.Sprintf("192.0.2.%d", host), Name: fmt.Sprintf("mail-%d.soak.example", host), Helo: fmt.Sprintf("mail-%d.soak.example", host)}
				data := fmt.Sprintf("X-Soak-Seq: %d\r\nMessage-ID: <soak-%d@soak.example>\r\n", seq, seq) + sw.templates[kind]
				st.sent.Add(1)
				r, err := Send(addr, c, fmt.Sprintf("bounce-%d@soak.example", seq), []string{soakUser}, data)
				switch {
				case err != nil:
					st.smtpErrors.Add(1)
					st.record(seq, 'e')
					t.Logf("seq %d: %v", seq, err)
				case r.OK():
					st.accepted.Add(1)
					st.record(seq, 'a')
				case r.Code >= 500:
					st.refused.Add(1)
					st.record(seq, 'r')
				default:
					st.temp.Add(1)
					st.record(seq, 't')
					t.Logf("seq %d: %v", seq, r)
				}
			}
		}()
	}
	wg.Wait()
	return st
}

// scan takes delivered messages out of the Maildir (INBOX and Junk) as
// they arrive, counting each X-Soak-Seq.
func (sw *soakWorld) scan() {
	defer close(sw.scanDone)
	base := filepath.Join(sw.dovecot.Dir, "mail", soakUser, "Maildir")
	for {
		for _, folder := range []string{"", ".Junk"} {
			for _, sub := range []string{"new", "cur"} {
				files, _ := os.ReadDir(filepath.Join(base, folder, sub))
				for _, f := range files {
					p := filepath.Join(base, folder, sub, f.Name())
					seq := soakSeq(p)
					sw.mu.Lock()
					sw.delivered[seq]++
					sw.deliveries++
					sw.folder[seq] = folder
					sw.mu.Unlock()
					os.Remove(p)
				}
			}
		}
		select {
		case <-sw.stopScan:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// soakSeq reads a delivered message's X-Soak-Seq (-1 if it has none).
func soakSeq(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "X-Soak-Seq: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func (sw *soakWorld) deliveredCount() int64 {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.deliveries
}

func (sw *soakWorld) twice() int {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	n := 0
	for _, c := range sw.delivered {
		if c > 1 {
			n++
		}
	}
	return n
}

// waitDelivered waits until every message st counts as accepted has been
// delivered (the deliveries of all runs so far are counted).
func (sw *soakWorld) waitDelivered(t *testing.T, st *soakStats, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if sw.missing(st) == 0 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("%d accepted messages not delivered after %v", sw.missing(st), timeout)
}

func (sw *soakWorld) missing(st *soakStats) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	sw.mu.Lock()
	defer sw.mu.Unlock()
	n := 0
	for seq, o := range st.outcome {
		if o == 'a' && sw.delivered[seq] == 0 {
			n++
		}
	}
	return n
}

// checkDeliveries: every accepted message delivered exactly once, into
// INBOX; nothing refused delivered; nothing delivered that was not sent.
func (sw *soakWorld) checkDeliveries(t *testing.T, runs ...*soakStats) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	all := map[int64]byte{}
	for _, st := range runs {
		st.mu.Lock()
		for k, v := range st.outcome {
			all[k] = v
		}
		st.mu.Unlock()
	}
	var bad []string
	for seq, o := range all {
		n := sw.delivered[seq]
		switch {
		case o == 'a' && n != 1:
			bad = append(bad, fmt.Sprintf("%d accepted, delivered %d times", seq, n))
		case o == 'a' && sw.folder[seq] != "":
			bad = append(bad, fmt.Sprintf("%d delivered to %s, not INBOX", seq, sw.folder[seq]))
		case o != 'a' && n != 0:
			bad = append(bad, fmt.Sprintf("%d refused (%c), delivered %d times", seq, o, n))
		case seq%10 == 9 && o == 'a':
			bad = append(bad, fmt.Sprintf("%d is a spoof of bank.example, accepted", seq))
		case seq%10 != 9 && o == 'r':
			bad = append(bad, fmt.Sprintf("%d is genuine mail, refused", seq))
		}
	}
	for seq := range sw.delivered {
		if _, ok := all[seq]; !ok {
			bad = append(bad, fmt.Sprintf("delivered %d, never sent", seq))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("%d messages went wrong, e.g.:\n%s", len(bad), strings.Join(bad[:min(20, len(bad))], "\n"))
	}
}

// sample reads wehr's own metrics and the Postfix queue.
func (sw *soakWorld) sample(t *testing.T, st *soakStats) soakSample {
	s := soakSample{sent: st.sent.Load(), accepted: st.accepted.Load(), refused: st.refused.Load(), temp: st.temp.Load(),
		smtpErrors: st.smtpErrors.Load(), delivered: sw.deliveredCount(), queue: sw.queueSize()}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", sw.metricsPort))
	if err != nil {
		t.Errorf("metrics: %v", err)
		return s
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			s.rssMB = f / (1 << 20)
		case "go_goroutines":
			s.goroutines = f
		case "process_open_fds":
			s.fds = f
		case "process_cpu_seconds_total":
			s.cpu = f
		case "go_memstats_heap_inuse_bytes":
			s.heapMB = f / (1 << 20)
		}
	}
	return s
}

// queueSize counts the messages in Postfix's queue.
func (sw *soakWorld) queueSize() int64 {
	var n int64
	for _, q := range []string{"incoming", "active", "deferred", "hold"} {
		filepath.WalkDir(filepath.Join(sw.postfix.Dir, "queue", q), func(_ string, d os.DirEntry, err error) error { //nolint:errcheck
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

func (sw *soakWorld) logCount(part string) int {
	b, _ := os.ReadFile(sw.wehr.Log)
	return strings.Count(string(b), part)
}

func (sw *soakWorld) logLines(part string, n int) string {
	b, _ := os.ReadFile(sw.wehr.Log)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, part) && len(out) < n {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
