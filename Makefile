# NBMS Deploy — developer and operator entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO          ?= go
BIN         := $(CURDIR)/bin
TOOLS       := $(CURDIR)/.tools
PKGS        := ./...
# The test suite talks to the machine's PostgreSQL and Redis (see README).
TEST_FLAGS  ?= -count=1 -timeout 20m

.PHONY: help setup test check fmt fmt-check vet lint build run deploy-check docs bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install Debian packages and Go tools, start PostgreSQL and Redis (idempotent)
	./scripts/setup.sh

test: ## run the whole test suite (needs `make setup` once)
	$(GO) test $(TEST_FLAGS) $(PKGS)

fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

lint:
	$(TOOLS)/staticcheck $(PKGS)

check: fmt-check vet lint test ## gofmt, go vet, staticcheck and the tests

build: ## build bin/nbms
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/nbms ./app/cmd/nbms

run: build ## run the app locally against the local PostgreSQL and Redis (dev profile)
	mkdir -p var/static var/media
	NBMS_ENV=dev $(BIN)/nbms serve

deploy-check: build ## run predeploy-check against the production contract (export the production environment first)
	NBMS_ENV=prod $(BIN)/nbms predeploy-check

docs: ## regenerate docs/production_hardening/secure_settings_reference.md from the env contract
	$(GO) run ./app/cmd/nbms settings-reference > docs/production_hardening/secure_settings_reference.md

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean: ## remove build outputs
	rm -rf $(BIN) var
