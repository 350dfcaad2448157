package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Sensitivity says who may see a dataset.
type Sensitivity string

// The sensitivities, as the schema's CHECK constraint lists them.
const (
	// SensitivityPublic datasets are visible to every active user.
	SensitivityPublic Sensitivity = "public"
	// SensitivityInternal and SensitivityRestricted datasets are visible to
	// the owning organisation only. The store treats them alike; the
	// difference is for people (and for future rules).
	SensitivityInternal   Sensitivity = "internal"
	SensitivityRestricted Sensitivity = "restricted"
)

// Valid reports whether s is one of the defined sensitivities.
func (s Sensitivity) Valid() bool {
	return s == SensitivityPublic || s == SensitivityInternal || s == SensitivityRestricted
}

// Dataset is a set of evidence owned by an organisation.
type Dataset struct {
	ID             int64
	OrganisationID int64
	Title          string
	Licence        string
	Sensitivity    Sensitivity
	CreatedBy      int64
	CreatedAt      time.Time
}

// NewDataset is the input of Tx.CreateDataset. There is no organisation
// field: a dataset always belongs to its creator's organisation.
type NewDataset struct {
	Title       string
	Licence     string
	Sensitivity Sensitivity
	CreatedBy   int64
}

// DatasetQuery pages through datasets newest first.
type DatasetQuery struct {
	BeforeID int64 // 0 for the first page; else the last ID of the previous page
	Limit    int   // see DefaultLimit
}

// EvidenceFile is the metadata of an uploaded file; the bytes live under
// the media root as StoredName.
type EvidenceFile struct {
	ID           int64
	DatasetID    int64
	OriginalName string
	StoredName   string
	ContentType  string
	SizeBytes    int64
	SHA256       [sha256.Size]byte
	UploadedBy   int64
	CreatedAt    time.Time
}

// NewEvidenceFile is the input of Tx.InsertEvidenceFile.
type NewEvidenceFile struct {
	DatasetID    int64
	OriginalName string
	// StoredName is the random file name chosen by the uploader code: 16-200
	// characters of [A-Za-z0-9._-], not starting with a dot, no "..".
	StoredName  string
	ContentType string
	SizeBytes   int64
	SHA256      [sha256.Size]byte
	UploadedBy  int64
}

const datasetColumns = `d.id, d.organisation_id, d.title, d.licence, d.sensitivity, d.created_by, d.created_at`

func scanDataset(row interface{ Scan(...any) error }) (Dataset, error) {
	var d Dataset
	err := row.Scan(&d.ID, &d.OrganisationID, &d.Title, &d.Licence, &d.Sensitivity, &d.CreatedBy, &d.CreatedAt)
	return d, err
}

// visibleTo is the object-level rule, the one place it is written: an
// active user sees the datasets of their own organisation and the public
// datasets of every organisation. $1 is the viewer's user ID.
const visibleTo = `
	JOIN users viewer ON viewer.id = $1 AND viewer.active
	WHERE (d.organisation_id = viewer.organisation_id OR d.sensitivity = 'public')`

// CreateDataset inserts a dataset owned by the creator's organisation. An
// unknown or deactivated creator is ErrForbidden.
func (tx Tx) CreateDataset(ctx context.Context, in NewDataset) (Dataset, error) {
	if !in.Sensitivity.Valid() {
		return Dataset{}, &FieldError{Field: "sensitivity", Reason: "must be public, internal or restricted"}
	}
	d, err := scanDataset(tx.tx.QueryRow(ctx,
		`INSERT INTO datasets AS d (organisation_id, title, licence, sensitivity, created_by)
		 SELECT u.organisation_id, $2, $3, $4, u.id FROM users u WHERE u.id = $1 AND u.active
		 RETURNING `+datasetColumns,
		in.CreatedBy, in.Title, in.Licence, in.Sensitivity))
	if errors.Is(err, pgx.ErrNoRows) {
		return Dataset{}, fmt.Errorf("store: create dataset: %w: unknown or inactive user", ErrForbidden)
	}
	if err != nil {
		return Dataset{}, mapErr("create dataset", err)
	}
	return d, nil
}

