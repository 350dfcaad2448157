// Package logging owns everything the app writes about a request: the JSON
// log handler that scrubs secrets, request IDs, and the one-line access log.
//
// Secrets are scrubbed in exactly one place, Redactor, so that the log
// handler and the Sentry reporter (package errtrack) cannot disagree about
// what counts as a secret.
package logging

import (
	"slices"
	"strings"
)

// Redacted replaces every scrubbed value.
const Redacted = "[REDACTED]"

// minSecretLen is the shortest configured secret that is replaced verbatim.
// Shorter values (a 4-character dev password such as "test") would match
// ordinary words and shred every log line; they are still caught by the
// key-based rules whenever they appear as "password=…" or inside a URL.
const minSecretLen = 6

// Redactor scrubs secrets from free text. It is safe for concurrent use and
// immutable after NewRedactor.
type Redactor struct {
	secrets []string // longest first, so a secret containing another goes whole
}

// NewRedactor returns a Redactor that, on top of its pattern rules, replaces
// the given secret values (app secret key, database and Redis passwords,
// Sentry DSN key…) wherever they appear verbatim. Empty values, values
// shorter than 6 bytes and values that are part of "[REDACTED]" itself are
// ignored (see minSecretLen); duplicates are collapsed.
func NewRedactor(secretValues ...string) *Redactor {
	var secrets []string
	for _, s := range secretValues {
		if len(s) < minSecretLen || strings.Contains(Redacted, s) || slices.Contains(secrets, s) {
			continue
		}
		secrets = append(secrets, s)
	}
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	return &Redactor{secrets: secrets}
}

// String scrubs s and returns it; s is returned unchanged (and without
// allocating) when there is nothing to scrub. It redacts
//   - URL userinfo passwords: postgres://user:PASS@host, redis://:PASS@host;
//   - values of sensitive keys (see IsSensitiveKey) in query strings
//     (?token=abc&x=1), key=value and key: value text, and JSON or
//     escaped-JSON "key":"value" pairs;
//   - the credential after "Bearer ";
//   - the configured secret values, last, so no rule can leave one behind.
//
// A nil Redactor applies the rules without configured secrets.
func (r *Redactor) String(s string) string {
	// Pairs first: a sensitive key takes its whole value, URL included.
	if strings.IndexByte(s, '=') >= 0 || strings.IndexByte(s, ':') >= 0 {
		s = redactPairs(s)
	}
	if strings.Contains(s, "://") {
		s = redactURLPasswords(s)
	}
	if i := indexFold(s, "bearer "); i >= 0 {
		s = redactBearer(s, i)
	}
	if r != nil {
		s = r.replaceSecrets(s)
	}
	return s
}

// replaceSecrets repeats until nothing changes because a replacement can
// complete a new occurrence: with secret "ED]abc", "ED]abcabc" becomes
// "[REDACTED]abc". It terminates because every round consumes original
// text and no secret fits inside "[REDACTED]" (NewRedactor drops those).
func (r *Redactor) replaceSecrets(s string) string {
	for changed := true; changed; {
		changed = false
		for _, secret := range r.secrets {
			if strings.Contains(s, secret) {
				s = strings.ReplaceAll(s, secret, Redacted)
				changed = true
			}
		}
	}
	return s
}

// sensitiveFragments are matched anywhere in a normalised key (lower case,
// "-", "." and " " turned into "_"). Substring matching over-redacts on
// purpose: "session_count" or "tokens_used" lose their value, which is a
// cheaper mistake than leaking "sessionid". Rename such attributes (e.g.
// "active_logins") if their value matters.
var sensitiveFragments = []string{
	"password", "passwd", "passphrase", "secret", "token", "authorization",
	"cookie", "session", "api_key", "apikey", "dsn", "private_key",
	"privatekey", "access_key", "accesskey", "credential", "database_url",
	"csrf", "jwt", "signature",
}

// sensitiveExact are too short to match as fragments ("pass" is in
// "passage", "auth" in "author", a common taxonomy field) but are secrets
// when they are the whole key.
var sensitiveExact = []string{"pass", "pwd", "auth"}

// IsSensitiveKey reports whether a value stored under key (an attribute
// name, header name, query parameter or JSON field) must never be logged.
// Matching is case-insensitive and treats "-", "." and " " like "_", so
// "X-Api-Key", "api.key" and "API_KEY" all match.
func (r *Redactor) IsSensitiveKey(key string) bool { return isSensitiveKey(key) }

func isSensitiveKey(key string) bool {
	if key == "" {
		return false
	}
	var buf [64]byte
	norm := buf[:0]
	if len(key) > len(buf) {
		norm = make([]byte, 0, len(key))
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '-' || c == '.' || c == ' ':
			c = '_'
		}
		norm = append(norm, c)
	}
	// One pass over the key, trying only the fragments that start with
	// the current byte: this runs for every attribute of every log line.
	for i, c := range norm {
		for _, f := range fragmentsByFirstByte[c] {
			if len(norm)-i >= len(f) && string(norm[i:i+len(f)]) == f {
				return true
			}
		}
	}
	return slices.Contains(sensitiveExact, string(norm))
}

var fragmentsByFirstByte = func() (t [256][]string) {
	for _, f := range sensitiveFragments {
		t[f[0]] = append(t[f[0]], f)
	}
	return t
}()

