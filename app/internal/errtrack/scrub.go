package errtrack

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/getsentry/sentry-go"

	"github.com/nbms-deploy/nbms/app/internal/logging"
)

// credentialHeaders are replaced whatever their name looks like to the
// Redactor; with the SDK's own list (sentry.IsSensitiveHeader, which adds
// client-IP headers) and Redactor.IsSensitiveKey they decide which header
// values never leave the process.
var credentialHeaders = []string{"Authorization", "Cookie", "Set-Cookie", "X-Api-Key", "Proxy-Authorization"}

// scrubEvent is the BeforeSend hook: every event, whoever captured it,
// passes through here on its way out. It copies what it changes instead of
// editing in place, because breadcrumbs and context maps may still be
// shared with a scope.
func (r *Reporter) scrubEvent(event *sentry.Event, _ *sentry.EventHint) *sentry.Event {
	red := r.redactor
	event.Message = red.String(event.Message)
	event.Transaction = red.String(event.Transaction)
	// Only the opaque ID: no e-mail, username or IP address.
	event.User = sentry.User{ID: event.User.ID}

	if len(event.Exception) > 0 {
		exceptions := make([]sentry.Exception, len(event.Exception))
		for i, e := range event.Exception {
			e.Value = red.String(e.Value)
			if e.Mechanism != nil && e.Mechanism.Data != nil {
				m := *e.Mechanism
				m.Data = scrubMap(red, m.Data)
				e.Mechanism = &m
			}
			exceptions[i] = e
		}
		event.Exception = exceptions
	}

	if event.Request != nil {
		event.Request = scrubRequest(red, *event.Request)
	}

	if len(event.Tags) > 0 {
		tags := make(map[string]string, len(event.Tags))
		for k, v := range event.Tags {
			tags[k] = scrubString(red, k, v)
		}
		event.Tags = tags
	}

	if len(event.Contexts) > 0 {
		contexts := make(map[string]sentry.Context, len(event.Contexts))
		for name, c := range event.Contexts {
			if red.IsSensitiveKey(name) {
				contexts[name] = sentry.Context{"value": logging.Redacted}
				continue
			}
			contexts[name] = scrubMap(red, c)
		}
		event.Contexts = contexts
	}

	if len(event.Breadcrumbs) > 0 {
		crumbs := make([]*sentry.Breadcrumb, len(event.Breadcrumbs))
		for i, b := range event.Breadcrumbs {
			if b == nil {
				continue
			}
			c := *b
			c.Message = red.String(c.Message)
			c.Data = scrubMap(red, c.Data)
			crumbs[i] = &c
		}
		event.Breadcrumbs = crumbs
	}
	return event
}

// scrubRequest keeps what locates the failure (method, path, harmless
// headers and query parameters) and drops what Sentry never needs: the
// body, cookies and the environment (client address).
func scrubRequest(red *logging.Redactor, req sentry.Request) *sentry.Request {
	if i := strings.IndexAny(req.URL, "?#"); i >= 0 {
		req.URL = req.URL[:i]
	}
	req.URL = red.String(req.URL)
	// "token=abc&page=2": the key rules redact sensitive parameters.
	req.QueryString = red.String(req.QueryString)
	if req.Cookies != "" {
		req.Cookies = logging.Redacted
	}
	req.Data = ""
	req.Env = nil
	if len(req.Headers) > 0 {
		headers := make(map[string]string, len(req.Headers))
		for name, value := range req.Headers {
			if isCredentialHeader(red, name) {
				headers[name] = logging.Redacted
				continue
			}
			headers[name] = red.String(value)
		}
		req.Headers = headers
	}
	return &req
}

func isCredentialHeader(red *logging.Redactor, name string) bool {
	for _, h := range credentialHeaders {
		if http.CanonicalHeaderKey(name) == h {
			return true
		}
	}
	return sentry.IsSensitiveHeader(name) || red.IsSensitiveKey(name)
}

func scrubString(red *logging.Redactor, key, value string) string {
	if red.IsSensitiveKey(key) {
		return logging.Redacted
	}
	return red.String(value)
}

// scrubMap returns a scrubbed copy of m (nil stays nil).
func scrubMap(red *logging.Redactor, m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if red.IsSensitiveKey(k) {
			out[k] = logging.Redacted
			continue
		}
		out[k] = scrubValue(red, v)
	}
	return out
}

func scrubValue(red *logging.Redactor, v any) any {
	switch v := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return v
	case string:
		return red.String(v)
	case error:
		return red.String(v.Error())
	case fmt.Stringer:
		return red.String(v.String())
	case map[string]any:
		return scrubMap(red, v)
	case map[string]string:
		out := make(map[string]string, len(v))
		for k, s := range v {
			out[k] = scrubString(red, k, s)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = scrubValue(red, e)
		}
		return out
	case []string:
		out := make([]string, len(v))
		for i, s := range v {
			out[i] = red.String(s)
		}
		return out
	}
	// Anything else would be marshalled by the SDK, out of our sight:
	// send its scrubbed JSON text instead.
	b, err := json.Marshal(v)
	if err != nil {
		return red.String(fmt.Sprintf("%+v", v))
	}
	return red.String(string(b))
}
