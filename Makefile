# NBMS Deploy — developer and operator entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO          ?= go
BIN         := $(CURDIR)/bin
TOOLS       := $(CURDIR)/.tools
PKGS        := ./...
# The test suite talks to the machine's PostgreSQL, Redis and Docker engine
# (see README); the real deploy (infra/e2e) builds every image cold on a
# fresh machine, hence the long timeout.
TEST_FLAGS  ?= -count=1 -timeout 60m

.PHONY: help setup test e2e loadtest check fmt fmt-check vet lint build run deploy-check docs bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

setup: ## install Debian packages and Go tools, start PostgreSQL, Redis and a Docker engine, build the Pulumi CLI, plugins and base image (idempotent)
	./scripts/setup.sh

test: ## run the whole test suite (needs `make setup` once)
	$(GO) test $(TEST_FLAGS) $(PKGS)

e2e: ## the real deploy alone: nbms-deploy up/destroy of the e2e stack on the local Docker engine, checked from the outside
	$(GO) test $(TEST_FLAGS) -v ./infra/e2e

fmt: ## format the Go code
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

lint:
	$(TOOLS)/staticcheck $(PKGS)
	shellcheck scripts/*.sh scripts/ops/*.sh infra/images/db/*.sh infra/images/nginx/nbms-proxy infra/images/nginx/nbms-switch .ci/run

check: fmt-check vet lint test ## gofmt, go vet, staticcheck, shellcheck and the tests

build: ## build bin/nbms
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/nbms ./app/cmd/nbms

run: build ## run the app locally against the local PostgreSQL and Redis (dev profile)
	mkdir -p var/static var/media
	NBMS_ENV=dev $(BIN)/nbms migrate up
	NBMS_ENV=dev $(BIN)/nbms collectstatic
	NBMS_ENV=dev $(BIN)/nbms serve

deploy-check: ## run predeploy-check in STACK's live app release (contract, PostgreSQL, Redis, migrations, files)
	./scripts/ops/predeploy_check.sh $(STACK)

docs: ## regenerate docs/production_hardening/secure_settings_reference.md from the env contract
	$(GO) run ./app/cmd/nbms settings-reference > docs/production_hardening/secure_settings_reference.md

loadtest: ## wrk on the public indicator list: nginx TLS, the app and bare net/http, 3×15 s each (report in bin/reports/loadtest)
	NBMS_LOAD_DURATION=15s NBMS_LOAD_WARMUP=5s NBMS_LOAD_RUNS=3 $(GO) test -count=1 -run '^TestEdgeLoad$$' -v ./infra/livetest

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean: ## remove build outputs
	rm -rf $(BIN) var

# --- Deployment (infra/driver): the Pulumi Automation API driver --------------
# STACK picks Pulumi.<stack>.yaml; DEPLOY_FLAGS passes the operator's files, e.g.
#   make up STACK=prod DEPLOY_FLAGS='--config-file tlsCertificate=fullchain.pem --secret-file tlsKey=privkey.pem'
# Needs PULUMI_CONFIG_PASSPHRASE (or _FILE); state goes to file://$(CURDIR)/.pulumi-state
# unless PULUMI_BACKEND_URL says otherwise. Exit status: 0 ok, 1 engine failure,
# 2 usage/configuration, 3 mandatory policy violation, 4 a new release failed a gate or
# the post-deploy probe while a release was live, 5 a first deployment failed (none was live).
STACK        ?= prod
DEPLOY_FLAGS ?=
REPORT_DIR   ?= $(BIN)/reports/audit
DEPLOY       := $(BIN)/nbms-deploy

.PHONY: tools policy preview up rollback recover destroy outputs audit

tools: ## build the pinned Pulumi CLI and the provider plugins into .tools/pulumi (for machines that cannot download them)
	./scripts/build-pulumi.sh
	./scripts/build-providers.sh

policy: ## build the policy pack binary bin/nbms-policy
	$(GO) build -trimpath -o $(BIN)/nbms-policy ./policy/cmd/nbms-policy

# The driver, rebuilt on every use (.PHONY): its sources are the whole
# module, more than make could track.
.PHONY: $(DEPLOY)
$(DEPLOY):
	$(GO) build -trimpath -o $@ ./infra/driver/cmd/nbms-deploy

preview: policy $(DEPLOY) ## plan STACK (default prod) with the policy pack; report in bin/reports/STACK
	$(DEPLOY) preview --stack $(STACK) $(DEPLOY_FLAGS)

up: policy $(DEPLOY) ## preview, deploy STACK, write the policy report, probe /healthz and /readyz
	$(DEPLOY) up --stack $(STACK) $(DEPLOY_FLAGS)

rollback: policy $(DEPLOY) ## bring back STACK's previous release (blue/green); refused, naming the commit to check out, unless this checkout deploys it
	$(DEPLOY) rollback --stack $(STACK) $(DEPLOY_FLAGS)

# TO: latest (default) or an RFC 3339 time; DEPLOY_FLAGS must give the
# off-host passphrase: --secret-file backupCipherPass=FILE.
TO ?= latest
recover: policy $(DEPLOY) ## bring STACK up on an engine without its data, the database restored from the off-host repository (TO=latest or a time)
	$(DEPLOY) recover --stack $(STACK) --to '$(TO)' $(DEPLOY_FLAGS)

destroy: $(DEPLOY) ## delete STACK's resources except the protected data volumes
	$(DEPLOY) destroy --stack $(STACK) $(DEPLOY_FLAGS)

outputs: $(DEPLOY) ## print STACK's outputs (secrets masked)
	$(DEPLOY) outputs --stack $(STACK) $(DEPLOY_FLAGS)

audit: policy ## policy reports for FILE (`pulumi preview --json` or `pulumi stack export` output) into REPORT_DIR
	@test -n "$(FILE)" || { echo "usage: make audit FILE=preview.json|state.json [REPORT_DIR=dir]" >&2; exit 2; }
	kind=preview; if grep -q '"deployment"' "$(FILE)"; then kind=state; fi; \
	$(BIN)/nbms-policy audit --$$kind "$(FILE)" --out "$(REPORT_DIR)"
