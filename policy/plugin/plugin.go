// Package plugin adapts the policies of policy/rules to the Pulumi policyx
// analyzer, so that `pulumi preview|up --policy-pack <nbms-policy binary>`
// gates deployments with the same code the offline audit runs.
package plugin

import (
	"context"
	"sync"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/property"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/policyx"

	"github.com/nbms-deploy/nbms/policy/rules"
)

// PackName and Version identify the pack to the engine and in reports.
const (
	PackName = "nbms-policy"
	Version  = "0.1.0"
)

// Names of the two advisory policies that carry "cannot evaluate" findings.
// policyx reports every violation at its policy's level, so a mandatory
// policy cannot itself say "I could not look": the finding is handed to
// these advisory policies instead of passing silently or blocking a preview
// whose values are merely not known yet.
const (
	CannotEvaluatePolicy      = "nbms-preview-cannot-evaluate"
	CannotEvaluateStackPolicy = "nbms-preview-cannot-evaluate-stack"
)

// Pack builds the policy pack; it is the factory policyx.Main calls when the
// engine configures the stack.
func Pack(*pulumi.Context) (policyx.PolicyPack, error) {
	return NewPack()
}

// NewPack returns the pack: one policyx policy per rules.Rule, resource
// policies first, each group followed by its cannot-evaluate collector.
func NewPack() (policyx.PolicyPack, error) {
	held := &deferred{byURN: map[string][]rules.Finding{}}
	var resourcePolicies, stackPolicies []policyx.Policy
	for _, rule := range rules.All() {
		if rule.Scope == rules.StackScope {
			stackPolicies = append(stackPolicies, stackPolicy(rule, held))
		} else {
			resourcePolicies = append(resourcePolicies, resourcePolicy(rule, held))
		}
	}
	// policyx runs a request's policies in pack order (server.go Analyze and
	// AnalyzeStack loop over Policies()), so each collector runs after the
	// policies whose findings it drains. A disabled policy does not run and
	// so leaves nothing to report.
	resourcePolicies = append(resourcePolicies, policyx.NewResourceValidationPolicy(CannotEvaluatePolicy, policyx.ResourceValidationPolicyArgs{
		Description: "Checks that every value the other policies need is known; reports each check that could not run because a value was " +
			"unknown during preview or encrypted [NBMS; re-evaluated at pulumi up]",
		EnforcementLevel: policyx.EnforcementLevelAdvisory,
		ValidateResource: func(_ context.Context, args policyx.ResourceValidationArgs) error {
			for _, f := range held.take(args.Resource.URN) {
				args.Manager.ReportViolation("["+f.Policy+"] "+f.Message, "")
			}
			return nil
		},
	}))
	stackPolicies = append(stackPolicies, policyx.NewStackValidationPolicy(CannotEvaluateStackPolicy, policyx.StackValidationPolicyArgs{
		Description:      "Checks that every value the stack policies need is known; reports each check that could not run [NBMS]",
		EnforcementLevel: policyx.EnforcementLevelAdvisory,
		ValidateStack: func(_ context.Context, args policyx.StackValidationArgs) error {
			for _, f := range held.take("") {
				args.Manager.ReportViolation("["+f.Policy+"] "+f.Message, f.URN)
			}
			return nil
		},
	}))
	return policyx.NewPolicyPack(PackName, semver.MustParse(Version), policyx.EnforcementLevelMandatory,
		append(resourcePolicies, stackPolicies...))
}

// deferred holds cannot-evaluate findings until their collector runs. The
// engine may analyse different resources concurrently, hence the lock; stack
// findings are held under the empty key.
type deferred struct {
	mu    sync.Mutex
	byURN map[string][]rules.Finding
}

func (d *deferred) put(key string, f rules.Finding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.byURN[key] = append(d.byURN[key], f)
}

func (d *deferred) take(key string) []rules.Finding {
	d.mu.Lock()
	defer d.mu.Unlock()
	fs := d.byURN[key]
	delete(d.byURN, key)
	return fs
}

// message is what the engine shows after the policy description: the
// finding, then exactly what to change.
func message(rule rules.Rule, f rules.Finding) string {
	return f.Message + "\nRemediation: " + rule.Remediation
}

