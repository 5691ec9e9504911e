# Doorman. `make run` and `make test` are the two commands a newcomer needs (as root on
# Debian); both install what they need first.
SHELL := /bin/bash
GO    ?= go
export GOTOOLCHAIN := local

BIN      := bin
PKGS     := ./...
# Debian packages the tests and `make run` use: real Dovecot backends, real Redis, real clients.
DEB_PKGS := dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond dovecot-lmtpd dovecot-managesieved dovecot-sieve redis-server curl swaks sieve-connect haproxy iproute2 python3 openssl postgresql mariadb-server slapd

.PHONY: all build run test deps vet race fuzz bench bench-full bench-deps clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/doorman ./cmd/doorman
	$(GO) build -o $(BIN)/devbackend ./tools/devbackend
	$(GO) build -o $(BIN)/devcert ./tools/devcert
	$(GO) build -o $(BIN)/doormanctl ./tools/doormanctl

# Installs the Debian packages when one is missing (apt-get update first), and stops the
# system Dovecot that the package starts: the tests run private instances.
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	-@systemctl stop dovecot >/dev/null 2>&1 || service dovecot stop >/dev/null 2>&1 || true
	-@doveadm stop >/dev/null 2>&1 || true  # the system instance only (its default config)

# Runs Doorman on the example configuration in front of a local Dovecot test backend.
run: deps build
	@./tools/run.sh

vet:
	$(GO) vet $(PKGS)

test: deps vet
	$(GO) test -race -count=1 -timeout 15m ./codec/... ./route/... ./engine/...
	$(GO) test -count=1 -timeout 5m ./cmd/... ./tools/...

# Every fuzz target of the codecs and route for FUZZTIME each (the test run replays their seed corpora
# anyway).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./codec/... ./route/...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "$$pkg $$f"; \
			$(GO) test -run XXX -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 3s $$pkg; \
		done; \
	done

# Doorman side by side with Dovecot's proxy, nginx's mail proxy and the backend reached
# directly (bench/compare.sh; report in bench/results/<date>-compare-<mode>.md). `bench` is the
# short run (N = 1k, 2k; about 10 minutes), `bench-full` the whole table (N = 1k..8k, more
# rounds; about 25 minutes). Both install what they need first (apt-get update, then
# BENCH_PKGS). The Go micro-benchmarks:
#   go test -run XXX -bench . -benchmem ./codec/... ./route/... ./engine/...
BENCH_PKGS := dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond dovecot-lmtpd nginx libnginx-mod-mail iproute2 procps
bench: bench-deps
	MODE=short bench/compare.sh

bench-full: bench-deps
	MODE=full bench/compare.sh

bench-deps:
	@missing=""; for p in $(BENCH_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

clean:
	rm -rf $(BIN) run