// ListDatasetsVisibleTo returns a page of the datasets userID may see,
// newest first.
func (s *Store) ListDatasetsVisibleTo(ctx context.Context, userID int64, q DatasetQuery) ([]Dataset, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+datasetColumns+` FROM datasets d `+visibleTo+`
		   AND ($2::bigint = 0 OR d.id < $2::bigint)
		 ORDER BY d.id DESC
		 LIMIT $3`,
		userID, q.BeforeID, clamp(q.Limit, DefaultLimit, MaxLimit))
	if err != nil {
		return nil, mapErr("list datasets", err)
	}
	defer rows.Close()
	var out []Dataset
	for rows.Next() {
		d, err := scanDataset(rows)
		if err != nil {
			return nil, mapErr("list datasets", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("list datasets", err)
	}
	return out, nil
}

// GetDatasetVisibleTo returns the dataset if userID may see it; a dataset
// that exists but is not visible is ErrNotFound, like a missing one.
func (s *Store) GetDatasetVisibleTo(ctx context.Context, userID, datasetID int64) (Dataset, error) {
	return getDatasetVisibleTo(ctx, s.pool, userID, datasetID)
}

func getDatasetVisibleTo(ctx context.Context, q querier, userID, datasetID int64) (Dataset, error) {
	d, err := scanDataset(q.QueryRow(ctx,
		`SELECT `+datasetColumns+` FROM datasets d `+visibleTo+` AND d.id = $2`, userID, datasetID))
	if err != nil {
		return Dataset{}, mapErr("get dataset", err)
	}
	return d, nil
}

// InsertEvidenceFile records an uploaded file in a dataset of the uploader's
// own organisation. A dataset the uploader cannot see is ErrNotFound; one
// they can see but do not own (another organisation's public dataset) is
// ErrForbidden.
func (tx Tx) InsertEvidenceFile(ctx context.Context, in NewEvidenceFile) (EvidenceFile, error) {
	f := EvidenceFile{
		DatasetID: in.DatasetID, OriginalName: in.OriginalName, StoredName: in.StoredName,
		ContentType: in.ContentType, SizeBytes: in.SizeBytes, SHA256: in.SHA256, UploadedBy: in.UploadedBy,
	}
	err := tx.tx.QueryRow(ctx,
		`INSERT INTO evidence_files
		     (dataset_id, original_name, stored_name, content_type, size_bytes, sha256, uploaded_by)
		 SELECT d.id, $3, $4, $5, $6, $7, u.id
		 FROM datasets d JOIN users u ON u.id = $2 AND u.active AND u.organisation_id = d.organisation_id
		 WHERE d.id = $1
		 RETURNING id, created_at`,
		in.DatasetID, in.UploadedBy, in.OriginalName, in.StoredName, in.ContentType, in.SizeBytes, in.SHA256[:]).
		Scan(&f.ID, &f.CreatedAt)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return EvidenceFile{}, mapErr("insert evidence file", err)
	}
	if _, err := getDatasetVisibleTo(ctx, tx.tx, in.UploadedBy, in.DatasetID); err != nil {
		return EvidenceFile{}, err
	}
	return EvidenceFile{}, fmt.Errorf("store: insert evidence file: %w: dataset belongs to another organisation", ErrForbidden)
}

// ListEvidenceFiles returns the files of a dataset userID may see, oldest
// first; an invisible dataset is ErrNotFound.
func (s *Store) ListEvidenceFiles(ctx context.Context, userID, datasetID int64) ([]EvidenceFile, error) {
	if _, err := s.GetDatasetVisibleTo(ctx, userID, datasetID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx,
		`SELECT `+evidenceColumns+` FROM evidence_files f WHERE f.dataset_id = $1 ORDER BY f.id`, datasetID)
	if err != nil {
		return nil, mapErr("list evidence files", err)
	}
	defer rows.Close()
	var out []EvidenceFile
	for rows.Next() {
		f, err := scanEvidenceFile(rows)
		if err != nil {
			return nil, mapErr("list evidence files", err)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("list evidence files", err)
	}
	return out, nil
}

// GetEvidenceFileVisibleTo returns an evidence file if userID may see its
// dataset (the visibleTo rule): who may read the metadata may read the
// bytes. A file that exists but is not visible is ErrNotFound, like a
// missing one, so that the answer confirms nothing.
func (s *Store) GetEvidenceFileVisibleTo(ctx context.Context, userID, fileID int64) (EvidenceFile, error) {
	f, err := scanEvidenceFile(s.pool.QueryRow(ctx,
		`SELECT `+evidenceColumns+` FROM evidence_files f JOIN datasets d ON d.id = f.dataset_id `+
			visibleTo+` AND f.id = $2`, userID, fileID))
	if err != nil {
		return EvidenceFile{}, mapErr("get evidence file", err)
	}
	return f, nil
}

const evidenceColumns = `f.id, f.dataset_id, f.original_name, f.stored_name, f.content_type, f.size_bytes, f.sha256,
	f.uploaded_by, f.created_at`

func scanEvidenceFile(row interface{ Scan(...any) error }) (EvidenceFile, error) {
	var (
		f   EvidenceFile
		sum []byte
	)
	if err := row.Scan(&f.ID, &f.DatasetID, &f.OriginalName, &f.StoredName, &f.ContentType,
		&f.SizeBytes, &sum, &f.UploadedBy, &f.CreatedAt); err != nil {
		return EvidenceFile{}, err
	}
	copy(f.SHA256[:], sum) // the schema guarantees 32 bytes
	return f, nil
}
