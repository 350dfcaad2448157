package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Indicator is a monitoring indicator's metadata.
type Indicator struct {
	ID              int64
	Code            string // e.g. "A.1"; unique, a URL path segment
	Title           string
	Description     string
	Unit            string
	FrameworkTarget string // e.g. "GBF Target 3"
	Published       bool
	// Version increases with every change to the indicator or its data
	// points; updates must name the version they started from.
	Version   int
	CreatedAt time.Time
	UpdatedAt time.Time
	UpdatedBy int64 // 0 when unknown
}

// IndicatorFields are the editable fields of an indicator.
type IndicatorFields struct {
	Title           string
	Description     string
	Unit            string
	FrameworkTarget string
	Published       bool
}

// NewIndicator is the input of Tx.CreateIndicator.
type NewIndicator struct {
	Code string
	IndicatorFields
	CreatedBy int64
}

// IndicatorUpdate is the input of Tx.UpdateIndicator.
type IndicatorUpdate struct {
	Code string
	// Version is the version the editor read; the update fails with
	// ErrStale if the indicator has changed since.
	Version int
	IndicatorFields
	UpdatedBy int64
}

// DataPoint is one value of an indicator.
type DataPoint struct {
	ID             int64
	Year           int
	Value          float64
	Disaggregation map[string]string // {} is the total
	UpdatedAt      time.Time
}

// DataPointInput is the input of Tx.UpsertDataPoint.
type DataPointInput struct {
	Year           int
	Value          float64
	Disaggregation map[string]string
}

// IndicatorDetail is an indicator with its data points, ordered by year.
type IndicatorDetail struct {
	Indicator
	DataPoints []DataPoint
}

// IndicatorKey is a position in the published list, which is ordered by
// code then id: the list continues strictly after it.
type IndicatorKey struct {
	Code string
	ID   int64
}

// IndicatorQuery filters the published list.
type IndicatorQuery struct {
	FrameworkTarget string // exact match; "" for any
	// Search matches a case-insensitive substring of the code or title.
	Search string
	After  *IndicatorKey // nil for the first page
	Limit  int           // see DefaultLimit
}

// IndicatorPage is one page of the published list.
type IndicatorPage struct {
	Indicators []Indicator
	// Next is the key to pass as After for the following page; nil on the
	// last page.
	Next *IndicatorKey
}

// Limits on inputs the schema cannot check usefully by itself.
const (
	maxSearchLen         = 100
	maxDisaggregationLen = 10
	maxDisaggregationKey = 50
	maxDisaggregationVal = 100
)

const indicatorColumns = `id, code, title, description, unit, framework_target, published,
	version, created_at, updated_at, updated_by`

func scanIndicator(row interface{ Scan(...any) error }) (Indicator, error) {
	var (
		in Indicator
		by *int64
	)
	err := row.Scan(&in.ID, &in.Code, &in.Title, &in.Description, &in.Unit, &in.FrameworkTarget,
		&in.Published, &in.Version, &in.CreatedAt, &in.UpdatedAt, &by)
	in.UpdatedBy = idValue(by)
	return in, err
}

// CreateIndicator inserts an indicator at version 1. A taken code is a
// *ConflictError for "code".
func (tx Tx) CreateIndicator(ctx context.Context, in NewIndicator) (Indicator, error) {
	f := in.IndicatorFields
	ind, err := scanIndicator(tx.tx.QueryRow(ctx,
		`INSERT INTO indicators (code, title, description, unit, framework_target, published, updated_by)
		 VALUES ($1, $2, $3, $4, $5, $6, $7)
		 RETURNING `+indicatorColumns,
		in.Code, f.Title, f.Description, f.Unit, f.FrameworkTarget, f.Published, nullID(in.CreatedBy)))
	if err != nil {
		return Indicator{}, mapErr("create indicator", err)
	}
	return ind, nil
}

