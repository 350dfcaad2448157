#!/usr/bin/env bash
# One pgBackRest backup of the NBMS database, with a one-line summary.
# Run it as the database's OS user (postgres): pgBackRest run as root leaves
# root-owned repository folders that break every later backup and archive-push.
set -euo pipefail

readonly PROG=${0##*/}
readonly EXIT_FAILED=1 EXIT_USAGE=2

usage() {
	cat <<EOF
Usage: $PROG --type full|diff|incr [--config PATH] [--stanza NAME]

Takes one pgBackRest backup (pgBackRest expires old ones per the retention
in its config at the end) and prints one summary line:
  backup ok: type=diff label=20261128-061044F_20261128-061047D duration_s=3 size_bytes=... repo_size_bytes=...

Options:
  --type TYPE     full, diff (changes since the last full) or incr (since the last backup)
  --config PATH   pgbackrest.conf (default: \$PGBACKREST_CONFIG, else pgBackRest's default lookup)
  --stanza NAME   stanza (default: \$PGBACKREST_STANZA, else nbms)
  -h, --help      show this help

Exit status: 0 backup taken, 1 backup failed, 2 usage error.
Run as the postgres OS user, e.g.: runuser -u postgres -- $PROG --type full
EOF
}

die_usage() {
	echo "$PROG: $*" >&2
	echo "Try '$PROG --help'." >&2
	exit "$EXIT_USAGE"
}

type=""
config=${PGBACKREST_CONFIG:-}
stanza=${PGBACKREST_STANZA:-nbms}
while [[ $# -gt 0 ]]; do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--type) [[ $# -ge 2 ]] || die_usage "--type needs a value"; type=$2; shift 2 ;;
	--type=*) type=${1#*=}; shift ;;
	--config) [[ $# -ge 2 ]] || die_usage "--config needs a value"; config=$2; shift 2 ;;
	--config=*) config=${1#*=}; shift ;;
	--stanza) [[ $# -ge 2 ]] || die_usage "--stanza needs a value"; stanza=$2; shift 2 ;;
	--stanza=*) stanza=${1#*=}; shift ;;
	*) die_usage "unknown argument '$1'" ;;
	esac
done

case $type in
full | diff | incr) ;;
"") die_usage "--type is required (full, diff or incr)" ;;
*) die_usage "--type must be full, diff or incr, not '$type'" ;;
esac
[[ $stanza =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$ ]] || die_usage "--stanza '$stanza' is not a stanza name (letters, digits, _ and -)"
if [[ -n $config && ! -r $config ]]; then
	die_usage "--config '$config' is not a readable file"
fi
if [[ $(id -u) -eq 0 ]]; then
	die_usage "refusing to run as root: run as the postgres user (runuser -u postgres -- $0 ...)"
fi
command -v pgbackrest >/dev/null || { echo "$PROG: pgbackrest is not installed" >&2; exit "$EXIT_FAILED"; }

args=(--stanza="$stanza")
[[ -n $config ]] && args=(--config="$config" "${args[@]}")

echo "$PROG: starting $type backup of stanza $stanza" >&2
start=$SECONDS
# pgBackRest's progress goes to stderr: stdout carries only the summary line.
if ! pgbackrest "${args[@]}" --type="$type" backup >&2; then
	echo "backup FAILED: type=$type stanza=$stanza duration_s=$((SECONDS - start)) (pgBackRest's ERROR line above says why)" >&2
	exit "$EXIT_FAILED"
fi
duration=$((SECONDS - start))

# The summary comes from the repository: what info reports is what a
# restore would find. jq is optional; without it the line has no label.
summary=""
if command -v jq >/dev/null; then
	summary=$(pgbackrest "${args[@]}" --output=json --log-level-console=warn info |
		jq -r '.[0].backup[-1] | "label=\(.label) size_bytes=\(.info.size) repo_size_bytes=\(.info.repository.size)"') || summary=""
fi
echo "backup ok: type=$type stanza=$stanza duration_s=$duration $summary"
