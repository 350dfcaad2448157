package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/password"
	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// Audit actions written by this package.
const (
	ActionLogin            = "auth.login"
	ActionLoginFailed      = "auth.login.failed"
	ActionLogout           = "auth.logout"
	ActionLogoutEverywhere = "auth.logout_everywhere"
	ActionUserCreate       = "user.create"
)

// Fixed answers: the same words whatever went wrong inside.
const (
	loginFailedDetail   = "invalid username or password"
	notSignedInDetail   = "not signed in"
	unavailableDetail   = "service temporarily unavailable"
	internalErrorDetail = "internal server error"
	// Clear-Site-Data value: drop this origin's cookies, keep its cache
	// and storage (which hold nothing of the session).
	clearSiteDataCookies = `"cookies"`
)

// maxUsernameChars is users.username's CHECK.
const maxUsernameChars = 150

// maxLoginBody fits the longest username and password even if every byte
// of the password arrives as a six-character \u escape.
const maxLoginBody = 8 << 10

// Mount registers the /auth/ routes on mux. They expect Middleware to run
// in front of them (server.Deps.Session).
func (m *Manager) Mount(mux *http.ServeMux) {
	mux.HandleFunc("POST /auth/login", m.login)
	mux.HandleFunc("POST /auth/logout", m.logout)
	mux.HandleFunc("POST /auth/logout-everywhere", m.logoutEverywhere)
	mux.HandleFunc("GET /auth/me", m.me)
}

// userView is how the API shows a user: no hash, no revocation time.
type userView struct {
	ID             int64      `json:"id"`
	Username       string     `json:"username"`
	DisplayName    string     `json:"display_name"`
	Role           store.Role `json:"role"`
	OrganisationID int64      `json:"organisation_id"`
}

func viewOf(u store.User) userView {
	return userView{ID: u.ID, Username: u.Username, DisplayName: u.DisplayName, Role: u.Role, OrganisationID: u.OrganisationID}
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (m *Manager) login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var in loginRequest
	if !decodeJSON(w, r, &in) {
		return
	}
	if errs := in.validate(); errs != nil {
		problem.WriteDetails(w, problem.Details{Status: http.StatusBadRequest, Detail: "invalid login request", Errors: errs})
		return
	}
	if m.throttle != nil && !m.throttle(w, r, in.Username) {
		return
	}

	// Every failure below does the same work (one lookup, one Argon2
	// verification, one audit insert) and gets the same answer, so
	// neither the body nor the time tells whether the user exists.
	user, err := m.store.GetUserByUsername(ctx, in.Username)
	var ok, rehash bool
	reason := ""
	switch {
	case errors.Is(err, store.ErrNotFound):
		err = m.hasher.VerifyDummy(ctx, in.Password)
		reason = "unknown_user"
	case err != nil:
		m.fail(w, r, http.StatusServiceUnavailable, "auth: looking up a user failed", err)
		return
	default:
		ok, rehash, err = m.hasher.Verify(ctx, user.PasswordHash, in.Password)
		switch {
		case errors.Is(err, password.ErrMalformedHash):
			// An unusable stored hash locks the account; say so to
			// operators, and to the client exactly what a wrong password
			// says.
			m.logger.ErrorContext(ctx, "auth: stored password hash is malformed", slog.Int64("user_id", user.ID))
			err, reason = m.hasher.VerifyDummy(ctx, in.Password), "unusable_hash"
		case !ok:
			reason = "bad_password"
		case !user.Active:
			reason = "inactive_user"
		}
	}
	if err != nil {
		// Only waiting for a hashing slot can fail here: the client went
		// away or the server is overloaded.
		m.fail(w, r, http.StatusServiceUnavailable, "auth: password verification did not run", err)
		return
	}
	if reason != "" {
		m.loginFailed(w, r, user, in.Username, reason)
		return
	}

	newHash := ""
	if rehash {
		// The parameters were raised since this hash was made; upgrade it
		// now, while the plain password is at hand. Failing to is not a
		// reason to refuse the login.
		if newHash, err = m.hasher.Hash(ctx, in.Password); err != nil {
			m.logger.WarnContext(ctx, "auth: re-hashing a password failed", slog.Int64("user_id", user.ID), slog.Any("error", err))
			newHash = ""
		}
	}
	err = m.store.InTx(ctx, func(tx store.Tx) error {
		if newHash != "" {
			if err := tx.SetPasswordHash(ctx, user.ID, newHash); err != nil {
				return err
			}
		}
		_, err := tx.InsertAuditEvent(ctx, store.Event{
			ActorUserID: user.ID, Action: ActionLogin, ObjectType: "user", ObjectID: strconv.FormatInt(user.ID, 10),
			RequestID: logging.RequestIDFrom(ctx), Details: map[string]any{"password_rehashed": newHash != ""},
		})
		return err
	})
	if err != nil {
		m.fail(w, r, http.StatusServiceUnavailable, "auth: recording a login failed", err)
		return
	}

	// A new token for the new privilege (session fixation): the old one,
	// if any, is deleted from the store.
	if err := m.sessions.RenewToken(ctx); err != nil {
		m.fail(w, r, http.StatusInternalServerError, "auth: renewing the session token failed", err)
		return
	}
	// Stamp the session no earlier than the user's sessions_valid_after,
	// which the database's clock wrote: a login that has just read the
	// user is by definition after any "log out everywhere" it saw, even if
	// this host's clock lags the database's.
	authAt := time.Now()
	if authAt.Before(user.SessionsValidAfter) {
		authAt = user.SessionsValidAfter
	}
	m.sessions.Put(ctx, keyUserID, user.ID)
	m.sessions.Put(ctx, keyAuthAt, authAt.UnixMicro())
	if st := stateFrom(ctx); st != nil {
		st.loginUserID = user.ID
	}
	logging.SetUserID(ctx, strconv.FormatInt(user.ID, 10))
	m.logger.InfoContext(ctx, "auth: login", slog.String("event", "auth.login.success"), slog.Int64("user_id", user.ID))
	writeJSON(w, http.StatusOK, map[string]any{"user": viewOf(user)})
}