// UpdateIndicator replaces the editable fields if the indicator is still at
// in.Version, and increments the version. It returns ErrNotFound for an
// unknown code and ErrStale when someone else changed it first.
func (tx Tx) UpdateIndicator(ctx context.Context, in IndicatorUpdate) (Indicator, error) {
	f := in.IndicatorFields
	ind, err := scanIndicator(tx.tx.QueryRow(ctx,
		`UPDATE indicators
		 SET title = $3, description = $4, unit = $5, framework_target = $6, published = $7,
		     updated_by = $8, version = version + 1, updated_at = now()
		 WHERE code = $1 AND version = $2
		 RETURNING `+indicatorColumns,
		in.Code, in.Version, f.Title, f.Description, f.Unit, f.FrameworkTarget, f.Published, nullID(in.UpdatedBy)))
	if err == nil {
		return ind, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Indicator{}, mapErr("update indicator", err)
	}
	// No row matched: tell a missing indicator from a stale version.
	var exists bool
	if err := tx.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM indicators WHERE code = $1)`, in.Code).Scan(&exists); err != nil {
		return Indicator{}, mapErr("update indicator", err)
	}
	if exists {
		return Indicator{}, fmt.Errorf("store: update indicator %q: %w", in.Code, ErrStale)
	}
	return Indicator{}, fmt.Errorf("store: update indicator %q: %w", in.Code, ErrNotFound)
}

// UpsertDataPoint sets the value for (year, disaggregation) of the indicator
// with that code, inserting or replacing it, and bumps the indicator's
// version and updated_at so caches of it are invalidated.
func (tx Tx) UpsertDataPoint(ctx context.Context, code string, in DataPointInput, by int64) (DataPoint, error) {
	if err := in.validate(); err != nil {
		return DataPoint{}, err
	}
	dis := in.Disaggregation
	if dis == nil {
		dis = map[string]string{} // nil would be stored as JSON null
	}
	var dp DataPoint
	err := tx.tx.QueryRow(ctx,
		`WITH ind AS (
		     UPDATE indicators SET version = version + 1, updated_at = now(), updated_by = $5
		     WHERE code = $1 RETURNING id
		 )
		 INSERT INTO indicator_data_points (indicator_id, year, value, disaggregation)
		 SELECT id, $2, $3, $4 FROM ind
		 ON CONFLICT (indicator_id, year, disaggregation)
		 DO UPDATE SET value = EXCLUDED.value, updated_at = now()
		 RETURNING id, year, value::float8, disaggregation, updated_at`,
		code, in.Year, in.Value, dis, nullID(by)).
		Scan(&dp.ID, &dp.Year, &dp.Value, &dp.Disaggregation, &dp.UpdatedAt)
	if err != nil {
		return DataPoint{}, mapErr("upsert data point", err)
	}
	return dp, nil
}

func (in DataPointInput) validate() error {
	if math.IsNaN(in.Value) || math.IsInf(in.Value, 0) {
		return &FieldError{Field: "value", Reason: "must be a finite number"}
	}
	if in.Year < 1900 || in.Year > 2100 {
		return &FieldError{Field: "year", Reason: "must be between 1900 and 2100"}
	}
	if len(in.Disaggregation) > maxDisaggregationLen {
		return &FieldError{Field: "disaggregation", Reason: fmt.Sprintf("at most %d keys", maxDisaggregationLen)}
	}
	for k, v := range in.Disaggregation {
		if k == "" || utf8.RuneCountInString(k) > maxDisaggregationKey || utf8.RuneCountInString(v) > maxDisaggregationVal {
			return &FieldError{Field: "disaggregation", Reason: fmt.Sprintf(
				"keys must have 1-%d characters and values at most %d", maxDisaggregationKey, maxDisaggregationVal)}
		}
	}
	return nil
}

// GetPublishedIndicator returns a published indicator with its data points;
// an unpublished one is ErrNotFound.
func (s *Store) GetPublishedIndicator(ctx context.Context, code string) (IndicatorDetail, error) {
	return s.getIndicator(ctx, code, true)
}

// GetIndicator returns an indicator with its data points, published or not
// (for editors).
func (s *Store) GetIndicator(ctx context.Context, code string) (IndicatorDetail, error) {
	return s.getIndicator(ctx, code, false)
}

func (s *Store) getIndicator(ctx context.Context, code string, publishedOnly bool) (IndicatorDetail, error) {
	// One statement, so the indicator and its points come from one snapshot.
	rows, err := s.pool.Query(ctx,
		`SELECT i.id, i.code, i.title, i.description, i.unit, i.framework_target, i.published,
		        i.version, i.created_at, i.updated_at, i.updated_by,
		        d.id, d.year, d.value::float8, d.disaggregation, d.updated_at
		 FROM indicators i
		 LEFT JOIN indicator_data_points d ON d.indicator_id = i.id
		 WHERE i.code = $1 AND (i.published OR NOT $2)
		 ORDER BY d.year, d.disaggregation::text, d.id`, code, publishedOnly)
	if err != nil {
		return IndicatorDetail{}, mapErr("get indicator", err)
	}
	defer rows.Close()
	var (
		out   IndicatorDetail
		found bool
	)
	for rows.Next() {
		var (
			by      *int64
			pointID *int64
			year    *int
			value   *float64
			dis     map[string]string
			at      *time.Time
		)
		in := &out.Indicator
		if err := rows.Scan(&in.ID, &in.Code, &in.Title, &in.Description, &in.Unit, &in.FrameworkTarget,
			&in.Published, &in.Version, &in.CreatedAt, &in.UpdatedAt, &by,
			&pointID, &year, &value, &dis, &at); err != nil {
			return IndicatorDetail{}, mapErr("get indicator", err)
		}
		in.UpdatedBy = idValue(by)
		found = true
		if pointID != nil {
			out.DataPoints = append(out.DataPoints, DataPoint{
				ID: *pointID, Year: *year, Value: *value, Disaggregation: dis, UpdatedAt: *at,
			})
		}
	}
	if err := rows.Err(); err != nil {
		return IndicatorDetail{}, mapErr("get indicator", err)
	}
	if !found {
		return IndicatorDetail{}, fmt.Errorf("store: get indicator %q: %w", code, ErrNotFound)
	}
	return out, nil
}

// ListPublishedIndicators returns one page of published indicators matching
// q, ordered by code then id. The order is total, so keyset pages neither
// skip nor repeat rows while others write.
func (s *Store) ListPublishedIndicators(ctx context.Context, q IndicatorQuery) (IndicatorPage, error) {
	if utf8.RuneCountInString(q.Search) > maxSearchLen {
		return IndicatorPage{}, &FieldError{Field: "search", Reason: fmt.Sprintf("at most %d characters", maxSearchLen)}
	}
	limit := clamp(q.Limit, DefaultLimit, MaxLimit)
	var (
		after     = q.After != nil
		afterCode string
		afterID   int64
	)
	if after {
		afterCode, afterID = q.After.Code, q.After.ID
	}
	// One row more than the page tells whether another page exists.
	rows, err := s.pool.Query(ctx,
		`SELECT `+indicatorColumns+` FROM indicators
		 WHERE published
		   AND ($1 = '' OR framework_target = $1)
		   AND ($2 = '' OR code ILIKE $2 ESCAPE '\' OR title ILIKE $2 ESCAPE '\')
		   AND (NOT $3 OR (code, id) > ($4, $5))
		 ORDER BY code, id
		 LIMIT $6`,
		q.FrameworkTarget, likePattern(q.Search), after, afterCode, afterID, limit+1)
	if err != nil {
		return IndicatorPage{}, mapErr("list indicators", err)
	}
	defer rows.Close()
	var page IndicatorPage
	for rows.Next() {
		ind, err := scanIndicator(rows)
		if err != nil {
			return IndicatorPage{}, mapErr("list indicators", err)
		}
		page.Indicators = append(page.Indicators, ind)
	}
	if err := rows.Err(); err != nil {
		return IndicatorPage{}, mapErr("list indicators", err)
	}
	if len(page.Indicators) > limit {
		page.Indicators = page.Indicators[:limit]
		last := page.Indicators[limit-1]
		page.Next = &IndicatorKey{Code: last.Code, ID: last.ID}
	}
	return page, nil
}

// likePattern makes a substring search pattern for ILIKE ... ESCAPE '\',
// so %, _ and \ in the search match themselves. "" stays "" (no filter).
// likeEscaper makes LIKE's wildcards and escape character literal.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

func likePattern(search string) string {
	if search == "" {
		return ""
	}
	return "%" + likeEscaper.Replace(search) + "%"
}

// PublishedIndicatorsVersion returns a cheap validator of the published
// list for ETags: it changes when an indicator is published, unpublished,
// edited or has its data points changed, because each of those changes the
// count or raises a version (so the sum of versions). It is one aggregate
// over the published rows, no list query. Combine it with the request's
// query parameters to make a page's ETag, and treat it as a weak validator.
func (s *Store) PublishedIndicatorsVersion(ctx context.Context) (string, error) {
	var (
		count, versions int64
		latest          time.Time
	)
	err := s.pool.QueryRow(ctx,
		`SELECT count(*), coalesce(sum(version), 0), coalesce(max(updated_at), 'epoch')
		 FROM indicators WHERE published`).Scan(&count, &versions, &latest)
	if err != nil {
		return "", mapErr("indicators version", err)
	}
	return fmt.Sprintf("%d-%d-%d", count, versions, latest.UnixMicro()), nil
}
