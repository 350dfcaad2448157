#!/bin/sh
# nbms-db-restore: rebuild an empty data directory from a pgBackRest
# repository and recover it to a target, before PostgreSQL's own container
# starts on it. Installed as /usr/local/bin/nbms-db-restore; the infra
# program runs it as the restore one-shot of a stack being recovered
# (nbms:recover, `nbms-deploy recover`).
#
#   nbms-db-restore REPO latest [-c name=value ...]
#   nbms-db-restore REPO 'YYYY-MM-DD HH:MM:SS[.ffffff]+00' [-c name=value ...]
#
# REPO is the pgBackRest repository to restore from (2: the off-host one).
# latest replays every WAL segment the archive holds; a time stops at the
# last transaction committed at or before it. The -c settings are the
# database container's own (WAL archiving through pgBackRest), so that the
# WAL the recovered server writes after its promotion is archived like any
# other. pgBackRest reads its config and stanza from PGBACKREST_CONFIG and
# PGBACKREST_STANZA (and the off-host repository's keys and passphrase from
# PGBACKREST_CONFIG_INCLUDE_PATH), as in the database container.
#
# Steps, each of which stops the script with a message naming what failed:
#   1. refuse a data directory that holds a cluster: a recovery never
#      overwrites data (pgBackRest would refuse too, less clearly);
#   2. pgbackrest restore from REPO (the newest backup, or for a time the
#      newest one that ended before it), which writes the recovery settings
#      (restore_command, the target, promotion at the end);
#   3. pgbackrest stanza-create against the restored, stopped cluster
#      (--no-online): the stanza comes back in the local repository, which
#      a lost host took with it, and the off-host one is checked to be the
#      same database's;
#   4. a private server (no TCP, a socket directory of its own in /tmp)
#      replays the archive, promotes, and archives the new timeline's first
#      WAL to both repositories;
#   5. a checkpoint and a fast shutdown: the database container then starts
#      on a clean, recovered data directory.
# The last line on stdout says what was recovered: the time of the last
# transaction replayed and the new timeline.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

log() { printf 'nbms-db-restore: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

[ $# -ge 2 ] || die "usage: nbms-db-restore REPO latest|TIME [-c name=value ...]"
repo=$1 target=$2
shift 2
case $repo in
'' | *[!0-9]*) die "REPO is $repo; want a repository number (2: the off-host one)" ;;
esac
[ "$(id -u)" != 0 ] || die "refusing to run as root; run the container as postgres (--user 999:999)"
[ ! -s "$PGDATA/PG_VERSION" ] ||
	die "$PGDATA already holds a database cluster: a recovery restores only into an empty data volume, and this one is left as it is"

server_pid='' socket=''
cleanup() {
	if [ -n "$server_pid" ]; then
		kill -INT "$server_pid" 2>/dev/null || true
		wait "$server_pid" || true
	fi
	[ -z "$socket" ] || rm -rf "$socket"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

started=$(date +%s)
if [ "$target" = latest ]; then
	log "restoring the newest backup from repository $repo, to replay every archived WAL segment"
	pgbackrest --repo="$repo" --log-level-console=info --log-level-file=off restore ||
		die "pgbackrest restore from repository $repo failed (exit $?): its ERROR line above names the cause"
else
	log "restoring from repository $repo to the point in time $target"
	pgbackrest --repo="$repo" --type=time --target="$target" --target-action=promote \
		--log-level-console=info --log-level-file=off restore ||
		die "pgbackrest restore from repository $repo to $target failed (exit $?): its ERROR line above names the cause"
fi

log "creating the stanza in the repositories that lack it (the lost host's local one) from the restored cluster"
pgbackrest --no-online --log-level-console=warn --log-level-file=off stanza-create ||
	die "pgbackrest stanza-create failed (exit $?): the repositories do not hold this database's stanza"

socket=$(mktemp -d /tmp/nbms-restore.XXXXXX)
# The caller's settings first, ours after them (a later -c wins).
postgres "$@" -c listen_addresses='' -c unix_socket_directories="$socket" &
server_pid=$!

# query SQL: one value from the private server, or "" while it does not
# answer (starting, or replaying before it is consistent).
query() {
	psql --no-psqlrc --quiet --no-align --tuples-only --host="$socket" --username=postgres --dbname=postgres \
		--command="$1" 2>/dev/null || true
}

log "replaying the archive (the server's own log lines follow)"
last_report=$started
while [ "$(query 'SELECT pg_is_in_recovery()')" != f ]; do
	kill -0 "$server_pid" 2>/dev/null || {
		server_pid=''
		die "the server stopped during recovery: its log above names the cause (a target after the last archived transaction, or a WAL segment the archive lacks)"
	}
	now=$(date +%s)
	if [ $((now - last_report)) -ge 30 ]; then
		log "still replaying after $((now - started)) s; replayed up to $(query 'SELECT pg_last_xact_replay_timestamp()')"
		last_report=$now
	fi
	sleep 0.5
done

recovered_to=$(query 'SELECT pg_last_xact_replay_timestamp()')
query 'CHECKPOINT' >/dev/null
# After the checkpoint, which the promotion only requested.
timeline=$(query 'SELECT timeline_id FROM pg_control_checkpoint()')
# A fast shutdown waits for the archiver's last round: the new timeline's
# history file and first segments reach the repositories now, or, if one
# cannot be reached, from the database container's archiver later.
kill -INT "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=''
[ "$status" = 0 ] || die "the recovered server did not shut down cleanly (exit $status)"
echo "recovered: last transaction replayed at ${recovered_to:-none (no transaction after the backup)}; timeline ${timeline:-?}; target $target; repository $repo; $(($(date +%s) - started)) s"