func (in *loginRequest) validate() map[string]string {
	errs := map[string]string{}
	switch {
	case in.Username == "":
		errs["username"] = "required"
	case utf8.RuneCountInString(in.Username) > maxUsernameChars:
		errs["username"] = fmt.Sprintf("at most %d characters", maxUsernameChars)
	}
	switch {
	case in.Password == "":
		errs["password"] = "required"
	case len(in.Password) > password.MaxBytes:
		errs["password"] = fmt.Sprintf("at most %d bytes", password.MaxBytes)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// loginFailed records a failed attempt and answers 401. The audit event
// has no actor (nobody signed in); it names the user when one exists and
// keeps the submitted username, never the password.
func (m *Manager) loginFailed(w http.ResponseWriter, r *http.Request, user store.User, username, reason string) {
	ctx := r.Context()
	objectID := ""
	if user.ID != 0 {
		objectID = strconv.FormatInt(user.ID, 10)
	}
	err := m.store.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.InsertAuditEvent(ctx, store.Event{
			Action: ActionLoginFailed, ObjectType: "user", ObjectID: objectID,
			RequestID: logging.RequestIDFrom(ctx), Details: map[string]any{"username": username, "reason": reason},
		})
		return err
	})
	if err != nil {
		m.fail(w, r, http.StatusServiceUnavailable, "auth: recording a failed login failed", err)
		return
	}
	m.logger.WarnContext(ctx, "auth: login failed", slog.String("event", "auth.login.failure"),
		slog.String("reason", reason), slog.String("object_id", objectID))
	problem.Write(w, http.StatusUnauthorized, loginFailedDetail)
}

