package rules

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// CheckResource runs one resource policy on one resource and returns its
// findings with Policy, Kind and URN set; Level is left for the caller (the
// plugin lets the engine apply it, Evaluate applies Config). A panic inside
// the policy becomes an InternalError finding instead of killing the pack.
func (r Rule) CheckResource(res Resource, s Settings) (out []Finding) {
	if r.Scope != ResourceScope || r.check == nil || !r.AppliesTo(res.Type) {
		return nil
	}
	f := &findings{rule: r, subject: res, secrets: res.Properties.secretStrings(nil)}
	defer recoverInto(f, res, &out)
	r.check(res, s, f)
	return f.list
}

// CheckStack runs one stack policy over every resource of the stack.
func (r Rule) CheckStack(rs []Resource, s Settings) (out []Finding) {
	if r.Scope != StackScope || r.checkStack == nil {
		return nil
	}
	var secrets []string
	for _, res := range rs {
		secrets = res.Properties.secretStrings(secrets)
	}
	f := &findings{rule: r, secrets: secrets}
	defer recoverInto(f, Resource{}, &out)
	r.checkStack(rs, s, f)
	return f.list
}

func recoverInto(f *findings, on Resource, out *[]Finding) {
	if p := recover(); p != nil {
		// %T, not %v: a panic value could quote the data being walked.
		f.add(InternalError, on, "internal error: policy %s failed while evaluating %s (%T); treat the resource as unchecked", f.rule.Name, describe(on), p)
		*out = f.list
	}
}

// PolicyConfig is one policy's entry in a policy config file.
type PolicyConfig struct {
	// Level overrides the policy's default level when non-empty.
	Level      Level
	Properties map[string]any
}

// Config is a policy config file, in the format `pulumi preview
// --policy-pack-config` reads: {"all": "mandatory", "<policy>": "advisory" |
// {"enforcementLevel": "...", "<property>": value}}.
type Config struct {
	// All overrides every policy's default level when non-empty.
	All      Level
	Policies map[string]PolicyConfig
}

// ParseConfig reads a policy config file and checks it against the policy
// names and config schemas, so that a typo fails the audit instead of
// silently meaning "use the default".
func ParseConfig(data []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("policy config is not a JSON object: %w", err)
	}
	known := map[string]Rule{}
	for _, r := range All() {
		known[r.Name] = r
	}
	cfg := Config{Policies: map[string]PolicyConfig{}}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		msg := raw[name]
		if name == "environments" {
			continue // Pulumi Cloud ESC environments; irrelevant offline
		}
		rule, isRule := known[name]
		if !isRule && name != "all" {
			return Config{}, fmt.Errorf("policy config names unknown policy %q", name)
		}
		var level string
		if json.Unmarshal(msg, &level) == nil {
			l, err := ParseLevel(level)
			if err != nil {
				return Config{}, fmt.Errorf("%s: %w", name, err)
			}
			if name == "all" {
				cfg.All = l
			} else {
				cfg.Policies[name] = PolicyConfig{Level: l}
			}
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(msg, &obj); err != nil {
			return Config{}, fmt.Errorf("%s: want a level string or an object", name)
		}
		pc := PolicyConfig{Properties: map[string]any{}}
		for k, v := range obj {
			if k == "enforcementLevel" {
				s, _ := v.(string)
				l, err := ParseLevel(s)
				if err != nil {
					return Config{}, fmt.Errorf("%s.enforcementLevel: %w", name, err)
				}
				pc.Level = l
				continue
			}
			if name == "all" {
				return Config{}, fmt.Errorf("all: only enforcementLevel may be set")
			}
			if err := rule.validateProperty(k, v); err != nil {
				return Config{}, fmt.Errorf("%s: %w", name, err)
			}
			pc.Properties[k] = v
		}
		if name == "all" {
			cfg.All = pc.Level
		} else {
			cfg.Policies[name] = pc
		}
	}
	return cfg, nil
}

func (r Rule) validateProperty(key string, v any) error {
	p, ok := r.Config[key]
	if !ok {
		return fmt.Errorf("unknown config property %q", key)
	}
	switch p.Type {
	case "integer", "number":
		n, ok := v.(float64)
		if !ok || (p.Type == "integer" && n != float64(int64(n))) {
			return fmt.Errorf("%s must be an %s", key, p.Type)
		}
		if p.Minimum != nil && n < *p.Minimum {
			return fmt.Errorf("%s must be at least %v", key, *p.Minimum)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s must be a boolean", key)
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s must be a string", key)
		}
	}
	return nil
}

