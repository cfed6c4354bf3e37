package dkimkeys

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/wehr/wehr/mailauth"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestGenerateLoadPermissions(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	k, err := s.Generate("Example.ORG", "2026a-rsa", RSA, Active, t0)
	if err != nil {
		t.Fatal(err)
	}
	if k.Domain != "example.org" || k.Bits != 2048 || !strings.HasPrefix(k.Record(), "v=DKIM1; k=rsa; p=MII") {
		t.Fatalf("key %+v record %q", k, k.Record())
	}
	fi, _ := os.Stat(k.Path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("written with mode %v", fi.Mode())
	}
	if _, err := s.Generate("example.org", "2026a-ed", Ed25519, Active, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Generate("example.org", "2026a-ed", Ed25519, Active, t0); err == nil {
		t.Fatal("overwrote an existing key")
	}
	set, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys("example.org")) != 2 {
		t.Fatalf("keys %v", set.Keys("example.org"))
	}
	// Group-readable: refused, naming the file and the mode it needs.
	os.Chmod(k.Path, 0o640) //nolint:errcheck
	_, err = s.Load()
	if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), k.Path) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loose permissions: %v", err)
	}
	os.Chmod(k.Path, 0o400) //nolint:errcheck
	if _, err := s.Load(); err != nil {
		t.Fatalf("0400 refused: %v", err)
	}
	// Not a key.
	os.WriteFile(filepath.Join(s.Dir, "example.org", "junk.pem"), []byte("hello"), 0o600) //nolint:errcheck
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "junk.pem") {
		t.Fatalf("junk file: %v", err)
	}
}

// One broken domain breaks that domain alone: the others sign, it is
// never signed with a parent's keys instead, and a reload keeps what was
// loaded before for it (issue 10, local users).
func TestBrokenDomainAlone(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	s.Generate("example.org", "a", Ed25519, Active, t0)      //nolint:errcheck
	s.Generate("news.example.org", "n", Ed25519, Active, t0) //nolint:errcheck
	s.Generate("example.net", "b", Ed25519, Active, t0)      //nolint:errcheck
	before, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(s.Dir, "news.example.org", "n.pem")
	os.Chmod(bad, 0o644) //nolint:errcheck
	set, err := s.Load()
	if !errors.Is(err, ErrPermissions) || set == nil {
		t.Fatalf("Load: %v %v", set, err)
	}
	if d, ks, err := set.Signing("example.net"); err != nil || d != "example.net" || len(ks) != 1 {
		t.Errorf("example.net: %s %v %v", d, ks, err)
	}
	if d, ks, err := set.Signing("news.example.org"); err == nil || d != "news.example.org" || len(ks) != 0 {
		t.Errorf("news.example.org signed as %s with %v (%v)", d, ks, err)
	}
	if _, ok := set.Broken()["news.example.org"]; !ok || len(set.Broken()) != 1 {
		t.Errorf("broken %v", set.Broken())
	}
	if kept := set.KeepFrom(before); len(kept) != 1 || kept[0] != "news.example.org" {
		t.Errorf("kept %v", kept)
	}
	if _, ks, err := set.Signing("news.example.org"); err != nil || len(ks) != 1 {
		t.Errorf("after KeepFrom: %v %v", ks, err)
	}
	// The directory unreadable: every domain broken, none signed.
	none, err := (&Store{Dir: filepath.Join(s.Dir, "missing")}).Load()
	if err == nil || none == nil {
		t.Fatalf("missing dir: %v %v", none, err)
	}
	if _, _, err := none.Signing("example.net"); err == nil {
		t.Error("signing with an unreadable key directory")
	}
}

func TestZoneLine(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	k, err := s.Generate("example.org", "sel", RSA, Active, t0)
	if err != nil {
		t.Fatal(err)
	}
	z := k.ZoneLine()
	if !strings.HasPrefix(z, "sel._domainkey.example.org. IN TXT ( \"v=DKIM1; k=rsa; p=") {
		t.Fatalf("zone line %q", z)
	}
	// Strings of at most 255 bytes that join back to the record.
	var joined strings.Builder
	for _, part := range strings.Split(z, "\"")[1:] {
		if strings.TrimSpace(part) == "" || strings.HasPrefix(strings.TrimSpace(part), ")") {
			continue
		}
		if len(part) > 255 {
			t.Fatalf("string of %d bytes", len(part))
		}
		joined.WriteString(part)
	}
	if joined.String() != k.Record() {
		t.Fatalf("zone strings join to %q", joined.String())
	}
}

