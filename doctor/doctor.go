// Package doctor checks a wehr installation the way an administrator
// would at 3 a.m.: is the configuration good, does DNS answer, does the
// store, are the daemons listening, are the DKIM keys sound and published,
// and is Postfix wired to wehr as the README says. Every finding comes with
// what to do about it.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wehr/wehr/config"
	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/store"
)

// Status of a finding.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "FAIL"
)

// Finding is one check's result.
type Finding struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	// Fix says what to do, for warn and FAIL.
	Fix string `json:"fix,omitempty"`
}

// Inputs are what the checks look at.
type Inputs struct {
	Config     *config.Config
	ConfigPath string // "" for built-in defaults
	Resolver   *resolver.Resolver
	// OpenStore opens the store as the ops commands do (required).
	OpenStore func() (store.Store, error)
	// Postconf runs postconf with these args (nil: Postfix not checked).
	Postconf func(ctx context.Context, args ...string) (string, error)
}

// Run runs every check.
func Run(ctx context.Context, in Inputs) []Finding {
	var out []Finding
	add := func(f Finding) { out = append(out, f) }
	cfg := in.Config

	if in.ConfigPath == "" {
		add(Finding{"config", Warn, "no config file: running on built-in defaults", "write /etc/wehr/wehr.yaml (wehr config defaults prints every key)"})
	} else {
		add(Finding{"config", OK, in.ConfigPath + " is valid; authserv-id " + cfg.AuthservID, ""})
	}
	if !strings.Contains(strings.Trim(cfg.AuthservID, "."), ".") {
		// RFC 8601 2.5: a fully qualified name, so that verifiers and
		// our own forged-header removal can tell it from others.
		add(Finding{"config", Warn, "authserv_id " + cfg.AuthservID + " is a bare host name: other verifiers (and mail readers) may share it",
			"set authserv_id to this MX's fully qualified name, e.g. mx1.example.net"})
	}
	add(checkDNS(ctx, in.Resolver))
	add(checkStore(ctx, cfg, in.OpenStore))
	if cfg.Store.Backend != "redis" {
		if moved, _ := filepath.Glob(cfg.Store.Path + ".corrupt-*"); len(moved) > 0 {
			add(Finding{"store", Warn, fmt.Sprintf("the embedded store was found damaged and reset %d time(s): %s", len(moved), strings.Join(moved, ", ")),
				"the ERROR line of wehr serve at that time says why (a machine crash, a failing disk?); delete the files when done"})
		}
	}
	milterDown, policyDown := whileDown(ctx, cfg, in.Postconf)
	add(checkListening("milter", cfg.Milter.Listen, milterDown))
	add(checkListening("policyd", cfg.Policyd.Listen, policyDown))
	if cfg.Metrics.Listen != "" {
		add(checkListening("metrics", cfg.Metrics.Listen, "only the metrics are missing"))
	}
	if cfg.MTASTS.Listen != "" {
		add(checkListening("mtasts", cfg.MTASTS.Listen, "Postfix delivers with its own smtp_tls_security_level, MTA-STS unenforced (a socketmap that does not answer defers nothing)"))
	}
	if cfg.AuthPolicy.Listen != "" {
		add(checkListening("authpolicy", cfg.AuthPolicy.Listen, "Dovecot lets every login through unchecked (with auth_policy_reject_on_fail = no, as the README sets it)"))
	}
	out = append(out, checkKeys(ctx, cfg, in.Resolver)...)
	out = append(out, checkReports(cfg)...)
	out = append(out, checkARC(cfg)...)
	if in.Postconf != nil {
		out = append(out, checkPostfix(ctx, cfg, in.Postconf)...)
	}
	return out
}

func checkDNS(ctx context.Context, res *resolver.Resolver) Finding {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Any answer shows the server answers, NXDOMAIN included; only
	// timeouts, SERVFAIL and the like are errors.
	_, err := res.Exists(ctx, "localhost.")
	if err != nil {
		return Finding{"dns", Fail, fmt.Sprintf("the resolvers %v do not answer: %v", res.Servers(), err),
			"check dns.servers (or /etc/resolv.conf) and that a recursive resolver runs there; without DNS every check ends in temperror"}
	}
	return Finding{"dns", OK, fmt.Sprintf("resolvers %v answer", res.Servers()), ""}
}

