// Package auth signs users in and out and keeps their server-side
// sessions: scs sessions stored in PostgreSQL (pgxstore), passwords checked
// with package password.
//
// Three rules shape it beyond scs's defaults:
//
//   - Only a login creates a session row. Any later save of a session
//     (scs re-saves on every request to move the idle deadline) may only
//     UPDATE a row that still exists, so a request that loaded the session
//     before a logout cannot write it back afterwards.
//   - A session is only as good as its user: every request reloads the
//     user, and a deactivated user, or a session authenticated before the
//     user's sessions_valid_after ("log out everywhere"), ends the session.
//   - Unknown user, wrong password and inactive user get the same answer
//     after the same work (a dummy hash for unknown users).
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/alexedwards/scs/pgxstore"
	"github.com/alexedwards/scs/v2"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/cookies"
	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/password"
	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// DefaultCleanupInterval is how often expired session rows are deleted
// when Options.CleanupInterval is zero.
const DefaultCleanupInterval = 5 * time.Minute

// cleanupQueryTimeout bounds one deletion of expired sessions. It is its
// own figure, not the interval: a short interval (tests, a busy operator's
// setting) must not turn a slow but healthy DELETE under load into a
// logged failure, and a deletion that outlives the interval only makes the
// ticker drop a tick.
const cleanupQueryTimeout = 30 * time.Second

// Options configures New.
type Options struct {
	// Settings supplies the SESSION_* variables of the contract.
	Settings *config.Settings
	// Pool is the app's PostgreSQL pool; sessions and users live there.
	Pool *pgxpool.Pool
	// Logger receives security events and session-store failures.
	Logger *slog.Logger
	// Hasher verifies passwords; nil means password.Default(), whose bound
	// on concurrent hashes is process-wide.
	Hasher *password.Hasher
	// ThrottleUsername, when set, is asked before a login attempt for
	// username is checked. It returns false after writing the refusal
	// (429 or 503) itself. Nil means no per-username throttle.
	ThrottleUsername func(w http.ResponseWriter, r *http.Request, username string) bool
	// CleanupInterval is how often expired sessions are deleted; zero
	// means DefaultCleanupInterval, negative disables the cleanup (tests).
	CleanupInterval time.Duration
}

// Manager holds the session manager and serves the /auth/ routes.
type Manager struct {
	sessions *scs.SessionManager
	pool     *pgxpool.Pool
	store    *store.Store
	hasher   *password.Hasher
	logger   *slog.Logger
	throttle func(http.ResponseWriter, *http.Request, string) bool

	stopCleanup context.CancelFunc
	cleanupDone chan struct{}
}

// Session keys. Values are int64 so that scs's gob codec needs no type
// registration.
const (
	keyUserID = "user_id"
	// keyAuthAt is when the password was checked, in Unix microseconds:
	// the resolution of users.sessions_valid_after.
	keyAuthAt = "auth_at"
)

// New builds the Manager and starts the expired-session cleanup; Close
// stops it.
func New(o Options) (*Manager, error) {
	if o.Settings == nil || o.Pool == nil || o.Logger == nil {
		return nil, errors.New("auth: Settings, Pool and Logger are required")
	}
	if o.Hasher == nil {
		o.Hasher = password.Default()
	}
	s := o.Settings
	m := &Manager{
		pool:     o.Pool,
		store:    store.New(o.Pool),
		hasher:   o.Hasher,
		logger:   o.Logger,
		throttle: o.ThrottleUsername,
	}

	sm := scs.New()
	// pgxstore's own cleanup goroutine logs through the standard logger and
	// cannot be stopped reliably (it creates its stop channel after it
	// starts), so it is off and cleanupLoop does the job.
	sm.Store = sessionStore{PostgresStore: pgxstore.NewWithCleanupInterval(o.Pool, 0), pool: o.Pool}
	// A database leak must not hand out live sessions: the store keeps
	// only SHA-256(token).
	sm.HashTokenInStore = true
	sm.IdleTimeout = s.SessionIdleTimeout
	sm.Lifetime = s.SessionLifetime
	// The cookie comes from the app's one cookie policy (host-only, Path=/,
	// HttpOnly, Secure per the contract and always with __Host-), never
	// from scs's defaults (Secure=false, name "session").
	c := cookies.FromSettings(s).New(s.SessionCookieName, "", 0)
	sm.Cookie = scs.SessionCookie{
		Name:     c.Name,
		Path:     c.Path,
		Domain:   c.Domain,
		Secure:   c.Secure,
		HttpOnly: c.HttpOnly,
		SameSite: c.SameSite,
		// A browser-session cookie: closing the browser (say, on a shared
		// computer) ends it, while the server enforces idle and absolute
		// limits either way.
		Persist: false,
	}
	sm.ErrorFunc = func(w http.ResponseWriter, r *http.Request, err error) {
		m.logger.ErrorContext(r.Context(), "auth: session store failed", slog.Any("error", err))
		problem.Write(w, http.StatusInternalServerError, "internal server error")
	}
	m.sessions = sm

	interval := o.CleanupInterval
	if interval == 0 {
		interval = DefaultCleanupInterval
	}
	m.cleanupDone = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	m.stopCleanup = cancel
	if interval > 0 {
		go m.cleanupLoop(ctx, interval)
	} else {
		close(m.cleanupDone)
	}
	return m, nil
}

