#!/bin/sh
# nbms-db-login: the app's database logins, which let its password rotate
# with no failed request. Installed as /usr/local/bin/nbms-db-login.
#
#   nbms-db-login grant    before a release's migrate
#   nbms-db-login retire   once the release is live (after its switch)
#
# A PostgreSQL role has one password, so a rotation that keeps the live
# release connected needs two roles: the app logs in as one of two login
# roles (NBMS_DB_LOGIN, <owner>_a or <owner>_b by the password's
# generation), each a member of the owner role NBMS_DB_OWNER (NOLOGIN; it
# owns the database and every object) with `role` set to it, so that every
# session runs as the owner and what migrations create belongs to it, never
# to a login. A new password goes to the login role the live release does
# not use; the live one keeps its own until the new release is live.
#
# grant: creates NBMS_DB_LOGIN if it does not exist, makes it a member of
# the owner with role set to it, and gives it LOGIN and the password read
# from the file NBMS_DB_PASSWORD_FILE names (psql's \getenv: on no command
# line). Idempotent: a release that does not rotate grants the live login
# the password it already has.
#
# retire: every other role that can log in as the owner (the owner itself
# and its other members) gets NOLOGIN and no password: the previous
# password stops working. Sessions already open are left to end with the
# previous release, which the update removes next (a session to close at
# once: SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE
# usename = '<login>').
#
# Both connect as postgres over the Unix socket in PGHOST (default
# /var/run/postgresql, the database container's socket volume): peer
# authentication, since this runs as the same uid, so no password of the
# superuser is involved.
set -eu

log() { printf 'nbms-db-login: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

[ -n "${NBMS_DB_OWNER:-}" ] || die "NBMS_DB_OWNER is empty: it names the owner role"
[ -n "${NBMS_DB_LOGIN:-}" ] || die "NBMS_DB_LOGIN is empty: it names the login role"
[ "$NBMS_DB_LOGIN" != "$NBMS_DB_OWNER" ] || die "NBMS_DB_LOGIN and NBMS_DB_OWNER are both $NBMS_DB_OWNER: the login role is another role"
export PGHOST="${PGHOST:-/var/run/postgresql}"

psql_postgres() {
	psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --username=postgres --dbname=postgres \
		--set=owner="$NBMS_DB_OWNER" --set=login="$NBMS_DB_LOGIN" ||
		die "psql failed (exit $?); nothing was changed (one transaction)"
}

case "${1:-}" in
grant)
	[ -n "${NBMS_DB_PASSWORD_FILE:-}" ] || die "NBMS_DB_PASSWORD_FILE is empty: it names the file with the login's password"
	[ -r "$NBMS_DB_PASSWORD_FILE" ] || die "NBMS_DB_PASSWORD_FILE names $NBMS_DB_PASSWORD_FILE, which cannot be read"
	NBMS_DB_PASSWORD=$(cat "$NBMS_DB_PASSWORD_FILE")
	[ -n "$NBMS_DB_PASSWORD" ] || die "NBMS_DB_PASSWORD_FILE names $NBMS_DB_PASSWORD_FILE, which is empty"
	export NBMS_DB_PASSWORD
	log "granting login role $NBMS_DB_LOGIN (as $NBMS_DB_OWNER) its password"
	psql_postgres <<'SQL'
\getenv password NBMS_DB_PASSWORD
SET client_min_messages = warning;
BEGIN;
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login') AS create_login \gset
\if :create_login
CREATE ROLE :"login" NOLOGIN;
\endif
GRANT :"owner" TO :"login";
ALTER ROLE :"login" SET role = :'owner';
ALTER ROLE :"login" LOGIN PASSWORD :'password';
COMMIT;
SQL
	;;
retire)
	log "retiring every login as $NBMS_DB_OWNER but $NBMS_DB_LOGIN"
	psql_postgres <<'SQL'
BEGIN;
CREATE TEMPORARY VIEW retiring AS
SELECT a.rolname
FROM pg_authid a
WHERE a.rolname <> :'login'
  AND (a.rolcanlogin OR a.rolpassword IS NOT NULL)
  AND (a.rolname = :'owner' OR a.oid IN (
        SELECT m.member FROM pg_auth_members m JOIN pg_roles o ON o.oid = m.roleid WHERE o.rolname = :'owner'));
SELECT coalesce(string_agg(rolname, ', ' ORDER BY rolname), 'none (already retired)') AS retiring FROM retiring \gset
\warn 'nbms-db-login: retiring' :retiring
SELECT format('ALTER ROLE %I NOLOGIN PASSWORD NULL', rolname) FROM retiring ORDER BY rolname \gexec
COMMIT;
SQL
	;;
*) die "usage: nbms-db-login grant|retire" ;;
esac
log "done"
