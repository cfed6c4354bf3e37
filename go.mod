module github.com/wehr/wehr

go 1.26.0

require (
	blitiri.com.ar/go/spf v1.6.0
	github.com/miekg/dns v1.1.73
	github.com/spf13/cobra v1.10.2
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
