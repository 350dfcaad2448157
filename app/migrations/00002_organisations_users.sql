-- +goose Up
CREATE TABLE organisations (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The slug appears in URLs and CLI arguments: lowercase words joined by dashes.
    slug       text NOT NULL UNIQUE
               CHECK (char_length(slug) <= 63 AND slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id      bigint NOT NULL REFERENCES organisations (id),
    username             text NOT NULL
                         CHECK (char_length(username) BETWEEN 1 AND 150
                                AND username !~ '[[:space:][:cntrl:]]'),
    display_name         text NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 200),
    role                 text NOT NULL CHECK (role IN ('admin', 'staff', 'contributor')),
    -- A PHC string (e.g. $argon2id$...); hashing is the auth code's job.
    password_hash        text NOT NULL CHECK (char_length(password_hash) BETWEEN 1 AND 500),
    -- Users are deactivated, never deleted: audit events keep pointing at them.
    active               boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- "Log out everywhere": sessions created before this instant are void.
    sessions_valid_after timestamptz NOT NULL DEFAULT now()
);

-- Usernames are unique regardless of case, so "Alice" cannot shadow "alice";
-- lookups use lower(username) and hit this index.
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE INDEX users_organisation_id_idx ON users (organisation_id, username);

-- +goose Down
DROP TABLE users;
DROP TABLE organisations;
