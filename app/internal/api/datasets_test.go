package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

type dataset struct {
	ID             int64  `json:"id"`
	OrganisationID int64  `json:"organisation_id"`
	Title          string `json:"title"`
	Sensitivity    string `json:"sensitivity"`
	Evidence       []struct {
		ID           int64  `json:"id"`
		OriginalName string `json:"original_name"`
		ContentType  string `json:"content_type"`
		SizeBytes    int64  `json:"size_bytes"`
		SHA256       string `json:"sha256"`
	} `json:"evidence"`
}

type datasetPage struct {
	Items []dataset `json:"items"`
	Next  *string   `json:"next"`
}

func createDataset(t *testing.T, e *env, as *identity.User, title, sensitivity string) dataset {
	t.Helper()
	r := e.sendJSON(http.MethodPost, "/api/datasets", as, map[string]any{
		"title": title, "licence": "CC-BY-4.0", "sensitivity": sensitivity,
	}, nil)
	require.Equal(t, http.StatusCreated, r.StatusCode, "body: %s", r.body)
	return decode[dataset](t, r)
}

func TestDatasetsObjectLevelAccess(t *testing.T) {
	e := newEnv(t, envOptions{})
	orgA, orgB := seedOrg(t), seedOrg(t)
	alice := seedUser(t, orgA, store.RoleContributor)
	bob := seedUser(t, orgB, store.RoleContributor)
	bobAdmin := seedUser(t, orgB, store.RoleAdmin)

	hdr, reqID := withRequestID()
	r := e.sendJSON(http.MethodPost, "/api/datasets", alice, map[string]any{
		"title": "Alice restricted", "licence": "CC-BY-4.0", "sensitivity": "restricted",
	}, hdr)
	require.Equal(t, http.StatusCreated, r.StatusCode, "body: %s", r.body)
	aliceOwn := decode[dataset](t, r)
	assert.Equal(t, orgA.ID, aliceOwn.OrganisationID, "a dataset belongs to its creator's organisation")
	assert.Equal(t, fmt.Sprintf("/api/datasets/%d", aliceOwn.ID), r.Header.Get("Location"))
	events := auditFor(t, reqID)
	require.Len(t, events, 1)
	assert.Equal(t, "dataset.create", events[0].Action)
	assert.Equal(t, fmt.Sprint(aliceOwn.ID), events[0].ObjectID)

	bPublic := createDataset(t, e, bob, "B public", "public")
	bInternal := createDataset(t, e, bob, "B internal", "internal")
	bRestricted := createDataset(t, e, bobAdmin, "B restricted", "restricted")

	// A user of organisation A sees A's datasets and B's public one only,
	// whatever their role.
	seen := map[int64]bool{}
	path := "/api/datasets?limit=1"
	for range 1000 {
		r := e.get(path, alice, nil)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		assert.Equal(t, "no-store", r.Header.Get("Cache-Control"))
		page := decode[datasetPage](t, r)
		require.LessOrEqual(t, len(page.Items), 1, "limit is honoured")
		for _, d := range page.Items {
			require.False(t, seen[d.ID], "dataset %d listed twice", d.ID)
			seen[d.ID] = true
			assert.True(t, d.OrganisationID == orgA.ID || d.Sensitivity == "public", "A sees %+v", d)
		}
		if page.Next == nil {
			break
		}
		path = setParam(path, "cursor", *page.Next)
	}
	assert.True(t, seen[aliceOwn.ID])
	assert.True(t, seen[bPublic.ID])
	assert.False(t, seen[bInternal.ID], "another organisation's internal dataset is invisible")
	assert.False(t, seen[bRestricted.ID], "another organisation's restricted dataset is invisible")

	tests := []struct {
		name string
		as   *identity.User
		id   int64
		want int
	}{
		{"own restricted", alice, aliceOwn.ID, http.StatusOK},
		{"other's public", alice, bPublic.ID, http.StatusOK},
		{"other's internal", alice, bInternal.ID, http.StatusNotFound},
		{"other's restricted", alice, bRestricted.ID, http.StatusNotFound},
		{"missing", alice, 1 << 50, http.StatusNotFound},
		{"B sees A's restricted", bobAdmin, aliceOwn.ID, http.StatusNotFound},
		{"same organisation, other user", bob, bRestricted.ID, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get(fmt.Sprintf("/api/datasets/%d", tc.id), tc.as, nil)
			if tc.want != http.StatusOK {
				p := problemOf(t, r, tc.want)
				assert.NotContains(t, string(r.body), "B restricted")
				assert.Equal(t, "no such resource", p.Detail, "invisible and missing look alike")
				return
			}
			require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
			d := decode[dataset](t, r)
			assert.Equal(t, tc.id, d.ID)
			assert.NotNil(t, d.Evidence)
		})
	}
	for _, path := range []string{"/api/datasets/abc", "/api/datasets/0", "/api/datasets/-1", "/api/datasets/99999999999999999999"} {
		problemOf(t, e.get(path, alice, nil), http.StatusNotFound)
	}
	p := problemOf(t, e.get("/api/datasets?cursor=nope", alice, nil), http.StatusBadRequest)
	assert.Contains(t, p.Errors, "cursor")
	e.noErrorLogged(t)
}

