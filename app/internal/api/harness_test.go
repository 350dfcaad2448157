package api_test

// The test harness: the real server (server.New, the full middleware
// chain) with api.Mount, on a loopback listener, on a real migrated
// PostgreSQL/PostGIS database. Requests are sent as the reverse proxy
// forwards them: public Host, X-Forwarded-Proto https, from 127.0.0.1
// (a trusted proxy).
//
// Authentication is stood in for by testIdentity, a test-only session
// middleware that takes the user from the X-Test-Identity header. The real
// session layer is tested on its own; here the handlers' role and
// object-level rules are under test.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/api"
	"github.com/nbms-deploy/nbms/app/internal/health"
	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/server"
	"github.com/nbms-deploy/nbms/app/internal/store"
	"github.com/nbms-deploy/nbms/app/internal/store/storetest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const (
	publicHost   = "nbms.example.org"
	portalOrigin = "https://portal.example.org"
	// identityHeader is read by testIdentity only; no production code
	// knows it.
	identityHeader = "X-Test-Identity"
	// bodyLimit is MAX_REQUEST_BODY_BYTES in these tests.
	bodyLimit = 16 << 10
)

// shared is the package's one database: creating and migrating one costs
// about a second and a half, so every test shares it and keeps to rows
// of its own (its own organisations, codes and map areas).
var shared struct {
	url   string
	pool  *pgxpool.Pool
	store *store.Store
}

func TestMain(m *testing.M) {
	os.Exit(storetest.Main(m, &shared.url, func() (release func(), err error) {
		pool, err := pgxpool.New(context.Background(), shared.url)
		if err != nil {
			return nil, err
		}
		shared.pool, shared.store = pool, store.New(pool)
		return pool.Close, nil
	}))
}

// testIdentity is the test stand-in for the session layer: it
// authenticates the request as the user in X-Test-Identity
// ("id/organisationID/role/username"), or leaves it anonymous.
func testIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get(identityHeader)
		if v == "" {
			next.ServeHTTP(w, r)
			return
		}
		parts := strings.Split(v, "/")
		if len(parts) != 4 {
			problem.Write(w, http.StatusTeapot, "bad test identity")
			return
		}
		id, _ := strconv.ParseInt(parts[0], 10, 64)
		org, _ := strconv.ParseInt(parts[1], 10, 64)
		u := identity.User{ID: id, OrganisationID: org, Role: store.Role(parts[2]), Username: parts[3]}
		next.ServeHTTP(w, r.WithContext(identity.With(r.Context(), u)))
	})
}

func identityValue(u identity.User) string {
	return fmt.Sprintf("%d/%d/%s/%s", u.ID, u.OrganisationID, u.Role, u.Username)
}

// env is a running server with its own media root.
type env struct {
	t     testing.TB
	url   string
	media string
	logs  *testsupport.SyncBuffer
	h     http.Handler
}

type envOptions struct {
	maxUpload int64
	// inner wraps the API handler inside the session stand-in, where a
	// rate limiter would sit (see the load benchmark).
	inner func(http.Handler) http.Handler
	// noProxy runs the app as without nginx in front
	// (MEDIA_X_ACCEL_REDIRECT=false): it sends evidence files itself.
	noProxy bool
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.maxUpload == 0 {
		o.maxUpload = 64 << 10
	}
	media := t.TempDir()
	s, err := config.Parse(map[string]string{
		"MEDIA_X_ACCEL_REDIRECT": strconv.FormatBool(!o.noProxy),
		"NBMS_ENV":               "prod",
		"SECRET_KEY":             "kQ8v3Zr0pX7mW2sLdN9yB4tHcF6gJ1uAeR5iO-oPqS_TxVzY8wKj",
		"DATABASE_URL":           shared.url,
		"REDIS_URL":              testsupport.RedisURL(),
		"ALLOWED_HOSTS":          publicHost,
		"CSRF_TRUSTED_ORIGINS":   portalOrigin,
		"CORS_ALLOWED_ORIGINS":   portalOrigin,
		"TRUSTED_PROXY_CIDRS":    "127.0.0.1/32",
		"MEDIA_ROOT":             media,
		"STATIC_ROOT":            t.TempDir(),
		"MAX_REQUEST_BODY_BYTES": strconv.Itoa(bodyLimit),
		"MAX_UPLOAD_BYTES":       strconv.FormatInt(o.maxUpload, 10),
	})
	require.NoError(t, err)
	logs := &testsupport.SyncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	session := testIdentity
	if o.inner != nil {
		session = func(next http.Handler) http.Handler { return testIdentity(o.inner(next)) }
	}
	h, err := server.New(server.Deps{
		Settings: s, Logger: logger, Health: health.New(health.Options{Logger: logger}),
		Mount: func(mux *http.ServeMux) {
			api.Mount(mux, api.Deps{Store: shared.store, MediaRoot: s.MediaRoot, MaxUploadBytes: s.MaxUploadBytes,
				XAccelRedirect: s.MediaXAccelRedirect, Logger: logger})
		},
		Session: session,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, url: srv.URL, media: media, logs: logs, h: h}
}

// call is one request to the API.
type call struct {
	method, path string
	body         io.Reader
	contentType  string
	as           *identity.User
	header       map[string]string
}

// reply is a response with its body read.
type reply struct {
	*http.Response
	body []byte
}

func (e *env) do(c call) reply {
	e.t.Helper()
	req, err := http.NewRequest(c.method, e.url+c.path, c.body)
	require.NoError(e.t, err)
	req.Host = publicHost
	req.Header.Set("X-Forwarded-Proto", "https")
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	if c.as != nil {
		req.Header.Set(identityHeader, identityValue(*c.as))
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return reply{Response: res, body: body}
}

func (e *env) get(path string, as *identity.User, header map[string]string) reply {
	e.t.Helper()
	return e.do(call{method: http.MethodGet, path: path, as: as, header: header})
}

// sendJSON sends v (or, if it is a string, those exact bytes) as JSON.
func (e *env) sendJSON(method, path string, as *identity.User, v any, header map[string]string) reply {
	e.t.Helper()
	return e.do(call{method: method, path: path, body: jsonBody(e.t, v), contentType: "application/json", as: as, header: header})
}

func jsonBody(t testing.TB, v any) io.Reader {
	if s, ok := v.(string); ok {
		return strings.NewReader(s)
	}
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return bytes.NewReader(b)
}

// decode reads r's JSON body into a value of type T.
func decode[T any](t testing.TB, r reply) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(r.body, &v), "body: %s", r.body)
	return v
}

