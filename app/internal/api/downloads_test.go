package api_test

import (
	"fmt"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/store"
)

func downloadPath(id int64) string { return fmt.Sprintf("/api/evidence/%d/content", id) }

// uploadEvidence stores content as name in the dataset through the API
// and returns its metadata and the name it got in the media root.
func (e *env) uploadEvidence(t *testing.T, as *identity.User, datasetID int64, name string, content []byte) (evidence, string) {
	t.Helper()
	before := e.mediaFiles(t)
	r := e.upload(as, datasetID, multipartBody(t, part{"file", name, content}), multipartType, false, nil)
	require.Equal(t, http.StatusCreated, r.StatusCode, "body: %s", r.body)
	var stored []string
	for _, f := range e.mediaFiles(t) {
		if !slices.Contains(before, f) {
			stored = append(stored, f)
		}
	}
	require.Len(t, stored, 1)
	return decode[evidence](t, r), stored[0]
}

// assertDownloadHeaders checks the headers of an authorised download,
// whoever will send the bytes.
func assertDownloadHeaders(t *testing.T, r reply, contentType, disposition string) {
	t.Helper()
	assert.Equal(t, contentType, r.Header.Get("Content-Type"), "the type recorded at upload, never sniffed again")
	assert.Equal(t, disposition, r.Header.Get("Content-Disposition"))
	assert.Equal(t, []string{"nosniff"}, r.Header.Values("X-Content-Type-Options"))
	assert.Equal(t, []string{"private, no-store"}, r.Header.Values("Cache-Control"))
	assert.Equal(t, []string{config.AttachmentCSP}, r.Header.Values("Content-Security-Policy"))
}

// The app decides who may read a file and, with nginx in front, only
// tells nginx which file to send: Go never streams it. Everyone who may
// not read it gets the 404 of an id that does not exist.
func TestDownloadEvidenceAuthorisesAndHandsTheFileToNginx(t *testing.T) {
	e := newEnv(t, envOptions{})
	orgA, orgB := seedOrg(t), seedOrg(t)
	alice := seedUser(t, orgA, store.RoleContributor)
	carol := seedUser(t, orgA, store.RoleStaff)
	bob := seedUser(t, orgB, store.RoleContributor)
	aRestricted := createDataset(t, e, alice, "Nesting sites", "restricted")
	aInternal := createDataset(t, e, carol, "Transects", "internal")
	bPublic := createDataset(t, e, bob, "Open counts", "public")

	secret, secretStored := e.uploadEvidence(t, alice, aRestricted.ID, "nests.pdf", pdfBytes(4000))
	internal, internalStored := e.uploadEvidence(t, carol, aInternal.ID, "transects.csv", []byte("transect,count\n1,4\n"))
	open, openStored := e.uploadEvidence(t, bob, bPublic.ID, "counts.txt", []byte("12 herons"))

	unknown := problemOf(t, e.get(downloadPath(1<<50), alice, nil), http.StatusNotFound)

	tests := []struct {
		name   string
		as     *identity.User
		path   string
		stored string // "" when refused
		file   evidence
	}{
		{"the uploader", alice, downloadPath(secret.ID), secretStored, secret},
		{"a colleague of the organisation", carol, downloadPath(secret.ID), secretStored, secret},
		{"an internal dataset, uploaded by a colleague", alice, downloadPath(internal.ID), internalStored, internal},
		{"another organisation's public dataset", alice, downloadPath(open.ID), openStored, open},
		{"another organisation's restricted dataset", bob, downloadPath(secret.ID), "", secret},
		{"another organisation's internal dataset", bob, downloadPath(internal.ID), "", internal},
		{"anonymous, restricted", nil, downloadPath(secret.ID), "", secret},
		{"anonymous, public", nil, downloadPath(open.ID), "", open},
		{"unknown id", alice, downloadPath(1 << 50), "", evidence{}},
		{"not an id", alice, "/api/evidence/nests.pdf/content", "", evidence{}},
		{"a stored name", alice, "/api/evidence/ABCDEFGHIJKLMNOPQRSTUVWXYZ.pdf/content", "", evidence{}},
		{"zero", alice, downloadPath(0), "", evidence{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.get(tc.path, tc.as, nil)
			if tc.stored == "" {
				p := problemOf(t, r, http.StatusNotFound)
				assert.Equal(t, unknown, p, "the same answer as an id that does not exist")
				assert.Empty(t, r.Header.Values("X-Accel-Redirect"))
				assert.Empty(t, r.Header.Get("Content-Disposition"))
				return
			}
			require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
			assert.Equal(t, []string{config.ProtectedMediaPrefix + tc.stored}, r.Header.Values("X-Accel-Redirect"),
				"nginx's internal location, the file's name in the media root")
			assert.Empty(t, r.body, "nginx sends the bytes, not the app")
			assertDownloadHeaders(t, r, tc.file.ContentType, `attachment; filename="`+tc.file.OriginalName+`"`)
		})
	}

	t.Run("HEAD", func(t *testing.T) {
		r := e.do(call{method: http.MethodHead, path: downloadPath(secret.ID), as: alice})
		require.Equal(t, http.StatusOK, r.StatusCode)
		assert.Equal(t, config.ProtectedMediaPrefix+secretStored, r.Header.Get("X-Accel-Redirect"))
		r = e.do(call{method: http.MethodHead, path: downloadPath(secret.ID), as: bob})
		assert.Equal(t, http.StatusNotFound, r.StatusCode)
		assert.Empty(t, r.Header.Get("X-Accel-Redirect"))
	})

	t.Run("no other method", func(t *testing.T) {
		r := e.sendJSON(http.MethodPut, downloadPath(secret.ID), alice, "{}", nil)
		problemOf(t, r, http.StatusMethodNotAllowed)
		assert.Empty(t, r.Header.Get("X-Accel-Redirect"))
	})

	for _, stored := range []string{secretStored, internalStored, openStored} {
		assert.NotContains(t, e.logs.String(), stored, "the app's log never names a stored file")
	}
	e.noErrorLogged(t)
}

