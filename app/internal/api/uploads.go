package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nbms-deploy/nbms/app/internal/bodylimit"
	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/problem"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// allowedUploads maps each accepted content type, as http.DetectContentType
// sniffs it from the first 512 bytes, to the stored file's extension. The
// type the client declares is ignored: it is whatever the client says.
//
// Evidence is documents, tables and photos: PDF, UTF-8 text (CSV sniffs as
// text/plain), PNG and JPEG. Deliberately not allowed:
//   - application/zip (and so xlsx/docx, which are zips): an archive
//     carries anything, including zip bombs, and would need its entries
//     inspected (ASVS 5.0 5.2.3) before it could be trusted; CSV is the
//     accepted table format;
//   - text/html, XML, SVG, scripts: they render or execute in a browser;
//   - UTF-16 text: PostgreSQL, CSV tools and people expect UTF-8.
var allowedUploads = map[string]string{
	"application/pdf":           ".pdf",
	"text/plain; charset=utf-8": ".txt",
	"image/png":                 ".png",
	"image/jpeg":                ".jpg",
}

const allowedUploadsText = "PDF, UTF-8 text or CSV, PNG, JPEG"

// sniffLen is how much http.DetectContentType looks at.
const sniffLen = 512

// maxOriginalNameLen is the schema's limit on the uploader's file name.
const maxOriginalNameLen = 255

// uploadEvidence answers POST /api/uploads/datasets/{id}/evidence: a
// multipart/form-data body with exactly one part, a file named "file". It
// is streamed to disk, never held in memory:
//
//  1. the first 512 bytes are sniffed and checked against allowedUploads
//     (415 otherwise) before anything touches the disk;
//  2. the file is written to a temporary file under the media root while
//     its SHA-256 and size are computed; the body limit stops it at
//     MAX_UPLOAD_BYTES (413);
//  3. the temporary file is fsynced, renamed to a random name and the
//     directory fsynced, so a committed row never points at a file a
//     crash could still lose;
//  4. the metadata and the audit event are inserted in one transaction.
//
// If anything fails after the first byte was written, the file is removed:
// no partial or orphan file is left behind. (A crash between steps 3 and 4
// can still leave a file without a row; that needs a sweep of the media
// root, outside this handler.)
func (a *api) uploadEvidence(w http.ResponseWriter, r *http.Request) {
	u, ok := requireRole(w, r, members)
	if !ok {
		return
	}
	datasetID, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	// Refuse early, before receiving the file, when the dataset is not the
	// user's to write. The insert checks again inside its transaction; that
	// check is the authority, this one only saves the upload.
	d, err := a.Store.GetDatasetVisibleTo(r.Context(), u.ID, datasetID)
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	if d.OrganisationID != u.OrganisationID {
		problem.Write(w, http.StatusForbidden, "you may not change this resource")
		return
	}

	r.Body = http.MaxBytesReader(w, r.Body, a.MaxUploadBytes)
	mr, err := r.MultipartReader()
	if err != nil {
		problem.Write(w, http.StatusUnsupportedMediaType, "Content-Type must be multipart/form-data with a boundary")
		return
	}
	part, err := mr.NextPart()
	if err != nil {
		writeUploadReadError(w, err, "the body has no file part")
		return
	}
	defer part.Close()
	if part.FormName() != "file" || part.FileName() == "" {
		writeFieldErrors(w, map[string]string{"file": `send exactly one part: a file named "file", with a filename`})
		return
	}

	head := make([]byte, sniffLen)
	n, err := io.ReadFull(part, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) { // short files are fine
		writeUploadReadError(w, err, "the upload was interrupted")
		return
	}
	if n == 0 {
		writeFieldErrors(w, map[string]string{"file": "is empty"})
		return
	}
	head = head[:n]
	sniffed := http.DetectContentType(head)
	ext, allowed := allowedUploads[sniffed]
	if !allowed {
		problem.Write(w, http.StatusUnsupportedMediaType, "this file type is not accepted; send "+allowedUploadsText)
		return
	}

	f := &pendingFile{dir: a.MediaRoot}
	defer f.discard() // a no-op once kept
	if err := f.create(); err != nil {
		a.internalError(w, r, err)
		return
	}
	size, err := f.write(head, part)
	if err != nil {
		if f.readErr != nil {
			writeUploadReadError(w, f.readErr, "the upload was interrupted")
			return
		}
		a.internalError(w, r, err)
		return
	}
	// Exactly one part: what follows the file must be the closing boundary.
	if _, err := mr.NextPart(); !errors.Is(err, io.EOF) {
		if err == nil {
			writeFieldErrors(w, map[string]string{"file": `send exactly one part: a file named "file", with a filename`})
			return
		}
		writeUploadReadError(w, err, "malformed multipart body")
		return
	}
	if err := f.commit(ext); err != nil {
		a.internalError(w, r, err)
		return
	}

	contentType := sniffed
	origName := cleanFileName(part.FileName())
	if contentType == "text/plain; charset=utf-8" && strings.HasSuffix(strings.ToLower(origName), ".csv") {
		contentType = "text/csv; charset=utf-8" // the name refines what sniffing calls text
	}
	rec, err := a.insertEvidence(r, u, store.NewEvidenceFile{
		DatasetID: datasetID, OriginalName: origName, StoredName: f.storedName,
		ContentType: contentType, SizeBytes: size, SHA256: f.sum(), UploadedBy: u.ID,
	})
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	f.keep()
	a.writeJSON(w, r, http.StatusCreated, jsonType, toEvidenceJSON(rec))
}

