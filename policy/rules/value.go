package rules

import (
	"maps"
	"slices"
	"strconv"
)

// Kind says what a Value holds.
type Kind uint8

// The kinds of Value. Unknown and Redacted both mean "the policy cannot see
// this value"; they differ only in why, which the finding explains.
const (
	// Null is also what a missing property reads as: pulumi-docker's provider
	// Check fills many defaults, so "absent" and "default" must mean the same.
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
	// Unknown is a computed value: during preview, an input that depends on a
	// resource not yet created (a RandomPassword result, an image digest).
	Unknown
	// Redacted is a secret whose plaintext the input file does not carry:
	// ciphertext in a `pulumi stack export`, "[secret]" in `pulumi preview --json`.
	Redacted
)

// Value is a decoded Pulumi property value that remembers which values are
// secret and which are unknown. Its accessors never panic: asking an array
// for a key or a string for items yields Null, so a policy can walk garbage.
//
// Secretness is inherited: Get and Items mark children of a secret value as
// secret, because pulumi.ToSecret on a whole array (the app's Envs) flags the
// array, not its elements.
type Value struct {
	Kind   Kind
	Secret bool

	b   bool
	n   float64
	s   string
	arr []Value
	obj map[string]Value
}

// NullValue returns the null value.
func NullValue() Value { return Value{} }

// BoolValue returns a boolean value.
func BoolValue(b bool) Value { return Value{Kind: Bool, b: b} }

// NumberValue returns a number value (Pulumi numbers are float64 on the wire).
func NumberValue(n float64) Value { return Value{Kind: Number, n: n} }

// StringValue returns a string value.
func StringValue(s string) Value { return Value{Kind: String, s: s} }

// ArrayValue returns an array value.
func ArrayValue(items ...Value) Value { return Value{Kind: Array, arr: items} }

// ObjectValue returns an object value.
func ObjectValue(fields map[string]Value) Value {
	if fields == nil {
		fields = map[string]Value{}
	}
	return Value{Kind: Object, obj: fields}
}

// UnknownValue returns a value that is not known yet (computed during preview).
func UnknownValue() Value { return Value{Kind: Unknown} }

// RedactedValue returns a secret whose plaintext is not available.
func RedactedValue() Value { return Value{Kind: Redacted, Secret: true} }

// AsSecret returns v flagged as secret.
func (v Value) AsSecret() Value { v.Secret = true; return v }

// IsUnknown reports whether the policy cannot see the value (computed or redacted).
func (v Value) IsUnknown() bool { return v.Kind == Unknown || v.Kind == Redacted }

// IsNull reports whether the value is null or missing.
func (v Value) IsNull() bool { return v.Kind == Null }

// Get returns the named field of an object. A field of an unknown value is
// unknown (so unknown-ness is never mistaken for absence); a field of
// anything else that is not an object is Null.
func (v Value) Get(key string) Value {
	switch v.Kind {
	case Unknown, Redacted:
		return Value{Kind: v.Kind, Secret: v.Secret}
	case Object:
		child, ok := v.obj[key]
		if !ok {
			return Value{}
		}
		child.Secret = child.Secret || v.Secret
		return child
	}
	return Value{}
}

// Keys returns an object's field names, sorted.
func (v Value) Keys() []string {
	if v.Kind != Object {
		return nil
	}
	return slices.Sorted(maps.Keys(v.obj))
}

// Items returns an array's elements (nil for anything else).
func (v Value) Items() []Value {
	if v.Kind != Array {
		return nil
	}
	out := make([]Value, len(v.arr))
	for i, item := range v.arr {
		item.Secret = item.Secret || v.Secret
		out[i] = item
	}
	return out
}

// Str returns the string held, if the value is a string.
func (v Value) Str() (string, bool) { return v.s, v.Kind == String }

// Num returns the number held, accepting numeric strings because some
// providers round-trip integers through strings.
func (v Value) Num() (float64, bool) {
	switch v.Kind {
	case Number:
		return v.n, true
	case String:
		n, err := strconv.ParseFloat(v.s, 64)
		return n, err == nil
	}
	return 0, false
}

// BoolOr returns the boolean held, or def when the value is not a boolean.
func (v Value) BoolOr(def bool) bool {
	switch v.Kind {
	case Bool:
		return v.b
	case String:
		if b, err := strconv.ParseBool(v.s); err == nil {
			return b
		}
	}
	return def
}

// Display renders the value for a finding message: "[secret]" for anything
// secret-flagged, so a policy message can never echo a secret.
func (v Value) Display() string {
	if v.Secret {
		return "[secret]"
	}
	switch v.Kind {
	case Null:
		return "null"
	case Bool:
		return strconv.FormatBool(v.b)
	case Number:
		return strconv.FormatFloat(v.n, 'f', -1, 64)
	case String:
		return strconv.Quote(v.s)
	case Array:
		return "[array]"
	case Object:
		return "[object]"
	case Unknown:
		return "[unknown]"
	}
	return "[secret]"
}

// secretStrings collects every secret-flagged string below v (and the value
// half of secret KEY=VALUE strings), for the last-line redaction of messages.
func (v Value) secretStrings(out []string) []string {
	switch v.Kind {
	case String:
		if v.Secret && v.s != "" {
			out = append(out, v.s)
			if _, val, ok := cutEnv(v.s); ok && val != "" {
				out = append(out, val)
			}
		}
	case Array:
		for _, item := range v.Items() {
			out = item.secretStrings(out)
		}
	case Object:
		for _, k := range v.Keys() {
			out = v.Get(k).secretStrings(out)
		}
	}
	return out
}
