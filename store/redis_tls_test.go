package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
)

// writeCA makes a CA and a server certificate for 127.0.0.1 signed by
// it; it returns the files.
func writeCA(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, _ := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	kder, _ := x509.MarshalPKCS8PrivateKey(srvKey)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return ca, cert, key
}

// The store over TLS to a real redis-server (tls-port): it works with the
// right CA; a wrong CA and a plaintext client are refused.
func TestRedisTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCA(t, dir)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	tlsPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	storetest.StartRedis(t, fmt.Sprintf("tls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-auth-clients no\n", tlsPort, cert, key))
	addr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	ctx := context.Background()
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{addr}, Timeout: time.Second,
		TLS: store.RedisTLS{Enabled: true, CAFile: ca}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Set(ctx, "k", []byte("over TLS"), time.Minute); err != nil {
		t.Fatalf("set over TLS: %v", err)
	}
	if v, ok, err := st.Get(ctx, "k"); err != nil || !ok || string(v) != "over TLS" {
		t.Fatalf("get over TLS: %q %v %v", v, ok, err)
	}
	if n, err := st.Window(ctx, "w", time.Now(), time.Minute, 2); err != nil || n != 2 {
		t.Fatalf("a script over TLS: %d %v", n, err)
	}
	otherCA, _, _ := writeCA(t, t.TempDir())
	bad, _ := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{addr}, Timeout: time.Second,
		TLS: store.RedisTLS{Enabled: true, CAFile: otherCA}})
	defer bad.Close()
	if err := bad.Ping(ctx); err == nil {
		t.Error("a certificate of another CA was accepted")
	}
	plain, _ := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{addr}, Timeout: 300 * time.Millisecond})
	defer plain.Close()
	if err := plain.Ping(ctx); err == nil {
		t.Error("plaintext to the TLS port worked")
	}
}
