# wehr: build, test, lint, bench. `make test` is the test command of the
# README and of CI: it installs what the tests need, then runs them all.

GO ?= go
PKGS := ./...

.PHONY: build run test test-deps unit lint bench bench-policyd bench-mtasts soak fuzz clean man completions

build:
	$(GO) build -o wehr ./cmd/wehr

# Man pages (section 1) of every command into man/, and the shell
# completions into completions/, both from the command tree.
man: build
	./wehr man man

completions: build
	mkdir -p completions
	./wehr completion bash > completions/wehr.bash
	./wehr completion zsh > completions/_wehr
	./wehr completion fish > completions/wehr.fish

# Build, then run `wehr serve` as you, without root: loopback listeners,
# the embedded store under $(RUN_DIR) (scripts/run-local says more).
RUN_DIR ?= run
run: build
	./scripts/run-local $(RUN_DIR)

test: test-deps
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	@# The clock jumping an hour forward and back (fault matrix): it sets
	@# the system clock, so it runs alone, after everything else.
	$(GO) test -count=1 -tags clockjump -run '^TestClockJump$$' ./integration
	@# The conformance scores, for the CI log.
	@$(GO) test -count=1 -run 'TestRFC7208Suite' -v ./spf | grep -E 'results match|miss:' | sed 's/^ *//'
	@# Memory bounds are measured without the race detector (its shadow
	@# memory is not the program's); the race run above does not build them.
	@# (the test's exit status decides, not the filter's)
	@out=$$($(GO) test -count=1 -run 'TestIngestMemory' -v ./dmarcreport 2>&1); rc=$$?; \
		echo "$$out" | grep -E '^(ok|FAIL|---)|heap grew'; exit $$rc

test-deps:
	./scripts/install-test-deps

# Tests only, without installing anything.
unit:
	$(GO) test -count=1 $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# The policy service against postgrey on one greylisting workload, as
# separate processes (needs postgrey and redis-server; root).
bench-policyd:
	sh scripts/bench-policyd

# wehr's MTA-STS socketmap against postfix-mta-sts-resolver (issue 17),
# 100,000 domains in a network namespace of their own. Needs root.
bench-mtasts:
	sh scripts/bench-mtasts

# The soak (issue 19): mail through real Postfix, wehr, Redis and Dovecot
# for SOAK (1h) at half the rate a calibration run reached; samples of
# wehr's memory, goroutines, files and CPU in $(SOAK_OUT)/soak.csv, drawn
# into soak.png, the figures in summary.txt. Not part of `make test`.
SOAK ?= 1h
SOAK_OUT ?= soak
soak: test-deps
	@command -v gnuplot >/dev/null || apt-get install -y gnuplot-nox
	WEHR_SOAK_DURATION=$(SOAK) WEHR_SOAK_OUT=$(abspath $(SOAK_OUT)) $(GO) test -tags soak -run '^TestSoak$$' -count=1 -v -timeout 3h ./integration; \
		rc=$$?; sh scripts/soak-plot $(SOAK_OUT)/soak.csv $(SOAK_OUT)/soak.png; exit $$rc

# Run each fuzz target for a while, one after the other, with a summary
# line per target (FUZZTIME=10m FUZZPARALLEL=1 make fuzz).
FUZZTIME ?= 30s
fuzz:
	FUZZTIME=$(FUZZTIME) sh scripts/fuzz-all

clean:
	rm -f wehr
