package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// Request bodies. The length limits are the schema's, checked here too so
// that the answer names the field and the limit.
type (
	createIndicatorRequest struct {
		Code            string `json:"code" validate:"required,indicator_code"`
		Title           string `json:"title" validate:"required,max=300"`
		Description     string `json:"description" validate:"max=10000"`
		Unit            string `json:"unit" validate:"max=50"`
		FrameworkTarget string `json:"framework_target" validate:"max=100"`
		Published       bool   `json:"published"`
	}
	// updateIndicatorRequest replaces every editable field (PUT): an
	// omitted text field becomes empty. Version is the version the editor
	// read; it may come instead as If-Match.
	updateIndicatorRequest struct {
		Title           string `json:"title" validate:"required,max=300"`
		Description     string `json:"description" validate:"max=10000"`
		Unit            string `json:"unit" validate:"max=50"`
		FrameworkTarget string `json:"framework_target" validate:"max=100"`
		Published       bool   `json:"published"`
		Version         *int   `json:"version" validate:"omitempty,min=1"`
	}
	upsertDataPointsRequest struct {
		DataPoints []dataPointRequest `json:"data_points" validate:"required,min=1,max=500,dive"`
	}
	// dataPointRequest uses pointers so that a missing year or value is
	// "required" rather than a silent zero.
	dataPointRequest struct {
		Year           *int              `json:"year" validate:"required,min=1900,max=2100"`
		Value          *float64          `json:"value" validate:"required"`
		Disaggregation map[string]string `json:"disaggregation" validate:"max=10,dive,keys,min=1,max=50,endkeys,max=100"`
	}
)

// editorETag is the strong entity tag of an indicator for editors: its
// version, which If-Match sends back.
func editorETag(version int) string { return `"` + strconv.Itoa(version) + `"` }

// createIndicator answers POST /api/indicators (staff, admins).
func (a *api) createIndicator(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, editors)
	if !ok {
		return
	}
	var req createIndicatorRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	var created store.Indicator
	err := a.Store.InTx(r.Context(), func(tx store.Tx) (err error) {
		created, err = tx.CreateIndicator(r.Context(), store.NewIndicator{
			Code: req.Code,
			IndicatorFields: store.IndicatorFields{
				Title: req.Title, Description: req.Description, Unit: req.Unit,
				FrameworkTarget: req.FrameworkTarget, Published: req.Published,
			},
			CreatedBy: u.ID,
		})
		if err != nil {
			return err
		}
		_, err = tx.InsertAuditEvent(r.Context(), audit(r, u, "indicator.create", "indicator", created.Code,
			map[string]any{"published": created.Published}))
		return err
	})
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	w.Header().Set("Location", "/api/indicators/"+created.Code)
	w.Header().Set("ETag", editorETag(created.Version))
	a.writeJSON(w, r, http.StatusCreated, jsonType, toIndicatorDetailJSON(store.IndicatorDetail{Indicator: created}))
}

// getIndicator answers GET /api/indicators/{code} (staff, admins): the
// indicator whether published or not, with the ETag for If-Match.
func (a *api) getIndicator(w http.ResponseWriter, r *http.Request) {
	if _, ok := requireRole(w, r, editors); !ok {
		return
	}
	code := r.PathValue("code")
	if !indicatorCodePattern.MatchString(code) {
		problem.Write(w, http.StatusNotFound, "no such indicator")
		return
	}
	d, err := a.Store.GetIndicator(r.Context(), code)
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	w.Header().Set("ETag", editorETag(d.Version))
	a.writeJSON(w, r, http.StatusOK, jsonType, toIndicatorDetailJSON(d))
}

