module github.com/wehr/wehr

go 1.26.0

require (
	blitiri.com.ar/go/spf v1.6.0
	github.com/miekg/dns v1.1.73
	gopkg.in/yaml.v3 v3.0.1
)

require (
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
