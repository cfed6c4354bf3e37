package policyd

import (
	"errors"
	"testing"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want Query
		err  error
	}{
		{"not a policy request", Request{"request": "junk"}, Query{}, ErrNotPolicy},
		{"mx", Request{"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": "::ffff:192.0.2.1",
			"sender": "A@X.Example", "recipient": "Bob@Example.test", "instance": "i1", "policy_context": "mx"},
			Query{State: "RCPT", Context: "mx", Sender: "a@x.example", Recipient: "bob@example.test", Instance: "i1", RecipientCount: -1}, nil},
		{"a login without a context is submission", Request{"request": "smtpd_access_policy", "sasl_username": "alice", "client_address": "192.0.2.1"},
			Query{Context: "submission", User: "alice", RecipientCount: -1}, nil},
		{"unknown context gets the MX checks", Request{"request": "smtpd_access_policy", "policy_context": "port26", "client_address": "192.0.2.1"},
			Query{Context: "mx", UnknownContext: "port26", RecipientCount: -1}, nil},
		{"recipient count", Request{"request": "smtpd_access_policy", "recipient_count": "25", "client_address": "192.0.2.1"},
			Query{Context: "mx", RecipientCount: 25}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := ParseQuery(tc.req)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if !q.Client.IsValid() || q.Client.String() != "192.0.2.1" || q.ClientErr != nil {
				t.Errorf("client %v %v", q.Client, q.ClientErr)
			}
			q.Client = tc.want.Client
			if q != tc.want {
				t.Errorf("got %+v\nwant %+v", q, tc.want)
			}
		})
	}
	q, _ := ParseQuery(Request{"request": "smtpd_access_policy", "client_address": "unknown"})
	if q.ClientErr == nil || q.Client.IsValid() {
		t.Errorf("a bad client_address: %+v", q)
	}
}
