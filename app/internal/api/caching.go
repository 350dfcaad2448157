package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
)

// publicCacheControl lets browsers and shared caches reuse a public answer
// for a minute without asking again: open data changes rarely, and a minute
// of staleness is a fair price for absorbing bursts in caches.
const publicCacheControl = "public, max-age=60"

// setPublicCaching overrides the server's default Cache-Control: no-store
// for an anonymous, identical-for-everyone answer. Vary: Origin because the
// CORS headers differ per origin and a shared cache must not mix them up.
func setPublicCaching(h http.Header) {
	h.Set("Cache-Control", publicCacheControl)
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "Origin") {
				return // the CORS layer has added it already
			}
		}
	}
	h.Add("Vary", "Origin")
}

// weakETag makes a weak entity tag from parts. Weak, because it is
// derived from a version of the data, not from the bytes sent: two
// encodings of one version would be equal for it.
func weakETag(parts ...string) string {
	sum := sha256.New()
	for _, p := range parts {
		sum.Write([]byte(p))
		sum.Write([]byte{0}) // a separator no part contains
	}
	return `W/"` + hex.EncodeToString(sum.Sum(nil)[:16]) + `"`
}

// noneMatch reports whether an If-None-Match header value matches etag
// under the weak comparison RFC 9110 §13.1.2 prescribes for it.
func noneMatch(header, etag string) bool {
	if header == "" {
		return false
	}
	if strings.TrimSpace(header) == "*" {
		return true
	}
	want := strings.TrimPrefix(etag, "W/")
	for _, tag := range strings.Split(header, ",") {
		if strings.TrimPrefix(strings.TrimSpace(tag), "W/") == want {
			return true
		}
	}
	return false
}

// notModified answers 304 if the request's If-None-Match matches etag,
// with the caching headers a 304 must repeat and no body.
func notModified(w http.ResponseWriter, r *http.Request, etag string) bool {
	h := w.Header()
	h.Set("ETag", etag)
	setPublicCaching(h)
	if !noneMatch(r.Header.Get("If-None-Match"), etag) {
		return false
	}
	w.WriteHeader(http.StatusNotModified)
	return true
}

// pageCache keeps the encoded bodies of public answers by entity tag. A tag
// names a version of the data (see weakETag), so a cached body is never
// stale: a write makes a new tag, and the old entry is simply never asked
// for again. The cache is bounded by entries and bytes; when either bound
// would be passed it starts over, which costs one encoding per page.
type pageCache struct {
	mu       sync.Mutex
	pages    map[string][]byte
	bytes    int
	maxPages int
	maxBytes int
}

// Bounds of the public page cache: the first pages of the few lists
// portals ask for, a few MiB at most.
const (
	pageCacheEntries = 256
	pageCacheBytes   = 4 << 20
)

func newPageCache(maxPages, maxBytes int) *pageCache {
	return &pageCache{pages: map[string][]byte{}, maxPages: maxPages, maxBytes: maxBytes}
}

func (c *pageCache) get(etag string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	body, ok := c.pages[etag]
	return body, ok
}

func (c *pageCache) put(etag string, body []byte) {
	if len(body) > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pages[etag]; ok {
		return
	}
	if len(c.pages) >= c.maxPages || c.bytes+len(body) > c.maxBytes {
		clear(c.pages)
		c.bytes = 0
	}
	c.pages[etag] = body
	c.bytes += len(body)
}
