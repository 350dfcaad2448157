package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// Limits of the public list's query parameters (the store's and schema's).
const (
	maxSearchLen          = 100
	maxFrameworkTargetLen = 100
)

// indicatorJSON is an indicator as the API shows it. The editing user is
// left out: the public does not need internal user IDs.
type indicatorJSON struct {
	Code            string    `json:"code"`
	Title           string    `json:"title"`
	Description     string    `json:"description"`
	Unit            string    `json:"unit"`
	FrameworkTarget string    `json:"framework_target"`
	Published       bool      `json:"published"`
	Version         int       `json:"version"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

type dataPointJSON struct {
	Year           int               `json:"year"`
	Value          float64           `json:"value"`
	Disaggregation map[string]string `json:"disaggregation"`
	UpdatedAt      time.Time         `json:"updated_at"`
}

type indicatorDetailJSON struct {
	indicatorJSON
	DataPoints []dataPointJSON `json:"data_points"`
}

// listJSON is a page of a list; Next is null on the last page.
type listJSON[T any] struct {
	Items []T     `json:"items"`
	Next  *string `json:"next"`
}

func toIndicatorJSON(in store.Indicator) indicatorJSON {
	return indicatorJSON{
		Code: in.Code, Title: in.Title, Description: in.Description, Unit: in.Unit,
		FrameworkTarget: in.FrameworkTarget, Published: in.Published, Version: in.Version,
		CreatedAt: in.CreatedAt.UTC(), UpdatedAt: in.UpdatedAt.UTC(),
	}
}

func toIndicatorDetailJSON(d store.IndicatorDetail) indicatorDetailJSON {
	out := indicatorDetailJSON{indicatorJSON: toIndicatorJSON(d.Indicator), DataPoints: []dataPointJSON{}}
	for _, p := range d.DataPoints {
		dis := p.Disaggregation
		if dis == nil {
			dis = map[string]string{}
		}
		out.DataPoints = append(out.DataPoints, dataPointJSON{
			Year: p.Year, Value: p.Value, Disaggregation: dis, UpdatedAt: p.UpdatedAt.UTC(),
		})
	}
	return out
}

// parseQuery parses the query string strictly: a malformed one (a bad
// escape, a semicolon) is refused rather than half-read.
func parseQuery(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		problem.Write(w, http.StatusBadRequest, "malformed query string")
		return nil, false
	}
	return q, true
}

// textParam reads a single free-text query parameter of at most max
// characters. NUL and invalid UTF-8 are refused here because PostgreSQL
// would refuse them with an error that is not the client's fault to read.
func textParam(q url.Values, name string, max int, fields map[string]string) string {
	s, ok := single(q, name, fields)
	switch {
	case !ok:
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		fields[name] = "must be valid UTF-8 text without NUL characters"
	case utf8.RuneCountInString(s) > max:
		fields[name] = "must be at most " + strconv.Itoa(max) + " characters"
	default:
		return s
	}
	return ""
}

// listPublicIndicators answers GET /api/public/indicators: published
// indicators ordered by code, a page at a time.
func (a *api) listPublicIndicators(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	fields := map[string]string{}
	page := parsePage(q, indicatorCursor, listPageSize, fields)
	target := textParam(q, "framework_target", maxFrameworkTargetLen, fields)
	search := textParam(q, "q", maxSearchLen, fields)
	if len(fields) > 0 {
		writeFieldErrors(w, fields)
		return
	}

	// The version is read before the page: if a write lands in between,
	// the page is newer than its tag, and the next request (tagged with the
	// older version) is answered in full rather than wrongly with 304.
	version, err := a.Store.PublishedIndicatorsVersion(r.Context())
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	etag := weakETag("indicators", version, strconv.Itoa(page.limit), page.raw, target, search)
	if notModified(w, r, etag) {
		return
	}

	a.writeCachedJSON(w, r, etag, jsonType, func() (any, bool) {
		query := store.IndicatorQuery{FrameworkTarget: target, Search: search, Limit: page.limit}
		if page.raw != "" {
			query.After = &store.IndicatorKey{Code: page.cursor.Code, ID: page.cursor.ID}
		}
		res, err := a.Store.ListPublishedIndicators(r.Context(), query)
		if err != nil {
			a.storeError(w, r, err, map[string]string{"search": "q"})
			return nil, false
		}
		out := listJSON[indicatorJSON]{Items: make([]indicatorJSON, 0, len(res.Indicators))}
		for _, in := range res.Indicators {
			out.Items = append(out.Items, toIndicatorJSON(in))
		}
		if res.Next != nil {
			out.Next = encodeCursor(cursor{Kind: indicatorCursor, Code: res.Next.Code, ID: res.Next.ID})
		}
		return out, true
	})
}

// getPublicIndicator answers GET /api/public/indicators/{code} with the
// indicator and its data points; unknown and unpublished codes are 404.
func (a *api) getPublicIndicator(w http.ResponseWriter, r *http.Request) {
	code := r.PathValue("code")
	if !indicatorCodePattern.MatchString(code) {
		problem.Write(w, http.StatusNotFound, "no such indicator")
		return
	}
	d, err := a.Store.GetPublishedIndicator(r.Context(), code)
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	// The version changes with every edit and data point change; the ID
	// tells apart an indicator re-created under the same code.
	etag := weakETag("indicator", strconv.FormatInt(d.ID, 10), strconv.Itoa(d.Version))
	if notModified(w, r, etag) {
		return
	}
	a.writeJSON(w, r, http.StatusOK, jsonType, toIndicatorDetailJSON(d))
}

// GeoJSON (RFC 7946) output of the public sites list.
type (
	siteCollectionJSON struct {
		Type     string            `json:"type"` // "FeatureCollection"
		Features []siteFeatureJSON `json:"features"`
		// Next is a foreign member (RFC 7946 §6.1): the cursor of the next
		// page, null on the last one.
		Next *string `json:"next"`
	}
	siteFeatureJSON struct {
		Type       string             `json:"type"` // "Feature"
		ID         int64              `json:"id"`
		Geometry   pointJSON          `json:"geometry"`
		Properties sitePropertiesJSON `json:"properties"`
	}
	pointJSON struct {
		Type        string     `json:"type"` // "Point"
		Coordinates [2]float64 `json:"coordinates"`
	}
	sitePropertiesJSON struct {
		Name      string    `json:"name"`
		CreatedAt time.Time `json:"created_at"`
	}
)

const geoJSONType = "application/geo+json"

func toSiteFeatureJSON(s store.Site) siteFeatureJSON {
	return siteFeatureJSON{
		Type: "Feature", ID: s.ID,
		Geometry:   pointJSON{Type: "Point", Coordinates: [2]float64{s.Lon, s.Lat}},
		Properties: sitePropertiesJSON{Name: s.Name, CreatedAt: s.CreatedAt.UTC()},
	}
}

// listPublicSites answers GET /api/public/sites with a GeoJSON
// FeatureCollection, optionally only the sites inside ?bbox=.
func (a *api) listPublicSites(w http.ResponseWriter, r *http.Request) {
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	fields := map[string]string{}
	page := parsePage(q, siteCursor, sitePageSize, fields)
	var bbox *store.BBox
	if s, ok := single(q, "bbox", fields); ok && s != "" {
		if b, ok := parseBBox(s); ok {
			bbox = &b
		} else {
			fields["bbox"] = "must be four comma-separated numbers: minLon,minLat,maxLon,maxLat"
		}
	}
	if len(fields) > 0 {
		writeFieldErrors(w, fields)
		return
	}
	sites, err := a.Store.ListSites(r.Context(), store.SiteQuery{BBox: bbox, AfterID: page.cursor.ID, Limit: page.limit})
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	out := siteCollectionJSON{Type: "FeatureCollection", Features: make([]siteFeatureJSON, 0, len(sites))}
	for _, s := range sites {
		out.Features = append(out.Features, toSiteFeatureJSON(s))
	}
	// A full page may be followed by more; the store does not say, so the
	// last page can come back empty (with next: null).
	if len(sites) == page.limit {
		out.Next = encodeCursor(cursor{Kind: siteCursor, ID: sites[len(sites)-1].ID})
	}
	setPublicCaching(w.Header())
	a.writeJSON(w, r, http.StatusOK, geoJSONType, out)
}

// parseBBox parses "minLon,minLat,maxLon,maxLat" into numbers. Whether
// they are on the globe and ordered is the store's rule (it answers a
// FieldError naming the bad edge); boxes crossing the antimeridian are not
// supported there: a client asks for two boxes instead.
func parseBBox(s string) (store.BBox, bool) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return store.BBox{}, false
	}
	var v [4]float64
	for i, p := range parts {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return store.BBox{}, false
		}
		v[i] = f
	}
	return store.BBox{MinLon: v[0], MinLat: v[1], MaxLon: v[2], MaxLat: v[3]}, true
}
