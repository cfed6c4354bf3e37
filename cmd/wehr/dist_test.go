package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wehr/wehr/config"
)

// The systemd unit in dist/ agrees with the defaults and the command
// line: its commands are wehr commands that work, and the directories it
// gives the service are where the default store and admin socket live.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("../../dist/wehr.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string][]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			unit[k] = append(unit[k], v)
		}
	}
	if got := unit["Type"]; len(got) != 1 || got[0] != "notify" {
		t.Fatalf("Type %q: wehr serve notifies systemd when it is ready", got)
	}
	const bin = "/usr/local/bin/wehr "
	if got := unit["ExecStart"]; len(got) != 1 || got[0] != bin+"serve" {
		t.Fatalf("ExecStart %q", got)
	}
	// The reload check is `wehr config check FILE`: run it on a good and
	// a bad file.
	reload := unit["ExecReload"]
	if len(reload) != 2 || !strings.HasPrefix(reload[0], bin+"config check ") || !strings.Contains(reload[1], "kill -HUP $MAINPID") {
		t.Fatalf("ExecReload %q", reload)
	}
	args := strings.Fields(strings.TrimPrefix(reload[0], bin))
	if code, _, stderr := wehr(t, append(args[:2:2], emptyConfig(t, "authserv_id: mx.example.net\n"))...); code != 0 {
		t.Fatalf("reload check on a good file: exit %d: %s", code, stderr)
	}
	if code, _, _ := wehr(t, append(args[:2:2], emptyConfig(t, "dns:\n  timout: 2s\n"))...); code != 2 {
		t.Fatalf("reload check on a bad file: exit %d, want 2", code)
	}
	if args[2] != "/etc/wehr/wehr.yaml" {
		t.Fatalf("reload checks %s, but wehr reads /etc/wehr/wehr.yaml", args[2])
	}
	def := config.Default()
	for _, c := range []struct{ key, path, dirKey, base string }{
		{"store.path", def.Store.Path, "StateDirectory", "/var/lib/"},
		{"store.admin_socket", def.Store.AdminSocket, "RuntimeDirectory", "/run/"},
	} {
		d := unit[c.dirKey]
		if len(d) != 1 || filepath.Dir(c.path) != c.base+d[0] {
			t.Errorf("%s defaults to %s, but the unit's %s is %q", c.key, c.path, c.dirKey, d)
		}
	}
}
