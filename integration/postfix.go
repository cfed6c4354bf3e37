package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Postfix is a private Postfix instance: its own main.cf, master.cf,
// queue and data directories, logging to a file.
type Postfix struct {
	Dir            string // $P: etc/, queue/, data/, maillog
	Hostname       string
	SMTPPort       int
	SubmissionPort int
	via            []string
}

// PostfixConfig is what a test chooses about an instance.
type PostfixConfig struct {
	Hostname   string
	SMTPPort   int
	MilterAddr string // inet:127.0.0.1:PORT; "" for no milter
	LMTPPort   int    // Dovecot's LMTP
	Domain     string // the virtual mailbox domain
	Users      []string
	// SubmissionPort, if set, adds a submission service with SMTP AUTH
	// through Dovecot's socket at SASLPath, marked as outbound with
	// milter_macro_daemon_name=ORIGINATING.
	SubmissionPort int
	SASLPath       string
	// PolicyAddr, if set, asks the policy service at RCPT (as MX traffic).
	PolicyAddr string
	// Extra main.cf lines.
	Extra string
	// Via, if set, prefixes the postfix commands (nsenter into a mount
	// namespace with a resolv.conf of its own).
	Via []string
}

// readmeSubmission returns the -o lines of the README's submission block.
func readmeSubmission() ([]string, error) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		return nil, err
	}
	_, rest, ok := strings.Cut(string(data), "```\nsubmission inet n - y - - smtpd\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		return nil, fmt.Errorf("README.md: no submission block")
	}
	var out []string
	for _, l := range strings.Split(strings.Trim(block, "\n"), "\n") {
		if !strings.HasPrefix(l, "  -o ") {
			return nil, fmt.Errorf("README.md submission block: unexpected line %q", l)
		}
		out = append(out, l)
	}
	return out, nil
}

// StartPostfix writes an instance's configuration under dir and starts it.
func StartPostfix(dir string, c PostfixConfig) (*Postfix, error) {
	p := &Postfix{Dir: dir, Hostname: c.Hostname, SMTPPort: c.SMTPPort, SubmissionPort: c.SubmissionPort, via: c.Via}
	for _, d := range []string{"etc", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// The data directory must belong to postfix, or master cannot take
	// its lock.
	if out, err := exec.Command("chown", "postfix:postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("chown data: %v: %s", err, out)
	}
	var maps []string
	for _, u := range c.Users {
		maps = append(maps, "{"+u+"@"+c.Domain+"=ok}")
	}
	policy := ""
	if c.PolicyAddr != "" {
		policy = ",\n    check_policy_service { " + c.PolicyAddr + ", timeout=10s, default_action=DUNNO, policy_context=mx }"
	}
	sasl := ""
	if c.SASLPath != "" {
		sasl = "smtpd_sasl_type = dovecot\nsmtpd_sasl_path = " + c.SASLPath + "\nsmtpd_sasl_auth_enable = no\n"
	}
	milters := ""
	if c.MilterAddr != "" {
		milters = "smtpd_milters = " + c.MilterAddr + "\nnon_smtpd_milters = $smtpd_milters\n"
	}
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
syslog_name = postfix-%[2]s
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
myhostname = %[2]s
mydomain = %[2]s
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
readme_directory = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtpd_authorized_xclient_hosts = 127.0.0.0/8
virtual_mailbox_domains = %[3]s
virtual_mailbox_maps = inline:{ %[4]s }
virtual_transport = lmtp:inet:127.0.0.1:%[5]d
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient%[9]s
%[6]smilter_protocol = 6
milter_default_action = tempfail
milter_connect_timeout = 5s
milter_command_timeout = 10s
milter_content_timeout = 60s
delay_warning_time = 0
%[8]s%[7]s
`, dir, c.Hostname, c.Domain, strings.Join(maps, ", "), c.LMTPPort, milters, c.Extra, sasl, policy)
	submission := ""
	if c.SubmissionPort != 0 {
		// The README's submission block, line for line (only the service
		// address, chroot and log name differ): what the README tells
		// admins is what the tests run.
		opts, err := readmeSubmission()
		if err != nil {
			return nil, err
		}
		var lines []string
		for _, o := range opts {
			if strings.Contains(o, "check_policy_service") {
				if c.PolicyAddr == "" {
					continue
				}
				o = strings.ReplaceAll(o, "unix:wehr/policy.sock", c.PolicyAddr)
			}
			lines = append(lines, o)
		}
		submission = fmt.Sprintf("127.0.0.1:%d inet n  -       n       -       -       smtpd\n  -o syslog_name=postfix-%s/submission\n%s\n",
			c.SubmissionPort, c.Hostname, strings.Join(lines, "\n"))
	}
	master := fmt.Sprintf(`127.0.0.1:%d inet n  -       n       -       -       smtpd
%spickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`, c.SMTPPort, submission)
	if err := writeFile(filepath.Join(dir, "etc", "main.cf"), main, 0o644); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "etc", "master.cf"), master, 0o644); err != nil {
		return nil, err
	}
	if out, err := p.command("start"); err != nil {
		return nil, fmt.Errorf("postfix start: %v: %s\nmaillog:\n%s", err, out, Tail(p.Maillog(), 20))
	}
	for _, port := range []int{c.SMTPPort, c.SubmissionPort} {
		if port == 0 {
			continue
		}
		if err := WaitListening(port, 10*time.Second); err != nil {
			return nil, fmt.Errorf("postfix: %w\nmaillog:\n%s", err, Tail(p.Maillog(), 20))
		}
	}
	return p, nil
}

func (p *Postfix) command(args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, p.via...), programs["postfix"], "-c", filepath.Join(p.Dir, "etc")), args...)
	return exec.Command(argv[0], argv[1:]...).CombinedOutput()
}

// Maillog is the instance's log file.
func (p *Postfix) Maillog() string { return filepath.Join(p.Dir, "maillog") }

// Stop stops the instance.
func (p *Postfix) Stop() {
	if _, err := p.command("stop"); err != nil {
		killPIDFile(filepath.Join(p.Dir, "queue", "pid", "master.pid"), 5*time.Second)
	}
	WaitClosed(p.SMTPPort, 5*time.Second) //nolint:errcheck
}

// LogContains reports whether the maillog has a line with all the parts.
func (p *Postfix) LogContains(parts ...string) bool {
	b, err := os.ReadFile(p.Maillog())
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, s := range parts {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
