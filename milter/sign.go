package milter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/wehr/wehr/milterproto"

	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/smtpreply"
)

// outboundMessage signs outbound mail with the From domain's keys, when
// the sender may use that From address.
func (ss *session) outboundMessage(log *slog.Logger) milterproto.Reply {
	done := func(msg string, args ...any) milterproto.Reply {
		if strings.HasPrefix(msg, "outbound, signed") {
			ss.observe("signed")
		} else {
			ss.observe("unsigned")
		}
		log.Info("milter: "+msg, append(args, "duration_ms", time.Since(ss.start).Milliseconds())...)
		return milterproto.Accept
	}
	keys := ss.s.keys.Load()
	if keys == nil {
		return done("outbound, not signed: no DKIM keys configured")
	}
	rd, err := ss.spool.Reader()
	if err != nil {
		log.Error("milter: the spooled message cannot be read, answered 451", "error", err)
		return ss.tempfail("4.3.0 Mail filter error; please try again later")
	}
	h, err := mailauth.ReadHeader(bufio.NewReader(rd), ss.set.cfg.HeaderBytes)
	if errors.Is(err, mailauth.ErrHeaderTooLarge) {
		// The cap inbound mail has, for the same reason: a header
		// section costs work to read and to sign.
		log.Info("milter: refused outbound: header too large", "why", err.Error(), "reply", "552 5.3.4", "check", "limits")
		return ss.respond(smtpreply.Reply{Code: 552, Enhanced: "5.3.4", Check: "limits",
			Text: fmt.Sprintf("Message header too large (more than %d bytes); not accepted", ss.set.cfg.HeaderBytes)})
	}
	if err != nil {
		return done("outbound, not signed", "why", err.Error())
	}
	addrs, why := mailauth.AuthorAddresses(h)
	if len(addrs) == 0 {
		return done("outbound, not signed", "why", why)
	}
	domain := ""
	for _, a := range addrs {
		d := a[strings.LastIndexByte(a, '@')+1:]
		if domain != "" && d != domain {
			return done("outbound, not signed: From addresses in several domains", "from", strings.Join(addrs, ","))
		}
		domain = d
	}
	if ss.set.cfg.Senders == nil {
		return done("outbound, not signed: no sender map configured (dkim.sender_map)", "from", addrs[0])
	}
	sm := ss.set.cfg.Senders.Map()
	for _, a := range addrs {
		if ok, why := sm.Allowed(ss.authUser, ss.client, a); !ok {
			if ss.set.cfg.RefuseUnauthorized {
				log.Info("milter: refused: sender may not use the From address", "from", a, "user", ss.authUser, "why", why,
					"reply", "553 5.7.1", "check", "sender_map")
				return ss.respond(sendermap.Refusal(ss.authUser, ss.clientString(), a))
			}
			return done("outbound, not signed: sender may not use the From address", "from", a, "user", ss.authUser, "why", why)
		}
	}
	signDomain, ks, kerr := keys.Signing(domain)
	if kerr != nil {
		// One broken key file: this domain's mail only, as configured.
		if ss.set.cfg.OnKeyError == KeyErrorUnsigned {
			log.Error("milter: outbound, not signed: the DKIM keys of the domain are broken", "d", signDomain, "error", kerr)
			return done("outbound, not signed: DKIM keys broken", "d", signDomain)
		}
		log.Error("milter: outbound refused for now, answered 451: the DKIM keys of the domain are broken", "d", signDomain, "error", kerr,
			"reply", "451 4.3.0", "check", "dkim_keys")
		return ss.respond(smtpreply.Reply{Code: 451, Enhanced: "4.3.0", Check: "dkim_keys",
			Text: "The DKIM key of " + signDomain + " cannot be used here; the message stays queued with you, please try again later"})
	}
	if len(ks) == 0 {
		return done("outbound, not signed: no DKIM key for the From domain or its parents", "from_domain", domain)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ss.set.cfg.Timeout)
	defer cancel()
	sigs, err := dkimkeys.Sign(ctx, rd, signDomain, ks, ss.set.cfg.HeaderBytes)
	if err != nil {
		log.Error("milter: signing failed, answered 451", "error", err)
		return ss.tempfail("4.3.0 Could not sign this message; please try again later")
	}
	// The first key's signature goes on top: insert in reverse.
	for i := len(sigs) - 1; i >= 0; i-- {
		if err := ss.ms.InsertHeader(0, "DKIM-Signature", sigs[i]); err != nil {
			log.Error("milter: adding the signature failed, answered 451", "error", err)
			return ss.tempfail("4.3.0 Could not sign this message; please try again later")
		}
	}
	var sels []string
	for _, k := range ks {
		sels = append(sels, k.Selector+"/"+k.Algorithm)
	}
	return done("outbound, signed", "d", signDomain, "selectors", strings.Join(sels, ","), "from", addrs[0], "user", ss.authUser)
}
