package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

func TestRoleRules(t *testing.T) {
	e := newEnv(t, envOptions{})
	org := seedOrg(t)
	admin := seedUser(t, org, store.RoleAdmin)
	staff := seedUser(t, org, store.RoleStaff)
	contributor := seedUser(t, org, store.RoleContributor)
	in := seedIndicator(t, unique("R-"), "Roles", "", false)

	type route struct{ method, path string }
	var (
		editorRoutes = []route{
			{http.MethodPost, "/api/indicators"},
			{http.MethodGet, "/api/indicators/" + in.Code},
			{http.MethodPut, "/api/indicators/" + in.Code},
			{http.MethodPut, "/api/indicators/" + in.Code + "/data-points"},
		}
		memberRoutes = []route{
			{http.MethodPost, "/api/datasets"},
			{http.MethodGet, "/api/datasets"},
			{http.MethodGet, "/api/datasets/1"},
			{http.MethodPost, "/api/uploads/datasets/1/evidence"},
			{http.MethodPost, "/api/sites"},
		}
		adminRoutes = []route{{http.MethodGet, "/api/audit"}}
	)
	check := func(t *testing.T, routes []route, as *identity.User, want int) {
		for _, rt := range routes {
			// An empty JSON object: enough to get past routing, never a
			// valid write, so nothing is changed by this test.
			r := e.do(call{method: rt.method, path: rt.path, body: strings.NewReader("{}"), contentType: "application/json", as: as})
			if want == 0 {
				assert.NotContains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, r.StatusCode, "%s %s", rt.method, rt.path)
				continue
			}
			problemOf(t, r, want)
		}
	}
	t.Run("anonymous", func(t *testing.T) {
		check(t, editorRoutes, nil, http.StatusUnauthorized)
		check(t, memberRoutes, nil, http.StatusUnauthorized)
		check(t, adminRoutes, nil, http.StatusUnauthorized)
	})
	t.Run("contributor", func(t *testing.T) {
		check(t, editorRoutes, contributor, http.StatusForbidden)
		check(t, adminRoutes, contributor, http.StatusForbidden)
		check(t, memberRoutes, contributor, 0)
	})
	t.Run("staff", func(t *testing.T) {
		check(t, adminRoutes, staff, http.StatusForbidden)
		check(t, editorRoutes, staff, 0)
		check(t, memberRoutes, staff, 0)
	})
	t.Run("admin", func(t *testing.T) {
		check(t, editorRoutes, admin, 0)
		check(t, memberRoutes, admin, 0)
		check(t, adminRoutes, admin, 0)
	})
	t.Run("unknown role", func(t *testing.T) {
		check(t, memberRoutes, &identity.User{ID: staff.ID, OrganisationID: org.ID, Role: "superuser"}, http.StatusForbidden)
	})
}

func TestCreateIndicator(t *testing.T) {
	e := newEnv(t, envOptions{})
	staff := seedUser(t, seedOrg(t), store.RoleStaff)
	code := unique("C.")
	hdr, reqID := withRequestID()
	r := e.sendJSON(http.MethodPost, "/api/indicators", staff, map[string]any{
		"code": code, "title": "Protected area coverage", "unit": "%", "framework_target": "GBF Target 3", "published": true,
	}, hdr)
	require.Equal(t, http.StatusCreated, r.StatusCode, "body: %s", r.body)
	assert.Equal(t, "/api/indicators/"+code, r.Header.Get("Location"))
	assert.Equal(t, `"1"`, r.Header.Get("ETag"))
	assert.Equal(t, "no-store", r.Header.Get("Cache-Control"))
	got := decode[indicatorDetail](t, r)
	assert.Equal(t, code, got.Code)
	assert.Equal(t, 1, got.Version)

	events := auditFor(t, reqID)
	require.Len(t, events, 1, "one audit event, with the request's ID")
	assert.Equal(t, "indicator.create", events[0].Action)
	assert.Equal(t, "indicator", events[0].ObjectType)
	assert.Equal(t, code, events[0].ObjectID)
	assert.Equal(t, staff.ID, events[0].ActorUserID)

	public := e.get("/api/public/indicators/"+code, nil, nil)
	assert.Equal(t, http.StatusOK, public.StatusCode, "published on creation")

	hdr, reqID = withRequestID()
	p := problemOf(t, e.sendJSON(http.MethodPost, "/api/indicators", staff, map[string]any{"code": code, "title": "Again"}, hdr), http.StatusConflict)
	assert.Equal(t, map[string]string{"code": "already exists"}, p.Errors)
	assert.Empty(t, auditFor(t, reqID), "a refused write records nothing")
	e.noErrorLogged(t)
}

