package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Dovecot is a private Dovecot instance delivering over LMTP into
// Maildirs, with a Sieve script that runs before the users' own.
type Dovecot struct {
	Dir      string
	LMTPPort int
}

// mailUID owns the mail; it need not exist in /etc/passwd.
const mailUID = "5000"

// DovecotConfig is what a test chooses about an instance.
type DovecotConfig struct {
	LMTPPort int
	Users    []string // full addresses
	// SieveBefore is the text of the sieve_before script ("" for none).
	SieveBefore string
	// IMAPPort, if set, serves IMAP (plaintext logins allowed) there.
	IMAPPort int
	// Name is the instance name ("" for wehr-it); two instances on one
	// machine need two names.
	Name string
	// Extra dovecot.conf lines.
	Extra string
}

// StartDovecot writes an instance under dir and starts it.
func StartDovecot(dir string, c DovecotConfig) (*Dovecot, error) {
	d := &Dovecot{Dir: dir, LMTPPort: c.LMTPPort}
	for _, sub := range []string{"run", "state", "mail", "sieve"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	var users strings.Builder
	for _, u := range c.Users {
		fmt.Fprintf(&users, "%s:{PLAIN}%spw:%s:%s::%s/mail/%s::\n", u, strings.Split(u, "@")[0], mailUID, mailUID, dir, u)
	}
	if err := writeFile(filepath.Join(dir, "users"), users.String(), 0o644); err != nil {
		return nil, err
	}
	sieve := ""
	if c.SieveBefore != "" {
		if err := writeFile(filepath.Join(dir, "sieve", "before.sieve"), c.SieveBefore, 0o644); err != nil {
			return nil, err
		}
		sieve = "plugin {\n  sieve_before = " + filepath.Join(dir, "sieve", "before.sieve") + "\n}\n"
	}
	name := c.Name
	if name == "" {
		name = "wehr-it"
	}
	protocols := "lmtp"
	imap := ""
	if c.IMAPPort != 0 {
		protocols = "lmtp imap"
		imap = fmt.Sprintf("service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n    port = %d\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}\n", c.IMAPPort)
	}
	conf := fmt.Sprintf(`instance_name = %[4]s
base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
hostname = store.example.test
protocols = %[5]s
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = 1000
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%Lu %[1]s/users
}
userdb {
  driver = passwd-file
  args = username_format=%%Lu %[1]s/users
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[2]d
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
protocol lmtp {
  mail_plugins = $mail_plugins sieve
}
%[3]s%[6]s%[7]s`, dir, c.LMTPPort, sieve, name, protocols, imap, c.Extra)
	if err := writeFile(filepath.Join(dir, "dovecot.conf"), conf, 0o644); err != nil {
		return nil, err
	}
	// LMTP delivers as the mail uid: it creates the homes and compiles
	// the Sieve script next to its source.
	for _, sub := range []string{"mail", "sieve"} {
		if out, err := exec.Command("chown", "-R", mailUID+":"+mailUID, filepath.Join(dir, sub)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("chown %s: %v: %s", sub, err, out)
		}
	}
	return d, d.start()
}

// start starts the instance from its written configuration.
func (d *Dovecot) start() error {
	dir := d.Dir
	cmd := exec.Command(programs["dovecot"], "-c", filepath.Join(dir, "dovecot.conf"))
	// Dovecot keeps the caller's stderr open after it daemonizes; hand
	// it a file, never a pipe.
	logf, err := os.OpenFile(filepath.Join(dir, "dovecot.stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("dovecot: %v\n%s\n%s", err, Tail(filepath.Join(dir, "dovecot.stderr"), 10), Tail(filepath.Join(dir, "dovecot.log"), 10))
	}
	if err := WaitListening(d.LMTPPort, 10*time.Second); err != nil {
		return fmt.Errorf("dovecot: %w\n%s", err, Tail(filepath.Join(dir, "dovecot.log"), 20))
	}
	return nil
}

// Restart stops and starts the instance.
func (d *Dovecot) Restart() error {
	d.Stop()
	return d.start()
}

// Stop stops the instance.
func (d *Dovecot) Stop() {
	killPIDFile(filepath.Join(d.Dir, "run", "master.pid"), 5*time.Second)
}

// SASLPath is the socket Postfix authenticates through.
func (d *Dovecot) SASLPath() string { return filepath.Join(d.Dir, "run", "auth-postfix") }

// Log is Dovecot's log file.
func (d *Dovecot) Log() string { return filepath.Join(d.Dir, "dovecot.log") }

// Message is a delivered message.
type Message struct {
	Path   string
	Folder string // "INBOX" or the folder name, e.g. "Junk"
	Data   string
}

// Messages lists the messages in a user's folder ("INBOX" or a name).
func (d *Dovecot) Messages(user, folder string) []Message {
	base := filepath.Join(d.Dir, "mail", user, "Maildir")
	if folder != "INBOX" {
		base = filepath.Join(base, "."+folder)
	}
	var out []Message
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(base, sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			out = append(out, Message{Path: f, Folder: folder, Data: string(b)})
		}
	}
	return out
}

// WaitMessage waits for a message with the marker text in the user's
// folder; it returns it, or reports where it went instead.
func (d *Dovecot) WaitMessage(user, folder, marker string, timeout time.Duration) (Message, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range d.Messages(user, folder) {
			if strings.Contains(m.Data, marker) {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			for _, other := range []string{"INBOX", "Junk"} {
				for _, m := range d.Messages(user, other) {
					if strings.Contains(m.Data, marker) {
						return Message{}, fmt.Errorf("message %q is in %s, not %s", marker, other, folder)
					}
				}
			}
			return Message{}, fmt.Errorf("message %q not in %s's %s after %v", marker, user, folder, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Find returns every delivered message with the marker, in any folder.
func (d *Dovecot) Find(user, marker string) []Message {
	var out []Message
	for _, f := range []string{"INBOX", "Junk"} {
		for _, m := range d.Messages(user, f) {
			if strings.Contains(m.Data, marker) {
				out = append(out, m)
			}
		}
	}
	return out
}
