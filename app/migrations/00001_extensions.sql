-- PostGIS for monitoring site geometries.
--
-- CREATE EXTENSION postgis needs a superuser (postgis is not a trusted
-- extension). Where the migration role is not one, a DBA creates the
-- extension beforehand; IF NOT EXISTS then makes this a no-op.

-- +goose Up
CREATE EXTENSION IF NOT EXISTS postgis;

-- +goose Down
-- Deliberately nothing: the extension may predate this schema or be used by
-- other schemas in the database, and dropping it needs a superuser. A later
-- Up is a no-op thanks to IF NOT EXISTS, so rolling past this is safe.
