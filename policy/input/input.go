// Package input reads the files the offline audit evaluates — the output of
// `pulumi preview --json` and of `pulumi stack export` — into neutral
// resources for policy/rules.
//
// Secrets are never decrypted: an export carries them as ciphertext and the
// preview digest as "[secret]"; both become Redacted values, which the
// policies report as "cannot evaluate" rather than guess.
package input

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/sig"

	"github.com/nbms-deploy/nbms/policy/rules"
)

// state is the part of apitype.ResourceV3 the audit reads.
type state struct {
	URN     string         `json:"urn"`
	Type    string         `json:"type"`
	Inputs  map[string]any `json:"inputs"`
	Outputs map[string]any `json:"outputs"`
}

// Preview reads a `pulumi preview --json` digest: steps[].newState carries
// each resource as it will be after the step.
func Preview(r io.Reader) ([]rules.Resource, error) {
	var doc struct {
		Steps *[]struct {
			Op       string `json:"op"`
			URN      string `json:"urn"`
			NewState *state `json:"newState"`
		} `json:"steps"`
	}
	if err := decodeJSON(r, &doc); err != nil {
		return nil, err
	}
	if doc.Steps == nil {
		return nil, errors.New("not a `pulumi preview --json` document: no steps")
	}
	var states []state
	for _, s := range *doc.Steps {
		switch s.Op {
		case "delete", "delete-replaced", "discard", "discard-replaced", "remove-pending-replace":
			continue // the resource will not exist after the preview
		}
		if s.NewState != nil {
			states = append(states, *s.NewState)
		}
	}
	return convert(states), nil
}

// StackExport reads a `pulumi stack export` file.
func StackExport(r io.Reader) ([]rules.Resource, error) {
	var doc struct {
		Deployment *struct {
			Resources []state `json:"resources"`
		} `json:"deployment"`
	}
	if err := decodeJSON(r, &doc); err != nil {
		return nil, err
	}
	if doc.Deployment == nil {
		return nil, errors.New("not a `pulumi stack export` document: no deployment")
	}
	return convert(doc.Deployment.Resources), nil
}

func decodeJSON(r io.Reader, v any) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not valid JSON: %w", err)
	}
	return nil
}

// convert keeps one entry per URN (a replace appears as several steps; the
// last new state wins) in first-seen order, and skips the engine's own
// stack and provider resources.
func convert(states []state) []rules.Resource {
	index := map[string]int{}
	var out []rules.Resource
	for _, s := range states {
		if s.Type == "pulumi:pulumi:Stack" || strings.HasPrefix(s.Type, "pulumi:providers:") {
			continue
		}
		props := s.Inputs
		if len(props) == 0 {
			props = s.Outputs
		}
		fields := make(map[string]rules.Value, len(props))
		for k, v := range props {
			fields[k] = Value(v)
		}
		res := rules.Resource{URN: s.URN, Type: s.Type, Name: nameOf(s.URN), Properties: rules.ObjectValue(fields)}
		if i, seen := index[s.URN]; seen {
			out[i] = res
			continue
		}
		index[s.URN] = len(out)
		out = append(out, res)
	}
	return out
}

// nameOf returns the logical name, the last "::" segment of a URN.
func nameOf(urn string) string {
	if i := strings.LastIndex(urn, "::"); i >= 0 {
		return urn[i+2:]
	}
	return urn
}

// Value decodes one serialized property value (encoding/json's any).
func Value(raw any) rules.Value {
	switch v := raw.(type) {
	case nil:
		return rules.NullValue()
	case bool:
		return rules.BoolValue(v)
	case float64:
		return rules.NumberValue(v)
	case string:
		switch {
		case sig.IsUnknown(v):
			return rules.UnknownValue()
		case v == "[secret]":
			return rules.RedactedValue()
		}
		return rules.StringValue(v)
	case []any:
		items := make([]rules.Value, len(v))
		for i, item := range v {
			items[i] = Value(item)
		}
		return rules.ArrayValue(items...)
	case map[string]any:
		switch v[sig.Key] {
		case sig.Secret:
			if plain, ok := v["plaintext"].(string); ok {
				var inner any
				if json.Unmarshal([]byte(plain), &inner) == nil {
					return Value(inner).AsSecret()
				}
			}
			// Ciphertext: the audit has no key and must not want one.
			return rules.RedactedValue()
		case sig.OutputValue:
			inner, known := v["value"]
			out := rules.UnknownValue()
			if known {
				out = Value(inner)
			}
			if secret, _ := v["secret"].(bool); secret {
				out = out.AsSecret()
			}
			return out
		}
		fields := make(map[string]rules.Value, len(v))
		for k, item := range v {
			fields[k] = Value(item)
		}
		return rules.ObjectValue(fields)
	}
	return rules.NullValue()
}
