package auth_test

// The harness: the real server chain (server.New) with this package's
// Middleware and Mount, on a loopback listener, against a throwaway
// migrated PostgreSQL database. Requests are sent as the reverse proxy
// forwards them: public Host, X-Forwarded-Proto https, from 127.0.0.1,
// which the settings trust as the proxy.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/auth"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/server"
	"github.com/nbms-deploy/nbms/app/internal/store"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const (
	publicHost   = "nbms.example.org"
	publicOrigin = "https://nbms.example.org"
	cookieName   = "__Host-nbms_session"
	// Passwords long enough for the policy, and distinctive enough to be
	// searched for in the logs.
	alicePassword = "alice-Pa55phrase-never-logged"
	wrongPassword = "wrong-Pa55phrase-never-logged"
)

type testApp struct {
	url   string
	pool  *pgxpool.Pool
	store *store.Store
	logs  *testsupport.SyncBuffer
	// slow parks GET /api/slow until released; see slowRoute.
	slowStarted chan struct{}
	slowRelease chan struct{}
}

type appOptions struct {
	env      map[string]string
	throttle func(http.ResponseWriter, *http.Request, string) bool
}

func newApp(t *testing.T, o appOptions) *testApp {
	t.Helper()
	dbURL := storetest.NewDatabase(t)
	env := map[string]string{
		"NBMS_ENV":             "prod",
		"SECRET_KEY":           "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj",
		"DATABASE_URL":         dbURL,
		"REDIS_URL":            testsupport.RedisURL(),
		"ALLOWED_HOSTS":        publicHost,
		"CSRF_TRUSTED_ORIGINS": "https://portal.example.org",
		"TRUSTED_PROXY_CIDRS":  "127.0.0.1/32",
		"STATIC_ROOT":          t.TempDir(),
		"MEDIA_ROOT":           t.TempDir(),
	}
	for k, v := range o.env {
		env[k] = v
	}
	settings, err := config.Parse(env)
	require.NoError(t, err)

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	logs := &testsupport.SyncBuffer{}
	// A plain JSON handler, not the app's redacting one: the test must see
	// anything this package would leak.
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := auth.New(auth.Options{Settings: settings, Pool: pool, Logger: logger, ThrottleUsername: o.throttle})
	require.NoError(t, err)
	t.Cleanup(m.Close)

	a := &testApp{pool: pool, store: store.New(pool), logs: logs,
		slowStarted: make(chan struct{}, 1), slowRelease: make(chan struct{})}
	handler, err := server.New(server.Deps{
		Settings: settings,
		Logger:   logger,
		Health:   health.New(health.Options{}),
		Mount: func(mux *http.ServeMux) {
			m.Mount(mux)
			mux.HandleFunc("GET /api/slow", a.slowRoute)
		},
		Session: m.Middleware,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// slowRoute answers only authenticated requests, after the test releases it.
func (a *testApp) slowRoute(w http.ResponseWriter, r *http.Request) {
	if _, ok := identity.From(r.Context()); !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	a.slowStarted <- struct{}{}
	<-a.slowRelease
	_, _ = w.Write([]byte(`{"slow":"done"}`))
}

// seedUser creates an organisation (once) and a user through
// auth.CreateUser, as `nbms createuser` does.
func (a *testApp) seedUser(t *testing.T, username, pw string) store.User {
	t.Helper()
	ctx := context.Background()
	if _, err := a.store.GetOrganisationBySlug(ctx, "sanbi"); err != nil {
		require.NoError(t, a.store.InTx(ctx, func(tx store.Tx) error {
			_, err := tx.CreateOrganisation(ctx, "sanbi", "SANBI")
			return err
		}))
	}
	u, err := auth.CreateUser(ctx, a.store, auth.NewUserInput{
		OrganisationSlug: "sanbi", Username: username, DisplayName: "Alice A.", Role: store.RoleStaff,
	}, pw)
	require.NoError(t, err)
	return u
}

type response struct {
	status int
	header http.Header
	body   string
}

// setCookie returns the raw Set-Cookie line for the session cookie.
func (r response) setCookie() string {
	for _, line := range r.header.Values("Set-Cookie") {
		if strings.HasPrefix(line, cookieName+"=") {
			return line
		}
	}
	return ""
}

// token returns the session token the response set ("" if none).
func (r response) token() string {
	line := r.setCookie()
	if line == "" {
		return ""
	}
	value, _, _ := strings.Cut(strings.TrimPrefix(line, cookieName+"="), ";")
	return value
}

// do sends a request as a same-origin browser behind the proxy would,
// with the session token (if any) in the Cookie header. hdr overrides
// headers; an empty value removes one.
func (a *testApp) do(t *testing.T, method, path, token, body string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Host = publicHost
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if method != http.MethodGet {
		req.Header.Set("Origin", publicOrigin)
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Cookie", cookieName+"="+token)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

func (a *testApp) login(t *testing.T, username, pw, token string) response {
	t.Helper()
	body, err := json.Marshal(map[string]string{"username": username, "password": pw})
	require.NoError(t, err)
	return a.do(t, http.MethodPost, "/auth/login", token, string(body), nil)
}

// loginOK logs in and returns the new session token.
func (a *testApp) loginOK(t *testing.T, username, pw string) string {
	t.Helper()
	res := a.login(t, username, pw, "")
	require.Equal(t, http.StatusOK, res.status, res.body)
	tok := res.token()
	require.NotEmpty(t, tok)
	return tok
}

func (a *testApp) me(t *testing.T, token string) response {
	t.Helper()
	return a.do(t, http.MethodGet, "/auth/me", token, "", nil)
}

// storedToken is what the sessions table holds for token
// (HashTokenInStore: SHA-256, base64url without padding).
func storedToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func (a *testApp) sessionRows(t *testing.T, where string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, a.pool.QueryRow(context.Background(), `SELECT count(*) FROM sessions WHERE `+where, args...).Scan(&n))
	return n
}

type auditRow struct {
	Action, ObjectID, RequestID string
	Actor                       *int64
	Details                     map[string]any
}

func (a *testApp) auditRows(t *testing.T) []auditRow {
	t.Helper()
	rows, err := a.pool.Query(context.Background(),
		`SELECT action, object_id, request_id, actor_user_id, details FROM audit_events ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		require.NoError(t, rows.Scan(&r.Action, &r.ObjectID, &r.RequestID, &r.Actor, &r.Details))
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

// authAuditRows returns the audit rows of sign-ins and sign-outs.
func (a *testApp) authAuditRows(t *testing.T) []auditRow {
	t.Helper()
	var out []auditRow
	for _, r := range a.auditRows(t) {
		if strings.HasPrefix(r.Action, "auth.") {
			out = append(out, r)
		}
	}
	return out
}
