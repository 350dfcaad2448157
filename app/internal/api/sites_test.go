package api_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/store"
)

type featureCollection struct {
	Type     string `json:"type"`
	Features []struct {
		Type     string `json:"type"`
		ID       int64  `json:"id"`
		Geometry struct {
			Type        string     `json:"type"`
			Coordinates [2]float64 `json:"coordinates"`
		} `json:"geometry"`
		Properties struct {
			Name string `json:"name"`
		} `json:"properties"`
	} `json:"features"`
	Next *string `json:"next"`
}

func (fc featureCollection) names() []string {
	var out []string
	for _, f := range fc.Features {
		out = append(out, f.Properties.Name)
	}
	return out
}

// area is a random spot of the map for one test, so tests sharing the
// database do not see each other's sites.
func area() (lon, lat float64) {
	return float64(rand.IntN(340)-170) + 0.5, float64(rand.IntN(160)-80) + 0.5
}

func seedSite(t *testing.T, u int64, name string, lon, lat float64) {
	t.Helper()
	require.NoError(t, shared.store.InTx(context.Background(), func(tx store.Tx) error {
		_, err := tx.CreateSite(context.Background(), store.NewSite{Name: name, Lon: lon, Lat: lat, CreatedBy: u})
		return err
	}))
}

func TestPublicSitesBBox(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := seedUser(t, seedOrg(t), store.RoleContributor)
	lon, lat := area()
	seedSite(t, u.ID, "centre", lon, lat)
	seedSite(t, u.ID, "east edge", lon+0.1, lat)
	seedSite(t, u.ID, "outside", lon+0.2, lat)
	seedSite(t, u.ID, "north", lon, lat+0.05)
	box := fmt.Sprintf("%g,%g,%g,%g", lon-0.1, lat-0.1, lon+0.1, lat+0.1)

	r := e.get("/api/public/sites?bbox="+box, nil, nil)
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
	assert.Equal(t, "application/geo+json", r.Header.Get("Content-Type"))
	assert.Equal(t, "public, max-age=60", r.Header.Get("Cache-Control"))
	assert.Contains(t, r.Header.Values("Vary"), "Origin")
	fc := decode[featureCollection](t, r)
	assert.Equal(t, "FeatureCollection", fc.Type)
	assert.ElementsMatch(t, []string{"centre", "east edge", "north"}, fc.names(), "edges are inside; the rest is not")
	for _, f := range fc.Features {
		assert.Equal(t, "Feature", f.Type)
		assert.Equal(t, "Point", f.Geometry.Type)
		if f.Properties.Name == "centre" {
			assert.Equal(t, [2]float64{lon, lat}, f.Geometry.Coordinates, "[longitude, latitude] order")
		}
	}
	assert.NotContains(t, string(r.body), "created_by", "no internal user IDs in public data")

	// Paging with limit: each site once, then next is null.
	var names []string
	path := "/api/public/sites?limit=2&bbox=" + box
	for range 5 {
		page := decode[featureCollection](t, e.get(path, nil, nil))
		names = append(names, page.names()...)
		if page.Next == nil {
			break
		}
		path = setParam(path, "cursor", *page.Next)
	}
	assert.ElementsMatch(t, []string{"centre", "east edge", "north"}, names)
}

func TestPublicSitesRefusesBadQueries(t *testing.T) {
	e := newEnv(t, envOptions{})
	tests := []struct{ name, query, field string }{
		{"three numbers", "bbox=1,2,3", "bbox"},
		{"five numbers", "bbox=1,2,3,4,5", "bbox"},
		{"not numbers", "bbox=a,b,c,d", "bbox"},
		{"empty parts", "bbox=,,,", "bbox"},
		{"NaN", "bbox=NaN,0,1,1", "bbox.min_lon"},
		{"infinity", "bbox=0,0,Inf,1", "bbox.max_lon"},
		{"longitude off the globe", "bbox=-181,0,1,1", "bbox.min_lon"},
		{"latitude off the globe", "bbox=0,0,1,91", "bbox.max_lat"},
		{"min above max", "bbox=10,0,5,1", "bbox"},
		{"repeated", "bbox=0,0,1,1&bbox=0,0,2,2", "bbox"},
		{"limit above max", "limit=2001", "limit"},
		{"bad cursor", "cursor=xyz", "cursor"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := problemOf(t, e.get("/api/public/sites?"+tc.query, nil, nil), http.StatusBadRequest)
			assert.Contains(t, p.Errors, tc.field)
		})
	}
	e.noErrorLogged(t)
}