// redactURLPasswords replaces the password of every scheme://user:pass@host
// authority. The userinfo is taken to run to the last "@" before the end of
// the URL token, so an unencoded "@" or "/" in a password is still covered;
// the price is over-redaction of the rare URL with both a port and an "@"
// in its path.
func redactURLPasswords(s string) string {
	var b strings.Builder
	last, from := 0, 0
	for {
		i := strings.Index(s[from:], "://")
		if i < 0 {
			break
		}
		start := from + i + len("://")
		end := start
		for end < len(s) && !isURLTerminator(s[end]) {
			end++
		}
		from = end
		at := strings.LastIndexByte(s[start:end], '@')
		if at < 0 {
			continue
		}
		colon := strings.IndexByte(s[start:start+at], ':')
		if colon < 0 || colon == at-1 {
			continue // no password, or an empty one
		}
		b.WriteString(s[last : start+colon+1])
		b.WriteString(Redacted)
		last = start + at
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isURLTerminator(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '"', '\'', '<', '>', '`':
		return true
	}
	return false
}

// redactPairs finds every "key=value", "key: value" or "key":"value" whose
// key is sensitive and replaces the value. It scans separator by separator
// instead of matching key=value pairs left to right, so a harmless pair can
// never swallow the sensitive one after it ("a=password=hunter2").
func redactPairs(s string) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		j := strings.IndexAny(s[i:], "=:")
		if j < 0 {
			break
		}
		sep := i + j
		i = sep + 1
		key := keyBefore(s, sep)
		if !isSensitiveKey(key) {
			continue
		}
		vStart, vEnd := valueAfter(s, sep+1, wholeLineKey(key))
		if vStart >= vEnd || vStart < last {
			continue
		}
		b.WriteString(s[last:vStart])
		b.WriteString(Redacted)
		last, i = vEnd, vEnd
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// keyBefore returns the key that ends just before the separator at sep,
// stepping back over blanks and a closing quote (plain or backslash-escaped,
// as in JSON inside a JSON string).
func keyBefore(s string, sep int) string {
	k := sep
	for k > 0 && (s[k-1] == ' ' || s[k-1] == '\t') {
		k--
	}
	if k > 0 && (s[k-1] == '"' || s[k-1] == '\'') {
		k--
		if k > 0 && s[k-1] == '\\' {
			k--
		}
	}
	end := k
	for k > 0 && isKeyByte(s[k-1]) {
		k--
	}
	return s[k:end]
}

// isKeyByte excludes "." on purpose: "token_store.go:42" in a stack trace
// must not look like a key named "token_store.go".
func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// wholeLineKey reports whether a key's unquoted value runs to the end of
// the line: a Cookie header carries several "name=value; " pairs, all secret.
func wholeLineKey(key string) bool {
	return indexFold(key, "cookie") >= 0
}

// valueAfter locates the value starting at or after v. Quoted values keep
// their quotes; an unquoted value ends at a blank or a list delimiter, and
// an HTTP auth scheme ("Bearer ", "Basic ") in front of it is kept.
func valueAfter(s string, v int, toEOL bool) (start, end int) {
	for v < len(s) && (s[v] == ' ' || s[v] == '\t') {
		v++
	}
	if v >= len(s) {
		return v, v
	}
	switch {
	case s[v] == '"' || s[v] == '\'':
		q := s[v]
		end = v + 1
		for end < len(s) && s[end] != q {
			if s[end] == '\\' {
				end++
			}
			end++
		}
		return v + 1, min(end, len(s))
	case s[v] == '\\' && v+1 < len(s) && s[v+1] == '"':
		i := strings.Index(s[v+2:], `\"`)
		if i < 0 {
			return v + 2, len(s)
		}
		return v + 2, v + 2 + i
	}
	if toEOL {
		end = v
		for end < len(s) && s[end] != '\n' && s[end] != '\r' && s[end] != '"' {
			end++
		}
		return v, end
	}
	v = skipAuthScheme(s, v)
	end = v
	for end < len(s) && !isValueTerminator(s[end]) {
		end++
	}
	return v, end
}

func isValueTerminator(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '&', ',', ';', '"', '\'', '}', ']', ')', '<', '>':
		return true
	}
	return false
}

var authSchemes = []string{"bearer ", "basic ", "digest ", "token ", "negotiate "}

// skipAuthScheme steps over "Bearer " and friends: the scheme name is
// harmless and tells the reader what kind of credential was sent.
func skipAuthScheme(s string, v int) int {
	for _, scheme := range authSchemes {
		if len(s)-v > len(scheme) && strings.EqualFold(s[v:v+len(scheme)], scheme) {
			v += len(scheme)
			for v < len(s) && s[v] == ' ' {
				v++
			}
			return v
		}
	}
	return v
}

// redactBearer replaces the credential after every "Bearer " (RFC 6750
// b64token characters), even when no Authorization key precedes it.
func redactBearer(s string, first int) string {
	var b strings.Builder
	last := 0
	for i := first; i >= 0; {
		if i > 0 && isKeyByte(s[i-1]) { // part of a longer word
			i = nextFold(s, i+1, "bearer ")
			continue
		}
		v := i + len("bearer ")
		for v < len(s) && s[v] == ' ' {
			v++
		}
		end := v
		for end < len(s) && isTokenByte(s[end]) {
			end++
		}
		if end > v && s[v:end] != Redacted {
			b.WriteString(s[last:v])
			b.WriteString(Redacted)
			last = end
		}
		i = nextFold(s, max(end, i+1), "bearer ")
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isTokenByte(c byte) bool {
	return isKeyByte(c) || c == '.' || c == '~' || c == '+' || c == '/' || c == '='
}

func nextFold(s string, from int, sub string) int {
	if from >= len(s) {
		return -1
	}
	if i := indexFold(s[from:], sub); i >= 0 {
		return from + i
	}
	return -1
}

// indexFold is an allocation-free, ASCII case-insensitive strings.Index for
// a lower-case sub.
func indexFold(s, sub string) int {
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if lower(s[i]) == sub[0] && strings.EqualFold(s[i:i+n], sub) {
			return i
		}
	}
	return -1
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