// Close stops the cleanup loop and waits for it. It does not close the
// pool, which belongs to the caller.
func (m *Manager) Close() {
	m.stopCleanup()
	<-m.cleanupDone
}

func (m *Manager) cleanupLoop(ctx context.Context, interval time.Duration) {
	defer close(m.cleanupDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			qctx, cancel := context.WithTimeout(ctx, cleanupQueryTimeout)
			_, err := m.pool.Exec(qctx, `DELETE FROM sessions WHERE expiry < now()`)
			cancel()
			if err != nil && ctx.Err() == nil {
				m.logger.Warn("auth: deleting expired sessions failed", slog.Any("error", err))
			}
		}
	}
}

// Middleware loads the session of each request and, when it belongs to a
// user who is still active and has not logged out everywhere since, puts
// the user in the context (identity.With), names them in the access log
// and marks the response Cache-Control: no-store. A session that fails
// those checks is destroyed and the request goes on anonymously, so
// public routes keep working and protected ones answer 401.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	loadAndSave := m.sessions.LoadAndSave(m.authenticate(next))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The state must exist before LoadAndSave copies the context, so
		// that the store sees what the login handler records in it.
		ctx := context.WithValue(r.Context(), stateKey{}, &requestState{})
		loadAndSave.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (m *Manager) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		userID := m.sessions.GetInt64(ctx, keyUserID)
		if userID == 0 {
			next.ServeHTTP(w, r)
			return
		}
		u, err := m.store.GetUserByID(ctx, userID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			m.logger.ErrorContext(ctx, "auth: loading the session's user failed", slog.Any("error", err))
			problem.Write(w, http.StatusServiceUnavailable, "service temporarily unavailable")
			return
		}
		authAt := time.UnixMicro(m.sessions.GetInt64(ctx, keyAuthAt))
		var reason string
		switch {
		case err != nil:
			reason = "user_missing"
		case !u.Active:
			reason = "user_inactive"
		case authAt.Before(u.SessionsValidAfter):
			reason = "logged_out_everywhere"
		}
		if reason != "" {
			m.logger.InfoContext(ctx, "auth: session revoked",
				slog.String("event", "session.revoked"), slog.Int64("user_id", userID), slog.String("reason", reason))
			if err := m.sessions.Destroy(ctx); err != nil {
				m.logger.ErrorContext(ctx, "auth: destroying a revoked session failed", slog.Any("error", err))
				problem.Write(w, http.StatusServiceUnavailable, "service temporarily unavailable")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		// Authenticated answers are per-user: no cache may keep them.
		w.Header().Set("Cache-Control", "no-store")
		logging.SetUserID(ctx, strconv.FormatInt(u.ID, 10))
		ctx = identity.With(ctx, identity.FromStore(u))
		ctx = context.WithValue(ctx, userKey{}, u)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

type userKey struct{}

// userFrom returns the full user Middleware loaded for this request.
func userFrom(ctx context.Context) (store.User, bool) {
	u, ok := ctx.Value(userKey{}).(store.User)
	return u, ok
}

// requestState is what a request tells the session store about itself.
type requestState struct {
	// loginUserID is set by a successful login once it has issued the new
	// token: this request, and no other, may insert the session row.
	loginUserID int64
}

type stateKey struct{}

func stateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

// sessionStore is pgxstore with a guarded Commit. pgxstore's Commit is an
// upsert: a request that loaded a session before a logout deleted it would
// re-insert it when it finishes ("resurrection"). Here only the login
// request inserts; every other save updates the row if it still exists
// and has not expired, and otherwise writes nothing.
type sessionStore struct {
	*pgxstore.PostgresStore
	pool *pgxpool.Pool
}

// CommitCtx is what scs calls (it prefers the context variant), with the
// request's context.
func (s sessionStore) CommitCtx(ctx context.Context, token string, data []byte, expiry time.Time) error {
	if st := stateFrom(ctx); st != nil && st.loginUserID != 0 {
		_, err := s.pool.Exec(ctx,
			`INSERT INTO sessions (token, data, expiry, user_id) VALUES ($1, $2, $3, $4)
			 ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry`,
			token, data, expiry, st.loginUserID)
		if err != nil {
			return fmt.Errorf("auth: insert session: %w", err)
		}
		return nil
	}
	// The expiry condition keeps a slow request from reviving a session
	// whose idle timeout passed while it ran.
	_, err := s.pool.Exec(ctx,
		`UPDATE sessions SET data = $2, expiry = $3 WHERE token = $1 AND expiry > now()`,
		token, data, expiry)
	if err != nil {
		return fmt.Errorf("auth: update session: %w", err)
	}
	return nil
}

// Commit serves callers without a context; it can only update.
func (s sessionStore) Commit(token string, data []byte, expiry time.Time) error {
	return s.CommitCtx(context.Background(), token, data, expiry)
}
