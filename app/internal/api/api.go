// Package api is the NBMS JSON API: the public open-data reads under
// /api/public/ and the authenticated workflows (indicators, datasets,
// evidence uploads and downloads, monitoring sites, the audit log).
//
// The handlers are thin: they check who is asking (package identity, set by
// the session layer), decode and validate the input strictly, call one store
// operation and write the answer. Object-level access is not decided here
// but in the store's SQL, so a handler cannot forget it; what is decided
// here is the role rule of each route.
//
// Every write runs in one store transaction together with the audit event
// that records it. Every refusal is an RFC 9457 problem+json body.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"

	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/logging"
	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// Deps are what the API handlers need. All fields are required.
type Deps struct {
	Store *store.Store
	// MediaRoot is the directory evidence files are stored in
	// (MEDIA_ROOT). Uploads are first written to a temporary file in the
	// same directory, so the final rename is atomic.
	MediaRoot string
	// MaxUploadBytes is the largest upload request body (MAX_UPLOAD_BYTES).
	// The server's body limit already enforces it for /api/uploads/; the
	// upload handler enforces it again so it stays bounded however it is
	// mounted.
	MaxUploadBytes int64
	// XAccelRedirect hands an authorised download's bytes to the nginx in
	// front (MEDIA_X_ACCEL_REDIRECT); false sends them from MediaRoot.
	XAccelRedirect bool
	Logger         *slog.Logger
}

// Mount registers the API routes on mux. It panics on missing Deps: that is
// a wiring mistake which must stop start-up, not surface per request.
func Mount(mux *http.ServeMux, d Deps) {
	if d.Store == nil || d.MediaRoot == "" || d.MaxUploadBytes <= 0 || d.Logger == nil {
		panic("api: Deps.Store, MediaRoot, MaxUploadBytes and Logger are required")
	}
	a := &api{Deps: d, publicPages: newPageCache(pageCacheEntries, pageCacheBytes)}

	// Public open data: anonymous, cacheable, CORS applied by the server.
	mux.HandleFunc("GET /api/public/indicators", a.listPublicIndicators)
	mux.HandleFunc("GET /api/public/indicators/{code}", a.getPublicIndicator)
	mux.HandleFunc("GET /api/public/sites", a.listPublicSites)

	// Indicators: staff and admins.
	mux.HandleFunc("POST /api/indicators", a.createIndicator)
	mux.HandleFunc("GET /api/indicators/{code}", a.getIndicator)
	mux.HandleFunc("PUT /api/indicators/{code}", a.updateIndicator)
	mux.HandleFunc("PUT /api/indicators/{code}/data-points", a.upsertDataPoints)

	// Datasets, evidence and sites: every signed-in role; the store limits
	// each user to their own organisation's data (and others' public data).
	mux.HandleFunc("POST /api/datasets", a.createDataset)
	mux.HandleFunc("GET /api/datasets", a.listDatasets)
	mux.HandleFunc("GET /api/datasets/{id}", a.getDataset)
	mux.HandleFunc("POST /api/uploads/datasets/{id}/evidence", a.uploadEvidence)
	mux.HandleFunc("GET /api/evidence/{id}/content", a.downloadEvidence)
	mux.HandleFunc("POST /api/sites", a.createSite)

	// The audit log: admins only.
	mux.HandleFunc("GET /api/audit", a.listAudit)
}

type api struct {
	Deps
	// publicPages are the encoded public answers, by entity tag.
	publicPages *pageCache
}

// Who may call which authenticated route.
var (
	editors = []store.Role{store.RoleAdmin, store.RoleStaff}
	members = []store.Role{store.RoleAdmin, store.RoleStaff, store.RoleContributor}
	admins  = []store.Role{store.RoleAdmin}
)

// requireRole returns the signed-in user if their role is one of allowed;
// otherwise it answers 401 (no user) or 403 (wrong role) and returns false.
func requireRole(w http.ResponseWriter, r *http.Request, allowed []store.Role) (identity.User, bool) {
	u, ok := identity.From(r.Context())
	if !ok {
		problem.Write(w, http.StatusUnauthorized, "sign in to use this endpoint")
		return identity.User{}, false
	}
	if !slices.Contains(allowed, u.Role) {
		problem.Write(w, http.StatusForbidden, "your role does not allow this action")
		return identity.User{}, false
	}
	return u, true
}

