package api_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

// part is one part of a multipart body.
type part struct {
	field, filename string
	content         []byte
}

const boundary = "nbms-test-boundary-0123456789"

// multipartBody encodes parts with a fixed boundary, so its size is
// predictable.
func multipartBody(t *testing.T, parts ...part) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	require.NoError(t, w.SetBoundary(boundary))
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		disposition := fmt.Sprintf(`form-data; name=%q`, p.field)
		if p.filename != "" {
			disposition += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", disposition)
		h.Set("Content-Type", "application/octet-stream") // what the client claims is ignored
		pw, err := w.CreatePart(h)
		require.NoError(t, err)
		_, err = pw.Write(p.content)
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

const multipartType = "multipart/form-data; boundary=" + boundary

func pdfBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	copy(b, "%PDF-1.7\n")
	return b
}

// upload sends body to a dataset's evidence route; streamed hides the
// length, so the limit can only be met while reading.
func (e *env) upload(as *identity.User, datasetID int64, body []byte, contentType string, streamed bool, hdr map[string]string) reply {
	var r io.Reader = bytes.NewReader(body)
	if streamed {
		r = struct{ io.Reader }{r}
	}
	return e.do(call{method: http.MethodPost, path: fmt.Sprintf("/api/uploads/datasets/%d/evidence", datasetID),
		body: r, contentType: contentType, as: as, header: hdr})
}

// mediaFiles lists the media root, temporary files included.
func (e *env) mediaFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(e.media)
	require.NoError(t, err)
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

type evidence struct {
	ID           int64  `json:"id"`
	DatasetID    int64  `json:"dataset_id"`
	OriginalName string `json:"original_name"`
	ContentType  string `json:"content_type"`
	SizeBytes    int64  `json:"size_bytes"`
	SHA256       string `json:"sha256"`
}

var storedName = regexp.MustCompile(`^[A-Z2-7]{26}\.(pdf|txt|png|jpg)$`)

