package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Under systemd (Type=notify) wehr serve says READY=1 once it listens
// and STOPPING=1 when it stops; /healthz and /readyz answer beside
// /metrics.
func TestServeReadiness(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	metricsPort := freePort(t)
	cfg := emptyConfig(t, fmt.Sprintf(`hostname: mx.test
log: {level: warn}
milter: {listen: "inet:127.0.0.1:%d"}
policyd: {listen: "inet:127.0.0.1:%d"}
store: {path: %s/wehr.db, admin_socket: %s/admin.sock}
metrics: {listen: "inet:127.0.0.1:%d"}
`, freePort(t), freePort(t), dir, dir, metricsPort))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--config", cfg, "serve"}, strings.NewReader(""), &bytes.Buffer{}, &serveErr)
	}()
	read := func() string {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\n%s", err, serveErr.String())
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Fatalf("first notification %q", got)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", metricsPort, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	// The profiler only when metrics.pprof says so.
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Errorf("/debug/pprof/ without metrics.pprof: %d", code)
	}
	cancel()
	if got := read(); got != "STOPPING=1" {
		t.Errorf("at stop: %q", got)
	}
	if code := <-done; code != 0 {
		t.Errorf("serve exited %d: %s", code, serveErr.String())
	}
}

// /readyz says 503 and why while the store does not answer.
func TestReadyzStoreDown(t *testing.T) {
	metricsPort := freePort(t)
	cfg := emptyConfig(t, fmt.Sprintf(`hostname: mx.test
log: {level: error}
milter: {listen: "inet:127.0.0.1:%d"}
policyd: {listen: "inet:127.0.0.1:%d"}
store: {backend: redis, redis: {mode: single, addrs: ["127.0.0.1:1"], timeout: 100ms}}
metrics: {listen: "inet:127.0.0.1:%d", pprof: true}
`, freePort(t), freePort(t), metricsPort))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "serve"}, strings.NewReader(""), io.Discard, io.Discard)
	}()
	defer func() { cancel(); <-done }()
	var code int
	var body string
	for range 100 {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
			if strings.Contains(body, "store") {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 503 || !strings.Contains(body, "store: ") {
		t.Fatalf("/readyz with the store down: %d %q", code, body)
	}
	// metrics.pprof: the profiler beside the metrics.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine") {
		t.Errorf("/debug/pprof/ with metrics.pprof: %d", resp.StatusCode)
	}
}
