package api

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/nbms-deploy/nbms/app/internal/store"
)

// A cursor is an opaque page position: base64url of a small JSON keyset
// key. It needs no signature: a forged cursor can only name a position the
// client could have reached by paging, so decoding only checks it is
// well-formed. The kind stops a cursor of one list from being replayed on
// another, where it would silently mean something else.
type cursor struct {
	Kind string `json:"k"`
	Code string `json:"c,omitempty"`
	ID   int64  `json:"i"`
}

// Cursor kinds.
const (
	indicatorCursor = "indicator"
	datasetCursor   = "dataset"
	siteCursor      = "site"
	auditCursor     = "audit"
)

// maxCursorLen is far above any cursor this API issues.
const maxCursorLen = 200

func encodeCursor(c cursor) *string {
	b, _ := json.Marshal(c) // cannot fail: strings and an integer
	s := base64.RawURLEncoding.EncodeToString(b)
	return &s
}

// decodeCursor parses s as a cursor of the given kind; ok is false for
// anything this API did not (or could not) issue.
func decodeCursor(s, kind string) (c cursor, ok bool) {
	if len(s) > maxCursorLen {
		return cursor{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, false
	}
	if err := decodeStrict(strings.NewReader(string(b)), &c); err != nil {
		return cursor{}, false
	}
	if c.Kind != kind || c.ID <= 0 {
		return cursor{}, false
	}
	if kind == indicatorCursor && !indicatorCodePattern.MatchString(c.Code) {
		return cursor{}, false
	}
	if kind != indicatorCursor && c.Code != "" {
		return cursor{}, false
	}
	return c, true
}

// pageSize bounds how many rows one page of a list holds.
type pageSize struct {
	def int // when the request names no limit
	max int // the largest limit a request may name
}

// The page sizes of the lists: the store's, so that what the API asks for
// is what the store answers.
var (
	listPageSize = pageSize{def: store.DefaultLimit, max: store.MaxLimit}
	sitePageSize = pageSize{def: store.DefaultSiteLimit, max: store.MaxSiteLimit}
)

// pageQuery is the paging part of a list request.
type pageQuery struct {
	limit  int    // the limit asked for, or the list's default
	cursor cursor // zero when absent
	raw    string // the cursor as sent, for the ETag
}

// parsePage reads ?limit= and ?cursor= into p, adding to fields what is
// wrong with them. A limit outside 1..size.max is refused rather than
// clamped, so a client learns the bound instead of silently getting fewer
// rows.
func parsePage(q url.Values, kind string, size pageSize, fields map[string]string) (p pageQuery) {
	p.limit = size.def
	if s, ok := single(q, "limit", fields); ok && s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > size.max {
			fields["limit"] = "must be an integer from 1 to " + strconv.Itoa(size.max)
		} else {
			p.limit = n
		}
	}
	if s, ok := single(q, "cursor", fields); ok && s != "" {
		c, valid := decodeCursor(s, kind)
		if !valid {
			fields["cursor"] = "is not a cursor this list issued"
		} else {
			p.cursor, p.raw = c, s
		}
	}
	return p
}

// single returns the one value of a query parameter. A repeated parameter
// is refused: which of them would count is a parser differential.
func single(q url.Values, name string, fields map[string]string) (string, bool) {
	vs := q[name]
	switch len(vs) {
	case 0:
		return "", true
	case 1:
		return vs[0], true
	}
	fields[name] = "must be given at most once"
	return "", false
}