func checkStore(ctx context.Context, cfg *config.Config, open func() (store.Store, error)) Finding {
	if cfg.Store.Backend != "redis" {
		// wehr serve starts without its store when it cannot write
		// it (a read-only file system): say so, it is not a crash.
		dir := filepath.Dir(cfg.Store.Path)
		if err := syscall.Access(dir, 2 /* W_OK */); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Finding{"store", Fail, "the store directory " + dir + " is not writable: " + err.Error(),
				"wehr serve runs without its store (greylisting, rates, reputation take policyd.on_store_error); make it writable and restart wehr"}
		}
	}
	st, err := open()
	if err != nil {
		fix := "start wehr serve (it owns the embedded store)"
		if cfg.Store.Backend == "redis" {
			fix = "check store.redis (mode, addrs, password) and that Redis runs"
		}
		return Finding{"store", Fail, err.Error(), fix}
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := st.Ping(ctx); err != nil {
		return Finding{"store", Fail, err.Error(), "check that Redis (or wehr serve) answers; until then greylisting and rates are skipped"}
	}
	what := "embedded store, through " + cfg.Store.AdminSocket
	if cfg.Store.Backend == "redis" {
		what = "Redis (" + cfg.Store.Redis.Mode + ") " + strings.Join(cfg.Store.Redis.Addrs, ", ")
	}
	return Finding{"store", OK, what + " answers", ""}
}

// whileDown says what Postfix does while the milter and the policy
// service are down, from its configuration when postconf can tell.
func whileDown(ctx context.Context, cfg *config.Config, postconf func(ctx context.Context, args ...string) (string, error)) (milter, policy string) {
	milter = "Postfix applies milter_default_action (tempfail in the README's wiring: senders retry)"
	policy = "Postfix applies check_policy_service's default_action after its timeout"
	if postconf == nil {
		return milter, policy
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	get := func(name string) string {
		v, _ := postconf(ctx, "-h", name)
		return strings.TrimSpace(v)
	}
	switch a := get("milter_default_action"); a {
	case "tempfail":
		milter = "Postfix answers 451 4.7.1 while it is down (milter_default_action = tempfail): senders retry"
	case "accept":
		milter = "Postfix accepts mail unverified while it is down (milter_default_action = accept)"
	case "":
	default:
		milter = "Postfix applies milter_default_action = " + a + " while it is down"
	}
	queue := get("queue_directory")
	pa, _ := listener.ParseAddress(cfg.Policyd.Listen, true)
	for _, name := range []string{"smtpd_recipient_restrictions", "smtpd_relay_restrictions", "smtpd_sender_restrictions", "smtpd_helo_restrictions", "smtpd_client_restrictions"} {
		v := get(name)
		if !mentions(v, pa, queue) {
			continue
		}
		action := "451 4.3.5" // Postfix's own default_action
		if _, rest, ok := strings.Cut(v, "default_action="); ok {
			action = strings.TrimSpace(strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || r == '}' })[0])
		}
		if strings.EqualFold(action, "DUNNO") {
			return milter, "after the timeout Postfix applies default_action=DUNNO (" + name + "): mail flows without the policy checks"
		}
		return milter, "after the timeout Postfix answers default_action=" + action + " (" + name + "): senders retry"
	}
	return milter, policy
}

func checkListening(name, addr, whileDown string) Finding {
	a, err := listener.ParseAddress(addr, true)
	if err != nil {
		return Finding{name, Fail, err.Error(), "fix " + name + ".listen"}
	}
	c, err := net.DialTimeout(a.Network, a.Address, 2*time.Second)
	if err != nil {
		return Finding{name, Fail, "nothing listens on " + a.String() + ": " + err.Error(), "start wehr serve; " + whileDown}
	}
	c.Close()
	return Finding{name, OK, "listening on " + a.String(), ""}
}