// problemOf checks r is a problem+json answer with status and returns it.
func problemOf(t testing.TB, r reply, status int) problem.Details {
	t.Helper()
	require.Equal(t, status, r.StatusCode, "body: %s", r.body)
	assert.Equal(t, problem.ContentType, r.Header.Get("Content-Type"))
	p := decode[problem.Details](t, r)
	assert.Equal(t, status, p.Status)
	return p
}

// noErrorLogged checks the server logged no error: every refusal under
// test is the client's fault, never a 500 in disguise.
func (e *env) noErrorLogged(t testing.TB) {
	t.Helper()
	assert.NotContains(t, e.logs.String(), `"level":"ERROR"`)
}

// Seeding goes through the store directly: it is set-up, not under test.

func unique(prefix string) string { return prefix + strings.ToLower(rand.Text()[:10]) }

func seedOrg(t testing.TB) store.Organisation {
	t.Helper()
	var o store.Organisation
	require.NoError(t, shared.store.InTx(context.Background(), func(tx store.Tx) (err error) {
		slug := unique("org-")
		o, err = tx.CreateOrganisation(context.Background(), slug, "Org "+slug)
		return err
	}))
	return o
}

func seedUser(t testing.TB, org store.Organisation, role store.Role) *identity.User {
	t.Helper()
	var u store.User
	require.NoError(t, shared.store.InTx(context.Background(), func(tx store.Tx) (err error) {
		name := unique(string(role) + "-")
		u, err = tx.CreateUser(context.Background(), store.NewUser{
			OrganisationID: org.ID, Username: name, DisplayName: name, Role: role,
			PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
		})
		return err
	}))
	id := identity.FromStore(u)
	return &id
}

func seedIndicator(t testing.TB, code, title, target string, published bool) store.Indicator {
	t.Helper()
	var in store.Indicator
	require.NoError(t, shared.store.InTx(context.Background(), func(tx store.Tx) (err error) {
		in, err = tx.CreateIndicator(context.Background(), store.NewIndicator{
			Code: code, IndicatorFields: store.IndicatorFields{Title: title, FrameworkTarget: target, Published: published},
		})
		return err
	}))
	return in
}

// auditFor returns the audit events recorded during the request with id.
func auditFor(t testing.TB, requestID string) []store.AuditEvent {
	t.Helper()
	rows, err := shared.pool.Query(context.Background(),
		`SELECT id, actor_user_id, action, object_type, object_id, request_id FROM audit_events
		 WHERE request_id = $1 ORDER BY id`, requestID)
	require.NoError(t, err)
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var (
			ev    store.AuditEvent
			actor *int64
		)
		require.NoError(t, rows.Scan(&ev.ID, &actor, &ev.Action, &ev.ObjectType, &ev.ObjectID, &ev.RequestID))
		if actor != nil {
			ev.ActorUserID = *actor
		}
		out = append(out, ev)
	}
	require.NoError(t, rows.Err())
	return out
}

// withRequestID is a header map carrying a fresh request ID, returned too.
func withRequestID() (map[string]string, string) {
	id := unique("req-")
	return map[string]string{"X-Request-Id": id}, id
}
