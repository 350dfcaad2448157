// Package rules is the NBMS deployment policy library: every policy as a
// plain Go value with one pure evaluation function over neutral resources.
//
// The same functions serve the Pulumi policy pack (policy/plugin, run by the
// engine during preview and up) and the offline audit (policy/cmd/nbms-policy
// audit, run by CI over `pulumi preview --json` or `pulumi stack export`), so
// the gate and the report can never disagree.
package rules

import (
	"fmt"
	"sort"
	"strings"
)

// Level is an enforcement level, spelled as in Pulumi policy config files.
type Level string

// The enforcement levels a policy can have.
const (
	Advisory  Level = "advisory"
	Mandatory Level = "mandatory"
	Disabled  Level = "disabled"
)

// ParseLevel reads a level as written in a policy config file.
func ParseLevel(s string) (Level, error) {
	switch l := Level(strings.ToLower(strings.TrimSpace(s))); l {
	case Advisory, Mandatory, Disabled:
		return l, nil
	}
	return "", fmt.Errorf("unknown enforcement level %q (want advisory, mandatory or disabled)", s)
}

// Scope says whether a policy looks at one resource or the whole stack.
type Scope int

// The scopes.
const (
	ResourceScope Scope = iota
	StackScope
)

// Type tokens of the resources the policies inspect (pulumi-docker v4.10.0).
const (
	ContainerType   = "docker:index/container:Container"
	RemoteImageType = "docker:index/remoteImage:RemoteImage"
	NetworkType     = "docker:index/network:Network"
)

// Resource is the neutral view of one Pulumi resource.
type Resource struct {
	URN  string
	Type string
	// Name is the resource's logical name (the last URN segment).
	Name string
	// Properties is an Object: the resource inputs (the engine analyses
	// inputs) or, for stack policies and state files, the outputs.
	Properties Value
}

// Prop returns a top-level property.
func (r Resource) Prop(key string) Value { return r.Properties.Get(key) }

// Property is the JSON schema of one config property a policy accepts. It is
// sent to the engine as the policy's config schema and applied offline.
type Property struct {
	Type        string // "integer", "number", "boolean" or "string"
	Description string
	Default     any
	Minimum     *float64
}

// Settings are a policy's config properties with schema defaults applied.
type Settings map[string]any

// Int returns an integer setting (JSON numbers arrive as float64).
func (s Settings) Int(key string) int {
	switch v := s[key].(type) {
	case float64:
		return int(v)
	case int:
		return v
	case int64:
		return int(v)
	}
	return 0
}

// Bool returns a boolean setting.
func (s Settings) Bool(key string) bool {
	b, _ := s[key].(bool)
	return b
}

// Rule is one policy.
type Rule struct {
	// Name is stable: reports, SARIF rule ids and policy config key on it.
	Name string
	// Summary starts "Checks that" and cites the benchmark item.
	Summary string
	// Benchmark names the items followed (CIS Docker Benchmark v1.6.0 §5,
	// Checkov CKV_DOCKER_*, KICS query ids), for reports.
	Benchmark string
	// Level is the default enforcement level; policy config may override it.
	Level Level
	// Remediation tells the reader exactly what to change.
	Remediation string
	Scope       Scope
	// Types limits a resource policy to these type tokens.
	Types []string
	// Config is the policy's config schema (property name → schema).
	Config map[string]Property

	check      func(r Resource, s Settings, f *findings)
	checkStack func(rs []Resource, s Settings, f *findings)
}

// Description is the text the engine shows: the summary followed by the
// benchmark citation, because policyx drops every other metadata field.
func (r Rule) Description() string {
	return r.Summary + " [" + r.Benchmark + "]"
}

// AppliesTo reports whether a resource policy inspects resources of type t.
func (r Rule) AppliesTo(t string) bool {
	for _, want := range r.Types {
		if want == t {
			return true
		}
	}
	return false
}

// Settings applies the schema defaults to config properties (which may be nil).
func (r Rule) Settings(props map[string]any) Settings {
	s := Settings{}
	for k, p := range r.Config {
		s[k] = p.Default
	}
	for k, v := range props {
		if _, known := r.Config[k]; known && v != nil {
			s[k] = v
		}
	}
	return s
}

// FindingKind classifies a finding.
type FindingKind string

// The finding kinds.
const (
	// Violation: the resource breaks the policy.
	Violation FindingKind = "violation"
	// CannotEvaluate: a value the policy needs is unknown (preview) or
	// encrypted; always advisory, never a silent pass.
	CannotEvaluate FindingKind = "cannot-evaluate"
	// InternalError: the policy itself failed (a recovered panic). It is
	// reported at the policy's level: a crashed mandatory check fails closed.
	InternalError FindingKind = "internal-error"
)

// Finding is one result of one policy on one resource (or the stack).
type Finding struct {
	Policy string      `json:"policy"`
	Kind   FindingKind `json:"kind"`
	// Level is the effective level: the policy's for violations and internal
	// errors, advisory for cannot-evaluate.
	Level        Level  `json:"level"`
	URN          string `json:"urn,omitempty"`
	ResourceType string `json:"resourceType,omitempty"`
	Message      string `json:"message"`
}

// findings collects what one policy finds on one subject.
type findings struct {
	rule    Rule
	subject Resource
	secrets []string
	list    []Finding
}

func (f *findings) add(kind FindingKind, on Resource, format string, args ...any) {
	urn := on.URN
	f.list = append(f.list, Finding{
		Policy: f.rule.Name, Kind: kind, URN: urn, ResourceType: on.Type,
		Message: redact(fmt.Sprintf(format, args...), f.secrets),
	})
}

// violation reports that the subject breaks the policy.
func (f *findings) violation(format string, args ...any) {
	f.add(Violation, f.subject, format, args...)
}

// violationOn reports a violation on another resource (stack policies).
func (f *findings) violationOn(r Resource, format string, args ...any) {
	f.add(Violation, r, format, args...)
}

// unknown reports that the value at path cannot be seen, and why.
func (f *findings) unknown(path string, v Value) {
	f.unknownOn(f.subject, path, v)
}

func (f *findings) unknownOn(r Resource, path string, v Value) {
	why := "value unknown during preview; it is checked again at `pulumi up`"
	if v.Kind == Redacted {
		why = "value is secret and the input file carries only its ciphertext or \"[secret]\""
	}
	f.add(CannotEvaluate, r, "cannot evaluate %s on %s: %s", path, describe(r), why)
}

// redact replaces secret strings in a message. It is the last line of
// defence: messages are built with Value.Display, which already prints
// "[secret]". Strings shorter than 6 bytes are left alone so that a secret
// "true" cannot turn every word into "[secret]".
func redact(msg string, secrets []string) string {
	sorted := append([]string(nil), secrets...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, s := range sorted {
		if len(s) >= 6 {
			msg = strings.ReplaceAll(msg, s, "[secret]")
		}
	}
	return msg
}

// describe names a resource for messages: its logical name and role.
func describe(r Resource) string {
	name := r.Name
	if name == "" {
		name = r.URN
	}
	if role := labelOf(r, LabelRole); role != "" {
		return fmt.Sprintf("container %q (role %s)", name, role)
	}
	kind := "resource"
	switch r.Type {
	case ContainerType:
		kind = "container"
	case RemoteImageType:
		kind = "remote image"
	case NetworkType:
		kind = "network"
	}
	return fmt.Sprintf("%s %q", kind, name)
}
