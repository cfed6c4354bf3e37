package doctor

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/config"
	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/store"
)

func listen(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

// fakePostconf answers postconf -h NAME from a map.
func fakePostconf(m map[string]string) func(ctx context.Context, args ...string) (string, error) {
	return func(_ context.Context, args ...string) (string, error) {
		if len(args) != 2 || args[0] != "-h" {
			return "", errors.New("unexpected args")
		}
		return m[args[1]] + "\n", nil
	}
}

func TestRun(t *testing.T) {
	srv := dnstest.New(t, "")
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keys := &dkimkeys.Store{Dir: filepath.Join(dir, "keys")}
	pub, err := keys.Generate("example.test", "s1", "ed25519", dkimkeys.Active, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = keys.Generate("other.test", "s1", "ed25519", dkimkeys.Active, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv.AddTXT(pub.RecordName()+".", pub.Record())
	senders := filepath.Join(dir, "senders")
	if err := os.WriteFile(senders, []byte("alice example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenEmbedded(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := os.WriteFile(filepath.Join(dir, "state.db.corrupt-20261127T012214Z"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	goodStore := func() (store.Store, error) { return nopClose{st}, nil }
	badStore := func() (store.Store, error) {
		return nil, errors.New("dial unix /run/wehr/admin.sock: connection refused")
	}

	milterAddr, policyAddr, stsAddr := listen(t), listen(t), listen(t)
	wired := map[string]string{
		"smtpd_milters":                "inet:" + milterAddr,
		"non_smtpd_milters":            "$smtpd_milters",
		"milter_default_action":        "tempfail",
		"smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination, check_policy_service { inet:" + policyAddr + ", timeout=10s }",
	}

	cfg := func(mod func(c *config.Config)) *config.Config {
		c := config.Default()
		c.Milter.Listen = "inet:" + milterAddr
		c.Policyd.Listen = "inet:" + policyAddr
		c.DKIM.KeysDir = keys.Dir
		c.DKIM.SenderMap = senders
		if mod != nil {
			mod(c)
		}
		return c
	}

	tests := []struct {
		name string
		in   Inputs
		want map[string]string // check+" "+substring of detail → status
	}{
		{
			name: "healthy",
			in:   Inputs{Config: cfg(nil), ConfigPath: "/etc/wehr/wehr.yaml", Resolver: res, OpenStore: goodStore, Postconf: fakePostconf(wired)},
			want: map[string]string{
				"config /etc/wehr/wehr.yaml":                 OK,
				"dns answer":                                 OK,
				"store answers":                              OK,
				"milter listening":                           OK,
				"policyd listening":                          OK,
				"dkim example.test s1 (active) is published": OK,
				"dkim other.test s1 signs but":               Fail,
				"postfix smtpd_milters names wehr":           OK,
				"postfix asks the policy service":            OK,
			},
		},
		{
			name: "policy service in smtpd_relay_restrictions",
			in: Inputs{Config: cfg(nil), ConfigPath: "/etc/wehr/wehr.yaml", Resolver: res, OpenStore: goodStore, Postconf: fakePostconf(map[string]string{
				"smtpd_milters":            "inet:" + milterAddr,
				"non_smtpd_milters":        "$smtpd_milters",
				"milter_default_action":    "tempfail",
				"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination, check_policy_service inet:" + policyAddr,
			})},
			want: map[string]string{
				"postfix smtpd_relay_restrictions asks the policy service": OK,
			},
		},
		{
			name: "MTA-STS wired",
			in: Inputs{Config: cfg(func(c *config.Config) { c.MTASTS.Listen = "inet:" + stsAddr }), ConfigPath: "/etc/wehr/wehr.yaml", Resolver: res, OpenStore: goodStore,
				Postconf: fakePostconf(map[string]string{"smtpd_milters": "inet:" + milterAddr, "smtp_tls_policy_maps": "socketmap:inet:" + stsAddr + ":postfix", "smtp_dns_support_level": "dnssec"})},
			want: map[string]string{
				"mtasts listening": OK,
				"postfix smtp_tls_policy_maps asks wehr's MTA-STS policy service": OK,
			},
		},
		{
			name: "MTA-STS not wired, no DNSSEC",
			in: Inputs{Config: cfg(func(c *config.Config) { c.MTASTS.Listen = "inet:127.0.0.1:1" }), ConfigPath: "/etc/wehr/wehr.yaml", Resolver: res, OpenStore: goodStore,
				Postconf: fakePostconf(map[string]string{"smtpd_milters": "inet:" + milterAddr, "smtp_dns_support_level": "enabled"})},
			want: map[string]string{
				"mtasts nothing listens":                             Fail,
				"postfix does not ask wehr's MTA-STS policy service": Warn,
				"postfix Postfix then defers their mail":             Warn,
			},
		},
		{
			name: "broken",
			in: Inputs{
				Config: cfg(func(c *config.Config) {
					c.Milter.Listen = "inet:127.0.0.1:1"
					c.Policyd.Listen = "unix:" + filepath.Join(dir, "nothing.sock")
					c.DKIM.SenderMap = ""
					c.Store.Path = filepath.Join(dir, "state.db")
				}),
				Resolver:  mustResolver(t, "127.0.0.1:1"),
				OpenStore: badStore,
				Postconf: fakePostconf(map[string]string{
					"smtpd_milters":         "inet:127.0.0.1:8891",
					"milter_default_action": "accept",
				}),
			},
			want: map[string]string{
				"config built-in defaults":                                  Warn,
				"dns do not answer":                                         Fail,
				"store connection refused":                                  Fail,
				"milter nothing listens":                                    Fail,
				"policyd nothing listens":                                   Fail,
				"dkim sender_map is not set":                                Warn,
				"store found damaged and reset 1 time(s)":                   Warn,
				"postfix does not name inet:127.0.0.1:1":                    Fail,
				"postfix local sendmail(1) mail is not signed":              Warn,
				"postfix milter_default_action = accept":                    Warn,
				"postfix no smtpd_*_restrictions ask wehr's policy service": Warn,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := Run(context.Background(), tc.in)
			for key, status := range tc.want {
				check, sub, _ := strings.Cut(key, " ")
				if check == "dkim" && strings.Contains(sub, ".test ") {
					var dom string
					dom, sub, _ = strings.Cut(sub, " ")
					check += " " + dom
				}
				found := false
				for _, f := range fs {
					if f.Check == check && strings.Contains(f.Detail, sub) {
						found = true
						if f.Status != status {
							t.Errorf("%s %q: status %s, want %s", check, f.Detail, f.Status, status)
						}
						if f.Status != OK && f.Fix == "" {
							t.Errorf("%s %q: %s without a fix", check, f.Detail, f.Status)
						}
					}
				}
				if !found {
					t.Errorf("no finding %s ~ %q in %+v", check, sub, fs)
				}
			}
		})
	}
}

func mustResolver(t *testing.T, server string) *resolver.Resolver {
	t.Helper()
	r, err := resolver.New(resolver.Config{Servers: []string{server}, Timeout: 200 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// nopClose keeps the shared test store open when Run closes it.
type nopClose struct{ store.Store }

func (nopClose) Close() error { return nil }

func TestMentions(t *testing.T) {
	tests := []struct {
		setting, addr string
		want          bool
	}{
		{"inet:127.0.0.1:8891", "inet:127.0.0.1:8891", true},
		{"inet:localhost:8891", "inet:127.0.0.1:8891", true},
		{"inet:127.0.0.1:8892", "inet:127.0.0.1:8891", false},
		{"unix:/run/wehr/milter.sock", "unix:/run/wehr/milter.sock", true},
		{"unix:/wehr/milter.sock", "unix:/var/spool/postfix/wehr/milter.sock", true},
		{"unix:wehr/milter.sock", "unix:/var/spool/postfix/wehr/milter.sock", true},
		{"unix:wehr/milter.sock", "unix:/run/wehr/milter.sock", false},
		{"unix:other/milter.sock", "unix:/var/spool/postfix/wehr/milter.sock", false},
		{"", "inet:127.0.0.1:8891", false},
	}
	for _, tc := range tests {
		a, err := listener.ParseAddress(tc.addr, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := mentions(tc.setting, a, "/var/spool/postfix"); got != tc.want {
			t.Errorf("mentions(%q, %s) = %v, want %v", tc.setting, tc.addr, got, tc.want)
		}
	}
}

// Issue 12: what Postfix does while a daemon is down follows its own
// configuration; a bare host name as authserv-id is a warning.
func TestWhileDownAndAuthservID(t *testing.T) {
	cfg := config.Default()
	cfg.Policyd.Listen = "unix:/var/spool/postfix/wehr/policy.sock"
	for _, tc := range []struct {
		restrictions, milterAction, wantPolicy, wantMilter string
	}{
		{"reject_unauth_destination, check_policy_service { unix:wehr/policy.sock, timeout=10s, default_action=DUNNO, policy_context=mx }", "tempfail",
			"default_action=DUNNO (smtpd_recipient_restrictions): mail flows without the policy checks", "451 4.7.1"},
		{"reject_unauth_destination, check_policy_service unix:wehr/policy.sock", "accept",
			"default_action=451 4.3.5", "accepts mail unverified"},
	} {
		m, p := whileDown(context.Background(), cfg, fakePostconf(map[string]string{
			"smtpd_recipient_restrictions": tc.restrictions, "milter_default_action": tc.milterAction, "queue_directory": "/var/spool/postfix"}))
		if !strings.Contains(p, tc.wantPolicy) || !strings.Contains(m, tc.wantMilter) {
			t.Errorf("%q: milter %q, policy %q", tc.restrictions, m, p)
		}
	}
	srv := dnstest.New(t, "")
	res, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second})
	cfg.AuthservID = "mail"
	out := Run(context.Background(), Inputs{Config: cfg, ConfigPath: "/etc/wehr/wehr.yaml", Resolver: res,
		OpenStore: func() (store.Store, error) { return nil, errors.New("down") }})
	found := false
	for _, f := range out {
		if f.Check == "config" && f.Status == Warn && strings.Contains(f.Detail, "bare host name") {
			found = true
		}
	}
	if !found {
		t.Errorf("no warning for authserv_id mail: %+v", out)
	}
}

func TestCheckReports(t *testing.T) {
	dir := t.TempDir()
	ks := &dkimkeys.Store{Dir: filepath.Join(dir, "keys")}
	if _, err := ks.Generate("example.net", "a", dkimkeys.Ed25519, dkimkeys.Active, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Reports.Failed = dir
	got := func() string {
		var s []string
		for _, f := range checkReports(cfg) {
			s = append(s, f.Status+" "+f.Detail)
		}
		return strings.Join(s, "\n")
	}
	if g := got(); !strings.Contains(g, "warn DMARC report rows are recorded but reports.send is off") {
		t.Errorf("send off: %s", g)
	}
	cfg.Reports.Send, cfg.Reports.From = true, "dmarc@reports.example.net"
	if g := got(); !strings.Contains(g, "warn reports are sent from dmarc@reports.example.net but no DKIM key of reports.example.net") {
		t.Errorf("no key: %s", g)
	}
	cfg.DKIM.KeysDir = ks.Dir
	if g := got(); !strings.Contains(g, "ok reports are sent from dmarc@reports.example.net through 127.0.0.1:25, signed as example.net") {
		t.Errorf("signed by the parent's key: %s", g)
	}
	cfg.Reports.Failed = filepath.Join(ks.Dir, "example.net", "a.pem")
	if g := got(); !strings.Contains(g, "FAIL reports.failed") {
		t.Errorf("failed folder a file: %s", g)
	}
}

func TestCheckARC(t *testing.T) {
	dir := t.TempDir()
	ks := &dkimkeys.Store{Dir: filepath.Join(dir, "keys")}
	if _, err := ks.Generate("example.net", "e", dkimkeys.Ed25519, dkimkeys.Active, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	if f := checkARC(cfg); len(f) != 0 {
		t.Errorf("sealing off: %+v", f)
	}
	cfg.ARC.Seal, cfg.ARC.SealDomain, cfg.DKIM.KeysDir = "all", "example.net", ks.Dir
	if f := checkARC(cfg); len(f) != 1 || f[0].Status != Fail {
		t.Errorf("an Ed25519 key only: %+v", f)
	}
	if _, err := ks.Generate("example.net", "r", dkimkeys.RSA, dkimkeys.Active, time.Now()); err != nil {
		t.Fatal(err)
	}
	if f := checkARC(cfg); len(f) != 1 || f[0].Status != OK || !strings.Contains(f[0].Detail, "with r") {
		t.Errorf("an RSA key: %+v", f)
	}
}
