#!/usr/bin/env bash
# `nbms predeploy-check` where it can work: inside the live app release of a
# deployed stack, which has the production environment, its secret files,
# and the only network routes to PostgreSQL and Redis. On the operator's
# host none of these exist.
set -euo pipefail

readonly PROG=${0##*/}

usage() {
	cat <<EOF
Usage: $PROG STACK

Runs \`nbms predeploy-check\` (the env contract, the deploy checks, PostgreSQL,
Redis, pending migrations, the static and media roots) in the app container
of STACK's live release: the release the proxy's upstream file names
(/var/lib/nbms-proxy/upstream.conf in <STACK>-proxy, first line
"# release <id>"), whose container is <STACK>-app-<id>.

Exit status: predeploy-check's (0 ready, 1 a check failed, 78 a configuration
error), 2 usage, 3 no live release found.
EOF
}

case "${1:-}" in
-h | --help) usage; exit 0 ;;
"") usage >&2; exit 2 ;;
esac
[ $# -eq 1 ] || { usage >&2; exit 2; }
readonly stack=$1
case $stack in
*[!A-Za-z0-9._-]*) echo "$PROG: bad stack name '$stack'" >&2; exit 2 ;;
esac

first=$(docker exec "$stack-proxy" head -n 1 /var/lib/nbms-proxy/upstream.conf 2>/dev/null) || {
	echo "$PROG: cannot read the upstream file of $stack-proxy: is the stack deployed and its proxy running?" >&2
	exit 3
}
release=${first#"# release "}
case $release in
"" | "$first" | *[!A-Za-z0-9._-]*)
	echo "$PROG: the upstream file of $stack-proxy names no release (first line: '$first')" >&2
	exit 3
	;;
esac
echo "$PROG: predeploy-check in $stack-app-$release (the live release)" >&2
exec docker exec "$stack-app-$release" /usr/local/bin/nbms predeploy-check
