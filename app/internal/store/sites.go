package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
)

// Site is a monitoring site: a WGS 84 point.
type Site struct {
	ID             int64
	OrganisationID int64
	Name           string
	Lon, Lat       float64
	CreatedBy      int64
	CreatedAt      time.Time
}

// NewSite is the input of Tx.CreateSite. There is no organisation field: a
// site belongs to its creator's organisation.
type NewSite struct {
	Name      string
	Lon, Lat  float64
	CreatedBy int64
}

// BBox is a longitude/latitude rectangle, edges included. Boxes crossing
// the antimeridian (MinLon > MaxLon) are not supported: ask for two.
type BBox struct {
	MinLon, MinLat, MaxLon, MaxLat float64
}

// SiteQuery filters ListSites.
type SiteQuery struct {
	BBox    *BBox // nil for everywhere
	AfterID int64 // 0 for the first page; else the last ID of the previous page
	Limit   int   // see DefaultSiteLimit
}

// checkLonLat reports the first coordinate off the globe, naming the field.
func checkLonLat(lonField string, lon float64, latField string, lat float64) error {
	if math.IsNaN(lon) || lon < -180 || lon > 180 {
		return &FieldError{Field: lonField, Reason: "must be a number from -180 to 180"}
	}
	if math.IsNaN(lat) || lat < -90 || lat > 90 {
		return &FieldError{Field: latField, Reason: "must be a number from -90 to 90"}
	}
	return nil
}

// validate checks the box; the comparisons also reject NaN and ±Inf.
func (b BBox) validate() error {
	if err := checkLonLat("bbox.min_lon", b.MinLon, "bbox.min_lat", b.MinLat); err != nil {
		return err
	}
	if err := checkLonLat("bbox.max_lon", b.MaxLon, "bbox.max_lat", b.MaxLat); err != nil {
		return err
	}
	if b.MinLon > b.MaxLon || b.MinLat > b.MaxLat {
		return &FieldError{Field: "bbox", Reason: "minimum must not exceed maximum"}
	}
	return nil
}

// CreateSite inserts a site owned by the creator's organisation, after
// checking the coordinates are finite and on the globe. An unknown or
// deactivated creator is ErrForbidden.
func (tx Tx) CreateSite(ctx context.Context, in NewSite) (Site, error) {
	if err := checkLonLat("lon", in.Lon, "lat", in.Lat); err != nil {
		return Site{}, err
	}
	var st Site
	err := tx.tx.QueryRow(ctx,
		`INSERT INTO monitoring_sites (organisation_id, name, geom, created_by)
		 SELECT u.organisation_id, $2, ST_SetSRID(ST_MakePoint($3, $4), 4326), u.id
		 FROM users u WHERE u.id = $1 AND u.active
		 RETURNING id, organisation_id, name, ST_X(geom), ST_Y(geom), created_by, created_at`,
		in.CreatedBy, in.Name, in.Lon, in.Lat).
		Scan(&st.ID, &st.OrganisationID, &st.Name, &st.Lon, &st.Lat, &st.CreatedBy, &st.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Site{}, fmt.Errorf("store: create site: %w: unknown or inactive user", ErrForbidden)
	}
	if err != nil {
		return Site{}, mapErr("create site", err)
	}
	return st, nil
}

// Two shapes of one query, chosen between constants: a single query with
// "$1 IS NULL OR geom && ..." could lose the GiST index under a generic plan.
const (
	siteColumns = `SELECT id, organisation_id, name, ST_X(geom), ST_Y(geom), created_by, created_at
		FROM monitoring_sites`
	listSites = siteColumns + `
		WHERE id > $1
		ORDER BY id LIMIT $2`
	listSitesInBBox = siteColumns + `
		WHERE id > $1 AND geom && ST_MakeEnvelope($3, $4, $5, $6, 4326)
		ORDER BY id LIMIT $2`
)

// ListSites returns sites (of every organisation: sites are public) in ID
// order, optionally only those inside q.BBox. The bbox test uses && on the
// GiST index; for points it is exact containment, edges included.
func (s *Store) ListSites(ctx context.Context, q SiteQuery) ([]Site, error) {
	sql := listSites
	args := []any{q.AfterID, clamp(q.Limit, DefaultSiteLimit, MaxSiteLimit)}
	if b := q.BBox; b != nil {
		if err := b.validate(); err != nil {
			return nil, err
		}
		sql = listSitesInBBox
		args = append(args, b.MinLon, b.MinLat, b.MaxLon, b.MaxLat)
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, mapErr("list sites", err)
	}
	defer rows.Close()
	var out []Site
	for rows.Next() {
		var st Site
		if err := rows.Scan(&st.ID, &st.OrganisationID, &st.Name, &st.Lon, &st.Lat, &st.CreatedBy, &st.CreatedAt); err != nil {
			return nil, mapErr("list sites", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("list sites", err)
	}
	return out, nil
}
