package mailauth

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/spf"
)

// The Authentication-Results of a verdict (RFC 8601).

// finish sets the action, the reply and the A-R header.
func (v *Verdict) finish(authservID string) {
	switch {
	case v.Reply != nil && v.Reply.Temporary():
		v.Action = ActionTempfail
	case v.Reply != nil:
		v.Action = ActionReject
	case v.DMARC.Disposition == PolicyQuarantine:
		v.Action = ActionQuarantine
	default:
		v.Action = ActionAccept
	}
	if v.Reply != nil {
		v.SMTPReply = v.Reply.String()
	}
	v.Results = v.authResults()
	v.AuthenticationResults = authres.Format(authservID, v.Results)
}

// authResults builds the A-R results: iprev, auth, spf, dkim, dmarc.
func (v *Verdict) authResults() []authres.Result {
	rs := make([]authres.Result, 0, 5+len(v.DKIM)+len(v.AllDMARC))
	if v.IPRev.Result != iprev.None && v.IPRev.Result != "" {
		r := authres.Result{Method: "iprev", Value: string(v.IPRev.Result)}
		if v.IPRev.Result != iprev.Pass {
			r.Reason = v.IPRev.Error
		}
		ipProp := authres.Prop{Type: "policy", Property: "iprev", Value: v.IPRev.IP}
		if v.IPRev.Name != "" {
			ipProp.Comment = v.IPRev.Name
		}
		r.Props = append(r.Props, ipProp)
		rs = append(rs, r)
	}
	if v.Auth.Result == "pass" {
		rs = append(rs, authres.Result{Method: "auth", Value: "pass",
			Props: []authres.Prop{{Type: "smtp", Property: "auth", Value: v.Auth.User}}})
	}
	res := authres.Result{Method: "spf", Value: string(v.SPF.Result)}
	switch {
	case v.SPF.Result == spf.Fail && v.SPF.Explanation != "":
		res.Comment = v.SPF.Explanation
	case v.SPF.Error != "":
		res.Reason = v.SPF.Error
	case v.SPF.Detail != "":
		res.Comment = v.SPF.Detail
	}
	if v.SPF.Identity != "" {
		res.Props = append(res.Props, authres.Prop{Type: "smtp", Property: "mailfrom", Value: v.SPF.Identity})
	} else if v.SPF.Domain != "" {
		res.Props = append(res.Props, authres.Prop{Type: "smtp", Property: "mailfrom", Value: v.SPF.Domain})
	}
	rs = append(rs, res)
	if h := v.HeloSPF; h != nil {
		r := authres.Result{Method: "spf", Value: string(h.Result), Reason: h.Error,
			Props: []authres.Prop{{Type: "smtp", Property: "helo", Value: h.Domain}}}
		rs = append(rs, r)
	}
	if len(v.DKIM) == 0 {
		rs = append(rs, authres.Result{Method: "dkim", Value: string(DKIMNone), Comment: "no signatures"})
	}
	notChecked := 0
	for _, s := range v.DKIM {
		if s.notChecked {
			// One entry for them all: a message with 500 signatures
			// must not make a header too large to add (issue 10.11).
			notChecked++
			continue
		}
		r := authres.Result{Method: "dkim", Value: string(s.Result), Reason: s.Error}
		if s.KeyBits > 0 {
			r.Comment = strconv.Itoa(s.KeyBits) + "-bit key"
		}
		r.Props = make([]authres.Prop, 0, 5)
		for _, p := range []struct{ k, v string }{{"d", s.Domain}, {"i", s.Identifier}, {"s", s.Selector}, {"a", s.Algorithm}, {"b", s.B}} {
			if p.v != "" {
				r.Props = append(r.Props, authres.Prop{Type: "header", Property: p.k, Value: p.v})
			}
		}
		rs = append(rs, r)
	}
	if notChecked > 0 {
		rs = append(rs, authres.Result{Method: "dkim", Value: string(DKIMNeutral),
			Comment: fmt.Sprintf("%d more signatures not checked", notChecked)})
	}
	if v.ARC.Instances > 0 || v.ARC.Result == ARCFail {
		// RFC 8617 10.1: arc=, smtp.remote-ip, header.oldest-pass.
		r := authres.Result{Method: "arc", Value: string(v.ARC.Result), Reason: v.ARC.Error}
		if len(v.ARC.Sealers) > 0 {
			r.Comment = fmt.Sprintf("%d sets, sealed by %s", v.ARC.Instances, strings.Join(v.ARC.Sealers, ","))
		}
		if v.ARC.remoteIP != "" {
			r.Props = append(r.Props, authres.Prop{Type: "smtp", Property: "remote-ip", Value: v.ARC.remoteIP})
		}
		if v.ARC.Result == ARCPass {
			r.Props = append(r.Props, authres.Prop{Type: "header", Property: "oldest-pass", Value: fmt.Sprint(v.ARC.OldestPass)})
		}
		rs = append(rs, r)
	}
	for _, d := range v.AllDMARC {
		r := authres.Result{Method: "dmarc", Value: string(d.Result)}
		c := make([]string, 0, 5)
		if d.Policy != "" {
			c = append(c, d.PolicyTag+"="+d.Policy)
			c = append(c, "applied "+d.Disposition)
		}
		if len(d.Overrides) > 0 {
			c = append(c, "overrides "+strings.Join(d.Overrides, " "))
		}
		if len(d.RefusalEvidence) > 0 && d.Disposition == PolicyReject {
			c = append(c, "evidence "+strings.Join(d.RefusalEvidence, " "))
		}
		if d.Reason != "" {
			c = append(c, d.Reason)
		}
		r.Comment = strings.Join(c, ", ")
		if d.FromDomain != "" {
			r.Props = append(r.Props, authres.Prop{Type: "header", Property: "from", Value: d.FromDomain})
		}
		if d.Policy != "" {
			r.Props = append(r.Props, authres.Prop{Type: "policy", Property: "dmarc", Value: d.Disposition})
		}
		rs = append(rs, r)
	}
	return rs
}
