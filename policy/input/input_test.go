package input_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/policy/input"
	"github.com/nbms-deploy/nbms/policy/rules"
)

const preview = `{
  "config": {"nbms:domain": "nbms.example.org"},
  "steps": [
    {"op": "same", "urn": "urn:pulumi:prod::nbms::pulumi:pulumi:Stack::nbms-prod", "newState": {"urn": "urn:pulumi:prod::nbms::pulumi:pulumi:Stack::nbms-prod", "type": "pulumi:pulumi:Stack"}},
    {"op": "create-replacement", "urn": "urn:pulumi:prod::nbms::docker:index/container:Container::app",
     "newState": {"urn": "urn:pulumi:prod::nbms::docker:index/container:Container::app", "type": "docker:index/container:Container",
       "inputs": {"image": "04da6b54-80e4-46f7-96ec-b56ff0331ba9", "envs": "[secret]", "memory": 256}}},
    {"op": "replace", "urn": "urn:pulumi:prod::nbms::docker:index/container:Container::app",
     "newState": {"urn": "urn:pulumi:prod::nbms::docker:index/container:Container::app", "type": "docker:index/container:Container",
       "inputs": {"image": "04da6b54-80e4-46f7-96ec-b56ff0331ba9", "envs": "[secret]", "memory": 512}}},
    {"op": "delete-replaced", "urn": "urn:pulumi:prod::nbms::docker:index/container:Container::app",
     "oldState": {"urn": "urn:pulumi:prod::nbms::docker:index/container:Container::app", "type": "docker:index/container:Container"}},
    {"op": "delete", "urn": "urn:pulumi:prod::nbms::docker:index/container:Container::old",
     "newState": {"urn": "urn:pulumi:prod::nbms::docker:index/container:Container::old", "type": "docker:index/container:Container"}}
  ],
  "changeSummary": {"replace": 1}
}`

func TestPreview(t *testing.T) {
	rs, err := input.Preview(strings.NewReader(preview))
	require.NoError(t, err)
	require.Len(t, rs, 1, "stack resource, deleted resources and replace duplicates are dropped")
	app := rs[0]
	assert.Equal(t, "app", app.Name)
	assert.Equal(t, rules.ContainerType, app.Type)
	assert.Equal(t, rules.Unknown, app.Prop("image").Kind)
	assert.Equal(t, rules.Redacted, app.Prop("envs").Kind)
	assert.True(t, app.Prop("envs").Secret)
	n, _ := app.Prop("memory").Num()
	assert.Equal(t, 512.0, n, "the last new state wins")
}

const export = `{"version": 3, "deployment": {"manifest": {}, "resources": [
  {"urn": "urn:pulumi:prod::nbms::docker:index/container:Container::app", "type": "docker:index/container:Container", "custom": true,
   "inputs": {"envs": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "v1:abc"},
              "labels": [{"label": "nbms.role", "value": "app"}],
              "user": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "plaintext": "\"65532\""}}},
  {"urn": "urn:pulumi:prod::nbms::docker:index/network:Network::internal", "type": "docker:index/network:Network", "custom": true,
   "outputs": {"name": "prod-internal", "internal": true}}
]}}`

func TestStackExport(t *testing.T) {
	rs, err := input.StackExport(strings.NewReader(export))
	require.NoError(t, err)
	require.Len(t, rs, 2)
	envs := rs[0].Prop("envs")
	assert.Equal(t, rules.Redacted, envs.Kind, "ciphertext is never decrypted")
	user := rs[0].Prop("user")
	s, _ := user.Str()
	assert.Equal(t, "65532", s)
	assert.True(t, user.Secret)
	assert.Equal(t, "[secret]", user.Display())
	assert.True(t, rs[1].Prop("internal").BoolOr(false), "outputs are used when inputs are absent")
}

func TestRejectsOtherDocuments(t *testing.T) {
	for _, tc := range []struct {
		name string
		read func(string) error
		doc  string
	}{
		{"export as preview", func(s string) error { _, err := input.Preview(strings.NewReader(s)); return err }, export},
		{"preview as export", func(s string) error { _, err := input.StackExport(strings.NewReader(s)); return err }, preview},
		{"text", func(s string) error { _, err := input.Preview(strings.NewReader(s)); return err }, "Previewing update"},
	} {
		t.Run(tc.name, func(t *testing.T) { assert.Error(t, tc.read(tc.doc)) })
	}
}
