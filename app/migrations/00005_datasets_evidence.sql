-- +goose Up
CREATE TABLE datasets (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id bigint NOT NULL REFERENCES organisations (id),
    title           text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 300),
    licence         text NOT NULL CHECK (char_length(licence) BETWEEN 1 AND 100),
    -- public: everyone signed in may see it; internal and restricted: only
    -- the owning organisation (the store decides visibility in SQL).
    sensitivity     text NOT NULL CHECK (sensitivity IN ('public', 'internal', 'restricted')),
    created_by      bigint NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX datasets_organisation_id_idx ON datasets (organisation_id, id);
CREATE INDEX datasets_public_idx ON datasets (id) WHERE sensitivity = 'public';

CREATE TABLE evidence_files (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No cascade: the files on disk must be removed before their rows.
    dataset_id    bigint NOT NULL REFERENCES datasets (id),
    -- As the uploader named it; shown to people, never used as a path.
    original_name text NOT NULL CHECK (char_length(original_name) BETWEEN 1 AND 255),
    -- The random file name under the media root. The pattern makes it a
    -- single, non-hidden path segment whatever the caller passes.
    stored_name   text NOT NULL UNIQUE
                  CHECK (stored_name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{15,199}$'
                         AND stored_name NOT LIKE '%..%'),
    content_type  text NOT NULL CHECK (char_length(content_type) BETWEEN 1 AND 255),
    size_bytes    bigint NOT NULL CHECK (size_bytes > 0),
    sha256        bytea NOT NULL CHECK (octet_length(sha256) = 32),
    uploaded_by   bigint NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX evidence_files_dataset_id_idx ON evidence_files (dataset_id, id);

-- +goose Down
DROP TABLE evidence_files;
DROP TABLE datasets;