func TestSigningParentDomain(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	for _, g := range []struct{ d, sel, alg, state string }{
		{"example.org", "a-ed", Ed25519, Active}, {"example.org", "a-rsa", RSA, Active},
		{"example.org", "b-rsa", RSA, Pending}, {"shop.example.net", "s", RSA, Active},
	} {
		if _, err := s.Generate(g.d, g.sel, g.alg, g.state, t0); err != nil {
			t.Fatal(err)
		}
	}
	set, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ from, d, sels string }{
		{"example.org", "example.org", "a-rsa a-ed"},
		{"news.example.org", "example.org", "a-rsa a-ed"},
		{"a.b.c.example.org", "example.org", "a-rsa a-ed"},
		{"example.net", "", ""},
		{"shop.example.net", "shop.example.net", "s"},
		{"other.test", "", ""},
	}
	for _, tc := range tests {
		d, keys, err := set.Signing(tc.from)
		if err != nil {
			t.Fatal(err)
		}
		var sels []string
		for _, k := range keys {
			sels = append(sels, k.Selector)
		}
		if d != tc.d || strings.Join(sels, " ") != tc.sels {
			t.Errorf("Signing(%s) = %s %v, want %s %s", tc.from, d, sels, tc.d, tc.sels)
		}
	}
}

// fakeDNS serves TXT records from a map.
type fakeDNS map[string][]string

