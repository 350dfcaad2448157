#!/usr/bin/env bash
# Build the Pulumi CLI pinned in tools/pulumi/go.mod from the Go module proxy
# into .tools/pulumi/bin/pulumi. Users normally install Pulumi the usual way
# (https://www.pulumi.com/docs/install/); this build exists for machines that
# cannot download it, such as this project's CI. Idempotent: a binary of the
# pinned version is kept.
set -euo pipefail
case "${1:-}" in
-h|--help) printf '%b\n' "Usage: scripts/build-pulumi.sh\nBuild the Pulumi CLI pinned in tools/pulumi/go.mod into .tools/pulumi/bin/pulumi (idempotent)."; exit 0 ;;
"") ;;
*) echo "$(basename "$0"): unexpected argument: $1 (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

version=$(awk '$1 == "require" && $2 == "github.com/pulumi/pulumi/pkg/v3" { print $3 }' tools/pulumi/go.mod)
[ -n "$version" ] || { echo "build-pulumi: no pkg/v3 version in tools/pulumi/go.mod" >&2; exit 1; }
out="$PWD/.tools/pulumi/bin/pulumi"

if [ -x "$out" ] && [ "$("$out" version 2>/dev/null)" = "$version" ]; then
	echo "==> Pulumi CLI $version present"
	exit 0
fi
echo "==> building the Pulumi CLI $version from the module proxy (about 10 minutes cold)"
mkdir -p "$(dirname "$out")"
(
	cd tools/pulumi
	# Without the version stamp `pulumi version` prints nothing and the
	# Automation API refuses the CLI.
	go build -trimpath \
		-ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version" \
		-o "$out" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
)
"$out" version
