# The two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
PKGS     ?= ./...
TESTFLAGS ?= -race -timeout 14m

.PHONY: run test prereqs bench lint build fuzz

## run: the whole system on embedded defaults (broker, store, Pay Score sandbox, simulated chargers);
## needs only Go
run:
	$(GO) run ./cmd/chargeflow serve --dev

## test: every test; private Redis, Redis Cluster, Sentinel and Mosquitto are started on free
## ports unless CHARGEFLOW_TEST_REDIS_URL / CHARGEFLOW_TEST_REDIS_CLUSTER_URL /
## CHARGEFLOW_TEST_REDIS_SENTINEL_URL / CHARGEFLOW_TEST_MQTT_URL are set. First it checks the
## prerequisites of scripts/prerequisites (installing them as root with apt-get, or naming the
## command to run); -race needs cgo, so CGO_ENABLED=1 (a C compiler is one of the prerequisites)
test: prereqs
	CGO_ENABLED=1 $(GO) vet $(PKGS)
	CGO_ENABLED=1 $(GO) test $(TESTFLAGS) $(PKGS)

## prereqs: what the tests need beyond Go (scripts/prerequisites), installed when root with apt-get
prereqs:
	@bash scripts/prereqs.sh

## bench: the benchmarks (figures, never pass/fail)
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## lint: go vet and a gofmt check
lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

build:
	$(GO) build -o bin/chargeflow ./cmd/chargeflow

## fuzz: a short run of every fuzz target (FUZZTIME per target)
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## lint-openapi: api/openapi.json under Redocly's recommended rules (through npx, when Node is
## there; not part of `make test`). Exceptions, with reasons: api/.redocly.lint-ignore.yaml
REDOCLY ?= @redocly/cli@2.77.0
.PHONY: lint-openapi
lint-openapi:
	@if ! command -v npx >/dev/null 2>&1; then echo "lint-openapi: npx not found: install Node.js (e.g. apt-get install -y nodejs npm)"; exit 1; fi
	cd api && npx --yes $(REDOCLY) lint --config redocly.yaml openapi.json
