#!/usr/bin/env bash
# Build the Pulumi provider plugins the program needs (docker and random, at
# exactly the versions of their SDKs in go.mod: the engine asks for those)
# from source tarballs, and install them into the project's Pulumi home
# (.tools/pulumi/home, which the deploy driver uses when it exists).
#
# This is the route for machines that cannot download plugins, like this
# project's CI. With internet access Pulumi installs the same versions by
# itself on the first `pulumi up`, or `pulumi plugin install resource docker
# 4.10.0` does it ahead of time.
#
# Sources: a directory of pulumi-<name>-<version>.tar.gz, each the
# provider's public source with its schema-embed.json generated:
# PULUMI_PROVIDER_SOURCES, else shared/third_party/pulumi-providers beside
# the repository or in /work. Idempotent: a plugin already installed at its
# version is kept.
set -euo pipefail
case "${1:-}" in
-h|--help) printf '%b\n' "Usage: scripts/build-providers.sh\nBuild the docker and random Pulumi provider plugins (versions from go.mod) from\n\$PULUMI_PROVIDER_SOURCES and install them into .tools/pulumi/home (idempotent)."; exit 0 ;;
"") ;;
*) echo "$(basename "$0"): unexpected argument: $1 (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
root=$PWD
pulumi="$root/.tools/pulumi/bin/pulumi"
export PULUMI_HOME="$root/.tools/pulumi/home"
export PULUMI_SKIP_UPDATE_CHECK=true
candidates=("$(cd "$root/.." && pwd)/shared/third_party/pulumi-providers" /work/shared/third_party/pulumi-providers)
[ -z "${PULUMI_PROVIDER_SOURCES:-}" ] || candidates=("$PULUMI_PROVIDER_SOURCES")
sources=""
for dir in "${candidates[@]}"; do
	if [ -d "$dir" ]; then sources=$dir; break; fi
done

[ -x "$pulumi" ] || { echo "build-providers: $pulumi is missing: run scripts/build-pulumi.sh first" >&2; exit 1; }

# sdk_version MODULE prints the version go.mod requires, without the v.
sdk_version() {
	local v
	v=$(awk -v m="$1" '$1 == m { print $2 } $1 == "require" && $2 == m { print $3 }' go.mod)
	[ -n "$v" ] || { echo "build-providers: $1 is not in go.mod" >&2; exit 1; }
	printf '%s\n' "${v#v}"
}

# installed NAME VERSION: is the plugin of that version installed? The
# directory is where the CLI installs it; .partial marks an install cut short.
installed() {
	[ -x "$PULUMI_HOME/plugins/resource-$1-v$2/pulumi-resource-$1" ] && [ ! -e "$PULUMI_HOME/plugins/resource-$1-v$2.partial" ]
}

build() {
	local name=$1 version=$2
	if installed "$name" "$version"; then
		echo "==> provider plugin $name $version present"
		return
	fi
	[ -n "$sources" ] || { echo "build-providers: no provider sources in ${candidates[*]} (set PULUMI_PROVIDER_SOURCES)" >&2; exit 1; }
	local tarball="$sources/pulumi-$name-$version.tar.gz"
	[ -f "$tarball" ] || { echo "build-providers: $tarball is missing (set PULUMI_PROVIDER_SOURCES)" >&2; exit 1; }
	local work
	work=$(mktemp -d)
	# shellcheck disable=SC2064 # expand now: work is local
	trap "rm -rf '$work'" RETURN
	echo "==> building provider plugin $name $version (a few minutes cold)"
	tar -xzf "$tarball" -C "$work"
	(
		cd "$work/pulumi-$name-$version/provider"
		# The version stamp is what the engine matches against the SDK.
		CGO_ENABLED=0 go build -trimpath \
			-ldflags "-s -w -X github.com/pulumi/pulumi-$name/provider/v4/pkg/version.Version=$version" \
			-o "$work/pulumi-resource-$name" "./cmd/pulumi-resource-$name"
	)
	"$pulumi" plugin install resource "$name" "$version" --file "$work/pulumi-resource-$name" --non-interactive
}

mkdir -p "$PULUMI_HOME"
build docker "$(sdk_version github.com/pulumi/pulumi-docker/sdk/v4)"
build random "$(sdk_version github.com/pulumi/pulumi-random/sdk/v4)"
"$pulumi" plugin ls
