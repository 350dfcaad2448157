package api_test

// Fuzz targets for the JSON decoders and the GeoJSON parsing, through the
// full middleware chain (in process: handler + recorder). Whatever the
// input, the answer is a success or a 400/413 problem, never a 500 and
// never a panic. Under plain `go test` the seed corpus runs; fuzz with
// e.g. go test -run '^$' -fuzz FuzzSiteFeature -fuzztime 20s ./app/internal/api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// serve runs one request through e's full handler in process, as the
// reverse proxy would send it.
func (e *env) serve(method, target, body string, as *identity.User) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://"+publicHost+target, strings.NewReader(body))
	req.RemoteAddr = "127.0.0.1:50000"
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Content-Type", "application/json")
	if as != nil {
		req.Header.Set(identityHeader, identityValue(*as))
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// requireOutcome checks status is one of ok or a client error answered
// as problem+json.
func requireOutcome(t *testing.T, rec *httptest.ResponseRecorder, ok ...int) {
	t.Helper()
	for _, s := range ok {
		if rec.Code == s {
			return
		}
	}
	require.Contains(t, []int{http.StatusBadRequest, http.StatusRequestEntityTooLarge}, rec.Code, "body: %s", rec.Body)
	require.Equal(t, problem.ContentType, rec.Header().Get("Content-Type"))
	var p problem.Details
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	require.Equal(t, rec.Code, p.Status)
}

func FuzzDatasetBody(f *testing.F) {
	for _, seed := range []string{
		`{"title":"T","licence":"CC0","sensitivity":"public"}`,
		`{"title":"T","licence":"CC0","sensitivity":"public","organisation_id":2}`,
		`{"title":1}`, `{"title":"\u0000"}`, `[]`, `null`, `{}`, `{"title":"T"} {}`, `{"title":"\ud800"}`,
		`{"title":"` + strings.Repeat("x", 400) + `","licence":"x","sensitivity":"internal"}`, `{`, ``,
	} {
		f.Add(seed)
	}
	e := newEnv(f, envOptions{})
	u := seedUser(f, seedOrg(f), store.RoleContributor)
	f.Fuzz(func(t *testing.T, body string) {
		rec := e.serve(http.MethodPost, "/api/datasets", body, u)
		requireOutcome(t, rec, http.StatusCreated)
	})
}

func FuzzDataPointsBody(f *testing.F) {
	for _, seed := range []string{
		`{"data_points":[{"year":2020,"value":1.5}]}`,
		`{"data_points":[{"year":2020,"value":1,"disaggregation":{"sex":"f"}}]}`,
		`{"data_points":[{"year":1e10,"value":1}]}`, `{"data_points":[{"year":2020,"value":1e400}]}`,
		`{"data_points":[{"year":2020,"value":1,"disaggregation":{"":""}}]}`,
		`{"data_points":[{"year":2020,"value":1,"disaggregation":{"k":"\u0000"}}]}`,
		`{"data_points":{}}`, `{"data_points":[null]}`, `{"data_points":[]}`,
	} {
		f.Add(seed)
	}
	e := newEnv(f, envOptions{})
	staff := seedUser(f, seedOrg(f), store.RoleStaff)
	in := seedIndicator(f, unique("FZ-"), "Fuzzed", "", false)
	f.Fuzz(func(t *testing.T, body string) {
		rec := e.serve(http.MethodPut, "/api/indicators/"+in.Code+"/data-points", body, staff)
		requireOutcome(t, rec, http.StatusOK)
	})
}

func FuzzSiteFeature(f *testing.F) {
	for _, seed := range []string{
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[10.5,-3.25]},"properties":{"name":"A"}}`,
		`{"type":"Point","coordinates":[1,2]}`,
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[180.0000001,0]},"properties":{"name":"A"}}`,
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[-0,-90]},"properties":{"name":"A"}}`,
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[1,2,3]},"properties":{"name":"A"}}`,
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[1e400,0]},"properties":{"name":"A"}}`,
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[[1,2]]},"properties":{"name":"A"}}`,
		`{"type":"Feature","geometry":null,"properties":null}`,
		`{"type":"Feature","geometry":{"type":"Point","coordinates":[1,2]},"properties":{"name":""}}`,
	} {
		f.Add(seed)
	}
	e := newEnv(f, envOptions{})
	u := seedUser(f, seedOrg(f), store.RoleContributor)
	f.Fuzz(func(t *testing.T, body string) {
		rec := e.serve(http.MethodPost, "/api/sites", body, u)
		requireOutcome(t, rec, http.StatusCreated)
		if rec.Code != http.StatusCreated {
			return
		}
		var created struct {
			Geometry struct {
				Coordinates [2]float64 `json:"coordinates"`
			} `json:"geometry"`
		}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &created))
		lon, lat := created.Geometry.Coordinates[0], created.Geometry.Coordinates[1]
		assert.True(t, lon >= -180 && lon <= 180 && lat >= -90 && lat <= 90, "stored %v,%v", lon, lat)
	})
}

// FuzzPublicQueries fuzzes the query strings of the public lists: the
// cursor, limit, search and bbox parsers.
func FuzzPublicQueries(f *testing.F) {
	for _, seed := range []string{
		"bbox=-10,-10,10,10", "bbox=NaN,0,1,1", "bbox=1e999,0,0,0", "bbox=,,,",
		"limit=5&cursor=eyJrIjoiaW5kaWNhdG9yIiwiYyI6IkEuMSIsImkiOjF9", "cursor=%00", "q=%25%5C_",
		"framework_target=x&q=y&limit=100", "limit=1&limit=2", "q=%ff",
	} {
		f.Add(seed)
	}
	e := newEnv(f, envOptions{})
	f.Fuzz(func(t *testing.T, query string) {
		if strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
			query = url.QueryEscape(query) // not a request line an HTTP client can send
		}
		for _, path := range []string{"/api/public/indicators?", "/api/public/sites?"} {
			rec := e.serve(http.MethodGet, path+query, "", nil)
			requireOutcome(t, rec, http.StatusOK)
		}
	})
}
