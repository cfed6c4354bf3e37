package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/setting"
)

// Config is the web: section of the configuration file.
type Config struct {
	// Listen is inet:HOST:PORT; "" serves no web view.
	Listen string `yaml:"listen"`
	// AllowRemote lets Listen be other than loopback (then set TLS).
	AllowRemote bool `yaml:"allow_remote"`
	// TLSCert and TLSKey, both or neither: serve HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Tokens say who sees what: each a name, the SHA-256 of the token
	// (wehr web token makes both), and either admin or the domains it
	// shows.
	Tokens []Token `yaml:"tokens"`
}

// Token is one reader of the web view.
type Token struct {
	Name string `yaml:"name"`
	// Hash is "sha256:" and the hex SHA-256 of the token: the token
	// itself is never stored.
	Hash    string   `yaml:"hash"`
	Admin   bool     `yaml:"admin"`
	Domains []string `yaml:"domains"`
}

// Check reports the problems of the web: section.
func (c Config) Check(p *setting.Problems) {
	if c.Listen == "" {
		return
	}
	if a, err := listener.ParseAddress(c.Listen, c.AllowRemote); err != nil {
		p.Add("listen", "%v", err)
	} else if a.Network != "tcp" {
		p.Add("listen", "%q: the web view listens on inet:HOST:PORT", c.Listen)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		p.Add("tls_cert", "tls_cert and tls_key go together")
	}
	if len(c.Tokens) == 0 {
		p.Add("tokens", "no tokens: nobody could see anything (wehr web token --admin makes one)")
	}
	names := map[string]bool{}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("tokens[%d]", i)
		if t.Name == "" || names[t.Name] {
			p.Add(key+".name", "%q: each token needs a name of its own", t.Name)
		}
		names[t.Name] = true
		if _, err := parseHash(t.Hash); err != nil {
			p.Add(key+".hash", "%v", err)
		}
		if t.Admin == (len(t.Domains) > 0) {
			p.Add(key, "either admin: true or domains, one of the two")
		}
		p.Domains(key+".domains", t.Domains)
	}
}

func parseHash(h string) ([]byte, error) {
	hexPart, ok := strings.CutPrefix(h, "sha256:")
	b, err := hex.DecodeString(hexPart)
	if !ok || err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%q: want sha256: and 64 hex digits (wehr web token prints it)", h)
	}
	return b, nil
}

// NewToken makes a token and the hash to put in the configuration.
func NewToken() (token, hash string) {
	var b [24]byte
	rand.Read(b[:])
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token)
}

// HashToken is what the configuration keeps of a token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// reader is who asks, once their token matched.
type reader struct {
	name    string
	admin   bool
	domains map[string]bool
}

func (r *reader) sees(domain string) bool { return r.admin || r.domains[strings.ToLower(domain)] }

// readers are the configured tokens as requests are matched against
// them: each hash decoded and each reader made once, at start and at
// reload, not on every request.
type readers []struct {
	sum []byte
	r   *reader
}

func newReaders(tokens []Token) readers {
	out := make(readers, 0, len(tokens))
	for _, t := range tokens {
		sum, err := parseHash(t.Hash)
		if err != nil {
			continue // refused by Check at start and reload
		}
		rd := &reader{name: t.Name, admin: t.Admin, domains: map[string]bool{}}
		for _, d := range t.Domains {
			rd.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = true
		}
		out = append(out, struct {
			sum []byte
			r   *reader
		}{sum, rd})
	}
	return out
}

// match finds the token's reader; every configured hash is compared,
// in constant time, whatever matches first.
func (rs readers) match(token string) *reader {
	if token == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	var found *reader
	for _, x := range rs {
		if subtle.ConstantTimeCompare(sum[:], x.sum) == 1 && found == nil {
			found = x.r
		}
	}
	return found
}
