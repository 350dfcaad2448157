package logging

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

// NewHandler returns a slog.Handler that writes JSON lines to w and scrubs
// every record through r before it is encoded: the message, every string
// value, error texts, fmt.Stringer and slog.LogValuer results, JSON forms
// of other values, and the whole value of any attribute or group whose key
// is sensitive (at any depth, including attributes and groups bound with
// WithAttrs and WithGroup). Times are written in UTC.
//
// The scrubbing is a wrapping handler rather than a ReplaceAttr hook
// because ReplaceAttr never sees the message. A nil r applies the pattern
// rules only.
func NewHandler(w io.Writer, level slog.Leveler, r *Redactor) slog.Handler {
	// No ReplaceAttr: it would run for every attribute of every line, and
	// Handle can scrub and set the time zone more cheaply.
	inner := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return &redactingHandler{inner: inner, redactor: r}
}

type redactingHandler struct {
	inner    slog.Handler
	redactor *Redactor
	// inSecretGroup is set once WithGroup opened a group with a sensitive
	// name: everything logged inside it is a secret, whatever its own key.
	inSecretGroup bool
}

func (h *redactingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

func (h *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	msg := h.redactor.String(rec.Message)
	// Scrub into a stack buffer first: most records (every access log
	// line) have nothing to scrub and are passed on without a copy.
	var buf [16]slog.Attr
	attrs := buf[:0]
	changed := msg != rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		scrubbed, c := h.redact(a, h.inSecretGroup)
		changed = changed || c
		attrs = append(attrs, scrubbed)
		return true
	})
	if !changed {
		rec.Time = rec.Time.UTC() // rec is our copy; its attrs are not shared
		return h.inner.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time.UTC(), rec.Level, msg, rec.PC)
	out.AddAttrs(attrs...)
	return h.inner.Handle(ctx, out)
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	scrubbed := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		scrubbed[i], _ = h.redact(a, h.inSecretGroup)
	}
	return &redactingHandler{inner: h.inner.WithAttrs(scrubbed), redactor: h.redactor, inSecretGroup: h.inSecretGroup}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &redactingHandler{
		inner:         h.inner.WithGroup(name),
		redactor:      h.redactor,
		inSecretGroup: h.inSecretGroup || isSensitiveKey(name),
	}
}

// redact returns a copy of a that is safe to encode, and whether it
// differs from a. secret forces the value out whatever its key, for
// members of a sensitive group.
func (h *redactingHandler) redact(a slog.Attr, secret bool) (slog.Attr, bool) {
	if secret || isSensitiveKey(a.Key) {
		return slog.String(a.Key, Redacted), true
	}
	// A LogValuer may produce a secret, or a group holding one. Its
	// resolved form always counts as a change: handing the inner handler
	// the unresolved value would let it call LogValue again, unscrubbed.
	changed := a.Value.Kind() == slog.KindLogValuer
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		s := h.redactor.String(v.String())
		return slog.String(a.Key, s), changed || s != v.String()
	case slog.KindGroup:
		members := v.Group()
		scrubbed := make([]slog.Attr, len(members))
		for i, m := range members {
			var c bool
			scrubbed[i], c = h.redact(m, false)
			changed = changed || c
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(scrubbed...)}, changed
	case slog.KindAny:
		scrubbed, c := h.redactAny(v.Any())
		return slog.Attr{Key: a.Key, Value: scrubbed}, changed || c
	default:
		// Numbers, bools, durations and times cannot carry a secret.
		return slog.Attr{Key: a.Key, Value: v}, changed
	}
}

// redactAny handles values the JSON handler would otherwise format itself,
// out of reach of the Redactor. It reports whether the value changed.
func (h *redactingHandler) redactAny(x any) (slog.Value, bool) {
	var text string
	switch x := x.(type) {
	case nil:
		return slog.AnyValue(nil), false
	case error:
		return slog.StringValue(h.redactor.String(x.Error())), true
	case fmt.Stringer:
		// *url.URL, for one, prints its password.
		return slog.StringValue(h.redactor.String(x.String())), true
	}
	// Structs, maps and slices: scrub their JSON form (so a field named
	// Password is caught by the key rules). Keep the original value, and
	// with it the JSON structure, when there was nothing to scrub.
	b, err := json.Marshal(x)
	if err != nil {
		return slog.StringValue(h.redactor.String(fmt.Sprintf("%+v", x))), true
	}
	text = string(b)
	if scrubbed := h.redactor.String(text); scrubbed != text {
		return slog.StringValue(scrubbed), true
	}
	return slog.AnyValue(x), false
}
