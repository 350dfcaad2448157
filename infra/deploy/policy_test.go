package deploy_test

import (
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/policy/rules"
)

// toRules converts a registered input value to the policy pack's model,
// keeping secretness.
func toRules(v resource.PropertyValue) rules.Value {
	switch {
	case v.IsSecret():
		return toRules(v.SecretValue().Element).AsSecret()
	case v.IsComputed():
		return rules.UnknownValue()
	case v.IsString():
		return rules.StringValue(v.StringValue())
	case v.IsBool():
		return rules.BoolValue(v.BoolValue())
	case v.IsNumber():
		return rules.NumberValue(v.NumberValue())
	case v.IsArray():
		var items []rules.Value
		for _, e := range v.ArrayValue() {
			items = append(items, toRules(e))
		}
		return rules.ArrayValue(items...)
	case v.IsObject():
		fields := map[string]rules.Value{}
		for k, e := range v.ObjectValue() {
			fields[string(k)] = toRules(e)
		}
		return rules.ObjectValue(fields)
	}
	return rules.NullValue()
}

// evaluate runs the policy pack over what the program registered, the way
// the engine hands resources to it (inputs, secrets flagged).
func evaluate(stack string, m *mocks) rules.Report {
	var resources []rules.Resource
	for _, r := range m.regs {
		resources = append(resources, rules.Resource{
			URN:  "urn:pulumi:" + stack + "::nbms::" + r.TypeToken + "::" + r.Name,
			Type: r.TypeToken, Name: r.Name,
			Properties: toRules(resource.NewObjectProperty(r.Inputs)),
		})
	}
	return rules.Evaluate(resources, rules.Config{})
}

// describeFindings lists every finding, for failure messages.
func describeFindings(report rules.Report) string {
	var lines []string
	for _, f := range report.Findings() {
		lines = append(lines, string(f.Level)+" "+f.Policy+" on "+f.URN+": "+f.Message)
	}
	return strings.Join(lines, "\n")
}

// The resources the program registers pass every policy of the pack that
// guards deployments (policy/), in both stacks: the two sides agree on the
// conventions (labels, limits, networks, pins, TLS, backups).
func TestProgramPassesThePolicyPack(t *testing.T) {
	for _, p := range profiles {
		t.Run(p.stack, func(t *testing.T) {
			res := deployWith(t, p.stack, stackConfig(t, p.stack), &mocks{})
			require.NoError(t, res.err)
			report := evaluate(p.stack, res.m)
			assert.False(t, report.MandatoryFailed(), describeFindings(report))
			assert.Empty(t, report.Findings(), describeFindings(report))
		})
	}
}

// A recovery's stack (its restore one-shot) passes the pack too.
func TestRecoveringStackPassesThePolicyPack(t *testing.T) {
	raw := stackConfig(t, "prod")
	raw["recover"], raw["backupCipherPass"] = "latest", "kept-off-the-host-0123456789abcdefghijklmnopqrstuvwxyz"
	res := deployWith(t, "prod", raw, &mocks{})
	require.NoError(t, res.err)
	report := evaluate("prod", res.m)
	assert.False(t, report.MandatoryFailed(), describeFindings(report))
	assert.Empty(t, report.Findings(), describeFindings(report))
}
