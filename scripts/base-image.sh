#!/usr/bin/env bash
# Make the one base image every NBMS image builds from (app builder, nginx,
# PostgreSQL/PostGIS/pgBackRest, Redis) without a container registry:
# Debian bookworm (minbase + ca-certificates) bootstrapped by mmdebstrap
# from Debian's own archive and imported into the local Docker engine.
#
# Where a registry is reachable the stack pins a published image instead
# (nbms:images.base, e.g. debian:bookworm-slim@sha256:...); this is the
# route for machines that reach Debian's archive but no registry, like this
# project's CI. The image carries the same apt sources as the host
# (bookworm, bookworm-updates, bookworm-security), so the images built on
# it install the nginx, PostgreSQL, PostGIS, pgBackRest and Redis versions
# the test suite runs on the host.
#
# Prints the image ID (sha256:...) on the last line: that is the value of
# nbms:images.base for a stack that uses this image. Idempotent: an existing
# image under the tag is kept unless --rebuild is given.
#
#   scripts/base-image.sh [--rebuild] [--tag nbms-base:bookworm]
set -euo pipefail
usage="Usage: scripts/base-image.sh [--rebuild] [--tag NAME:TAG]
Bootstrap Debian bookworm with mmdebstrap and import it as NAME:TAG
(default nbms-base:bookworm); print its image ID. Keeps an existing image
unless --rebuild."
tag=nbms-base:bookworm
rebuild=false
while [ $# -gt 0 ]; do
	case "$1" in
	-h|--help) printf '%s\n' "$usage"; exit 0 ;;
	--rebuild) rebuild=true ;;
	--tag) [ $# -ge 2 ] || { echo "$(basename "$0"): --tag needs a value" >&2; exit 2; }; tag=$2; shift ;;
	*) echo "$(basename "$0"): unexpected argument: $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

id=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
if [ -n "$id" ] && ! $rebuild; then
	echo "==> base image $tag present" >&2
	printf '%s\n' "$id"
	exit 0
fi
command -v mmdebstrap >/dev/null || { echo "base-image: mmdebstrap is missing: apt-get install mmdebstrap" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mirror=${DEBIAN_MIRROR:-http://deb.debian.org}
echo "==> bootstrapping Debian bookworm into $tag (about 2 minutes)" >&2
# Like Debian's -slim images: no documentation, manual pages or locales
# beyond C; the dpkg exclusions stay in the image, so packages installed
# by the Dockerfiles leave them out too. No recommends, ever.
# merged-usr: the /usr symlinks made by mmdebstrap itself (with Debian's
# usr-is-merged), instead of the usrmerge converter and the Perl it drags in.
# shellcheck disable=SC2016 # "$1" in a hook is the root, expanded by mmdebstrap
mmdebstrap --variant=minbase --include=ca-certificates \
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	--aptopt='APT::Install-Recommends "false"' \
	--aptopt='APT::Install-Suggests "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/lintian/*' \
	--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
	bookworm "$work/rootfs.tar" \
	"deb $mirror/debian bookworm main" \
	"deb $mirror/debian bookworm-updates main" \
	"deb $mirror/debian-security bookworm-security main" >&2
docker import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["/bin/bash"]' \
	--message "mmdebstrap minbase bookworm ($(date -u +%Y-%m-%dT%H:%M:%SZ))" \
	"$work/rootfs.tar" "$tag" >/dev/null
docker image inspect --format '{{.Id}}' "$tag"