func TestUploadEvidenceStoresFileAndMetadata(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := seedUser(t, seedOrg(t), store.RoleContributor)
	ds := createDataset(t, e, alice, "Evidence", "restricted")

	tests := []struct {
		name, filename string
		content        []byte
		contentType    string
	}{
		{"pdf", "report.pdf", pdfBytes(3000), "application/pdf"},
		{"csv", "counts.CSV", []byte("site,count\nmarsh,12\n"), "text/csv; charset=utf-8"},
		{"text", "notes.txt", []byte("Field notes: 12 herons, ünïcode."), "text/plain; charset=utf-8"},
		{"png", "map.png", append([]byte("\x89PNG\r\n\x1a\n"), pdfBytes(100)...), "image/png"},
		{"jpeg", "photo.jpg", append([]byte("\xff\xd8\xff"), pdfBytes(100)...), "image/jpeg"},
		// SVG without an XML declaration sniffs as text: it is recorded
		// and stored as plain text, never as an image a browser renders.
		{"svg markup", "x.svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"></svg>`), "text/plain; charset=utf-8"},
		{"odd file name", "../../etc/pass\x01wd", []byte("plain"), "text/plain; charset=utf-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.mediaFiles(t)
			hdr, reqID := withRequestID()
			r := e.upload(alice, ds.ID, multipartBody(t, part{"file", tc.filename, tc.content}), multipartType, false, hdr)
			require.Equal(t, http.StatusCreated, r.StatusCode, "body: %s", r.body)
			ev := decode[evidence](t, r)
			sum := sha256.Sum256(tc.content)
			assert.Equal(t, hex.EncodeToString(sum[:]), ev.SHA256, "the recorded hash is of the bytes sent")
			assert.Equal(t, int64(len(tc.content)), ev.SizeBytes)
			assert.Equal(t, tc.contentType, ev.ContentType, "sniffed, not taken from the client")
			assert.Equal(t, ds.ID, ev.DatasetID)
			assert.NotContains(t, ev.OriginalName, "/")
			assert.NotContains(t, ev.OriginalName, "\x01")

			after := e.mediaFiles(t)
			require.Len(t, after, len(before)+1, "exactly one new file, no temporary left: %v", after)
			var added string
			for _, name := range after {
				if !slices.Contains(before, name) {
					added = name
				}
			}
			assert.Regexp(t, storedName, added)
			onDisk, err := os.ReadFile(filepath.Join(e.media, added))
			require.NoError(t, err)
			assert.Equal(t, tc.content, onDisk)
			info, err := os.Stat(filepath.Join(e.media, added))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o640), info.Mode().Perm(), "group-readable for the proxy that serves media, nobody else")

			events := auditFor(t, reqID)
			require.Len(t, events, 1)
			assert.Equal(t, "evidence.upload", events[0].Action)
			assert.Equal(t, fmt.Sprint(ev.ID), events[0].ObjectID)
			assert.Equal(t, alice.ID, events[0].ActorUserID)
		})
	}
	got := decode[dataset](t, e.get(fmt.Sprintf("/api/datasets/%d", ds.ID), alice, nil))
	assert.Len(t, got.Evidence, len(tests), "the dataset lists its evidence")
	e.noErrorLogged(t)
}

func TestUploadEvidenceLimit(t *testing.T) {
	const limit = 32 << 10 // MAX_UPLOAD_BYTES for this test
	e := newEnv(t, envOptions{maxUpload: limit})
	alice := seedUser(t, seedOrg(t), store.RoleContributor)
	ds := createDataset(t, e, alice, "Limits", "internal")
	overhead := len(multipartBody(t, part{"file", "f.pdf", nil}))
	atLimit := pdfBytes(limit - overhead)
	overLimit := pdfBytes(limit - overhead + 1)
	require.Len(t, multipartBody(t, part{"file", "f.pdf", atLimit}), limit)

	tests := []struct {
		name     string
		content  []byte
		streamed bool
		status   int
	}{
		{"limit+1 declared", overLimit, false, http.StatusRequestEntityTooLarge},
		{"limit+1 streamed", overLimit, true, http.StatusRequestEntityTooLarge},
		{"far over, streamed", pdfBytes(3 * limit), true, http.StatusRequestEntityTooLarge},
		{"exactly the limit, declared", atLimit, false, http.StatusCreated},
		{"exactly the limit, streamed", atLimit, true, http.StatusCreated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.mediaFiles(t)
			r := e.upload(alice, ds.ID, multipartBody(t, part{"file", "f.pdf", tc.content}), multipartType, tc.streamed, nil)
			if tc.status != http.StatusCreated {
				p := problemOf(t, r, tc.status)
				assert.Contains(t, p.Detail, fmt.Sprint(limit))
				assert.Equal(t, before, e.mediaFiles(t), "no partial file is left")
				return
			}
			require.Equal(t, tc.status, r.StatusCode, "body: %s", r.body)
			assert.Equal(t, int64(len(tc.content)), decode[evidence](t, r).SizeBytes)
			assert.Len(t, e.mediaFiles(t), len(before)+1)
		})
	}
	e.noErrorLogged(t)
}

func TestUploadEvidenceRefusalsLeaveNoFile(t *testing.T) {
	e := newEnv(t, envOptions{})
	orgA, orgB := seedOrg(t), seedOrg(t)
	alice := seedUser(t, orgA, store.RoleContributor)
	bob := seedUser(t, orgB, store.RoleContributor)
	own := createDataset(t, e, alice, "Own", "restricted")
	bPublic := createDataset(t, e, bob, "B public", "public")
	bRestricted := createDataset(t, e, bob, "B restricted", "restricted")
	pdf := pdfBytes(2000)
	file := func(content []byte) []byte { return multipartBody(t, part{"file", "f.bin", content}) }
	// staleAlice claims organisation B, as a session from before a move
	// between organisations might: the early check passes, the file is
	// written, and the transaction (which reads the user's real
	// organisation) refuses it, so the file must be removed again.
	staleAlice := &identity.User{ID: alice.ID, OrganisationID: orgB.ID, Role: alice.Role, Username: alice.Username}

	tests := []struct {
		name        string
		as          *identity.User
		datasetID   int64
		body        []byte
		contentType string
		status      int
		field       string
	}{
		{"html", alice, own.ID, file([]byte("<!DOCTYPE html><script>alert(1)</script>")), multipartType, http.StatusUnsupportedMediaType, ""},
		{"zip", alice, own.ID, file(append([]byte("PK\x03\x04"), pdf...)), multipartType, http.StatusUnsupportedMediaType, ""},
		{"utf-16 text", alice, own.ID, file([]byte("\xfe\xff\x00h\x00i")), multipartType, http.StatusUnsupportedMediaType, ""},
		{"xml", alice, own.ID, file([]byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>`)), multipartType, http.StatusUnsupportedMediaType, ""},
		{"binary", alice, own.ID, file([]byte{0, 1, 2, 3, 4, 5, 0xff}), multipartType, http.StatusUnsupportedMediaType, ""},
		{"empty file", alice, own.ID, file(nil), multipartType, http.StatusBadRequest, "file"},
		{"wrong field name", alice, own.ID, multipartBody(t, part{"upload", "f.pdf", pdf}), multipartType, http.StatusBadRequest, "file"},
		{"no file name", alice, own.ID, multipartBody(t, part{"file", "", pdf}), multipartType, http.StatusBadRequest, "file"},
		{"field before the file", alice, own.ID, multipartBody(t, part{"note", "", []byte("x")}, part{"file", "f.pdf", pdf}), multipartType, http.StatusBadRequest, "file"},
		{"two files", alice, own.ID, multipartBody(t, part{"file", "a.pdf", pdf}, part{"file", "b.pdf", pdf}), multipartType, http.StatusBadRequest, "file"},
		{"truncated body", alice, own.ID, file(pdf)[:1500], multipartType, http.StatusBadRequest, ""},
		{"not multipart", alice, own.ID, []byte(`{"file":"x"}`), "application/json", http.StatusUnsupportedMediaType, ""},
		{"no boundary", alice, own.ID, file(pdf), "multipart/form-data", http.StatusUnsupportedMediaType, ""},
		{"other organisation's restricted dataset", alice, bRestricted.ID, file(pdf), multipartType, http.StatusNotFound, ""},
		{"other organisation's public dataset", alice, bPublic.ID, file(pdf), multipartType, http.StatusForbidden, ""},
		{"missing dataset", alice, 1 << 50, file(pdf), multipartType, http.StatusNotFound, ""},
		{"refused by the transaction after writing", staleAlice, bPublic.ID, file(pdf), multipartType, http.StatusForbidden, ""},
		{"anonymous", nil, own.ID, file(pdf), multipartType, http.StatusUnauthorized, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr, reqID := withRequestID()
			p := problemOf(t, e.upload(tc.as, tc.datasetID, tc.body, tc.contentType, false, hdr), tc.status)
			if tc.field != "" {
				assert.Contains(t, p.Errors, tc.field)
			}
			assert.Empty(t, e.mediaFiles(t), "no file, partial or temporary, is left")
			assert.Empty(t, auditFor(t, reqID))
		})
	}
	got := decode[dataset](t, e.get(fmt.Sprintf("/api/datasets/%d", bPublic.ID), bob, nil))
	assert.Empty(t, got.Evidence, "nothing was recorded in B's dataset")
	e.noErrorLogged(t)
}

