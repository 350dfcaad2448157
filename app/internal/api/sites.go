package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/nbms-deploy/nbms/app/internal/store"
)

// siteFeatureRequest is the body of POST /api/sites: a GeoJSON Feature
// (RFC 7946) with a Point geometry and the site's name as a property. A
// bare Point geometry is refused: it has nowhere to carry the name.
// Unknown members are refused like in every other body, so a misspelt
// property is an error rather than silently dropped.
type siteFeatureRequest struct {
	Type       string               `json:"type" validate:"required,eq=Feature"`
	Geometry   *pointRequest        `json:"geometry" validate:"required"`
	Properties *sitePropertiesInput `json:"properties" validate:"required"`
	// BarePoint catches the likeliest mistake, a Point geometry sent
	// alone: the answer then names "type" (must be "Feature") and
	// "coordinates", rather than only "unknown field".
	BarePoint json.RawMessage `json:"coordinates" validate:"isdefault"`
}

type pointRequest struct {
	Type string `json:"type" validate:"required,eq=Point"`
	// Coordinates is [longitude, latitude] in WGS 84. An altitude (a third
	// number) is refused rather than dropped without a word.
	Coordinates []float64 `json:"coordinates" validate:"required,len=2"`
}

type sitePropertiesInput struct {
	Name string `json:"name" validate:"required,max=200"`
}

// Field names of the coordinates in answers.
const (
	lonField = "geometry.coordinates[0]"
	latField = "geometry.coordinates[1]"
)

// checkSiteFeature applies the rules the struct tags cannot: coordinates
// on the globe. JSON has no NaN or infinity, and numbers too large for a
// float64 are refused by the decoder, so a range check is all that is left.
func checkSiteFeature(f *siteFeatureRequest) map[string]string {
	lon, lat := f.Geometry.Coordinates[0], f.Geometry.Coordinates[1]
	fields := map[string]string{}
	if !(lon >= -180 && lon <= 180) {
		fields[lonField] = "longitude must be from -180 to 180"
	}
	if !(lat >= -90 && lat <= 90) {
		fields[latField] = "latitude must be from -90 to 90"
	}
	if len(fields) == 0 {
		return nil
	}
	return fields
}

// createSite answers POST /api/sites. The site belongs to the creator's
// organisation. The answer is the stored site as a GeoJSON Feature.
func (a *api) createSite(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, members)
	if !ok {
		return
	}
	var req siteFeatureRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if fields := checkSiteFeature(&req); fields != nil {
		writeFieldErrors(w, fields)
		return
	}
	var created store.Site
	err := a.Store.InTx(r.Context(), func(tx store.Tx) (err error) {
		created, err = tx.CreateSite(r.Context(), store.NewSite{
			Name: req.Properties.Name, Lon: req.Geometry.Coordinates[0], Lat: req.Geometry.Coordinates[1], CreatedBy: u.ID,
		})
		if err != nil {
			return err
		}
		_, err = tx.InsertAuditEvent(r.Context(), audit(r, u, "site.create", "site",
			strconv.FormatInt(created.ID, 10), map[string]any{"lon": created.Lon, "lat": created.Lat}))
		return err
	})
	if err != nil {
		a.storeError(w, r, err, map[string]string{"lon": lonField, "lat": latField, "name": "properties.name"})
		return
	}
	a.writeJSON(w, r, http.StatusCreated, geoJSONType, toSiteFeatureJSON(created))
}
