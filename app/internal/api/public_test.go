package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/store"
)

type indicatorPage struct {
	Items []struct {
		Code            string `json:"code"`
		Title           string `json:"title"`
		FrameworkTarget string `json:"framework_target"`
		Published       bool   `json:"published"`
		Version         int    `json:"version"`
	} `json:"items"`
	Next *string `json:"next"`
}

func (p indicatorPage) codes() []string {
	var out []string
	for _, it := range p.Items {
		out = append(out, it.Code)
	}
	return out
}

// listAll follows next cursors from path to the end and returns the codes
// in the order received.
func (e *env) listAll(t *testing.T, path string) []string {
	var codes []string
	for range 50 {
		r := e.get(path, nil, nil)
		require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
		page := decode[indicatorPage](t, r)
		codes = append(codes, page.codes()...)
		if page.Next == nil {
			return codes
		}
		path = setParam(path, "cursor", *page.Next)
	}
	t.Fatal("pagination did not end")
	return nil
}

func setParam(path, name, value string) string {
	u, _ := url.Parse(path)
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestPublicIndicatorsListPagesInStableOrder(t *testing.T) {
	e := newEnv(t, envOptions{})
	target := unique("GBF-")
	for _, c := range []string{"P3", "P1", "P5", "P2", "P4"} {
		seedIndicator(t, unique(c+"-"), "Indicator "+c, target, true)
	}
	hidden := seedIndicator(t, unique("P0-"), "Draft", target, false)

	first := e.get("/api/public/indicators?limit=2&framework_target="+target, nil, map[string]string{"Origin": portalOrigin})
	require.Equal(t, http.StatusOK, first.StatusCode, "body: %s", first.body)
	assert.Equal(t, "application/json", first.Header.Get("Content-Type"))
	assert.Equal(t, "public, max-age=60", first.Header.Get("Cache-Control"), "the default no-store is overridden")
	assert.Contains(t, first.Header.Values("Vary"), "Origin")
	assert.Equal(t, portalOrigin, first.Header.Get("Access-Control-Allow-Origin"), "CORS applies to the public API")
	assert.True(t, strings.HasPrefix(first.Header.Get("ETag"), `W/"`), "weak ETag: %q", first.Header.Get("ETag"))
	page := decode[indicatorPage](t, first)
	require.Len(t, page.Items, 2)
	require.NotNil(t, page.Next)

	all := e.listAll(t, "/api/public/indicators?limit=2&framework_target="+target)
	require.Len(t, all, 5, "every published indicator exactly once")
	assert.IsIncreasing(t, all, "ordered by code")
	assert.NotContains(t, all, hidden.Code, "unpublished indicators are not public")
	assert.Equal(t, all[:2], page.codes())

	// A row inserted before the cursor while a client pages neither
	// repeats nor shifts the rows after it (keyset, not offset).
	second := e.get(setParam("/api/public/indicators?limit=2&framework_target="+target, "cursor", *page.Next), nil, nil)
	seedIndicator(t, "P0"+unique(""), "Late arrival", target, true)
	again := e.get(setParam("/api/public/indicators?limit=2&framework_target="+target, "cursor", *page.Next), nil, nil)
	assert.Equal(t, decode[indicatorPage](t, second).codes(), decode[indicatorPage](t, again).codes())
	assert.Equal(t, all[2:4], decode[indicatorPage](t, again).codes())
	e.noErrorLogged(t)
}

func TestPublicIndicatorsFilters(t *testing.T) {
	e := newEnv(t, envOptions{})
	target := unique("GBF-")
	wetland := seedIndicator(t, unique("W-"), "Wetland extent", target, true)
	seedIndicator(t, unique("F-"), "Forest cover 100%", target, true)
	seedIndicator(t, unique("X-"), "Wetland elsewhere", unique("other-"), true)

	tests := []struct {
		query string
		want  int
	}{
		{"framework_target=" + target, 2},
		{"framework_target=" + target + "&q=WETLAND", 1}, // case-insensitive substring
		{"framework_target=" + target + "&q=" + url.QueryEscape("100%"), 1},
		{"framework_target=" + target + "&q=" + url.QueryEscape("%"), 1}, // % matches itself, not anything
		{"framework_target=" + target + "&q=" + wetland.Code, 1},
		{"framework_target=" + target + "&q=nothing-matches", 0},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			r := e.get("/api/public/indicators?"+tc.query, nil, nil)
			require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
			page := decode[indicatorPage](t, r)
			assert.Len(t, page.Items, tc.want)
			assert.Nil(t, page.Next)
			assert.Contains(t, string(r.body), `"items":[`, "an empty page is [], never null")
		})
	}
}

func TestPublicIndicatorsLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	target := unique("GBF-")
	for i := range store.MaxLimit + 5 {
		seedIndicator(t, fmt.Sprintf("L%03d-%s", i, unique("")), "Limit", target, true)
	}
	tests := []struct {
		query string
		want  int
	}{
		{"", store.DefaultLimit},
		{"&limit=1", 1},
		{"&limit=" + fmt.Sprint(store.MaxLimit), store.MaxLimit},
	}
	for _, tc := range tests {
		r := e.get("/api/public/indicators?framework_target="+target+tc.query, nil, nil)
		require.Equal(t, http.StatusOK, r.StatusCode)
		page := decode[indicatorPage](t, r)
		assert.Len(t, page.Items, tc.want, tc.query)
		assert.NotNil(t, page.Next, tc.query)
	}
	problemOf(t, e.get("/api/public/indicators?limit="+fmt.Sprint(store.MaxLimit+1), nil, nil), http.StatusBadRequest)
}

func TestPublicIndicatorsETag(t *testing.T) {
	e := newEnv(t, envOptions{})
	staff := seedUser(t, seedOrg(t), store.RoleStaff)
	target := unique("GBF-")
	in := seedIndicator(t, unique("E-"), "ETag", target, true)
	path := "/api/public/indicators?framework_target=" + target

	first := e.get(path, nil, nil)
	require.Equal(t, http.StatusOK, first.StatusCode)
	etag := first.Header.Get("ETag")
	require.NotEmpty(t, etag)

	for _, inm := range []string{etag, strings.TrimPrefix(etag, "W/"), `"other", ` + etag, "*"} {
		t.Run("If-None-Match "+inm, func(t *testing.T) {
			r := e.get(path, nil, map[string]string{"If-None-Match": inm})
			assert.Equal(t, http.StatusNotModified, r.StatusCode)
			assert.Empty(t, r.body)
			assert.Equal(t, etag, r.Header.Get("ETag"))
			assert.Equal(t, "public, max-age=60", r.Header.Get("Cache-Control"))
			assert.Contains(t, r.Header.Values("Vary"), "Origin")
		})
	}
	assert.Equal(t, http.StatusOK, e.get(path, nil, map[string]string{"If-None-Match": `W/"stale"`}).StatusCode)

	other := e.get(path+"&limit=5", nil, nil)
	assert.NotEqual(t, etag, other.Header.Get("ETag"), "the query is part of the tag")
	assert.Equal(t, etag, e.get(path+"&limit=20", nil, nil).Header.Get("ETag"), "an explicit default limit is the same page")

	// An edit of a published indicator changes the tag.
	upd := e.sendJSON(http.MethodPut, "/api/indicators/"+in.Code, staff,
		map[string]any{"title": "ETag edited", "framework_target": target, "published": true, "version": in.Version}, nil)
	require.Equal(t, http.StatusOK, upd.StatusCode, "body: %s", upd.body)
	after := e.get(path, nil, map[string]string{"If-None-Match": etag})
	assert.Equal(t, http.StatusOK, after.StatusCode)
	assert.NotEqual(t, etag, after.Header.Get("ETag"))
	assert.Contains(t, string(after.body), "ETag edited")
}

