#!/usr/bin/env bash
# Restore drill: restores the NBMS database from a pgBackRest repository
# into a scratch directory, starts it as a throwaway PostgreSQL, waits until
# it has really left recovery, verifies it (row counts, checksums and, with
# --amcheck, pg_amcheck over its tables and btree indexes), prints a JSON
# summary and tears everything down. A backup nobody has restored is a hope;
# this proves it.
#
# Safe by default: it never touches the live cluster. It refuses the live
# data directory and port, restores with --archive-mode=off (a promoted copy
# with archiving on would push a new timeline into the production
# repository), uses its own lock, log and spool paths (so its archive-get
# never takes the live cluster's archive lock nor writes into its spool),
# and only accepts connections over a Unix socket in a 0700 directory.
set -euo pipefail

readonly PROG=${0##*/}
readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_MISMATCH=3

usage() {
	cat <<EOF
Usage: $PROG [options]

Restores the latest backup (or the state at --target-time) into a scratch
directory, starts it on a free port, waits for promotion to finish, runs the
verification queries, prints a JSON summary on stdout and removes everything.

Options:
  --target-time TIME   point in time, 'YYYY-MM-DD HH:MM:SS[.ffffff]+00' (default: latest).
                       Recovery stops before the first commit after TIME.
  --repo N             pgBackRest repository (1-256, the N of repoN) to restore from; the copy's
                       restore_command fetches WAL from it alone (default: pgBackRest's: the
                       first repository in repoN order with a suitable backup, and each WAL
                       segment from the first that has it)
  --config PATH        pgbackrest.conf (default: \$PGBACKREST_CONFIG, else
                       /etc/pgbackrest/pgbackrest.conf, else /etc/pgbackrest.conf)
  --stanza NAME        stanza (default: \$PGBACKREST_STANZA, else nbms)
  --port N             port of the throwaway server (default: a free one from 55432)
  --scratch DIR        new or empty directory for the restore (default: mktemp -d); removed at the end
  --database NAME      database to verify (default: nbms)
  --db-user NAME       role to connect as (default: postgres)
  --tables LIST        comma-separated tables whose row counts are reported (default: audit_events)
  --audit-table NAME   table checksummed up to the target time (default: audit_events)
  --audit-time-column NAME  its timestamp column (default: occurred_at)
  --query NAME=SQL     extra verification query; its output (psql -At) is reported under queries.NAME.
                       Repeatable. Runs read-only.
  --expect-json FILE   JSON object the summary must contain (values compared key by key;
                       objects by containment), e.g. a summary of an earlier drill
  --amcheck            after the queries, create the amcheck extension in the copy (never in the
                       live database) and run pg_amcheck --heapallindexed over the verified
                       database: every table (heap and TOAST) and every btree index on them,
                       system catalogs included. The summary's amcheck.indexes and
                       amcheck.relations count the btree indexes and the tables (heap and
                       TOAST relations) checked; any corruption fails the drill, naming
                       the relation.
  --timeout SECONDS    how long start-up and recovery may take (default: 600)
  --pgbin DIR          PostgreSQL binaries (default: \$PGBIN, else /usr/lib/postgresql/15/bin)
  -h, --help           show this help

Exit status: 0 verified, 1 the restore, a verification query or amcheck failed (the
last line on stderr says why), 2 usage error or refused (unsafe) arguments, 3 the
summary differs from --expect-json.
Run as the postgres OS user, e.g.: runuser -u postgres -- $PROG --target-time '2026-11-28 04:44:43+00'
EOF
}

die_usage() {
	echo "$PROG: $*" >&2
	echo "Try '$PROG --help'." >&2
	exit "$EXIT_USAGE"
}

# The verdict is the last line on stderr, after its details (pgBackRest's
# error, pg_amcheck's report, the copy's server log): a caller that keeps
# only the tail of stderr keeps the verdict.
failure=""
report_failure() { [[ -z $failure ]] || echo "$PROG: drill FAILED: $failure" >&2; }
fail() {
	failure=$*
	exit "$EXIT_FAILED"
}
trap report_failure EXIT

# --- arguments -------------------------------------------------------------

target=""
repo=""
amcheck=false
config=${PGBACKREST_CONFIG:-}
stanza=${PGBACKREST_STANZA:-nbms}
port=""
scratch=""
database=nbms
db_user=postgres
tables=audit_events
audit_table=audit_events
audit_column=occurred_at
expect_json=""
timeout=600
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
query_names=()
query_sql=()

need_value() { [[ $2 -ge 2 ]] || die_usage "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
	opt=$1
	case $opt in
	-h | --help) usage; exit 0 ;;
	--*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
	esac
	case $opt in
	--target-time) need_value "$opt" $#; target=$2 ;;
	--repo) need_value "$opt" $#; repo=$2 ;;
	--amcheck) amcheck=true; shift; continue ;;
	--config) need_value "$opt" $#; config=$2 ;;
	--stanza) need_value "$opt" $#; stanza=$2 ;;
	--port) need_value "$opt" $#; port=$2 ;;
	--scratch) need_value "$opt" $#; scratch=$2 ;;
	--database) need_value "$opt" $#; database=$2 ;;
	--db-user) need_value "$opt" $#; db_user=$2 ;;
	--tables) need_value "$opt" $#; tables=$2 ;;
	--audit-table) need_value "$opt" $#; audit_table=$2 ;;
	--audit-time-column) need_value "$opt" $#; audit_column=$2 ;;
	--query)
		need_value "$opt" $#
		[[ $2 =~ ^([a-z_][a-z0-9_]*)=(.+)$ ]] || die_usage "--query must be NAME=SQL with NAME of a-z, 0-9 and _, got '$2'"
		query_names+=("${BASH_REMATCH[1]}")
		query_sql+=("${BASH_REMATCH[2]}")
		;;
	--expect-json) need_value "$opt" $#; expect_json=$2 ;;
	--timeout) need_value "$opt" $#; timeout=$2 ;;
	--pgbin) need_value "$opt" $#; pgbin=$2 ;;
	*) die_usage "unknown argument '$opt'" ;;
	esac
	shift 2
