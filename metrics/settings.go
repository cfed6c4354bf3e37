package metrics

import (
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/setting"
)

// Config is the metrics: section of the configuration file.
type Config struct {
	// Listen is inet:HOST:PORT for http://HOST:PORT/metrics; empty: off.
	Listen string `yaml:"listen"`
	// AllowRemote lets Listen be other than loopback.
	AllowRemote bool `yaml:"allow_remote"`
	// Pprof serves Go's profiler at /debug/pprof/ beside the metrics,
	// to find where a busy daemon spends its CPU; off by default.
	Pprof bool `yaml:"pprof"`
}

// Check reports the problems of the metrics: section.
func (c Config) Check(p *setting.Problems) {
	if c.Listen == "" {
		if c.Pprof {
			p.Add("pprof", "needs metrics.listen: the profiler is served beside the metrics")
		}
		return
	}
	if a, err := listener.ParseAddress(c.Listen, c.AllowRemote); err != nil {
		p.Add("listen", "%v", err)
	} else if a.Network != "tcp" {
		p.Add("listen", "%q: the metrics endpoint listens on inet:HOST:PORT", c.Listen)
	}
}
