// Package metrics exports what wehr does as Prometheus metrics: messages
// by action, policy decisions by action and check, store failures, DNS
// lookups. Labels are bounded sets (actions, check names), never domains
// or addresses.
package metrics

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wehr/wehr/resolver"
)

// Metrics holds the collectors of one process.
type Metrics struct {
	reg             *prometheus.Registry
	messages        *prometheus.CounterVec
	messageSeconds  prometheus.Histogram
	decisions       *prometheus.CounterVec
	decisionSeconds prometheus.Histogram
	storeErrors     *prometheus.CounterVec
	reportRows      *prometheus.CounterVec
	authDecisions   *prometheus.CounterVec
	authSeconds     prometheus.Histogram
}

// New makes the collectors; res, if not nil, is exported too.
func New(res *resolver.Resolver) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.messages = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wehr_milter_messages_total",
		Help: "Messages the milter finished, by action (accept, quarantine, reject, tempfail, signed, unsigned)."}, []string{"action"})
	m.messageSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wehr_milter_message_seconds",
		Help: "Time from MAIL FROM to the milter's answer at end of message.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wehr_policyd_decisions_total",
		Help: "Policy decisions, by context, action class and deciding check."}, []string{"context", "action", "check"})
	m.decisionSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wehr_policyd_decision_seconds",
		Help: "Time to answer one policy request.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wehr_store_errors_total",
		Help: "Times the store did not answer, by the part of wehr that asked."}, []string{"user"})
	m.reportRows = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wehr_dmarc_report_rows_total",
		Help: "DMARC aggregate report rows of received mail: written to the store, retried, or dropped (queue full)."}, []string{"result"})
	m.authDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wehr_authpolicy_decisions_total",
		Help: "Dovecot auth policy requests, by command (allow, report) and outcome (allow, delay, refuse, success, failure, refused, store_down, bad_request)."}, []string{"command", "outcome"})
	m.authSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wehr_authpolicy_seconds",
		Help: "Time to answer one auth policy request.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)})
	m.reg.MustRegister(m.messages, m.messageSeconds, m.decisions, m.decisionSeconds, m.storeErrors, m.reportRows, m.authDecisions, m.authSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if res != nil {
		stat := func(name, help string, f func(resolver.Stats) int64) prometheus.Collector {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(res.Stats())) })
		}
		m.reg.MustRegister(
			stat("wehr_dns_lookups_total", "DNS lookups asked of the resolver.", func(s resolver.Stats) int64 { return s.Lookups }),
			stat("wehr_dns_cache_hits_total", "DNS lookups answered from the cache.", func(s resolver.Stats) int64 { return s.CacheHits }),
			stat("wehr_dns_coalesced_total", "DNS lookups that waited for an identical one in flight.", func(s resolver.Stats) int64 { return s.Coalesced }),
			stat("wehr_dns_exchanges_total", "Queries sent to DNS servers.", func(s resolver.Stats) int64 { return s.Exchanges }),
			stat("wehr_dns_tcp_retries_total", "Truncated answers asked again over TCP.", func(s resolver.Stats) int64 { return s.TCPRetry }),
			stat("wehr_dns_failures_total", "DNS lookups that ended in a temporary error.", func(s resolver.Stats) int64 { return s.Failures }),
			stat("wehr_dns_stale_total", "DNS lookups answered with an expired answer while the servers failed (dns.serve_stale, RFC 8767).", func(s resolver.Stats) int64 { return s.Stale }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wehr_dns_cache_entries", Help: "Answers in the DNS cache."},
				func() float64 { return float64(res.CacheLen()) }),
		)
	}
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Message counts a message the milter finished.
func (m *Metrics) Message(action string, d time.Duration) {
	if m == nil {
		return
	}
	m.messages.WithLabelValues(action).Inc()
	m.messageSeconds.Observe(d.Seconds())
}

// Decision counts a policy decision; action is reduced to its class
// (DUNNO, FILTER, or the reply code).
func (m *Metrics) Decision(context, action, check string, d time.Duration) {
	if m == nil {
		return
	}
	class, _, _ := strings.Cut(action, " ")
	if context == "" {
		context = "none"
	}
	m.decisions.WithLabelValues(context, class, check).Inc()
	m.decisionSeconds.Observe(d.Seconds())
}

// StoreError counts a store failure seen by user (policyd, milter).
func (m *Metrics) StoreError(user string) {
	if m == nil {
		return
	}
	m.storeErrors.WithLabelValues(user).Inc()
}

// AuthPolicy counts an auth policy request.
func (m *Metrics) AuthPolicy(command, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	if command != "allow" && command != "report" {
		command = "other"
	}
	m.authDecisions.WithLabelValues(command, outcome).Inc()
	m.authSeconds.Observe(d.Seconds())
}

// ReportRows counts what happened to n DMARC report rows.
func (m *Metrics) ReportRows(result string, n int64) {
	if m == nil {
		return
	}
	m.reportRows.WithLabelValues(result).Add(float64(n))
}
