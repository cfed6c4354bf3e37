package authres

import "testing"

func TestLooseID(t *testing.T) {
	for in, want := range map[string]string{
		" mx.example; spf=pass":             "mx.example",
		" MX.Example.; spf=pass":            "mx.example",
		" mx.example\u00a0; dkim=pass":      "mx.example",
		` mx\.example; dkim=pass`:           "mx.example",
		` "mx.example"; dkim=pass`:          "mx.example",
		" mx.example=; dkim=pass":           "mx.example",
		" (c (nested)) mx.example 1; none":  "mx.example",
		" mx.example..;":                    "mx.example",
		" other.example; dkim=pass":         "other.example",
		" (unterminated mx.example; none":   "",
		"\r\n\tmx.example\r\n\t; dkim=pass": "mx.example",
	} {
		if got := LooseID(in); got != want {
			t.Errorf("LooseID(%q) = %q, want %q", in, got, want)
		}
	}
}
