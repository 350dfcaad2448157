#!/bin/sh
# nbms-db-entrypoint: start PostgreSQL for NBMS, initialising an empty data
# directory first. Installed as /usr/local/bin/nbms-db-entrypoint.
#
#   nbms-db-entrypoint postgres [-c name=value ...]
#   nbms-db-entrypoint COMMAND [ARG...]     (anything else: exec'd as is)
#
# Runs as postgres (uid 999) on a read-only root filesystem: it writes only
# to $PGDATA (default /var/lib/postgresql/data), the socket directory
# /var/run/postgresql and /tmp (a tmpfs; nothing is executed from it).
#
# Passwords: POSTGRES_PASSWORD and NBMS_DB_PASSWORD, or, as the infra
# program gives them, POSTGRES_PASSWORD_FILE and NBMS_DB_PASSWORD_FILE
# naming files that hold them (its secrets volume): a secret in the
# container's environment would be in `docker inspect`. Setting both forms
# of one is an error.
#
# First start (no $PGDATA/PG_VERSION): initdb with the superuser postgres,
# whose password (POSTGRES_PASSWORD) goes through a mode-0600 file in /tmp,
# never a command line; POSTGRES_INITDB_ARGS adds initdb options (e.g.
# --data-checksums --encoding=UTF8 --locale=C.UTF-8). Client
# authentication: over the Unix socket the OS user is the role (peer: the
# backup container, same image and uid, connects as postgres through the
# shared socket directory); over TCP, from anywhere, a SCRAM password.
#
# Then, until it has succeeded once (the marker file $PGDATA/nbms-initialized),
# a temporary server creates the app's role
# NBMS_DB_USER, its database NBMS_DB_NAME owned by it, and the PostGIS
# extension in that database. With NBMS_DB_PASSWORD set the role can log in
# with it (read by psql's \getenv, so it is on no command line); without, it
# is NOLOGIN: the owner that the app's login roles act as, which
# nbms-db-login grants (the infra program's way: the app's password then
# rotates with no restart of the database). Every step is skipped when already
# done, so a first start interrupted after initdb completes at the next one.
# The temporary server listens on no TCP address and on a private socket
# directory in /tmp, not on /var/run/postgresql: the health check
# (pg_isready on that directory) and the backup container see no server
# until the real one is up.
#
# WAL archiving needs the pgBackRest stanza to exist in the repository:
# until it does, every archive_command fails (archive.info missing, exit
# 103), which on a first deploy is a spurious alert and a gap in the
# archive. So when PGBACKREST_STANZA is set (and PGBACKREST_CONFIG names the
# config; pgBackRest reads both from the environment), every start runs the
# idempotent stanza-create against the private server of that start (the
# initialisation server on a first start, the password server after), before
# the real server and its archiving begin. A failure is logged and does not
# stop the database: the backup scheduler retries stanza-create at its start.
#
# Every start, the roles' passwords become the ones in the environment (the
# app role's only when NBMS_DB_PASSWORD is set): the
# stack's generated secrets are the source of truth, so a redeploy onto a
# kept data volume (after a destroy, say) or a rotated password just works.
# A private server (no TCP, a socket directory of its own in /tmp) sets them
# with psql's \getenv; it runs with the caller's arguments, WAL archiving
# included, so that no WAL it writes escapes the archive. Then the password
# variables are unset and postgres is exec'd (it becomes the container's
# main process and gets its stop signal directly) with listen_addresses='*'
# followed by the caller's arguments, which therefore win.
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA
marker="$PGDATA/nbms-initialized"

log() { printf 'nbms-db-entrypoint: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

case "${1:-}" in
"") set -- postgres ;;
-*) set -- postgres "$@" ;;
postgres) ;;
*) exec "$@" ;;
esac
shift # postgres

[ "$(id -u)" != 0 ] || die "refusing to run PostgreSQL as root; run the container as postgres (--user 999:999)"
# On any exit before the exec (an error, or the stop signal, which this
# shell as PID 1 would otherwise ignore): no password file left behind, no
# temporary server left running on the data directory. exec runs no trap
# and gives postgres the default signal handlers back.
pwfile='' init_socket=''
cleanup() {
	[ -z "$pwfile" ] || rm -f "$pwfile"
	if [ -n "$init_socket" ]; then
		pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop >/dev/null 2>&1 || true
		rm -rf "$init_socket"
	fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# file_env VAR: when VAR_FILE is set, VAR becomes the content of the file it
# names (for this script and what it runs, never the container's config).
file_env() {
	eval "fe_value=\${$1:-} fe_file=\${$1_FILE:-}"
	# shellcheck disable=SC2154 # set by the eval above
	if [ -n "$fe_file" ]; then
		[ -z "$fe_value" ] || die "both $1 and $1_FILE are set: set one of them"
		[ -r "$fe_file" ] || die "$1_FILE names $fe_file, which cannot be read"
		fe_value=$(cat "$fe_file")
		[ -n "$fe_value" ] || die "$1_FILE names $fe_file, which is empty"
		export "$1=$fe_value"
	fi
	unset "$1_FILE" fe_value fe_file
}
file_env POSTGRES_PASSWORD
file_env NBMS_DB_PASSWORD

# fresh: this start initialised the cluster (and so set the passwords).
fresh=false
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	fresh=true
	[ -n "${POSTGRES_PASSWORD:-}" ] || die "POSTGRES_PASSWORD is empty: it is needed to initialise the empty data directory $PGDATA"
	log "initialising the database cluster in $PGDATA"
	pwfile=$(mktemp /tmp/nbms-db-pwfile.XXXXXX)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	# POSTGRES_INITDB_ARGS is a list of options: split it on spaces, never
	# expand patterns in it.
	set -f
	# shellcheck disable=SC2086
	initdb --username=postgres --pwfile="$pwfile" --auth-local=peer --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-}
	set +f
	rm -f "$pwfile"
	pwfile=''
	cat >"$PGDATA/pg_hba.conf" <<'EOF'
