package api

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

type createDatasetRequest struct {
	Title       string `json:"title" validate:"required,max=300"`
	Licence     string `json:"licence" validate:"required,max=100"`
	Sensitivity string `json:"sensitivity" validate:"required,oneof=public internal restricted"`
}

type datasetJSON struct {
	ID             int64             `json:"id"`
	OrganisationID int64             `json:"organisation_id"`
	Title          string            `json:"title"`
	Licence        string            `json:"licence"`
	Sensitivity    store.Sensitivity `json:"sensitivity"`
	CreatedBy      int64             `json:"created_by"`
	CreatedAt      time.Time         `json:"created_at"`
}

type datasetDetailJSON struct {
	datasetJSON
	Evidence []evidenceJSON `json:"evidence"`
}

// evidenceJSON is an evidence file's metadata. The stored name is left
// out: it is a server-side path, of no use to clients.
type evidenceJSON struct {
	ID           int64     `json:"id"`
	DatasetID    int64     `json:"dataset_id"`
	OriginalName string    `json:"original_name"`
	ContentType  string    `json:"content_type"`
	SizeBytes    int64     `json:"size_bytes"`
	SHA256       string    `json:"sha256"` // hex
	UploadedBy   int64     `json:"uploaded_by"`
	CreatedAt    time.Time `json:"created_at"`
}

func toDatasetJSON(d store.Dataset) datasetJSON {
	return datasetJSON{
		ID: d.ID, OrganisationID: d.OrganisationID, Title: d.Title, Licence: d.Licence,
		Sensitivity: d.Sensitivity, CreatedBy: d.CreatedBy, CreatedAt: d.CreatedAt.UTC(),
	}
}

func toEvidenceJSON(f store.EvidenceFile) evidenceJSON {
	return evidenceJSON{
		ID: f.ID, DatasetID: f.DatasetID, OriginalName: f.OriginalName, ContentType: f.ContentType,
		SizeBytes: f.SizeBytes, SHA256: hex.EncodeToString(f.SHA256[:]), UploadedBy: f.UploadedBy,
		CreatedAt: f.CreatedAt.UTC(),
	}
}

// pathID reads a positive integer ID from the path. Anything else names
// no resource, so it is answered like an invisible one: 404.
func pathID(w http.ResponseWriter, r *http.Request, name string) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id < 1 {
		problem.Write(w, http.StatusNotFound, "no such resource")
		return 0, false
	}
	return id, true
}

// createDataset answers POST /api/datasets. The dataset belongs to the
// creator's organisation; the request cannot name another.
func (a *api) createDataset(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, members)
	if !ok {
		return
	}
	var req createDatasetRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	var created store.Dataset
	err := a.Store.InTx(r.Context(), func(tx store.Tx) (err error) {
		created, err = tx.CreateDataset(r.Context(), store.NewDataset{
			Title: req.Title, Licence: req.Licence, Sensitivity: store.Sensitivity(req.Sensitivity), CreatedBy: u.ID,
		})
		if err != nil {
			return err
		}
		_, err = tx.InsertAuditEvent(r.Context(), audit(r, u, "dataset.create", "dataset",
			strconv.FormatInt(created.ID, 10), map[string]any{"sensitivity": string(created.Sensitivity)}))
		return err
	})
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	w.Header().Set("Location", "/api/datasets/"+strconv.FormatInt(created.ID, 10))
	a.writeJSON(w, r, http.StatusCreated, jsonType, toDatasetJSON(created))
}

// listDatasets answers GET /api/datasets: the datasets the user may see
// (their organisation's, and other organisations' public ones), newest
// first.
func (a *api) listDatasets(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, members)
	if !ok {
		return
	}
	q, ok := parseQuery(w, r)
	if !ok {
		return
	}
	fields := map[string]string{}
	page := parsePage(q, datasetCursor, listPageSize, fields)
	if len(fields) > 0 {
		writeFieldErrors(w, fields)
		return
	}
	datasets, err := a.Store.ListDatasetsVisibleTo(r.Context(), u.ID, store.DatasetQuery{BeforeID: page.cursor.ID, Limit: page.limit})
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	out := listJSON[datasetJSON]{Items: make([]datasetJSON, 0, len(datasets))}
	for _, d := range datasets {
		out.Items = append(out.Items, toDatasetJSON(d))
	}
	if len(datasets) == page.limit {
		out.Next = encodeCursor(cursor{Kind: datasetCursor, ID: datasets[len(datasets)-1].ID})
	}
	a.writeJSON(w, r, http.StatusOK, jsonType, out)
}

// getDataset answers GET /api/datasets/{id} with its evidence files; a
// dataset the user may not see is 404, exactly like a missing one.
func (a *api) getDataset(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, members)
	if !ok {
		return
	}
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	d, err := a.Store.GetDatasetVisibleTo(r.Context(), u.ID, id)
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	files, err := a.Store.ListEvidenceFiles(r.Context(), u.ID, id)
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	out := datasetDetailJSON{datasetJSON: toDatasetJSON(d), Evidence: make([]evidenceJSON, 0, len(files))}
	for _, f := range files {
		out.Evidence = append(out.Evidence, toEvidenceJSON(f))
	}
	a.writeJSON(w, r, http.StatusOK, jsonType, out)
}
