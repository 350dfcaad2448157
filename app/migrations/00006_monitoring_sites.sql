-- +goose Up
CREATE TABLE monitoring_sites (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id bigint NOT NULL REFERENCES organisations (id),
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    -- WGS 84 longitude/latitude. The typmod fixes type and SRID; the check
    -- keeps coordinates on the globe (NaN fails BETWEEN).
    geom            geometry(Point, 4326) NOT NULL
                    CHECK (NOT ST_IsEmpty(geom)
                           AND ST_X(geom) BETWEEN -180 AND 180
                           AND ST_Y(geom) BETWEEN -90 AND 90),
    created_by      bigint NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Serves the bbox filter (geom && ST_MakeEnvelope(...)).
CREATE INDEX monitoring_sites_geom_idx ON monitoring_sites USING gist (geom);

-- +goose Down
DROP TABLE monitoring_sites;