func TestUpdateIndicatorOptimisticConcurrency(t *testing.T) {
	e := newEnv(t, envOptions{})
	staff := seedUser(t, seedOrg(t), store.RoleStaff)
	in := seedIndicator(t, unique("U-"), "Before", "", false)
	path := "/api/indicators/" + in.Code
	body := func(title string, version any) map[string]any {
		b := map[string]any{"title": title}
		if version != nil {
			b["version"] = version
		}
		return b
	}

	hdr, reqID := withRequestID()
	r := e.sendJSON(http.MethodPut, path, staff, body("Body version", 1), hdr)
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
	assert.Equal(t, `"2"`, r.Header.Get("ETag"))
	events := auditFor(t, reqID)
	require.Len(t, events, 1)
	assert.Equal(t, "indicator.update", events[0].Action)

	problemOf(t, e.sendJSON(http.MethodPut, path, staff, body("Stale body", 1), nil), http.StatusConflict)

	got := e.get(path, staff, nil)
	require.Equal(t, http.StatusOK, got.StatusCode)
	etag := got.Header.Get("ETag")
	assert.Equal(t, `"2"`, etag, "editors read the version to send back")

	r = e.sendJSON(http.MethodPut, path, staff, body("If-Match", nil), map[string]string{"If-Match": etag})
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
	assert.Equal(t, `"3"`, r.Header.Get("ETag"))

	tests := []struct {
		name    string
		version any
		ifMatch string
		status  int
	}{
		{"stale If-Match", nil, `"2"`, http.StatusPreconditionFailed},
		{"weak If-Match never matches", nil, `W/"3"`, http.StatusPreconditionFailed},
		{"unquoted If-Match", nil, `3`, http.StatusPreconditionFailed},
		{"If-Match list", nil, `"3", "4"`, http.StatusPreconditionFailed},
		{"If-Match star", nil, `*`, http.StatusPreconditionFailed},
		{"no version at all", nil, "", http.StatusPreconditionRequired},
		{"body and If-Match disagree", 2, `"3"`, http.StatusBadRequest},
		{"version zero", 0, "", http.StatusBadRequest},
		{"version not a number", "3", "", http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.ifMatch != "" {
				hdr["If-Match"] = tc.ifMatch
			}
			problemOf(t, e.sendJSON(http.MethodPut, path, staff, body("Refused", tc.version), hdr), tc.status)
		})
	}
	final := decode[indicatorDetail](t, e.get(path, staff, nil))
	assert.Equal(t, "If-Match", final.Title, "no refused update changed anything")
	assert.Equal(t, 3, final.Version)

	problemOf(t, e.sendJSON(http.MethodPut, "/api/indicators/NOPE-"+unique(""), staff, body("x", 1), nil), http.StatusNotFound)
	problemOf(t, e.get("/api/indicators/NOPE-"+unique(""), staff, nil), http.StatusNotFound)
	e.noErrorLogged(t)
}

