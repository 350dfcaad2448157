package rules

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A policy that panics is reported as an internal error at its own level
// (failing closed), and the message names neither the panic value nor any
// secret.
func TestPanicBecomesInternalError(t *testing.T) {
	boom := Rule{Name: "boom", Level: Mandatory, Scope: ResourceScope, Types: []string{ContainerType},
		check: func(r Resource, _ Settings, _ *findings) { panic("leaked " + r.URN) }}
	res := Resource{URN: "urn:pulumi:prod::nbms::docker:index/container:Container::app", Type: ContainerType, Name: "app",
		Properties: ObjectValue(map[string]Value{"envs": ArrayValue(StringValue("SECRET_KEY=abcdefghijkl").AsSecret())})}
	fs := boom.CheckResource(res, nil)
	require.Len(t, fs, 1)
	assert.Equal(t, InternalError, fs[0].Kind)
	assert.Equal(t, res.URN, fs[0].URN)
	assert.Contains(t, fs[0].Message, "internal error: policy boom failed")
	assert.NotContains(t, fs[0].Message, "leaked")

	stackBoom := Rule{Name: "stack-boom", Level: Mandatory, Scope: StackScope,
		checkStack: func([]Resource, Settings, *findings) { panic("x") }}
	fs = stackBoom.CheckStack([]Resource{res}, nil)
	require.Len(t, fs, 1)
	assert.Equal(t, InternalError, fs[0].Kind)
}

func TestRedactIsTheLastLine(t *testing.T) {
	v := ObjectValue(map[string]Value{"envs": ArrayValue(StringValue("DATABASE_URL=postgres://u:hunter2hunter2@db/x")).AsSecret()})
	secrets := v.secretStrings(nil)
	assert.Equal(t, "url is [secret]", redact("url is postgres://u:hunter2hunter2@db/x", secrets))
	assert.Equal(t, "[secret]", v.Get("envs").Items()[0].Display())
}