func checkKeys(ctx context.Context, cfg *config.Config, res *resolver.Resolver) []Finding {
	if cfg.DKIM.KeysDir == "" {
		return []Finding{{"dkim", Warn, "dkim.keys_dir is not set: outbound mail is not signed", "wehr dkim keygen DOMAIN, then set dkim.keys_dir"}}
	}
	set, err := (&dkimkeys.Store{Dir: cfg.DKIM.KeysDir}).Load()
	var out []Finding
	if err != nil {
		what := "outbound mail of the domain gets dkim.on_key_error=" + cfg.DKIM.OnKeyError + " until it is fixed (then SIGHUP)"
		broken := set.Broken()
		if len(broken) == 0 {
			out = append(out, Finding{"dkim", Fail, err.Error(), "wehr runs, but signs nothing: " + what})
		}
		for _, d := range slices.Sorted(maps.Keys(broken)) {
			out = append(out, Finding{"dkim " + d, Fail, broken[d].Error(), "wehr runs, but " + what})
		}
	}
	if cfg.DKIM.SenderMap == "" {
		out = append(out, Finding{"dkim", Warn, "dkim.sender_map is not set: nothing is signed", "list who may send as which addresses (see the README)"})
	} else if _, err := sendermap.Load(cfg.DKIM.SenderMap); err != nil {
		out = append(out, Finding{"dkim", Fail, err.Error(), "fix the sender map"})
	}
	for _, d := range set.Domains() {
		for _, k := range set.Keys(d) {
			if k.State != dkimkeys.Active && k.State != dkimkeys.Pending {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ok, why := dkimkeys.Published(cctx, res, k)
			cancel()
			switch {
			case ok:
				out = append(out, Finding{"dkim " + d, OK, k.Selector + " (" + k.State + ") is published", ""})
			case k.State == dkimkeys.Active:
				out = append(out, Finding{"dkim " + d, Fail, k.Selector + " signs but " + why, k.Advice(ok)})
			default:
				out = append(out, Finding{"dkim " + d, Warn, k.Selector + " is pending: " + why, k.Advice(ok)})
			}
		}
	}
	if len(set.Domains()) == 0 {
		out = append(out, Finding{"dkim", Warn, "no keys in " + cfg.DKIM.KeysDir, "wehr dkim keygen DOMAIN"})
	}
	return out
}

// checkReports looks at DMARC reporting: sending needs a From address
// whose domain signs (RFC 9990 wants reports to pass DMARC), ingesting
// a failed folder it can write.
func checkReports(cfg *config.Config) []Finding {
	var out []Finding
	rc := cfg.Reports
	switch {
	case !rc.Send && rc.Record:
		out = append(out, Finding{"reports", Warn, "DMARC report rows are recorded but reports.send is off: nobody gets the reports we owe",
			"set reports.send: true and reports.from, or run wehr dmarc report send from cron"})
	case rc.Send:
		domain := rc.From[strings.LastIndexByte(rc.From, '@')+1:]
		signing := ""
		if cfg.DKIM.KeysDir != "" {
			if set, err := (&dkimkeys.Store{Dir: cfg.DKIM.KeysDir}).Load(); err == nil {
				if d, keys, err := set.Signing(domain); err == nil && len(keys) > 0 {
					signing = d
				}
			}
		}
		if signing == "" {
			out = append(out, Finding{"reports", Warn, "reports are sent from " + rc.From + " but no DKIM key of " + domain + " signs them: they may fail DMARC at the receivers",
				"wehr dkim keygen " + domain + " (and publish the record)"})
		} else {
			out = append(out, Finding{"reports", OK, "reports are sent from " + rc.From + " through " + rc.Relay + ", signed as " + signing, ""})
		}
	}
	if fi, err := os.Stat(rc.Failed); err == nil && !fi.IsDir() {
		out = append(out, Finding{"reports", Fail, "reports.failed " + rc.Failed + " is not a folder", "point reports.failed at a folder the wehr user can write"})
	}
	return out
}

// checkARC looks at sealing: on, it needs an active RSA key of the
// seal domain (RFC 8617 seals are rsa-sha256).
func checkARC(cfg *config.Config) []Finding {
	if cfg.ARC.Seal == "off" || cfg.ARC.Seal == "" {
		return nil
	}
	d := cfg.ARC.SealDomain
	if cfg.DKIM.KeysDir != "" {
		if set, err := (&dkimkeys.Store{Dir: cfg.DKIM.KeysDir}).Load(); err == nil {
			if _, keys, err := set.Signing(d); err == nil {
				for _, k := range keys {
					if k.Algorithm == dkimkeys.RSA {
						return []Finding{{"arc", OK, "seals (" + cfg.ARC.Seal + ") as " + k.Domain + " with " + k.Selector, ""}}
					}
				}
			}
		}
	}
	return []Finding{{"arc", Fail, "arc.seal is " + cfg.ARC.Seal + " but " + d + " has no active RSA key in dkim.keys_dir: nothing is sealed",
		"wehr dkim keygen " + d + " --algorithm rsa (and publish the record), then SIGHUP"}}
}

func checkPostfix(ctx context.Context, cfg *config.Config, postconf func(ctx context.Context, args ...string) (string, error)) []Finding {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	get := func(name string) (string, error) {
		v, err := postconf(ctx, "-h", name)
		return strings.TrimSpace(v), err
	}
	var out []Finding
	milters, err := get("smtpd_milters")
	if err != nil {
		return []Finding{{"postfix", Warn, "postconf: " + err.Error(), "is Postfix installed? (--postfix-config DIR for another instance)"}}
	}
	queue, _ := get("queue_directory")
	if queue == "" {
		queue = "/var/spool/postfix"
	}
	mentions := func(setting string, a listener.Address) bool { return mentions(setting, a, queue) }
	ma, _ := listener.ParseAddress(cfg.Milter.Listen, true)
	if mentions(milters, ma) {
		out = append(out, Finding{"postfix", OK, "smtpd_milters names wehr (" + milters + ")", ""})
	} else {
		out = append(out, Finding{"postfix", Fail, "smtpd_milters = " + milters + " does not name " + ma.String(),
			"add to main.cf: smtpd_milters = " + postfixForm(ma, queue) + " and non_smtpd_milters = $smtpd_milters"})
	}
	if v, _ := get("non_smtpd_milters"); !mentions(v, ma) && !strings.Contains(v, "$smtpd_milters") {
		out = append(out, Finding{"postfix", Warn, "non_smtpd_milters = " + v + ": local sendmail(1) mail is not signed", "non_smtpd_milters = $smtpd_milters"})
	}
	if v, _ := get("milter_default_action"); v != "tempfail" {
		out = append(out, Finding{"postfix", Warn, "milter_default_action = " + v + ": while wehr is down, mail is accepted unverified",
			"milter_default_action = tempfail (senders retry; nothing is lost)"})
	}
	pa, _ := listener.ParseAddress(cfg.Policyd.Listen, true)
	where := ""
	for _, name := range []string{"smtpd_recipient_restrictions", "smtpd_relay_restrictions", "smtpd_sender_restrictions", "smtpd_helo_restrictions", "smtpd_client_restrictions"} {
		if v, _ := get(name); mentions(v, pa) {
			where = name
			break
		}
	}
	if where == "" {
		out = append(out, Finding{"postfix", Warn, "no smtpd_*_restrictions ask wehr's policy service at " + pa.String(),
			"add to smtpd_recipient_restrictions, after reject_unauth_destination: check_policy_service { " + postfixForm(pa, queue) + ", timeout=10s, default_action=DUNNO, policy_context=mx }"})
	} else {
		out = append(out, Finding{"postfix", OK, where + " asks the policy service", ""})
	}
	if cfg.MTASTS.Listen != "" {
		sa, _ := listener.ParseAddress(cfg.MTASTS.Listen, true)
		maps, _ := get("smtp_tls_policy_maps")
		if mentions(maps, sa) && strings.Contains(maps, "socketmap:") {
			out = append(out, Finding{"postfix", OK, "smtp_tls_policy_maps asks wehr's MTA-STS policy service", ""})
		} else {
			out = append(out, Finding{"postfix", Warn, "smtp_tls_policy_maps = " + maps + " does not ask wehr's MTA-STS policy service at " + sa.String(),
				"smtp_tls_policy_maps = socketmap:" + sa.String() + ":postfix"})
		}
		if lvl, _ := get("smtp_dns_support_level"); lvl != "dnssec" {
			out = append(out, Finding{"postfix", Warn, "smtp_dns_support_level = " + lvl + ": where this host's resolver validates DNSSEC, wehr answers dane-only for domains whose MX hosts all publish validated TLSA records (DANE before MTA-STS), and Postfix then defers their mail",
				"smtp_dns_support_level = dnssec (with a local validating resolver), or a resolver that does not validate"})
		}
	}
	return out
}

// mentions reports whether a Postfix setting names the address, in any
// of its spellings: a socket inside the queue directory also by its
// path relative to it ("unix:wehr/milter.sock", what the README writes:
// Postfix daemons run in the queue directory, chrooted or not) or by
// the path inside the chroot ("unix:/wehr/milter.sock").
func mentions(setting string, a listener.Address, queue string) bool {
	if a.Network == "unix" {
		if strings.Contains(setting, "unix:"+a.Address) {
			return true
		}
		rel, ok := strings.CutPrefix(a.Address, strings.TrimSuffix(queue, "/")+"/")
		return ok && (strings.Contains(setting, "unix:"+rel) || strings.Contains(setting, "unix:/"+rel))
	}
	host, port, _ := net.SplitHostPort(a.Address)
	return strings.Contains(setting, "inet:"+host+":"+port) || strings.Contains(setting, port+"@"+host) ||
		(host == "127.0.0.1" && strings.Contains(setting, "localhost:"+port))
}

// postfixForm is how main.cf should name the address.
func postfixForm(a listener.Address, queue string) string {
	if a.Network == "unix" {
		if rel, ok := strings.CutPrefix(a.Address, strings.TrimSuffix(queue, "/")+"/"); ok {
			return "unix:" + rel
		}
	}
	return a.String()
}

// Postconf returns a runner of postconf for a config directory ("" for
// the default instance), or nil when postconf is not installed.
func Postconf(dir string) func(ctx context.Context, args ...string) (string, error) {
	bin, err := exec.LookPath("postconf")
	if err != nil {
		if _, err2 := exec.LookPath("/usr/sbin/postconf"); err2 != nil {
			return nil
		}
		bin = "/usr/sbin/postconf"
	}
	return func(ctx context.Context, args ...string) (string, error) {
		if dir != "" {
			args = append([]string{"-c", dir}, args...)
		}
		out, err := exec.CommandContext(ctx, bin, args...).Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			// "exit status 1" alone says nothing; postconf's own words do.
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return string(out), err
	}
}
