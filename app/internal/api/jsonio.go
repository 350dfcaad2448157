package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/go-playground/validator/v10"

	"github.com/nbms-deploy/nbms/app/internal/bodylimit"
	"github.com/nbms-deploy/nbms/app/internal/problem"
)

// decodeJSON reads r's body into dst (a pointer to a request struct) and
// validates it. On any problem it answers (415, 413 or 400 naming the
// field) and returns false; the handler then just returns.
//
// The rules: Content-Type must be application/json (a form or text/plain
// body is refused, which also keeps cross-site "simple" requests out);
// unknown fields are refused (no mass assignment); the body must be exactly
// one JSON value; its size is bounded by the server's body limit.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	if !isJSON(r.Header.Get("Content-Type")) {
		problem.Write(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	if err := decodeStrict(r.Body, dst); err != nil {
		writeDecodeError(w, err)
		return false
	}
	if path, found := findNUL(reflect.ValueOf(dst), ""); found {
		writeFieldErrors(w, map[string]string{path: "must not contain NUL characters"})
		return false
	}
	if fields := validate(dst); fields != nil {
		writeFieldErrors(w, fields)
		return false
	}
	return true
}

// isJSON accepts application/json with no charset or UTF-8 (RFC 8259
// allows no other encoding).
func isJSON(contentType string) bool {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil || mediaType != "application/json" {
		return false
	}
	charset, ok := params["charset"]
	return !ok || strings.EqualFold(charset, "utf-8")
}

// decodeError is a refusal of a body, before any validation rule.
type decodeError struct {
	detail string
	field  string // "" when the error is about the body as a whole
	reason string
	cause  error // a *http.MaxBytesError means 413
}

func (e *decodeError) Error() string { return e.detail }
func (e *decodeError) Unwrap() error { return e.cause }

// maxReportedFieldLen bounds an unknown field's name in the answer: it is
// client text.
const maxReportedFieldLen = 64

// decodeStrict decodes exactly one JSON value from body into dst, refusing
// unknown fields and trailing data. Its errors are *decodeError.
func decodeStrict(body io.Reader, dst any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return classify(err)
	}
	// A second value (or garbage) after the first is refused: two parsers
	// could disagree on which value is meant.
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case bodylimit.IsTooLarge(err):
		return &decodeError{detail: "body too large", cause: err}
	default:
		return &decodeError{detail: "the body must be a single JSON value"}
	}
}

func classify(err error) error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case bodylimit.IsTooLarge(err):
		return &decodeError{detail: "body too large", cause: err}
	case errors.Is(err, io.EOF):
		return &decodeError{detail: "the body is empty; send a JSON object"}
	case errors.As(err, &syntaxErr):
		return &decodeError{detail: fmt.Sprintf("malformed JSON at byte %d", syntaxErr.Offset)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &decodeError{detail: "malformed JSON: the body ends too early"}
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return &decodeError{detail: "the body must be a JSON object"}
		}
		return &decodeError{detail: "a field has the wrong type", field: typeErr.Field, reason: "must be " + jsonKind(typeErr.Type)}
	}
	// encoding/json reports unknown fields only as text.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		if len(name) > maxReportedFieldLen {
			name = name[:maxReportedFieldLen]
		}
		return &decodeError{detail: "the body has an unknown field", field: name, reason: "unknown field"}
	}
	return &decodeError{detail: "malformed JSON"}
}

// jsonKind names t the way a JSON client thinks of it, never as a Go type.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "of another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number in range"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "of another type"
}

func writeDecodeError(w http.ResponseWriter, err error) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		bodylimit.WriteTooLarge(w, tooBig.Limit)
		return
	}
	var de *decodeError
	if errors.As(err, &de) && de.field != "" {
		problem.WriteDetails(w, problem.Details{
			Status: http.StatusBadRequest,
			Detail: de.detail,
			Errors: map[string]string{de.field: de.reason},
		})
		return
	}
	problem.Write(w, http.StatusBadRequest, err.Error())
}

// findNUL returns the JSON path of the first string (or map key) in v
// that holds a NUL character. JSON allows "\u0000" but PostgreSQL text
// cannot store it, and its refusal would otherwise surface as a 500.
func findNUL(v reflect.Value, path string) (string, bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return findNUL(v.Elem(), path)
		}
	case reflect.String:
		if strings.ContainsRune(v.String(), 0) {
			return path, true
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if p, found := findNUL(v.Field(i), join(path, name)); found {
				return p, true
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if p, found := findNUL(v.Index(i), path+"["+strconv.Itoa(i)+"]"); found {
				return p, true
			}
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			// The key is client text of any length: the path stops at the map.
			if _, found := findNUL(iter.Key(), path); found {
				return path, true
			}
			if _, found := findNUL(iter.Value(), path); found {
				return path, true
			}
		}
	}
	return "", false
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// validate applies dst's `validate` struct tags and returns the broken
// rules by JSON field path (e.g. "data_points[2].year"), or nil.
func validate(dst any) map[string]string {
	err := structValidator.Struct(dst)
	if err == nil {
		return nil
	}
	var errs validator.ValidationErrors
	if !errors.As(err, &errs) {
		// Only a wiring mistake (a non-struct) gets here.
		panic(fmt.Sprintf("api: validate %T: %v", dst, err))
	}
	out := make(map[string]string, len(errs))
	for _, fe := range errs {
		// The namespace starts with the Go type name of the root.
		_, path, _ := strings.Cut(fe.Namespace(), ".")
		out[path] = reason(fe)
	}
	return out
}

// structValidator caches struct metadata, so it is built once.
var structValidator = newValidator()

// indicatorCodePattern is the schema's rule for codes: a code is a URL path
// segment.
var indicatorCodePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)

func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	must(v.RegisterValidation("indicator_code", func(fl validator.FieldLevel) bool {
		return indicatorCodePattern.MatchString(fl.Field().String())
	}))
	return v
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// reason turns a broken rule into a sentence for the client.
func reason(fe validator.FieldError) string {
	unit := ""
	switch fe.Kind() {
	case reflect.String:
		unit = " characters"
	case reflect.Slice, reflect.Map, reflect.Array:
		unit = " items"
	}
	switch fe.Tag() {
	case "required":
		return "required"
	case "max", "lte":
		return "must be at most " + fe.Param() + unit
	case "min", "gte":
		return "must be at least " + fe.Param() + unit
	case "len":
		return "must have exactly " + fe.Param() + unit
	case "oneof":
		return "must be one of: " + strings.ReplaceAll(fe.Param(), " ", ", ")
	case "eq":
		return fmt.Sprintf("must be %q", fe.Param())
	case "isdefault":
		return "must not be sent here"
	case "indicator_code":
		return "must be 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit"
	}
	return "is invalid"
}