func TestUploadEvidenceAbandonedMidStreamLeavesNoFile(t *testing.T) {
	e := newEnv(t, envOptions{maxUpload: 1 << 20})
	alice := seedUser(t, seedOrg(t), store.RoleContributor)
	ds := createDataset(t, e, alice, "Abandoned", "internal")

	body := multipartBody(t, part{"file", "big.pdf", pdfBytes(512 << 10)})
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/api/uploads/datasets/%d/evidence", e.url, ds.ID), pr)
	require.NoError(t, err)
	req.Host = publicHost
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Content-Type", multipartType)
	req.Header.Set(identityHeader, identityValue(*alice))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()

	// Send half the file, wait until the server is writing it to disk,
	// then vanish.
	go func() { _, _ = pw.Write(body[:len(body)/2]) }()
	require.Eventually(t, func() bool { return len(e.mediaFiles(t)) == 1 }, 10*time.Second, 5*time.Millisecond,
		"the upload reaches a temporary file")
	assert.True(t, strings.HasPrefix(e.mediaFiles(t)[0], ".upload-"), "a temporary name until committed")
	pw.CloseWithError(errors.New("client gone"))
	<-done
	require.Eventually(t, func() bool { return len(e.mediaFiles(t)) == 0 }, 10*time.Second, 5*time.Millisecond,
		"the partial file is removed")
	got := decode[dataset](t, e.get(fmt.Sprintf("/api/datasets/%d", ds.ID), alice, nil))
	assert.Empty(t, got.Evidence)
	e.noErrorLogged(t)
}