func (f fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := f[strings.ToLower(name)]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func TestRotation(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	old, err := s.Generate("example.org", "2026a-rsa", RSA, Active, t0)
	if err != nil {
		t.Fatal(err)
	}
	dns := fakeDNS{old.RecordName(): {old.Record()}}
	ctx := context.Background()

	newKeys, err := s.Rotate("example.org", nil, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(newKeys) != 1 || newKeys[0].Selector != "2026b-rsa" || newKeys[0].State != Pending {
		t.Fatalf("rotate made %+v", newKeys)
	}
	if _, err := s.Rotate("example.org", nil, t0.Add(2*time.Hour)); err == nil {
		t.Fatal("second rotation while one is pending")
	}
	signingSelector := func() string {
		set, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		_, ks, _ := set.Signing("example.org")
		var sels []string
		for _, k := range ks {
			sels = append(sels, k.Selector)
		}
		return strings.Join(sels, " ")
	}
	// Not in DNS yet: the old key keeps signing.
	tr, err := s.Advance(ctx, dns, 48*time.Hour, t0.Add(3*time.Hour))
	if err != nil || len(tr) != 0 || signingSelector() != "2026a-rsa" {
		t.Fatalf("before publication: %v %v signing %s", tr, err, signingSelector())
	}
	// A record with another key does not count.
	dns[newKeys[0].RecordName()] = []string{old.Record()}
	if tr, _ := s.Advance(ctx, dns, 48*time.Hour, t0.Add(4*time.Hour)); len(tr) != 0 {
		t.Fatalf("wrong record promoted: %v", tr)
	}
	// Published: the new key signs, the old one retires.
	dns[newKeys[0].RecordName()] = []string{newKeys[0].Record()}
	tr, err = s.Advance(ctx, dns, 48*time.Hour, t0.Add(5*time.Hour))
	if err != nil || len(tr) != 2 || signingSelector() != "2026b-rsa" {
		t.Fatalf("after publication: %v %v signing %s", tr, err, signingSelector())
	}
	// After the overlap the old key is retired.
	if tr, _ := s.Advance(ctx, dns, 48*time.Hour, t0.Add(52*time.Hour)); len(tr) != 0 {
		t.Fatalf("retired before the overlap ended: %v", tr)
	}
	tr, _ = s.Advance(ctx, dns, 48*time.Hour, t0.Add(54*time.Hour))
	if len(tr) != 1 || tr[0].Selector != "2026a-rsa" || tr[0].To != Retired {
		t.Fatalf("retirement: %v", tr)
	}
	// A second store (another node with the same files) sees the same.
	other := &Store{Dir: s.Dir}
	set, err := other.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys("example.org") {
		want := map[string]string{"2026a-rsa": Retired, "2026b-rsa": Active}[k.Selector]
		if k.State != want {
			t.Errorf("%s: %s, want %s", k.Selector, k.State, want)
		}
	}
}

const msg = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\nList-Id: <l.example.org>\r\n\r\nHi Bob.\r\n"

func verify(t *testing.T, dns fakeDNS, m string) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(strings.NewReader(m), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return dns.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestSignOversigning(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	rk, _ := s.Generate("example.org", "r", RSA, Active, t0)
	ek, _ := s.Generate("example.org", "e", Ed25519, Active, t0)
	dns := fakeDNS{rk.RecordName(): {rk.Record()}, ek.RecordName(): {ek.Record()}}
	sigs, err := Sign(context.Background(), bytes.NewReader([]byte(msg)), "example.org", []*Key{rk, ek}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 2 || !strings.HasPrefix(sigs[0], " ") || !strings.Contains(sigs[0], "a=rsa-sha256") || !strings.Contains(sigs[1], "a=ed25519-sha256") {
		t.Fatalf("signatures %q", sigs)
	}
	signed := "DKIM-Signature:" + sigs[1] + "\r\nDKIM-Signature:" + sigs[0] + "\r\n" + msg
	for _, v := range verify(t, dns, signed) {
		if v.Err != nil {
			t.Fatalf("%s: %v", v.Domain, v.Err)
		}
	}
	// h=: From oversigned (present once, listed twice), absent Cc listed
	// once, List-Id listed exactly once.
	h := ""
	for _, part := range strings.Split(strings.Join(strings.Fields(sigs[0]), ""), ";") {
		if strings.HasPrefix(part, "h=") {
			h = strings.ToLower(part[2:])
		}
	}
	if strings.Count(h, "from") != 2 || strings.Count(h, "cc") != 1 || strings.Count(h, "list-id") != 1 {
		t.Fatalf("h=%s", h)
	}
	// A second From prepended on the way breaks both signatures.
	forged := "From: ceo@example.org\r\n" + signed
	for _, v := range verify(t, dns, forged) {
		if v.Err == nil {
			t.Fatal("signature survived a prepended From")
		}
	}
	// A list adding a second List-Id does not break it... but editing one does.
	relaxedFold := strings.Replace(signed, "Subject: hello", "Subject:   hello", 1)
	for _, v := range verify(t, dns, relaxedFold) {
		if v.Err != nil {
			t.Fatalf("relaxed canonicalization: %v", v.Err)
		}
	}
	if _, err := Sign(context.Background(), bytes.NewReader([]byte("Subject: x\r\n\r\nbody\r\n")), "example.org", []*Key{rk}, 0); err == nil {
		t.Fatal("signed a message without From")
	}
}

// The outbound path has the inbound path's header cap and a deadline,
// and signs long folded fields in linear time (issue 10.10).
func TestSignLimits(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	rk, _ := s.Generate("example.org", "r", RSA, Active, t0)
	fold := "X-Fold:" + strings.Repeat(" a\r\n", 25000)
	big := "From: a@example.org\r\n" + strings.Repeat(fold, 3) + "\r\nbody\r\n"
	if _, err := Sign(context.Background(), strings.NewReader(big), "example.org", []*Key{rk}, 1<<17); !errors.Is(err, mailauth.ErrHeaderTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	sigs, err := Sign(context.Background(), strings.NewReader(big), "example.org", []*Key{rk}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	dns := fakeDNS{rk.RecordName(): {rk.Record()}}
	for _, v := range verify(t, dns, "DKIM-Signature:"+sigs[0]+"\r\n"+big) {
		if v.Err != nil {
			t.Fatalf("folded fields: %v", v.Err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Sign(ctx, strings.NewReader(big), "example.org", []*Key{rk}, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestNextSelectors(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	r, e, err := s.NextSelectors("example.org", t0)
	if err != nil || r != "2026a-rsa" || e != "2026a-ed" {
		t.Fatalf("%s %s %v", r, e, err)
	}
	s.Generate("example.org", "2026a-rsa", RSA, Active, t0) //nolint:errcheck
	if r, _, _ := s.NextSelectors("example.org", t0); r != "2026b-rsa" {
		t.Fatalf("next %s", r)
	}
}

func BenchmarkSignRSA2048(b *testing.B) { benchSign(b, 100, RSA) }
func BenchmarkSignEd25519(b *testing.B) { benchSign(b, 100, Ed25519) }

// Both keys, as wehr signs, on a 1 MB body: the body is read once.
func BenchmarkSignDual1MB(b *testing.B) { benchSign(b, 25000, RSA, Ed25519) }

func benchSign(b *testing.B, lines int, algs ...string) {
	s := &Store{Dir: b.TempDir()}
	var keys []*Key
	for i, alg := range algs {
		k, err := s.Generate("example.org", fmt.Sprintf("s%d", i), alg, Active, t0)
		if err != nil {
			b.Fatal(err)
		}
		keys = append(keys, k)
	}
	m := bytes.NewReader([]byte(msg + strings.Repeat("A line of body text for the benchmark.\r\n", lines)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(context.Background(), m, "example.org", keys, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAdvice(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	k := &Key{Domain: "example.org", Selector: "s1", Algorithm: Ed25519, Signer: priv}
	for _, tc := range []struct {
		state     string
		published bool
		want      string // prefix; "" for no advice
	}{
		{Active, false, "publish: s1._domainkey.example.org TXT v=DKIM1"},
		{Pending, false, "publish: s1._domainkey.example.org TXT v=DKIM1"},
		{Active, true, ""},
		{Retiring, false, ""},
		{Retired, true, "retired: the record at s1._domainkey.example.org can be removed"},
		{Retired, false, ""},
	} {
		k.State = tc.state
		got := k.Advice(tc.published)
		if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s published=%v: %q, want %q...", tc.state, tc.published, got, tc.want)
		}
	}
}
