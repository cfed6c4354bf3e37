package tlsrpt

import (
	"errors"
	"strings"
	"testing"
)

func TestSelectRecord(t *testing.T) {
	tests := []struct {
		txts []string
		want string // addresses joined, or the error's words
	}{
		{[]string{"v=TLSRPTv1; rua=mailto:tls@example.net"}, "mailto:tls@example.net"},
		{[]string{"v=spf1 -all", "v=TLSRPTv1;rua=mailto:a@example.net, https://r.example.net/tls"}, "mailto:a@example.net https://r.example.net/tls"},
		{nil, "none published"},
		{[]string{"v=TLSRPTv1; rua=mailto:a@x.example", "v=TLSRPTv1; rua=mailto:b@x.example"}, "2 records"},
		{[]string{"v=TLSRPTv1"}, "no mailto: or https: rua="},
		{[]string{"v=TLSRPTv1; rua=ftp://x.example/"}, "no mailto: or https: rua="},
		{[]string{"v=TLSRPTv10; rua=mailto:a@x.example"}, "none published"},
	}
	for _, tc := range tests {
		got, err := SelectRecord(tc.txts)
		if err != nil {
			if !errors.Is(err, ErrNoRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q: %v, want %q", tc.txts, err, tc.want)
			}
			continue
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: %q, want %q", tc.txts, got, tc.want)
		}
	}
}