func TestUpsertDataPoints(t *testing.T) {
	e := newEnv(t, envOptions{})
	staff := seedUser(t, seedOrg(t), store.RoleStaff)
	in := seedIndicator(t, unique("DP-"), "Points", "", true)
	path := "/api/indicators/" + in.Code + "/data-points"

	hdr, reqID := withRequestID()
	r := e.sendJSON(http.MethodPut, path, staff, map[string]any{"data_points": []any{
		map[string]any{"year": 2020, "value": 1.5},
		map[string]any{"year": 2021, "value": 0, "disaggregation": map[string]string{"sex": "female"}},
	}}, hdr)
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
	d := decode[indicatorDetail](t, r)
	require.Len(t, d.DataPoints, 2)
	assert.Equal(t, 0.0, d.DataPoints[1].Value, "zero is a value, not a missing one")
	assert.Equal(t, `"3"`, r.Header.Get("ETag"), "each point bumps the version")
	events := auditFor(t, reqID)
	require.Len(t, events, 1, "one event for the whole list")
	assert.Equal(t, "indicator.data_points.upsert", events[0].Action)

	// The same (year, disaggregation) replaces the value.
	r = e.sendJSON(http.MethodPut, path, staff, map[string]any{"data_points": []any{map[string]any{"year": 2020, "value": 9}}}, nil)
	require.Equal(t, http.StatusOK, r.StatusCode)
	d = decode[indicatorDetail](t, r)
	require.Len(t, d.DataPoints, 2)
	assert.Equal(t, 9.0, d.DataPoints[0].Value)

	bigDisaggregation := map[string]string{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
		bigDisaggregation[strings.Repeat(k, 50)] = strings.Repeat("v", 100)
	}
	tests := []struct {
		name  string
		body  any
		field string
	}{
		{"year too early", map[string]any{"data_points": []any{map[string]any{"year": 1800, "value": 1}}}, "data_points[0].year"},
		{"missing value", map[string]any{"data_points": []any{map[string]any{"year": 2020}}}, "data_points[0].value"},
		{"missing year", map[string]any{"data_points": []any{map[string]any{"value": 1}}}, "data_points[0].year"},
		{"string value", map[string]any{"data_points": []any{map[string]any{"year": 2020, "value": "1"}}}, "data_points.value"},
		{"fractional year", `{"data_points":[{"year":2020.5,"value":1}]}`, "data_points.year"},
		{"empty list", map[string]any{"data_points": []any{}}, "data_points"},
		{"no list", map[string]any{}, "data_points"},
		{"too many keys", map[string]any{"data_points": []any{map[string]any{"year": 2020, "value": 1,
			"disaggregation": map[string]string{"1": "", "2": "", "3": "", "4": "", "5": "", "6": "", "7": "", "8": "", "9": "", "10": "", "11": ""}}}},
			"data_points[0].disaggregation"},
		{"empty key", map[string]any{"data_points": []any{map[string]any{"year": 2020, "value": 1, "disaggregation": map[string]string{"": "x"}}}}, "data_points[0].disaggregation[]"},
		// Valid per field, too large as a whole for the schema: refused by
		// the database, after the first point was written, which is
		// rolled back with it.
		{"second point too large", map[string]any{"data_points": []any{
			map[string]any{"year": 2030, "value": 1},
			map[string]any{"year": 2031, "value": 1, "disaggregation": bigDisaggregation},
		}}, "data_points[1].disaggregation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := problemOf(t, e.sendJSON(http.MethodPut, path, staff, tc.body, nil), http.StatusBadRequest)
			assert.Contains(t, p.Errors, tc.field, "errors: %v", p.Errors)
		})
	}
	after, err := shared.store.GetIndicator(context.Background(), in.Code)
	require.NoError(t, err)
	assert.Len(t, after.DataPoints, 2, "no refused list left a point behind")

	problemOf(t, e.sendJSON(http.MethodPut, "/api/indicators/NOPE-"+unique("")+"/data-points", staff,
		map[string]any{"data_points": []any{map[string]any{"year": 2020, "value": 1}}}, nil), http.StatusNotFound)
	e.noErrorLogged(t)
}