func (m *Manager) logout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, signedIn := userFrom(ctx)
	// Destroy deletes the row now; the store's update-only Commit keeps
	// requests still in flight from writing it back.
	if err := m.sessions.Destroy(ctx); err != nil {
		m.fail(w, r, http.StatusServiceUnavailable, "auth: destroying the session failed", err)
		return
	}
	if signedIn {
		// The session has ended whatever happens to the audit insert; a
		// failure is logged rather than turned into an error the client
		// could only retry.
		if err := m.audit(ctx, user.ID, ActionLogout); err != nil {
			m.logger.ErrorContext(ctx, "auth: recording a logout failed", slog.Any("error", err))
		}
		m.logger.InfoContext(ctx, "auth: logout", slog.String("event", "auth.logout"), slog.Int64("user_id", user.ID))
	}
	w.Header().Set("Clear-Site-Data", clearSiteDataCookies)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (m *Manager) logoutEverywhere(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, ok := userFrom(ctx)
	if !ok {
		problem.Write(w, http.StatusUnauthorized, notSignedInDetail)
		return
	}
	// Rounded up to the next microsecond (the column's resolution), so
	// every session stamped up to now is strictly before it.
	validAfter := time.Now().Truncate(time.Microsecond).Add(time.Microsecond)
	err := m.store.InTx(ctx, func(tx store.Tx) error {
		if err := tx.SetSessionsValidAfter(ctx, user.ID, validAfter); err != nil {
			return err
		}
		_, err := tx.InsertAuditEvent(ctx, store.Event{
			ActorUserID: user.ID, Action: ActionLogoutEverywhere, ObjectType: "user",
			ObjectID: strconv.FormatInt(user.ID, 10), RequestID: logging.RequestIDFrom(ctx),
		})
		return err
	})
	if err != nil {
		m.fail(w, r, http.StatusServiceUnavailable, "auth: logging out everywhere failed", err)
		return
	}
	// sessions_valid_after already voids every other session; deleting the
	// rows too means nothing of them is left to steal or to expire later.
	if _, err := m.pool.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1`, user.ID); err != nil {
		m.logger.WarnContext(ctx, "auth: deleting a user's sessions failed", slog.Any("error", err))
	}
	if err := m.sessions.Destroy(ctx); err != nil {
		m.logger.WarnContext(ctx, "auth: destroying the session failed", slog.Any("error", err))
	}
	m.logger.InfoContext(ctx, "auth: logout everywhere", slog.String("event", "session.revoked"), slog.Int64("user_id", user.ID))
	w.Header().Set("Clear-Site-Data", clearSiteDataCookies)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (m *Manager) me(w http.ResponseWriter, r *http.Request) {
	user, ok := userFrom(r.Context())
	if !ok {
		problem.Write(w, http.StatusUnauthorized, notSignedInDetail)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": viewOf(user)})
}

func (m *Manager) audit(ctx context.Context, actor int64, action string) error {
	return m.store.InTx(ctx, func(tx store.Tx) error {
		_, err := tx.InsertAuditEvent(ctx, store.Event{
			ActorUserID: actor, Action: action, ObjectType: "user",
			ObjectID: strconv.FormatInt(actor, 10), RequestID: logging.RequestIDFrom(ctx),
		})
		return err
	})
}

// fail logs err and answers status with a fixed detail: internals stay in
// the log.
func (m *Manager) fail(w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	m.logger.ErrorContext(r.Context(), msg, slog.Any("error", err))
	detail := unavailableDetail
	if status == http.StatusInternalServerError {
		detail = internalErrorDetail
	}
	problem.Write(w, status, detail)
}

// decodeJSON reads exactly one JSON object with known fields only from a
// small application/json body, or answers 400/413/415 and returns false.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/json" {
		problem.Write(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxLoginBody))
	dec.DisallowUnknownFields()
	err = dec.Decode(dst)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data")
	}
	if err == nil {
		return true
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		problem.Write(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", tooLarge.Limit))
		return false
	}
	// The decoder's message names fields and types, never values; still,
	// a fixed sentence is all the client needs.
	problem.Write(w, http.StatusBadRequest, "body must be one JSON object with string fields username and password")
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
