package dnsname

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		name        string
		valid, host bool
	}{
		{"example.com", true, true},
		{"mx1.mail.example.com", true, true},
		{"selector._domainkey.example.com", true, true},
		{"localhost", true, false},
		{"-x.example", true, false},
		{"x-.example", true, false},
		{"x.-example", true, false},
		{"a-b.example", true, true},
		{long + ".example", true, true},
		{long + "a.example", false, false},
		{strings.Repeat("a.", 126) + "ab", false, false}, // 254 bytes: too long
		{strings.Repeat("a.", 125) + "abc", true, true},  // 253 bytes: the most
		{"", false, false},
		{".", false, false},
		{"example.com.", false, false},
		{"a..b", false, false},
		{"Example.com", false, false},
		{"exa mple.com", false, false},
		{"exa\x00mple.com", false, false},
		{"bücher.example", false, false},
		{"*.example.com", false, false},
	}
	for _, tc := range tests {
		if got := Valid(tc.name); got != tc.valid {
			t.Errorf("Valid(%q) = %v, want %v", tc.name, got, tc.valid)
		}
		if got := Host(tc.name); got != tc.host {
			t.Errorf("Host(%q) = %v, want %v", tc.name, got, tc.host)
		}
	}
}