func TestPublicIndicatorsRefusesBadQueries(t *testing.T) {
	e := newEnv(t, envOptions{})
	cursorOf := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, query, field string
	}{
		{"zero limit", "limit=0", "limit"},
		{"negative limit", "limit=-1", "limit"},
		{"limit above max", "limit=101", "limit"},
		{"limit not a number", "limit=ten", "limit"},
		{"limit overflow", "limit=99999999999999999999", "limit"},
		{"repeated limit", "limit=1&limit=2", "limit"},
		{"cursor not base64", "cursor=%21%21%21", "cursor"},
		{"cursor not json", "cursor=" + cursorOf("hello"), "cursor"},
		{"cursor of another list", "cursor=" + cursorOf(`{"k":"dataset","i":3}`), "cursor"},
		{"cursor with a bad code", "cursor=" + cursorOf(`{"k":"indicator","c":"../x","i":3}`), "cursor"},
		{"cursor with a bad id", "cursor=" + cursorOf(`{"k":"indicator","c":"A.1","i":-3}`), "cursor"},
		{"cursor with extra fields", "cursor=" + cursorOf(`{"k":"indicator","c":"A.1","i":3,"x":1}`), "cursor"},
		{"cursor too long", "cursor=" + strings.Repeat("A", 300), "cursor"},
		{"search too long", "q=" + strings.Repeat("é", 101), "q"},
		{"search with NUL", "q=a%00b", "q"},
		{"search not UTF-8", "q=%ff%fe", "q"},
		{"target too long", "framework_target=" + strings.Repeat("t", 101), "framework_target"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := problemOf(t, e.get("/api/public/indicators?"+tc.query, nil, nil), http.StatusBadRequest)
			assert.Contains(t, p.Errors, tc.field)
		})
	}
	t.Run("malformed query string", func(t *testing.T) {
		problemOf(t, e.get("/api/public/indicators?q=%zz", nil, nil), http.StatusBadRequest)
	})
	e.noErrorLogged(t)
}

type indicatorDetail struct {
	Code       string `json:"code"`
	Title      string `json:"title"`
	Version    int    `json:"version"`
	DataPoints []struct {
		Year           int               `json:"year"`
		Value          float64           `json:"value"`
		Disaggregation map[string]string `json:"disaggregation"`
	} `json:"data_points"`
}

func TestPublicIndicatorDetail(t *testing.T) {
	e := newEnv(t, envOptions{})
	in := seedIndicator(t, unique("D-"), "Detail", "", true)
	draft := seedIndicator(t, unique("D-"), "Draft", "", false)
	require.NoError(t, shared.store.InTx(context.Background(), func(tx store.Tx) error {
		for _, p := range []store.DataPointInput{
			{Year: 2021, Value: 2.5, Disaggregation: map[string]string{"sex": "female"}},
			{Year: 2020, Value: 1.5},
		} {
			if _, err := tx.UpsertDataPoint(context.Background(), in.Code, p, 0); err != nil {
				return err
			}
		}
		return nil
	}))

	r := e.get("/api/public/indicators/"+in.Code, nil, nil)
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
	d := decode[indicatorDetail](t, r)
	assert.Equal(t, in.Code, d.Code)
	require.Len(t, d.DataPoints, 2)
	assert.Equal(t, 2020, d.DataPoints[0].Year, "ordered by year")
	assert.Equal(t, map[string]string{}, d.DataPoints[0].Disaggregation, "the total is {}, not null")
	assert.Equal(t, 2.5, d.DataPoints[1].Value)
	assert.Equal(t, "public, max-age=60", r.Header.Get("Cache-Control"))
	etag := r.Header.Get("ETag")
	require.NotEmpty(t, etag)
	nm := e.get("/api/public/indicators/"+in.Code, nil, map[string]string{"If-None-Match": etag})
	assert.Equal(t, http.StatusNotModified, nm.StatusCode)
	assert.Empty(t, nm.body)

	for _, path := range []string{draft.Code, "NO-SUCH-CODE", "bad%20code", strings.Repeat("a", 40), "a%00b"} {
		t.Run("404 "+path, func(t *testing.T) {
			p := problemOf(t, e.get("/api/public/indicators/"+path, nil, nil), http.StatusNotFound)
			assert.NotContains(t, p.Detail, "unpublished", "a draft is indistinguishable from a missing code")
		})
	}
	e.noErrorLogged(t)
}
