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

// TestParseValueStartingWithEquals: a local part may start with "="
// (RFC 5322 atext), and Format writes such an address unquoted, so Parse
// reads it back (found by FuzzParse).
func TestParseValueStartingWithEquals(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example; spf=pass smtp.mailfrom==x@example.org":  "=x@example.org",
		"mx.example; spf=pass smtp.mailfrom=a=b@example.org": "a=b@example.org",
	} {
		_, rs, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if v, _ := rs[0].Prop("smtp", "mailfrom"); v != want {
			t.Errorf("Parse(%q): smtp.mailfrom = %q, want %q", in, v, want)
		}
	}
	if _, _, err := Parse("mx.example; spf=pass smtp.mailfrom= =x@example.org"); err == nil {
		t.Error("a value after a space and a second \"=\" parsed")
	}
}
