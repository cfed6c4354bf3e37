package dmarcreport

import "github.com/wehr/wehr/setting"

// Config is the reports: section of the configuration file.
type Config struct {
	// Record keeps a row in the store for every received message whose
	// DMARC policy asks for aggregate reports (rua).
	Record bool `yaml:"record"`
	// Queue is how many rows wait for the store while it does not
	// answer; past it rows are dropped, counted and logged.
	Queue int `yaml:"queue"`
}

// Default is the reports: section's defaults.
func Default() Config { return Config{Record: true, Queue: 10000} }

// Check reports the problems of the reports: section.
func (c Config) Check(p *setting.Problems) {
	if c.Queue < 1 || c.Queue > 1_000_000 {
		p.Add("queue", "must be 1 to 1000000, got %d", c.Queue)
	}
}