func TestCreateSite(t *testing.T) {
	e := newEnv(t, envOptions{})
	contributor := seedUser(t, seedOrg(t), store.RoleContributor)
	lon, lat := area()
	feature := func(geometry any, props any) map[string]any {
		return map[string]any{"type": "Feature", "geometry": geometry, "properties": props}
	}
	point := func(coords ...any) map[string]any { return map[string]any{"type": "Point", "coordinates": coords} }

	hdr, reqID := withRequestID()
	r := e.sendJSON(http.MethodPost, "/api/sites", contributor, feature(point(lon, lat), map[string]any{"name": "Marsh 1"}), hdr)
	require.Equal(t, http.StatusCreated, r.StatusCode, "body: %s", r.body)
	assert.Equal(t, "application/geo+json", r.Header.Get("Content-Type"))
	assert.Equal(t, "no-store", r.Header.Get("Cache-Control"), "authenticated answers are never cached")
	created := decode[featureCollection](t, reply{body: []byte(`{"features":[` + string(r.body) + `]}`)}).Features[0]
	assert.Equal(t, [2]float64{lon, lat}, created.Geometry.Coordinates)

	got := decode[featureCollection](t, e.get(fmt.Sprintf("/api/public/sites?bbox=%g,%g,%g,%g", lon, lat, lon, lat), nil, nil))
	assert.Equal(t, []string{"Marsh 1"}, got.names(), "the new site is public")
	events := auditFor(t, reqID)
	require.Len(t, events, 1)
	assert.Equal(t, "site.create", events[0].Action)
	assert.Equal(t, contributor.ID, events[0].ActorUserID)
	assert.Equal(t, fmt.Sprint(created.ID), events[0].ObjectID)

	tests := []struct {
		name  string
		body  any
		field string
	}{
		{"bare Point", point(lon, lat), "type"},
		{"not a Feature", map[string]any{"type": "FeatureCollection"}, "type"},
		{"longitude too big", feature(point(180.5, 0), map[string]any{"name": "x"}), "geometry.coordinates[0]"},
		{"latitude too small", feature(point(0, -90.01), map[string]any{"name": "x"}), "geometry.coordinates[1]"},
		{"altitude", feature(point(1, 2, 3), map[string]any{"name": "x"}), "geometry.coordinates"},
		{"one number", feature(point(1), map[string]any{"name": "x"}), "geometry.coordinates"},
		{"no coordinates", feature(map[string]any{"type": "Point"}, map[string]any{"name": "x"}), "geometry.coordinates"},
		{"polygon", feature(map[string]any{"type": "Polygon", "coordinates": []any{}}, map[string]any{"name": "x"}), "geometry.coordinates"},
		{"line", feature(map[string]any{"type": "LineString", "coordinates": []any{1, 2}}, map[string]any{"name": "x"}), "geometry.type"},
		{"null geometry", feature(nil, map[string]any{"name": "x"}), "geometry"},
		{"no name", feature(point(1, 2), map[string]any{}), "properties.name"},
		{"no properties", feature(point(1, 2), nil), "properties"},
		{"name too long", feature(point(1, 2), map[string]any{"name": strings.Repeat("n", 201)}), "properties.name"},
		{"unknown property", feature(point(1, 2), map[string]any{"name": "x", "organisation_id": 1}), "organisation_id"},
		{"string coordinates", feature(point("1", "2"), map[string]any{"name": "x"}), "geometry.coordinates"},
		{"huge number", `{"type":"Feature","geometry":{"type":"Point","coordinates":[1e400,0]},"properties":{"name":"x"}}`, "geometry.coordinates"},
		{"NUL in name", feature(point(1, 2), map[string]any{"name": "a\x00b"}), "properties.name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := problemOf(t, e.sendJSON(http.MethodPost, "/api/sites", contributor, tc.body, nil), http.StatusBadRequest)
			assert.Contains(t, p.Errors, tc.field, "errors: %v", p.Errors)
		})
	}
	problemOf(t, e.sendJSON(http.MethodPost, "/api/sites", nil, feature(point(1, 2), map[string]any{"name": "x"}), nil), http.StatusUnauthorized)
	e.noErrorLogged(t)
}