// TestJSONBodyValidation drives the strict decoder through one endpoint;
// every JSON route uses the same one.
func TestJSONBodyValidation(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := seedUser(t, seedOrg(t), store.RoleContributor)
	valid := `{"title":"T","licence":"CC0","sensitivity":"public"}`
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		fields      map[string]string // nil: no field named
	}{
		{"no content type", "", valid, http.StatusUnsupportedMediaType, nil},
		{"form", "application/x-www-form-urlencoded", "title=T", http.StatusUnsupportedMediaType, nil},
		{"text/plain", "text/plain", valid, http.StatusUnsupportedMediaType, nil},
		{"other charset", "application/json; charset=latin1", valid, http.StatusUnsupportedMediaType, nil},
		{"empty body", "application/json", "", http.StatusBadRequest, nil},
		{"malformed", "application/json", `{"title":`, http.StatusBadRequest, nil},
		{"syntax error", "application/json", `{"title" "T"}`, http.StatusBadRequest, nil},
		{"array", "application/json", `[` + valid + `]`, http.StatusBadRequest, nil},
		{"null", "application/json", `null`, http.StatusBadRequest, map[string]string{"title": "required", "licence": "required", "sensitivity": "required"}},
		{"two values", "application/json", valid + valid, http.StatusBadRequest, nil},
		{"trailing garbage", "application/json", valid + ` x`, http.StatusBadRequest, nil},
		{"unknown field (mass assignment)", "application/json", `{"title":"T","licence":"CC0","sensitivity":"public","organisation_id":1}`,
			http.StatusBadRequest, map[string]string{"organisation_id": "unknown field"}},
		{"wrong type", "application/json", `{"title":5,"licence":"CC0","sensitivity":"public"}`, http.StatusBadRequest, map[string]string{"title": "must be a string"}},
		{"missing fields", "application/json", `{}`, http.StatusBadRequest, map[string]string{"title": "required", "licence": "required", "sensitivity": "required"}},
		{"too long", "application/json", `{"title":"` + strings.Repeat("é", 301) + `","licence":"CC0","sensitivity":"public"}`,
			http.StatusBadRequest, map[string]string{"title": "must be at most 300 characters"}},
		{"bad enum", "application/json", `{"title":"T","licence":"CC0","sensitivity":"secret"}`,
			http.StatusBadRequest, map[string]string{"sensitivity": "must be one of: public, internal, restricted"}},
		{"NUL character", "application/json", `{"title":"a\u0000b","licence":"CC0","sensitivity":"public"}`,
			http.StatusBadRequest, map[string]string{"title": "must not contain NUL characters"}},
		{"too large", "application/json", `{"title":"` + strings.Repeat("x", bodyLimit) + `"}`, http.StatusRequestEntityTooLarge, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(call{method: http.MethodPost, path: "/api/datasets", body: strings.NewReader(tc.body), contentType: tc.contentType, as: u})
			p := problemOf(t, r, tc.status)
			if tc.fields != nil {
				assert.Equal(t, tc.fields, p.Errors)
			}
			assert.NotContains(t, string(r.body), "store.", "no Go internals in answers")
		})
	}
	t.Run("too large, streamed", func(t *testing.T) {
		// No Content-Length: the limit is met while decoding.
		body := strings.NewReader(`{"title":"` + strings.Repeat("x", bodyLimit) + `"}`)
		r := e.do(call{method: http.MethodPost, path: "/api/datasets", body: struct{ *strings.Reader }{body}, contentType: "application/json", as: u})
		problemOf(t, r, http.StatusRequestEntityTooLarge)
	})
	ok := e.do(call{method: http.MethodPost, path: "/api/datasets", body: strings.NewReader(valid), contentType: "application/json; charset=UTF-8", as: u})
	assert.Equal(t, http.StatusCreated, ok.StatusCode, "body: %s", ok.body)
	e.noErrorLogged(t)
}

