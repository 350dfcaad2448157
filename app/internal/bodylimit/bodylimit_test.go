package bodylimit_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/bodylimit"
)

// newServer serves a handler that reads the whole body and answers with the
// number of bytes read, or 413 via WriteTooLarge when the limit is hit.
func newServer(t *testing.T, calls *atomic.Int32) *httptest.Server {
	t.Helper()
	echoLen := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("X-Declared-Length", strconv.FormatInt(r.ContentLength, 10))
		body, err := io.ReadAll(r.Body)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			bodylimit.WriteTooLarge(w, tooBig.Limit)
			return
		}
		require.NoError(t, err)
		_, _ = io.WriteString(w, strconv.Itoa(len(body)))
	})
	limit := bodylimit.Middleware(1024,
		bodylimit.Override{PathPrefix: "/api/uploads", Limit: 4096},
		bodylimit.Override{PathPrefix: "/api/uploads/big", Limit: 8192},
	)
	srv := httptest.NewServer(limit(echoLen))
	t.Cleanup(srv.Close)
	return srv
}

// unknownLength hides the reader's type so the client cannot compute a
// Content-Length and must stream the body chunked.
type unknownLength struct{ io.Reader }

func TestMiddleware(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		size    int
		chunked bool
		// wantStatus 413 also asserts the problem body names wantLimit.
		wantStatus int
		wantLimit  int64
		// wantHandler is false when the declared length alone must refuse
		// the request before the handler (and the body) is touched.
		wantHandler bool
	}{
		{"exact default limit", "/api/items", 1024, false, 200, 0, true},
		{"default limit+1 by Content-Length", "/api/items", 1025, false, 413, 1024, false},
		{"exact default limit chunked", "/api/items", 1024, true, 200, 0, true},
		{"default limit+1 chunked", "/api/items", 1025, true, 413, 1024, true},
		{"empty body", "/api/items", 0, false, 200, 0, true},
		{"upload prefix gets larger limit", "/api/uploads", 4096, false, 200, 0, true},
		{"upload sub-path gets larger limit", "/api/uploads/photo", 4096, true, 200, 0, true},
		{"upload limit+1 by Content-Length", "/api/uploads/photo", 4097, false, 413, 4096, false},
		{"upload limit+1 chunked", "/api/uploads/photo", 4097, true, 413, 4096, true},
		{"longest prefix wins", "/api/uploads/big/x", 8192, false, 200, 0, true},
		{"longest prefix limit+1", "/api/uploads/big/x", 8193, true, 413, 8192, true},
		{"prefix matches whole segments only", "/api/uploadsX", 2000, false, 413, 1024, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := newServer(t, &calls)

			var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("a"), tt.size))
			if tt.chunked {
				body = unknownLength{body}
			}
			req, err := http.NewRequest(http.MethodPost, srv.URL+tt.path, body)
			require.NoError(t, err)
			if tt.chunked {
				req.ContentLength = -1 // unknown: the transport streams it chunked
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			require.NoError(t, err)

			require.Equal(t, tt.wantStatus, resp.StatusCode, string(got))
			assert.Equal(t, tt.wantHandler, calls.Load() == 1, "handler invoked")
			if tt.chunked {
				// Proves the server saw no Content-Length, so only the
				// MaxBytesReader could have enforced the limit.
				assert.Equal(t, "-1", resp.Header.Get("X-Declared-Length"))
			}
			if tt.wantStatus == http.StatusOK {
				assert.Equal(t, strconv.Itoa(tt.size), string(got))
				return
			}
			assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
			var p struct {
				Status int    `json:"status"`
				Detail string `json:"detail"`
			}
			require.NoError(t, json.Unmarshal(got, &p))
			assert.Equal(t, 413, p.Status)
			assert.Contains(t, p.Detail, fmt.Sprintf("%d bytes", tt.wantLimit))
		})
	}
}

func TestIsTooLarge(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"other error", io.ErrUnexpectedEOF, false},
		{"max bytes error", &http.MaxBytesError{Limit: 10}, true},
		{"wrapped max bytes error", fmt.Errorf("decode: %w", &http.MaxBytesError{Limit: 10}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, bodylimit.IsTooLarge(tt.err))
		})
	}
}

func TestMiddlewareRejectsBadWiring(t *testing.T) {
	tests := []struct {
		name      string
		limit     int64
		overrides []bodylimit.Override
	}{
		{"negative default", -1, nil},
		{"negative override", 1, []bodylimit.Override{{PathPrefix: "/up", Limit: -1}}},
		{"relative prefix", 1, []bodylimit.Override{{PathPrefix: "up", Limit: 1}}},
		{"empty prefix", 1, []bodylimit.Override{{PathPrefix: "", Limit: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Panics(t, func() { bodylimit.Middleware(tt.limit, tt.overrides...) })
		})
	}
}