// The uploader's file name is kept for people, in a header that cannot be
// broken out of: a quoted ASCII fallback and, when the name is not plain
// ASCII, the exact name in RFC 8187 encoding.
func TestDownloadEvidenceFileNames(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := seedUser(t, seedOrg(t), store.RoleContributor)
	ds := createDataset(t, e, alice, "Names", "internal")

	tests := []struct {
		name, uploaded, header string
	}{
		{"plain", "counts-2024_v2.csv", `attachment; filename="counts-2024_v2.csv"`},
		{"spaces and parentheses", "field notes (draft).txt", `attachment; filename="field notes (draft).txt"`},
		{"not ASCII", "Relevé d'oiseaux – été.txt",
			`attachment; filename="Relev_ d'oiseaux _ _t_.txt"; filename*=UTF-8''Relev%C3%A9%20d%27oiseaux%20%E2%80%93%20%C3%A9t%C3%A9.txt`},
		{"quotes, backslash, percent, semicolon", `a"b\c%41;d=e.txt`,
			`attachment; filename="a_b_c_41;d=e.txt"; filename*=UTF-8''a%22b%5Cc%2541%3Bd%3De.txt`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, _ := e.uploadEvidence(t, alice, ds.ID, tc.uploaded, []byte("some text"))
			require.Equal(t, tc.uploaded, ev.OriginalName)
			r := e.get(downloadPath(ev.ID), alice, nil)
			require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
			got := r.Header.Get("Content-Disposition")
			assert.Equal(t, tc.header, got)
			disposition, params, err := mime.ParseMediaType(got)
			require.NoError(t, err)
			assert.Equal(t, "attachment", disposition)
			assert.Equal(t, tc.uploaded, params["filename"], "a client reads back the exact name")
		})
	}
	e.noErrorLogged(t)
}

// Without nginx in front (dev, tests) the app sends the file itself, to
// the same users, with the same headers.
func TestDownloadEvidenceWithoutAProxySendsTheFile(t *testing.T) {
	e := newEnv(t, envOptions{noProxy: true})
	orgA, orgB := seedOrg(t), seedOrg(t)
	alice := seedUser(t, orgA, store.RoleContributor)
	bob := seedUser(t, orgB, store.RoleContributor)
	ds := createDataset(t, e, alice, "Nesting sites", "restricted")
	content := pdfBytes(5000)
	ev, stored := e.uploadEvidence(t, alice, ds.ID, "nests.pdf", content)

	r := e.get(downloadPath(ev.ID), alice, nil)
	require.Equal(t, http.StatusOK, r.StatusCode, "body: %s", r.body)
	assert.Equal(t, content, r.body, "the exact bytes uploaded")
	assert.Empty(t, r.Header.Values("X-Accel-Redirect"))
	assertDownloadHeaders(t, r, "application/pdf", `attachment; filename="nests.pdf"`)

	r = e.get(downloadPath(ev.ID), alice, map[string]string{"Range": "bytes=0-8"})
	require.Equal(t, http.StatusPartialContent, r.StatusCode)
	assert.Equal(t, content[:9], r.body)
	assertDownloadHeaders(t, r, "application/pdf", `attachment; filename="nests.pdf"`)

	unknown := problemOf(t, e.get(downloadPath(1<<50), alice, nil), http.StatusNotFound)
	for name, as := range map[string]*identity.User{"another organisation": bob, "anonymous": nil} {
		r := e.get(downloadPath(ev.ID), as, nil)
		assert.Equal(t, unknown, problemOf(t, r, http.StatusNotFound), name)
		assert.NotContains(t, string(r.body), "%PDF", name)
	}
	assert.NotContains(t, e.logs.String(), stored, "the app's log never names a stored file")
	e.noErrorLogged(t)

	// A row whose file is gone is the server's fault, not a missing
	// resource: it is logged as an error.
	require.NoError(t, os.Remove(filepath.Join(e.media, stored)))
	problemOf(t, e.get(downloadPath(ev.ID), alice, nil), http.StatusInternalServerError)
	assert.Contains(t, e.logs.String(), `"level":"ERROR"`)
}
