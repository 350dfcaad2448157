#!/usr/bin/env bash
# Prepare a machine of the project's kind (Debian 12, Go, PostgreSQL and Redis
# installed) to build and test NBMS. Idempotent: run it as often as you like.
#
#   - installs the Debian packages the tests use as real consumers
#     (nginx and its stream module, pgBackRest, PostGIS, Chromium for the policy report, shellcheck
#     for the ops scripts, Docker's engine and mmdebstrap for the real
#     deploy, iproute2 for its off-host S3 server's network namespace, wrk
#     for the load test), without starting their services;
#   - makes sure PostgreSQL and Redis are running on 127.0.0.1 and that a
#     Docker engine answers (scripts/docker-daemon.sh);
#   - installs the Go tools `make check` needs into .tools/, builds the
#     pinned Pulumi CLI (scripts/build-pulumi.sh) and the provider plugins
#     (scripts/build-providers.sh);
#   - makes the local Debian base image every NBMS image builds from
#     (scripts/base-image.sh);
#   - downloads the Go modules.
set -euo pipefail
case "${1:-}" in
-h|--help) printf '%b\n' "Usage: scripts/setup.sh\nPrepare this machine to build and test NBMS (idempotent): Debian packages, PostgreSQL, Redis and a Docker engine running, Go tools, the pinned Pulumi CLI and provider plugins, the local base image."; exit 0 ;;
"") ;;
*) echo "$(basename "$0"): unexpected argument: $1 (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

DEBIAN_PACKAGES=(nginx libnginx-mod-stream iproute2 pgbackrest postgresql-15-postgis-3 postgresql-15-postgis-3-scripts chromium shellcheck docker.io mmdebstrap wrk)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing Debian packages: ${missing[*]}"
	# Keep the packages' services from starting: the tests run their own
	# nginx and PostgreSQL instances on private ports.
	policy=/usr/sbin/policy-rc.d
	created_policy=false
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
		as_root chmod +x "$policy"
		created_policy=true
	fi
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	if $created_policy; then as_root rm -f "$policy"; fi
else
	log "Debian packages present: ${DEBIAN_PACKAGES[*]}"
fi

# PostgreSQL: the machine's cluster on 127.0.0.1:5432 with trust auth.
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
	log "starting PostgreSQL"
	as_root pg_ctlcluster --skip-systemctl-redirect "$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -n1)" main start
	for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432
for db in test nbms_dev; do
	if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
		log "creating database $db"
		psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db"
	fi
done
psql -h 127.0.0.1 -U postgres -d postgres -qc "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'root') THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END \$\$"

# Redis on 127.0.0.1:6379, nothing kept on disk.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
	log "starting Redis"
	as_root mkdir -p /var/lib/redis /var/log/redis
	as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log
	for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping

# Go tools, pinned, into .tools/ (not the user's GOPATH).
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"
STATICCHECK_VERSION=v0.8.2
if ! "$TOOLS/staticcheck" -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	log "installing staticcheck $STATICCHECK_VERSION"
	GOBIN="$TOOLS" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

# A real S3 server for the tests of the off-host backup repository:
# versitygw (its posix backend), built from the module proxy like
# staticcheck.
VERSITYGW_VERSION=v1.8.0
if ! go version -m "$TOOLS/versitygw" 2>/dev/null | grep -q "mod[[:space:]]*github.com/versity/versitygw[[:space:]]*$VERSITYGW_VERSION"; then
	log "installing versitygw $VERSITYGW_VERSION"
	GOBIN="$TOOLS" CGO_ENABLED=0 go install -trimpath "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi

log "downloading Go modules"
go mod download

# The Pulumi CLI the engine tests drive, built from the module proxy, and
# the provider plugins the real deploy runs, built from their sources.
./scripts/build-pulumi.sh
./scripts/build-providers.sh

# The Docker engine the real deploy (`make e2e`) targets, and the base
# image every NBMS image builds from: no registry is reachable from CI.
./scripts/docker-daemon.sh
./scripts/base-image.sh >/dev/null
log "setup complete"