// updateIndicator answers PUT /api/indicators/{code} (staff, admins).
//
// Optimistic concurrency: the editor names the version it read, in the
// body ("version") or as If-Match: "<version>". A stale body version is
// 409 Conflict; a stale If-Match is 412 Precondition Failed, as RFC 9110
// prescribes for a failed precondition. With neither the answer is 428
// Precondition Required: a blind overwrite is never allowed.
func (a *api) updateIndicator(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, editors)
	if !ok {
		return
	}
	code := r.PathValue("code")
	if !indicatorCodePattern.MatchString(code) {
		problem.Write(w, http.StatusNotFound, "no such indicator")
		return
	}
	var req updateIndicatorRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	version, fromIfMatch, ok := updateVersion(w, r, req.Version)
	if !ok {
		return
	}
	var updated store.Indicator
	err := a.Store.InTx(r.Context(), func(tx store.Tx) (err error) {
		updated, err = tx.UpdateIndicator(r.Context(), store.IndicatorUpdate{
			Code:    code,
			Version: version,
			IndicatorFields: store.IndicatorFields{
				Title: req.Title, Description: req.Description, Unit: req.Unit,
				FrameworkTarget: req.FrameworkTarget, Published: req.Published,
			},
			UpdatedBy: u.ID,
		})
		if err != nil {
			return err
		}
		_, err = tx.InsertAuditEvent(r.Context(), audit(r, u, "indicator.update", "indicator", code,
			map[string]any{"from_version": version, "to_version": updated.Version, "published": updated.Published}))
		return err
	})
	if fromIfMatch && errors.Is(err, store.ErrStale) {
		problem.Write(w, http.StatusPreconditionFailed, "If-Match does not name the current version")
		return
	}
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	w.Header().Set("ETag", editorETag(updated.Version))
	a.writeJSON(w, r, http.StatusOK, jsonType, toIndicatorJSON(updated))
}

// updateVersion finds the version an update is based on. An If-Match that
// is not exactly one strong tag this API issued can never match, so it is
// answered 412 (RFC 9110 §13.1.1) rather than ignored.
func updateVersion(w http.ResponseWriter, r *http.Request, body *int) (version int, fromIfMatch, ok bool) {
	ifMatch := r.Header.Values("If-Match")
	if len(ifMatch) == 0 {
		if body == nil {
			problem.WriteDetails(w, problem.Details{
				Status: http.StatusPreconditionRequired,
				Detail: "send the version you are editing, as the version field or an If-Match header",
				Errors: map[string]string{"version": "required"},
			})
			return 0, false, false
		}
		return *body, false, true
	}
	inner, opened := strings.CutPrefix(strings.TrimSpace(ifMatch[0]), `"`)
	inner, closed := strings.CutSuffix(inner, `"`)
	v, err := strconv.Atoi(inner)
	if len(ifMatch) > 1 || !opened || !closed || err != nil || v < 1 || inner != strconv.Itoa(v) {
		problem.Write(w, http.StatusPreconditionFailed, "If-Match does not name the current version")
		return 0, false, false
	}
	if body != nil && *body != v {
		writeFieldErrors(w, map[string]string{"version": "differs from If-Match"})
		return 0, false, false
	}
	return v, true, true
}

// upsertDataPoints answers PUT /api/indicators/{code}/data-points (staff,
// admins): each point is inserted or replaces the value of the same year
// and disaggregation. The whole list is one transaction and one audit
// event, so a bad point leaves the indicator untouched.
func (a *api) upsertDataPoints(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, editors)
	if !ok {
		return
	}
	code := r.PathValue("code")
	if !indicatorCodePattern.MatchString(code) {
		problem.Write(w, http.StatusNotFound, "no such indicator")
		return
	}
	var req upsertDataPointsRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	var failedAt int
	err := a.Store.InTx(r.Context(), func(tx store.Tx) error {
		for i, p := range req.DataPoints {
			failedAt = i
			if _, err := tx.UpsertDataPoint(r.Context(), code, store.DataPointInput{
				Year: *p.Year, Value: *p.Value, Disaggregation: p.Disaggregation,
			}, u.ID); err != nil {
				return err
			}
		}
		_, err := tx.InsertAuditEvent(r.Context(), audit(r, u, "indicator.data_points.upsert", "indicator", code,
			map[string]any{"count": len(req.DataPoints)}))
		return err
	})
	if err != nil {
		prefix := "data_points[" + strconv.Itoa(failedAt) + "]."
		a.storeError(w, r, err, map[string]string{
			"year": prefix + "year", "value": prefix + "value", "disaggregation": prefix + "disaggregation",
		})
		return
	}
	d, err := a.Store.GetIndicator(r.Context(), code)
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	w.Header().Set("ETag", editorETag(d.Version))
	a.writeJSON(w, r, http.StatusOK, jsonType, toIndicatorDetailJSON(d))
}