func resourcePolicy(rule rules.Rule, held *deferred) policyx.Policy {
	return policyx.NewResourceValidationPolicy(rule.Name, policyx.ResourceValidationPolicyArgs{
		Description:      rule.Description(),
		EnforcementLevel: level(rule.Level),
		ConfigSchema:     schema(rule),
		ValidateResource: func(_ context.Context, args policyx.ResourceValidationArgs) error {
			if !rule.AppliesTo(args.Resource.Type) {
				return nil
			}
			res := Resource(args.Resource)
			for _, f := range rule.CheckResource(res, rule.Settings(args.Config)) {
				if f.Kind == rules.CannotEvaluate {
					held.put(res.URN, f)
					continue
				}
				args.Manager.ReportViolation(message(rule, f), "")
			}
			// Never an error: policyx turns one into a failure of the whole
			// Analyze call, which would hide every other policy's result.
			return nil
		},
	})
}

func stackPolicy(rule rules.Rule, held *deferred) policyx.Policy {
	return policyx.NewStackValidationPolicy(rule.Name, policyx.StackValidationPolicyArgs{
		Description:      rule.Description(),
		EnforcementLevel: level(rule.Level),
		ConfigSchema:     schema(rule),
		ValidateStack: func(_ context.Context, args policyx.StackValidationArgs) error {
			resources := make([]rules.Resource, 0, len(args.Resources))
			for _, r := range args.Resources {
				resources = append(resources, Resource(r))
			}
			// policyx passes stack policies no config (StackValidationArgs has
			// no Config field), so stack policies use their schema defaults;
			// tunable thresholds therefore live in resource policies.
			for _, f := range rule.CheckStack(resources, rule.Settings(nil)) {
				if f.Kind == rules.CannotEvaluate {
					held.put("", f)
					continue
				}
				args.Manager.ReportViolation(message(rule, f), f.URN)
			}
			return nil
		},
	})
}

func level(l rules.Level) policyx.EnforcementLevel {
	switch l {
	case rules.Mandatory:
		return policyx.EnforcementLevelMandatory
	case rules.Disabled:
		return policyx.EnforcementLevelDisabled
	}
	return policyx.EnforcementLevelAdvisory
}

func schema(rule rules.Rule) *policyx.ConfigSchema {
	if len(rule.Config) == 0 {
		return nil
	}
	s := &policyx.ConfigSchema{Properties: map[string]map[string]any{}}
	for name, p := range rule.Config {
		prop := map[string]any{"type": p.Type, "description": p.Description}
		if p.Default != nil {
			prop["default"] = p.Default
		}
		if p.Minimum != nil {
			prop["minimum"] = *p.Minimum
		}
		s.Properties[name] = prop
	}
	return s
}

// Resource converts a policyx resource to the neutral representation.
func Resource(r policyx.AnalyzerResource) rules.Resource {
	return rules.Resource{URN: r.URN, Type: r.Type, Name: r.Name, Properties: Map(r.Properties)}
}

// Map converts a property map to an Object value.
func Map(m property.Map) rules.Value {
	fields := make(map[string]rules.Value, m.Len())
	for k, v := range m.All {
		fields[k] = Value(v)
	}
	return rules.ObjectValue(fields)
}

// Value converts a property value, keeping its secret flag and turning
// computed values into Unknown. It only calls As* after the matching Is*,
// because As* on the wrong kind panics (pulumi/pulumi#24654).
func Value(v property.Value) rules.Value {
	var out rules.Value
	switch {
	case v.IsComputed():
		out = rules.UnknownValue()
	case v.IsBool():
		out = rules.BoolValue(v.AsBool())
	case v.IsNumber():
		out = rules.NumberValue(v.AsNumber())
	case v.IsString():
		out = rules.StringValue(v.AsString())
	case v.IsArray():
		items := make([]rules.Value, 0, v.AsArray().Len())
		for _, item := range v.AsArray().All {
			items = append(items, Value(item))
		}
		out = rules.ArrayValue(items...)
	case v.IsMap():
		out = Map(v.AsMap())
	case v.IsResourceReference():
		out = rules.ObjectValue(map[string]rules.Value{"urn": rules.StringValue(string(v.AsResourceReference().URN))})
	case v.IsAsset(), v.IsArchive():
		out = rules.ObjectValue(nil)
	default:
		out = rules.NullValue()
	}
	if v.Secret() {
		out = out.AsSecret()
	}
	return out
}
