package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/nbms-deploy/nbms/app/config"
	"github.com/nbms-deploy/nbms/app/internal/identity"
	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// downloadEvidence answers GET /api/evidence/{id}/content with the file,
// to a signed-in user who may see its dataset (their organisation's, or a
// public one: who may read the metadata may read the bytes).
//
// Everyone else gets the 404 of an unknown id: anonymous requests too
// (not 401) and users of another organisation (not 403), so the answer
// never confirms that a file exists. Evidence can locate sensitive
// species.
//
// The app only authorises. Behind nginx (MEDIA_X_ACCEL_REDIRECT=true) it
// answers with an empty body and X-Accel-Redirect to the edge's internal
// location of the media root, and nginx sends the bytes; Go never streams
// the file, and the stored name never appears in a URL a client sends or
// a log records. Without nginx in front (dev, tests) it sends the file
// itself with the same headers.
func (a *api) downloadEvidence(w http.ResponseWriter, r *http.Request) {
	u, ok := identity.From(r.Context())
	if !ok || !slices.Contains(members, u.Role) {
		writeNoSuchResource(w)
		return
	}
	id, ok := pathID(w, r, "id")
	if !ok {
		return
	}
	f, err := a.Store.GetEvidenceFileVisibleTo(r.Context(), u.ID, id)
	if err != nil {
		a.storeError(w, r, err, nil)
		return
	}
	// The schema enforces the rule too; checked again here because the
	// name goes into a path and a header.
	if !storedNamePattern.MatchString(f.StoredName) || strings.Contains(f.StoredName, "..") {
		a.internalError(w, r, fmt.Errorf("evidence file %d has a malformed stored name", f.ID))
		return
	}

	h := w.Header()
	h.Set("Content-Type", f.ContentType)
	h.Set("Content-Disposition", attachment(f.OriginalName))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", config.AttachmentCSP)
	// Evidence is one user's to read: no shared cache keeps it, and no
	// browser cache either (a shared computer, a revoked access).
	h.Set("Cache-Control", "private, no-store")

	if a.XAccelRedirect {
		// nginx keeps Content-Type, Content-Disposition and Cache-Control
		// through the redirect, and sets its own copies of the security
		// headers. The body is never read, so none is sent.
		h.Set("X-Accel-Redirect", config.ProtectedMediaPrefix+f.StoredName)
		w.WriteHeader(http.StatusOK)
		return
	}

	// os.OpenInRoot refuses any name that would leave the media root.
	file, err := os.OpenInRoot(a.MediaRoot, f.StoredName)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("evidence file %d: the row has no file: %w", f.ID, err)
		}
		a.internalError(w, r, err)
		return
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	// ServeContent answers HEAD, Range and If-Modified-Since as nginx would;
	// the Content-Type set above stops it from sniffing one.
	http.ServeContent(w, r, "", info.ModTime(), file)
}

// storedNamePattern is the schema's rule for evidence_files.stored_name.
var storedNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{15,199}$`)

// writeNoSuchResource is the one answer for an id that is unknown, or not
// the caller's to know about.
func writeNoSuchResource(w http.ResponseWriter) {
	problem.Write(w, http.StatusNotFound, "no such resource")
}

// attachment is the Content-Disposition of a download: always attachment,
// never inline. The uploader's name is shown to people, so it is kept, but
// as a quoted ASCII fallback (RFC 6266) in which every character that is
// not plain printable ASCII, a quote, a backslash or a percent sign (which
// some browsers decode) becomes "_"; when that changed the name, the exact
// name follows in RFC 8187 encoding, which browsers prefer.
func attachment(name string) string {
	fallback := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' || r == '%' {
			return '_'
		}
		return r
	}, name)
	v := `attachment; filename="` + fallback + `"`
	if fallback != name {
		v += "; filename*=UTF-8''" + encodeExtValue(name)
	}
	return v
}

// encodeExtValue percent-encodes every byte of s that is not an attr-char
// of RFC 8187.
func encodeExtValue(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