// LevelFor returns the effective level of a policy: its own entry, else
// "all", else the policy's default (Pulumi's precedence).
func (c Config) LevelFor(r Rule) Level {
	if pc, ok := c.Policies[r.Name]; ok && pc.Level != "" {
		return pc.Level
	}
	if c.All != "" {
		return c.All
	}
	return r.Level
}

// SettingsFor returns a policy's config properties with defaults applied.
func (c Config) SettingsFor(r Rule) Settings {
	return r.Settings(c.Policies[r.Name].Properties)
}

// PolicyResult summarises one policy over the evaluated resources.
type PolicyResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Benchmark   string `json:"benchmark"`
	Level       Level  `json:"level"`
	Remediation string `json:"remediation"`
	// Status is "pass", "fail", "cannot-evaluate" or "disabled".
	Status         string `json:"status"`
	Violations     int    `json:"violations"`
	CannotEvaluate int    `json:"cannotEvaluate"`
}

// ResourceResult lists the findings on one resource.
type ResourceResult struct {
	URN      string    `json:"urn"`
	Type     string    `json:"type"`
	Name     string    `json:"name"`
	Findings []Finding `json:"findings"`
}

// Report is the outcome of evaluating every policy over a stack.
type Report struct {
	Policies  []PolicyResult   `json:"policies"`
	Resources []ResourceResult `json:"resources"`
	// StackFindings are stack-policy findings not tied to one resource.
	StackFindings []Finding `json:"stackFindings"`
}

// MandatoryFailed reports whether any mandatory policy failed, which is
// what gates a deployment.
func (r Report) MandatoryFailed() bool {
	for _, p := range r.Policies {
		if p.Level == Mandatory && p.Status == "fail" {
			return true
		}
	}
	return false
}

// Findings returns every finding in report order.
func (r Report) Findings() []Finding {
	var out []Finding
	for _, res := range r.Resources {
		out = append(out, res.Findings...)
	}
	return append(out, r.StackFindings...)
}

// Evaluate runs every enabled policy over the resources: resource policies
// on each resource, then stack policies on all of them. The later test of
// the real infra program feeds it the resources registered under mocks.
func Evaluate(resources []Resource, cfg Config) Report {
	rules := All()
	byURN := map[string]*ResourceResult{}
	var order []string
	for _, res := range resources {
		if _, seen := byURN[res.URN]; !seen {
			order = append(order, res.URN)
		}
		byURN[res.URN] = &ResourceResult{URN: res.URN, Type: res.Type, Name: res.Name, Findings: []Finding{}}
	}
	var stackFindings []Finding
	counts := map[string][2]int{}
	record := func(rule Rule, level Level, fs []Finding) {
		for _, f := range fs {
			f.Level = level
			c := counts[rule.Name]
			if f.Kind == CannotEvaluate {
				f.Level = Advisory
				c[1]++
			} else {
				c[0]++
			}
			counts[rule.Name] = c
			if rr, ok := byURN[f.URN]; ok && f.URN != "" {
				rr.Findings = append(rr.Findings, f)
			} else {
				stackFindings = append(stackFindings, f)
			}
		}
	}
	report := Report{Resources: []ResourceResult{}, StackFindings: []Finding{}}
	for _, rule := range rules {
		level := cfg.LevelFor(rule)
		if level != Disabled {
			s := cfg.SettingsFor(rule)
			if rule.Scope == StackScope {
				record(rule, level, rule.CheckStack(resources, s))
			} else {
				for _, res := range resources {
					record(rule, level, rule.CheckResource(res, s))
				}
			}
		}
		c := counts[rule.Name]
		status := "pass"
		switch {
		case level == Disabled:
			status = "disabled"
		case c[0] > 0:
			status = "fail"
		case c[1] > 0:
			status = "cannot-evaluate"
		}
		report.Policies = append(report.Policies, PolicyResult{
			Name: rule.Name, Description: rule.Description(), Benchmark: rule.Benchmark,
			Level: level, Remediation: rule.Remediation, Status: status,
			Violations: c[0], CannotEvaluate: c[1],
		})
	}
	for _, urn := range order {
		report.Resources = append(report.Resources, *byURN[urn])
	}
	if stackFindings != nil {
		report.StackFindings = stackFindings
	}
	return report
}