# Written by nbms-db-entrypoint at initdb time.
# TYPE  DATABASE     USER  ADDRESS  METHOD
# Unix socket (this container, and the backup container sharing the socket
# directory as the same uid): the OS user name is the role name.
local   all          all            peer
local   replication  all            peer
# TCP from anywhere (the stack's internal network): SCRAM passwords only.
host    all          all   all      scram-sha-256
EOF
fi

# create_stanza SOCKET_DIR: the idempotent pgBackRest stanza-create against
# the private server listening on SOCKET_DIR (see the header).
create_stanza() {
	[ -n "${PGBACKREST_STANZA:-}" ] || return 0
	log "creating the pgBackRest stanza $PGBACKREST_STANZA (or checking the existing one) before archiving starts"
	pgbackrest --pg1-socket-path="$1" --log-level-console=warn --log-level-file=off stanza-create ||
		log "WARNING: pgBackRest stanza-create failed (exit $?): WAL archiving will fail until the backup scheduler creates the stanza"
}

if [ ! -e "$marker" ]; then
	for var in NBMS_DB_NAME NBMS_DB_USER; do
		eval "value=\${$var:-}"
		[ -n "$value" ] || die "$var is empty: it is needed to create the app's role and database"
	done
	log "creating role $NBMS_DB_USER and database $NBMS_DB_NAME with PostGIS (temporary server)"
	init_socket=$(mktemp -d /tmp/nbms-db-init.XXXXXX)
	pg_ctl --pgdata="$PGDATA" --wait --timeout=120 --silent \
		--options="-c listen_addresses='' -c unix_socket_directories=$init_socket" start
	psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --host="$init_socket" --username=postgres --dbname=postgres \
		--set=app_user="$NBMS_DB_USER" --set=app_db="$NBMS_DB_NAME" <<'SQL'
\getenv app_password NBMS_DB_PASSWORD
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') AS create_role \gset
\if :create_role
\if :{?app_password}
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
\else
CREATE ROLE :"app_user" NOLOGIN;
\endif
\endif
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db') AS create_db \gset
\if :create_db
CREATE DATABASE :"app_db" OWNER :"app_user";
\endif
\connect :"app_db"
CREATE EXTENSION IF NOT EXISTS postgis;
SQL
	create_stanza "$init_socket"
	pg_ctl --pgdata="$PGDATA" --wait --timeout=120 --silent --mode=fast stop
	rm -rf "$init_socket"
	init_socket=''
	: >"$marker"
	log "initialisation complete"
fi

sync_passwords() {
	log "setting the passwords of postgres and ${NBMS_DB_USER:-the app role} from the environment (private server)"
	sync_socket=$(mktemp -d /tmp/nbms-db-sync.XXXXXX)
	# The caller's arguments first, ours after them (a later -c wins): no TCP,
	# only the private socket.
	postgres "$@" -c listen_addresses='' -c unix_socket_directories="$sync_socket" &
	sync_pid=$!
	trap 'kill -INT "$sync_pid" 2>/dev/null; wait "$sync_pid"; rm -rf "$sync_socket"; exit 143' TERM
	trap 'kill -INT "$sync_pid" 2>/dev/null; wait "$sync_pid"; rm -rf "$sync_socket"; exit 130' INT
	tries=0
	until pg_isready -q -h "$sync_socket"; do
		kill -0 "$sync_pid" 2>/dev/null || die "the server stopped while starting; see its log above"
		tries=$((tries + 1))
		[ "$tries" -le 1200 ] || die "the server did not start within 120 s"
		sleep 0.1
	done
	sync_status=0
	psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --host="$sync_socket" --username=postgres --dbname=postgres \
		--set=app_user="${NBMS_DB_USER:-}" <<-'SQL' || sync_status=$?
	\getenv su_password POSTGRES_PASSWORD
	\getenv app_password NBMS_DB_PASSWORD
	\if :{?su_password}
	ALTER ROLE postgres PASSWORD :'su_password';
	\endif
	\if :{?app_password}
	ALTER ROLE :"app_user" PASSWORD :'app_password';
	\endif
	SQL
	[ "$sync_status" != 0 ] || create_stanza "$sync_socket"
	kill -INT "$sync_pid"
	wait "$sync_pid" || true
	rm -rf "$sync_socket"
	trap 'exit 143' TERM
	trap 'exit 130' INT
	[ "$sync_status" = 0 ] || die "setting the passwords failed (psql exit $sync_status)"
}

# On a first start the passwords were set just now.
$fresh || sync_passwords "$@"

unset POSTGRES_PASSWORD NBMS_DB_PASSWORD
exec postgres -c listen_addresses='*' "$@"
