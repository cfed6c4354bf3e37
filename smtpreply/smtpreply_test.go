package smtpreply

import "testing"

func TestReply(t *testing.T) {
	r := Reply{Code: 550, Enhanced: "5.7.1", Text: "Message rejected", Check: "dmarc"}
	if r.String() != "550 5.7.1 Message rejected" || r.Temporary() || r.Valid() != nil {
		t.Fatalf("%q temporary=%v valid=%v", r, r.Temporary(), r.Valid())
	}
	if !(Reply{Code: 451, Enhanced: "4.7.5"}).Temporary() {
		t.Fatal("451 not temporary")
	}
	for _, bad := range []Reply{
		{Code: 550, Enhanced: "4.7.1", Text: "x"},
		{Code: 250, Enhanced: "2.0.0", Text: "x"},
		{Code: 550, Enhanced: "5.7", Text: "x"},
		{Code: 550, Enhanced: "5.7.1", Text: "a\r\nb"},
	} {
		if bad.Valid() == nil {
			t.Errorf("%+v passed Valid", bad)
		}
	}
}
