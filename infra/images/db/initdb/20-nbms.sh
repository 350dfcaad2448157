#!/bin/sh
# First start only (empty data directory): the app's own role and database,
# with PostGIS. The app never connects as the superuser. The password is
# read with \getenv, so it never appears on a command line.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=app_user="$NBMS_DB_USER" --set=app_db="$NBMS_DB_NAME" <<'SQL'
\getenv app_password NBMS_DB_PASSWORD
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
\connect :"app_db"
CREATE EXTENSION IF NOT EXISTS postgis;
SQL