// audit builds the audit event of a write by u during r.
func audit(r *http.Request, u identity.User, action, objectType, objectID string, details map[string]any) store.Event {
	return store.Event{
		ActorUserID: u.ID,
		Action:      action,
		ObjectType:  objectType,
		ObjectID:    objectID,
		RequestID:   logging.RequestIDFrom(r.Context()),
		Details:     details,
	}
}

// writeJSON sends v as JSON. It encodes into memory first, so an encoding
// failure is a clean 500 instead of half a body.
func (a *api) writeJSON(w http.ResponseWriter, r *http.Request, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeBody(w, r, status, contentType, append(body, '\n'))
}

// writeCachedJSON answers a public GET with the body cached under etag. On
// a miss it calls build for the value (build answers its own errors and
// returns false), encodes, caches and sends it: a page is queried and
// encoded once per version of the data, not once per request.
func (a *api) writeCachedJSON(w http.ResponseWriter, r *http.Request, etag, contentType string, build func() (any, bool)) {
	body, ok := a.publicPages.get(etag)
	if !ok {
		value, ok := build()
		if !ok {
			return
		}
		var err error
		if body, err = json.Marshal(value); err != nil {
			a.internalError(w, r, err)
			return
		}
		body = append(body, '\n')
		a.publicPages.put(etag, body)
	}
	writeBody(w, r, http.StatusOK, contentType, body)
}

// writeBody sends an encoded JSON body (none to HEAD).
func writeBody(w http.ResponseWriter, r *http.Request, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

const jsonType = "application/json"

// writeFieldErrors answers 400 naming each bad input field.
func writeFieldErrors(w http.ResponseWriter, fields map[string]string) {
	problem.WriteDetails(w, problem.Details{
		Status: http.StatusBadRequest,
		Detail: "the request has invalid fields",
		Errors: fields,
	})
}

// storeError answers a store failure with the status it means. rename maps
// the store's field names onto the request's where they differ (nil keeps
// them).
func (a *api) storeError(w http.ResponseWriter, r *http.Request, err error, rename map[string]string) {
	var (
		fieldErr    *store.FieldError
		conflictErr *store.ConflictError
	)
	field := func(f string) string {
		if to, ok := rename[f]; ok {
			return to
		}
		return f
	}
	switch {
	case errors.As(err, &fieldErr):
		writeFieldErrors(w, map[string]string{field(fieldErr.Field): fieldErr.Reason})
	case errors.Is(err, store.ErrStale):
		problem.Write(w, http.StatusConflict, "the resource has changed since the version you sent; read it again and retry")
	case errors.As(err, &conflictErr):
		problem.WriteDetails(w, problem.Details{
			Status: http.StatusConflict,
			Detail: "a unique value is already taken",
			Errors: map[string]string{field(conflictErr.Field): "already exists"},
		})
	case errors.Is(err, store.ErrNotFound):
		problem.Write(w, http.StatusNotFound, "no such resource")
	case errors.Is(err, store.ErrForbidden):
		problem.Write(w, http.StatusForbidden, "you may not change this resource")
	case errors.Is(err, store.ErrInvalid):
		problem.Write(w, http.StatusBadRequest, "the request has an invalid value")
	default:
		a.internalError(w, r, err)
	}
}

// internalError logs err and answers 500 without revealing it. A request
// whose client has gone away is logged quietly: nobody reads the answer
// and it is not a fault of the server.
func (a *api) internalError(w http.ResponseWriter, r *http.Request, err error) {
	logger := logging.FromContext(r.Context(), a.Logger)
	if errors.Is(r.Context().Err(), context.Canceled) {
		logger.InfoContext(r.Context(), "api: request abandoned by the client", slog.String("error", err.Error()))
		problem.Write(w, http.StatusServiceUnavailable, "the request was cancelled")
		return
	}
	logger.ErrorContext(r.Context(), "api: request failed", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	problem.Write(w, http.StatusInternalServerError, "internal error")
}
