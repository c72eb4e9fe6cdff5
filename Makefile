# Tollgate's build, test and benchmark entry points.
GO ?= go
PKGS := ./...

.PHONY: all build test test-unit test-alloc test-large test-e2e vet bench bench-quick fuzz clean

all: build

build:
	$(GO) build -o bin/tollgate ./cmd/tollgate

# Every test: unit, in-process cluster and end-to-end tests (real `tollgate node`
# processes, in cmd/tollgate) under the race detector, the zero-allocation tests
# (which the race detector's own allocations hide, hence `//go:build !race`), then
# short fuzz runs. test-large runs, without the race detector, the few tests whose size
# is their point and which it slows to minutes.
test: vet test-unit test-alloc test-large fuzz

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

# The proxy package runs twice: the second pass serves every gateway its tests start
# through the event loop (Config.EventLoop), so each test holds for both data paths.
test-unit:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	TOLLGATE_TEST_EVENT_LOOP=1 $(GO) test -race -count=1 -timeout 15m ./proxy/

test-alloc:
	$(GO) test -count=1 -run 'Alloc' ./proxy/ ./signature/ ./param/ ./ratelimit/ ./access/

test-large:
	$(GO) test -count=1 -run 'Large' ./ratelimit/ ./node/

test-e2e:
	$(GO) test -race -count=1 -timeout 15m ./cmd/tollgate/

# Native fuzzers, briefly: each target runs FUZZTIME on top of its seed corpus. A count,
# not a duration: with a duration, Go 1.26's fuzz coordinator can fail a run that found
# nothing with "context deadline exceeded" when a worker is busy as time runs out
# (golang/go#75804, fixed in Go 1.27). 50,000 runs take 2 to 10 s per target here.
FUZZTIME ?= 50000x
fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' . | while read f; do \
	  pkg=./$$(dirname $$f); \
	  for fn in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
	    echo "fuzz $$pkg $$fn"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# The benchmark: Tollgate against the backend direct, nginx and a bare fasthttp proxy,
# in one run. PROFILE=1 also writes CPU and heap profiles of Tollgate under load.
bench:
	$(GO) run ./bench $(if $(PROFILE),-profile) $(BENCH_FLAGS)

bench-quick:
	$(GO) run ./bench -quick

clean:
	rm -rf bin