done

ident_re='^[a-z_][a-z0-9_]{0,62}$'
if [[ -n $target && ! $target =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}\ [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?[+-][0-9]{2}(:?[0-9]{2})?$ ]]; then
	die_usage "--target-time '$target' must look like '2026-11-28 04:44:43+00' (with an explicit UTC offset)"
fi
[[ $stanza =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$ ]] || die_usage "--stanza '$stanza' is not a stanza name"
if [[ -n $repo ]]; then
	[[ $repo =~ ^[1-9][0-9]{0,2}$ && $repo -le 256 ]] || die_usage "--repo must be 1-256 (the N of pgBackRest's repoN), got '$repo'"
fi
[[ $database =~ $ident_re ]] || die_usage "--database '$database' must be a plain lower-case name"
[[ $db_user =~ $ident_re ]] || die_usage "--db-user '$db_user' must be a plain lower-case name"
[[ $audit_table =~ $ident_re ]] || die_usage "--audit-table '$audit_table' must be a plain lower-case name"
[[ $audit_column =~ $ident_re ]] || die_usage "--audit-time-column '$audit_column' must be a plain lower-case name"
IFS=, read -r -a table_list <<<"$tables"
[[ ${#table_list[@]} -gt 0 ]] || die_usage "--tables must name at least one table"
for t in "${table_list[@]}"; do
	[[ $t =~ $ident_re ]] || die_usage "--tables: '$t' must be a plain lower-case table name"
done
[[ $timeout =~ ^[1-9][0-9]{0,5}$ ]] || die_usage "--timeout must be a number of seconds, got '$timeout'"
if [[ -n $port ]]; then
	[[ $port =~ ^[1-9][0-9]{0,4}$ && $port -ge 1024 && $port -le 65535 ]] || die_usage "--port must be 1024-65535, got '$port'"
fi
if [[ -n $expect_json && ! -r $expect_json ]]; then
	die_usage "--expect-json '$expect_json' is not a readable file"
fi
[[ -x $pgbin/pg_ctl && -x $pgbin/psql ]] || die_usage "--pgbin '$pgbin' has no pg_ctl/psql"
if $amcheck && [[ ! -x $pgbin/pg_amcheck ]]; then
	die_usage "--amcheck: --pgbin '$pgbin' has no pg_amcheck"
fi
command -v pgbackrest >/dev/null || fail "pgbackrest is not installed"
if [[ $(id -u) -eq 0 ]]; then
	die_usage "refusing to run as root: PostgreSQL refuses root and pgBackRest as root breaks the repository; run as postgres (runuser -u postgres -- $0 ...)"
fi

if [[ -z $config ]]; then
	for candidate in /etc/pgbackrest/pgbackrest.conf /etc/pgbackrest.conf; do
		if [[ -r $candidate ]]; then config=$candidate; break; fi
	done
	[[ -n $config ]] || die_usage "no pgbackrest.conf found: pass --config"
fi
[[ -r $config ]] || die_usage "--config '$config' is not a readable file"

# conf_value KEY: KEY from the stanza's section of the config, else [global].
conf_value() {
	awk -v stanza="$stanza" -v key="$1" '
		/^[ \t]*\[/ { gsub(/^[ \t]*\[|\][ \t]*$/, ""); section = $0; next }
		{ line = $0; sub(/^[ \t]+/, "", line) }
		index(line, key "=") == 1 {
			value = substr(line, length(key) + 2)
			if (section == stanza) s = value; else if (section == "global") g = value
		}
		END { if (s != "") print s; else print g }' "$config"
}

# --- refuse anything that could touch the live cluster ---------------------

live_data=$(conf_value pg1-path)
live_port=$(conf_value pg1-port)
live_port=${live_port:-5432}
# Local repositories: repo1's path, and --repo's when it is on this host's
# file system (an object store's path is a key prefix in its bucket).
repo_paths=("$(conf_value repo1-path)")
if [[ -n $repo && $repo != 1 && $(conf_value "repo$repo-type") =~ ^(|posix|cifs)$ ]]; then
	repo_paths+=("$(conf_value "repo$repo-path")")
fi

if [[ -z $port ]]; then
	for candidate in $(seq 55432 55631); do
		if [[ $candidate != "$live_port" ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
			port=$candidate
			break
		fi
	done
	[[ -n $port ]] || fail "no free port in 55432-55631"
fi
[[ $port != "$live_port" ]] || die_usage "refusing --port $port: it is the live cluster's port (pg1-port)"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
	die_usage "refusing --port $port: something is listening on it"
fi

# overlaps A B: one path is the other or inside it.
overlaps() { [[ -n $1 && -n $2 && ($1 == "$2" || $1 == "$2"/* || $2 == "$1"/*) ]]; }
# Checked before anything is created: the drill must not even mkdir inside
# the live data directory or the repository.
if [[ -n $scratch ]]; then
	for live in "$live_data" "${repo_paths[@]}"; do
		[[ -n $live ]] || continue
		if overlaps "$(realpath -m "$scratch")" "$(realpath -m "$live")"; then
			die_usage "refusing --scratch '$scratch': it overlaps $live (the live data directory or the repository)"
		fi
	done
fi

created_scratch=false
if [[ -z $scratch ]]; then
	scratch=$(mktemp -d "${TMPDIR:-/tmp}/nbms-drill.XXXXXX")
	created_scratch=true
elif [[ ! -e $scratch ]]; then
	mkdir -p "$scratch"
	created_scratch=true
elif [[ ! -d $scratch || ! -r $scratch || ! -w $scratch || ! -x $scratch ]]; then
	die_usage "--scratch '$scratch' must be a directory this user can read and write"
elif [[ -n $(ls -A "$scratch") ]]; then
	die_usage "refusing --scratch '$scratch': it must be a new or empty directory"
fi
scratch=$(realpath "$scratch")
# The path ends up in pg_ctl's -o string and in restore_command.
if [[ ! $scratch =~ ^[A-Za-z0-9._/@+~-]+$ ]]; then
	$created_scratch && rmdir "$scratch"
	die_usage "--scratch '$scratch' must be a path of letters, digits and ._/@+~-"
fi

data=$scratch/data
sock=$scratch/sock
mkdir -m 0700 "$sock" "$scratch/lock" "$scratch/log" "$scratch/spool"
chmod 0700 "$scratch"

started=false
# The copy's server log explains a failed start, recovery or query; not
# corruption that pg_amcheck has already reported.
show_server_log=true
cleanup() {
	local rc=$?
	if $started; then
		"$pgbin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [[ $rc -ne 0 && $rc -ne $EXIT_MISMATCH ]] && $show_server_log && [[ -f $scratch/pg.log ]]; then
		echo "$PROG: last lines of the throwaway server's log:" >&2
		tail -n 25 "$scratch/pg.log" | sed 's/^/  pg.log: /' >&2
	fi
	if $created_scratch; then
		rm -rf "$scratch"
	else
		find "$scratch" -mindepth 1 -delete
	fi
	report_failure
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# --- restore ---------------------------------------------------------------

# pgBackRest writes these options into the copy's restore_command (2.45
# does, --repo included), so its archive-get uses the drill's lock and log
# paths and reads the same repository.
restore_args=(--config="$config" --stanza="$stanza" --pg1-path="$data" --archive-mode=off
	--lock-path="$scratch/lock" --log-path="$scratch/log" --log-level-console=info)
[[ -z $repo ]] || restore_args+=("--repo=$repo")
# archive-async (which an off-host repository turns on) makes archive-get
# queue WAL in the spool path: the drill's own, not the live one.
# pgBackRest refuses a spool path without it.
[[ $(conf_value archive-async) != y ]] || restore_args+=("--spool-path=$scratch/spool")
if [[ -n $target ]]; then
	restore_args+=(--type=time "--target=$target" --target-action=promote)
fi
echo "$PROG: restoring stanza $stanza ${repo:+from repo$repo }${target:+to $target }into $data" >&2
t0=$(now)
if ! pgbackrest "${restore_args[@]}" restore >"$scratch/restore.out" 2>&1; then
	# The warnings and the error, each with the lines under it, where
	# pgBackRest lists the errors behind it (each file's). A restore names
	# each repository's failure in a warning before its own error.
	if ! awk '/ERROR: \[/ { e = 1 } /WARN:/ { w = 1 } !/WARN:/ && !/^[[:space:]]/ { w = 0 }
		e || w { print "  " $0; n++ } END { exit n == 0 }' "$scratch/restore.out" >&2; then
		tail -n 5 "$scratch/restore.out" | sed 's/^/  /' >&2
	fi
	fail "pgbackrest restore${repo:+ from repo$repo} failed (is the repository there, complete and readable?)"
fi
backup_set=$(sed -n 's/.*restore backup set \([0-9A-Z_-]*\).*/\1/p' "$scratch/restore.out" | head -n 1)
t1=$(now)
# Recovery must replay WAL from the repository restored from: a copy that
# took its WAL from another would not prove this one.
if [[ -n $repo ]] && ! grep -Eq "^restore_command = '.* --repo=$repo .*archive-get" "$data/postgresql.auto.conf"; then
	fail "the copy's restore_command does not read repo$repo: $(grep '^restore_command' "$data/postgresql.auto.conf" || echo none)"
fi

# A cluster whose configuration lives outside its data directory (Debian's
# /etc/postgresql) restores without one: start it with an empty one.
[[ -f $data/postgresql.conf ]] || : >"$data/postgresql.conf"
# Connections only over the drill's own socket, whatever the copied
# pg_hba.conf allows.
printf 'local all all trust\n' >"$scratch/pg_hba.conf"

# Command-line settings win over the restored postgresql.conf and
# postgresql.auto.conf, which still name the live port and socket. No TCP
# listener at all: the drill connects over its private socket, where the
# port only names the socket file. (A TCP bind could also fail on a busy
# host whose outgoing connections hold the port as their local end.)
server_opts="-p $port -c listen_addresses='' -c unix_socket_directories=$sock"
server_opts+=" -c unix_socket_permissions=0700 -c hba_file=$scratch/pg_hba.conf -c archive_mode=off"
echo "$PROG: starting the copy on port $port" >&2
started=true
if ! "$pgbin/pg_ctl" -D "$data" -l "$scratch/pg.log" -w -t "$timeout" -o "$server_opts" start >/dev/null; then
	fail "the restored cluster did not start (a target time after the last archived commit ends recovery early)"
fi

psql_base=("$pgbin/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U "$db_user")
# "Accepting connections" is not "recovered": a hot standby accepts
# connections while still replaying WAL. Wait until promotion finished.
deadline=$((SECONDS + timeout))
until [[ $("${psql_base[@]}" -d postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null) == f ]]; do
	"$pgbin/pg_ctl" -D "$data" status >/dev/null 2>&1 || fail "the restored cluster stopped during recovery"
	[[ $SECONDS -lt $deadline ]] || fail "still in recovery after ${timeout}s"
	sleep 0.2
done
t2=$(now)
recovery_stop=$(grep -o 'recovery stopping [^,]*, time .*' "$scratch/pg.log" | head -n 1 || true)

# --- verify ----------------------------------------------------------------

# Read-only and in UTC, so the checksum does not depend on the session.
export PGOPTIONS="-c default_transaction_read_only=on -c TimeZone=UTC"
psql_db=("${psql_base[@]}" -d "$database")
sql() { "${psql_db[@]}" "$@" 2>&1; }

migration=$(sql -c 'SELECT max(version_id) FROM goose_db_version WHERE is_applied') ||
	fail "no migration version: $migration"
[[ $migration =~ ^[0-9]+$ && $migration -gt 0 ]] || fail "no applied migration in goose_db_version (got '$migration')"

count_exprs=()
for t in "${table_list[@]}"; do count_exprs+=("'$t', (SELECT count(*) FROM \"$t\")"); done
counts_sql="SELECT json_build_object($(IFS=,; echo "${count_exprs[*]}"))"
row_counts=$(sql -c "$counts_sql") || fail "counting rows: $row_counts"

# md5 of the audit rows' text, sorted by that text: the same rows give the
# same checksum, whatever their physical order.
audit_filter="true"
[[ -n $target ]] && audit_filter="a.\"$audit_column\" <= :'target'::timestamptz"
audit=$(sql -v target="$target" <<SQL
SELECT json_build_object('table', '$audit_table', 'up_to', NULLIF(:'target', ''), 'rows', count(*),
       'md5', md5(coalesce(string_agg(a::text, E'\n' ORDER BY a::text), '')))
FROM "$audit_table" a WHERE $audit_filter
SQL
) || fail "checksumming $audit_table: $audit"

queries='{}'
for i in "${!query_names[@]}"; do
	out=$(sql -c "${query_sql[$i]}") || fail "query ${query_names[$i]}: $out"
	queries=$(sql -v acc="$queries" -v name="${query_names[$i]}" -v out="$out" \
		<<<"SELECT (:'acc'::jsonb || jsonb_build_object(:'name', :'out'))::text") || fail "building the summary: $queries"
done

amcheck_summary=null
if $amcheck; then
	# The copy is the drill's own: the extension goes there, never into the
	# live database. Superuser work, so outside the read-only default.
	out=$(PGOPTIONS="-c default_transaction_read_only=off" sql -c 'CREATE EXTENSION IF NOT EXISTS amcheck') ||
		fail "creating the amcheck extension in the copy: $out"
	# pg_amcheck's default selection: every table (system catalogs and TOAST
	# included) with verify_heapam, every btree index on them with
	# bt_index_check; --heapallindexed also proves every heap tuple has its
	# index entry. --verbose names each relation as it is checked (on
	# stderr), which is what is counted; corruption goes to stdout. Exit
	# status 2 is corruption, 1 a failure to check.
	t3=$(now)
	rc=0
	"$pgbin/pg_amcheck" -h "$sock" -p "$port" -U "$db_user" --heapallindexed --verbose "$database" \
		>"$scratch/amcheck.out" 2>"$scratch/amcheck.err" || rc=$?
	if [[ $rc -eq 2 ]]; then
		head -n 20 "$scratch/amcheck.out" | sed 's/^/  /' >&2
		corrupt=$(grep -Eo '^(btree index|heap table) "[^"]+"' "$scratch/amcheck.out" | sort -u | paste -sd ';' -)
		show_server_log=false
		fail "amcheck reported corruption in ${corrupt:-the database (see above)}"
	elif [[ $rc -ne 0 ]]; then
		tail -n 5 "$scratch/amcheck.err" | sed 's/^/  /' >&2
		fail "pg_amcheck could not check $database (exit status $rc)"
	fi
	amcheck_indexes=$(grep -c '^pg_amcheck: checking btree index "' "$scratch/amcheck.err" || true)
	amcheck_relations=$(grep -c '^pg_amcheck: checking heap table "' "$scratch/amcheck.err" || true)
	[[ $amcheck_indexes -gt 0 ]] || fail "pg_amcheck reported checking no btree index"
	amcheck_summary="{\"indexes\": $amcheck_indexes, \"relations\": $amcheck_relations, \"seconds\": $(elapsed "$t3" "$(now)")}"
fi

summary=$(sql -v stanza="$stanza" -v repo="$repo" -v database="$database" -v target="$target" -v backup_set="$backup_set" \
	-v port="$port" -v restore_s="$(elapsed "$t0" "$t1")" -v recovery_s="$(elapsed "$t1" "$t2")" \
	-v recovery_stop="$recovery_stop" -v migration="$migration" -v row_counts="$row_counts" \
	-v audit="$audit" -v queries="$queries" -v amcheck="$amcheck_summary" <<'SQL'
SELECT jsonb_build_object(
  'stanza', :'stanza', 'repo', NULLIF(:'repo', '')::int, 'database', :'database', 'target_time', NULLIF(:'target', ''),
  'backup_set', NULLIF(:'backup_set', ''), 'port', :'port'::int,
  'restore_seconds', :'restore_s'::numeric, 'recovery_seconds', :'recovery_s'::numeric,
  'recovery_stop', NULLIF(:'recovery_stop', ''), 'migration_version', :'migration'::bigint,
  'row_counts', :'row_counts'::jsonb, 'audit', :'audit'::jsonb, 'queries', :'queries'::jsonb,
  'amcheck', :'amcheck'::jsonb)::text
SQL
) || fail "building the summary: $summary"

# --- compare ---------------------------------------------------------------

result=ok
mismatches='[]'
if [[ -n $expect_json ]]; then
	# Every key of the expected object must be in the summary with an equal
	# value (an object value: contained, so it may list fewer keys).
	mismatches=$(sql -v actual="$summary" -v expected="$(cat "$expect_json")" <<'SQL'
SELECT coalesce(jsonb_agg(jsonb_build_object('key', e.key, 'expected', e.value, 'actual', :'actual'::jsonb -> e.key)), '[]')::text
FROM jsonb_each(:'expected'::jsonb) e
WHERE NOT coalesce(CASE jsonb_typeof(e.value) WHEN 'object' THEN (:'actual'::jsonb -> e.key) @> e.value
                   ELSE (:'actual'::jsonb -> e.key) = e.value END, false)
SQL
	) || fail "comparing with --expect-json (is it a JSON object?): $mismatches"
	[[ $mismatches == '[]' ]] || result=mismatch
fi

sql -v summary="$summary" -v result="$result" -v mismatches="$mismatches" <<'SQL' || fail "printing the summary"
SELECT (:'summary'::jsonb || jsonb_build_object('result', :'result', 'mismatches', :'mismatches'::jsonb))::text
SQL

if [[ $result != ok ]]; then
	echo "$PROG: drill MISMATCH: the restored database differs from --expect-json: $mismatches" >&2
	exit "$EXIT_MISMATCH"
fi
echo "$PROG: drill passed: restore $(elapsed "$t0" "$t1")s, recovery $(elapsed "$t1" "$t2")s" >&2