func (a *api) insertEvidence(r *http.Request, u identity.User, in store.NewEvidenceFile) (store.EvidenceFile, error) {
	var rec store.EvidenceFile
	err := a.Store.InTx(r.Context(), func(tx store.Tx) (err error) {
		rec, err = tx.InsertEvidenceFile(r.Context(), in)
		if err != nil {
			return err
		}
		_, err = tx.InsertAuditEvent(r.Context(), audit(r, u, "evidence.upload", "evidence_file",
			strconv.FormatInt(rec.ID, 10), map[string]any{
				"dataset_id": in.DatasetID, "size_bytes": in.SizeBytes,
				"sha256": hex.EncodeToString(in.SHA256[:]), "content_type": in.ContentType,
			}))
		return err
	})
	return rec, err
}

// writeUploadReadError answers a failure to read the request body: 413
// when the body limit stopped it, 400 otherwise (a malformed body, or a
// client that went away).
func writeUploadReadError(w http.ResponseWriter, err error, detail string) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		bodylimit.WriteTooLarge(w, tooBig.Limit)
		return
	}
	problem.Write(w, http.StatusBadRequest, detail)
}

// pendingFile is an upload on its way into the media root: a temporary
// file until commit, a stored file after, removed by discard unless kept.
type pendingFile struct {
	dir        string
	file       *os.File
	path       string // what discard removes: the temporary or the stored file
	storedName string
	hash       hash.Hash
	readErr    error // set when the request body, not the disk, failed
	kept       bool
}

func (f *pendingFile) create() error {
	// A dot name never matches the stored-name rule, so a temporary file
	// can never be mistaken for an upload.
	tmp, err := os.CreateTemp(f.dir, ".upload-*")
	if err != nil {
		return fmt.Errorf("create temporary upload file: %w", err)
	}
	f.file, f.path, f.hash = tmp, tmp.Name(), sha256.New()
	// Readable by the media root's group too: the edge proxy sends a
	// stored file once the app has authorised its download
	// (X-Accel-Redirect), and is given that group, nobody else. The
	// temporary name is never sent (no row names it), so the mode can be
	// set before the data arrives.
	if err := tmp.Chmod(uploadFileMode); err != nil {
		return fmt.Errorf("set upload file mode: %w", err)
	}
	return nil
}

// uploadFileMode is a stored upload's mode: the app writes it, the media
// root's group (the edge proxy's supplementary group) reads it.
const uploadFileMode = 0o640

// write stores head and then the rest of src, hashing as it goes, and
// returns the size.
func (f *pendingFile) write(head []byte, src io.Reader) (int64, error) {
	dst := io.MultiWriter(f.file, f.hash)
	if _, err := dst.Write(head); err != nil {
		return 0, fmt.Errorf("write upload: %w", err)
	}
	n, err := io.Copy(dst, readerFunc(func(p []byte) (int, error) {
		n, err := src.Read(p)
		if err != nil && !errors.Is(err, io.EOF) {
			f.readErr = err
		}
		return n, err
	}))
	if err != nil {
		return 0, fmt.Errorf("write upload: %w", err)
	}
	return int64(len(head)) + n, nil
}

// commit makes the file durable under a random name: fsync the data,
// rename (atomic within the directory), fsync the directory so the rename
// itself survives a crash.
func (f *pendingFile) commit(ext string) error {
	if err := f.file.Sync(); err != nil {
		return fmt.Errorf("fsync upload: %w", err)
	}
	if err := f.file.Close(); err != nil {
		return fmt.Errorf("close upload: %w", err)
	}
	f.file = nil
	// 130 random bits (26 base32 characters): guessing or colliding with a
	// name is hopeless, and the alphabet fits the schema's stored_name rule.
	name := rand.Text() + ext
	final := filepath.Join(f.dir, name)
	if err := os.Rename(f.path, final); err != nil {
		return fmt.Errorf("rename upload: %w", err)
	}
	f.path, f.storedName = final, name
	return syncDir(f.dir)
}

func (f *pendingFile) sum() (s [sha256.Size]byte) {
	copy(s[:], f.hash.Sum(nil))
	return s
}

func (f *pendingFile) keep() { f.kept = true }

// discard removes the file unless it was kept. Errors are ignored: there
// is nothing better to do with them than the answer already being sent.
func (f *pendingFile) discard() {
	if f.kept || f.path == "" {
		return
	}
	if f.file != nil {
		_ = f.file.Close()
	}
	_ = os.Remove(f.path)
	_ = syncDir(f.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open media root: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync media root: %w", err)
	}
	return nil
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// cleanFileName keeps the uploader's file name for display only: valid
// UTF-8, no control characters, at most maxOriginalNameLen characters.
// It is never used as a path.
func cleanFileName(name string) string {
	name = strings.ToValidUTF8(name, "\uFFFD")
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if utf8.RuneCountInString(name) > maxOriginalNameLen {
		name = string([]rune(name)[:maxOriginalNameLen])
	}
	if name == "" || name == "." || name == ".." {
		return "upload"
	}
	return name
}
