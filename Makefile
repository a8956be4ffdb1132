# Corral: build, run, test, bench, lint. `make help` lists the targets.
GO      ?= go
BIN     := $(CURDIR)/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Two cores here: more parallel builds only thrash (etcd is big).
GOFLAGS_BUILD := -p 2 -ldflags "-X main.version=$(VERSION)"
# Packages with concurrency that also run under the race detector.
RACE_PKGS := ./clusterd/agent/ ./clusterd/driver/systemddriver/ ./clusterd/store/ ./clusterd/registry/ ./clusterd/keys/ ./clusterd/overlay/subnet/ ./clusterd/overlay/backend/ ./clusterd/driver/execdriver/ ./clusterd/scheduler/ ./clusterd/metrics/ ./clusterd/deployhook/ ./clusterd/logship/... ./clusterd/membership/ ./clusterd/rebootlock/ ./clusterd/election/ ./clusterd/settings/ ./clusterd/backup/ ./bootstrap/... ./providers/pxe/ ./providers/aws/ ./internal/awsemu/ ./internal/awsboot/ ./provision/progress/

.PHONY: help build run test test-race bench lint clean

help:
	@echo "make build   bin/provision, with bin/clusterd and bin/clusterctl as links"
	@echo "make run     build, then bring up examples/local.hcl"
	@echo "make test    the whole suite (needs root: network namespaces)"
	@echo "make bench   benchmarks, printed as ratios"
	@echo "make lint    gofmt and go vet"

build:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/provision ./cmd/provision
	ln -sf provision $(BIN)/clusterd
	ln -sf provision $(BIN)/clusterctl

run: build
	bin/provision up examples/local.hcl

# The suite runs against the binary just built (CORRAL_BIN), as users do.
test: build lint
	CORRAL_BIN=$(BIN)/provision $(GO) test -p 2 -count=1 -timeout 60m ./...
	$(GO) test -p 2 -count=1 -race -timeout 20m $(RACE_PKGS)

# The macro benchmarks (a whole scheduling run, ten machine failures) measure
# once, in one iteration: -benchtime 3x would run them 1+3 times.
MACRO_BENCH := Schedule|Failover
bench: build
	CORRAL_BIN=$(BIN)/provision $(GO) test -p 1 -count=1 -timeout 30m -run '^$$' -bench . -skip '$(MACRO_BENCH)' -benchtime 3x ./bench/
	CORRAL_BIN=$(BIN)/provision $(GO) test -p 1 -count=1 -timeout 30m -run '^$$' -bench '$(MACRO_BENCH)' -benchtime 1x ./bench/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
