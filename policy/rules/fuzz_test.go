package rules_test

import (
	"encoding/json"
	"testing"

	"github.com/nbms-deploy/nbms/policy/input"
	"github.com/nbms-deploy/nbms/policy/internal/fixture"
	"github.com/nbms-deploy/nbms/policy/rules"
)

// garbage turns fuzz bytes into an arbitrary property tree, including
// unknowns, secrets and the wrong kind at every key the policies read.
func garbage(data []byte, depth int) rules.Value {
	if len(data) == 0 || depth > 4 {
		return rules.NullValue()
	}
	keys := []string{"envs", "labels", "label", "value", "capabilities", "drops", "adds", "ports", "ip", "internal",
		"healthcheck", "tests", "ulimits", "name", "soft", "hard", "uploads", "content", "contentBase64", "networksAdvanced",
		"image", "user", "restart", "maxRetryCount", "memory", "cpus", "securityOpts", "mounts", "volumes", "hostPath", "source", "type", "command"}
	b, rest := data[0], data[1:]
	var v rules.Value
	switch b % 9 {
	case 0:
		v = rules.NullValue()
	case 1:
		v = rules.BoolValue(b&16 != 0)
	case 2:
		v = rules.NumberValue(float64(int8(b)))
	case 3:
		v = rules.StringValue(string(rest[:len(rest)%7]))
	case 4:
		v = rules.StringValue("nbms.role=app")
	case 5:
		var items []rules.Value
		for i := 0; i < int(b%4) && len(rest) > i; i++ {
			items = append(items, garbage(rest[i:], depth+1))
		}
		v = rules.ArrayValue(items...)
	case 6:
		fields := map[string]rules.Value{}
		for i := 0; i < int(b%5) && len(rest) > i; i++ {
			fields[keys[int(rest[i])%len(keys)]] = garbage(rest[i+1:], depth+1)
		}
		v = rules.ObjectValue(fields)
	case 7:
		v = rules.UnknownValue()
	case 8:
		v = rules.RedactedValue()
	}
	if b&32 != 0 {
		v = v.AsSecret()
	}
	return v
}

func FuzzPoliciesNeverPanic(f *testing.F) {
	for _, r := range fixture.Good() {
		data, _ := json.Marshal(r.Inputs)
		f.Add(data)
	}
	f.Add([]byte(`{"envs": "04da6b54-80e4-46f7-96ec-b56ff0331ba9", "labels": [{"label": "nbms.role", "value": {"x": 1}}]}`))
	f.Add([]byte{6, 4, 0, 5, 3, 1, 2, 7, 8, 6, 6, 6})
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw any
		props := garbage(data, 0)
		if json.Unmarshal(data, &raw) == nil {
			props = input.Value(raw)
		}
		props = rules.ObjectValue(map[string]rules.Value{"labels": props.Get("labels"), "envs": props.Get("envs"), "ports": props,
			"capabilities": props, "healthcheck": props, "image": props.Get("image"), "uploads": props, "command": props,
			"networksAdvanced": props.Get("networksAdvanced"), "user": props.Get("user"), "ulimits": props, "mounts": props})
		var rs []rules.Resource
		for _, typ := range []string{rules.ContainerType, rules.RemoteImageType, rules.NetworkType} {
			rs = append(rs, rules.Resource{URN: "urn:x::" + typ, Type: typ, Name: "x", Properties: props})
		}
		rep := rules.Evaluate(rs, rules.Config{})
		for _, fd := range rep.Findings() {
			if fd.Kind == rules.InternalError {
				t.Fatalf("policy %s panicked: %s", fd.Policy, fd.Message)
			}
		}
	})
}
