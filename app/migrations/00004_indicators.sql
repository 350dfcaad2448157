-- +goose Up
CREATE TABLE indicators (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The code is a URL path segment (/api/public/indicators/{code}).
    code             text NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    title            text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 300),
    description      text NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
    unit             text NOT NULL DEFAULT '' CHECK (char_length(unit) <= 50),
    framework_target text NOT NULL DEFAULT '' CHECK (char_length(framework_target) <= 100),
    published        boolean NOT NULL DEFAULT false,
    -- Bumped by every metadata update; writers send the version they read
    -- (optimistic concurrency) so a stale edit cannot overwrite a newer one.
    version          integer NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Also touched by data point changes, so list and detail ETags change.
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       bigint REFERENCES users (id)
);

-- The public list: published only, keyset-paginated by (code, id),
-- optionally filtered by framework target.
CREATE INDEX indicators_published_code_idx ON indicators (code, id) WHERE published;
CREATE INDEX indicators_published_target_idx ON indicators (framework_target, code, id) WHERE published;

CREATE TABLE indicator_data_points (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    indicator_id   bigint NOT NULL REFERENCES indicators (id) ON DELETE CASCADE,
    year           integer NOT NULL CHECK (year BETWEEN 1900 AND 2100),
    -- numeric accepts NaN and ±Infinity; no indicator value is either.
    value          numeric NOT NULL CHECK (value NOT IN ('NaN', 'Infinity', '-Infinity')),
    -- e.g. {"sex": "female", "region": "North"}; {} is the total. jsonb
    -- equality ignores key order, so the unique key below is semantic. The
    -- size cap keeps it well under the btree entry limit.
    disaggregation jsonb NOT NULL DEFAULT '{}'
                   CHECK (jsonb_typeof(disaggregation) = 'object'
                          AND octet_length(disaggregation::text) <= 1000),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (indicator_id, year, disaggregation)
);

-- +goose Down
DROP TABLE indicator_data_points;
DROP TABLE indicators;