func TestAuditLog(t *testing.T) {
	e := newEnv(t, envOptions{})
	org := seedOrg(t)
	admin := seedUser(t, org, store.RoleAdmin)
	contributor := seedUser(t, org, store.RoleContributor)
	var reqIDs []string
	for i := range 3 {
		hdr, id := withRequestID()
		r := e.sendJSON(http.MethodPost, "/api/datasets", contributor, map[string]any{
			"title": fmt.Sprint("Audited ", i), "licence": "CC0", "sensitivity": "internal",
		}, hdr)
		require.Equal(t, http.StatusCreated, r.StatusCode)
		reqIDs = append(reqIDs, id)
	}

	type auditPage struct {
		Items []struct {
			ID          int64          `json:"id"`
			ActorUserID *int64         `json:"actor_user_id"`
			Action      string         `json:"action"`
			ObjectType  string         `json:"object_type"`
			RequestID   string         `json:"request_id"`
			Details     map[string]any `json:"details"`
		} `json:"items"`
		Next *string `json:"next"`
	}
	first := e.get("/api/audit?limit=2", admin, nil)
	require.Equal(t, http.StatusOK, first.StatusCode, "body: %s", first.body)
	assert.Equal(t, "no-store", first.Header.Get("Cache-Control"))
	p1 := decode[auditPage](t, first)
	require.Len(t, p1.Items, 2)
	require.NotNil(t, p1.Next)
	p2 := decode[auditPage](t, e.get(setParam("/api/audit?limit=2", "cursor", *p1.Next), admin, nil))
	require.NotEmpty(t, p2.Items)

	// Newest first, across pages, and the three writes are the newest.
	items := append(p1.Items, p2.Items...)
	for i := 1; i < len(items); i++ {
		assert.Greater(t, items[i-1].ID, items[i].ID)
	}
	assert.Equal(t, reqIDs[2], items[0].RequestID)
	assert.Equal(t, reqIDs[1], items[1].RequestID)
	assert.Equal(t, reqIDs[0], items[2].RequestID)
	require.NotNil(t, items[0].ActorUserID)
	assert.Equal(t, contributor.ID, *items[0].ActorUserID)
	assert.Equal(t, "dataset.create", items[0].Action)
	assert.Equal(t, "internal", items[0].Details["sensitivity"])

	problemOf(t, e.get("/api/audit", seedUser(t, org, store.RoleStaff), nil), http.StatusForbidden)
	problemOf(t, e.get("/api/audit", nil, nil), http.StatusUnauthorized)
	p := problemOf(t, e.get("/api/audit?limit=1000", admin, nil), http.StatusBadRequest)
	assert.Contains(t, p.Errors, "limit")
	e.noErrorLogged(t)
}
