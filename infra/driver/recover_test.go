package driver

import (
	"encoding/json"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/deploy"
)

// containersState is an exported deployment holding the stack resource
// with outputs and a container resource of each name under the Database
// component.
func containersState(t *testing.T, outputs map[string]any, names ...string) apitype.UntypedDeployment {
	t.Helper()
	resources := []map[string]any{{"urn": "urn:pulumi:prod::nbms::pulumi:pulumi:Stack::nbms-prod", "type": "pulumi:pulumi:Stack", "outputs": outputs}}
	for _, name := range names {
		resources = append(resources, map[string]any{
			"urn":  "urn:pulumi:prod::nbms::nbms:deploy:Database$docker:index/container:Container::" + name,
			"type": "docker:index/container:Container",
		})
	}
	data, err := json.Marshal(map[string]any{"resources": resources})
	require.NoError(t, err)
	return apitype.UntypedDeployment{Version: 3, Deployment: data}
}

// recover refuses a stack with a database in its state, and runs the
// restore of a recovery that failed there again.
func TestRecoveryResources(t *testing.T) {
	const prefix = "urn:pulumi:prod::nbms::nbms:deploy:Database$docker:index/container:Container::"
	for _, tc := range []struct {
		name        string
		state       apitype.UntypedDeployment
		db, restore string
	}{
		{"a new stack", apitype.UntypedDeployment{}, "", ""},
		{"a deployed stack", containersState(t, nil, "backup-relay", "db", "backup"), prefix + "db", ""},
		{"a recovery that failed at its restore", containersState(t, nil, "backup-relay", "restore"), "", prefix + "restore"},
		{"a recovered stack", containersState(t, nil, "restore", "db"), prefix + "db", prefix + "restore"},
		{"names that end like the roles do not count", containersState(t, nil, "dbretire-0123456789ab", "secrets-db"), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, restore, err := recoveryResources(tc.state)
			require.NoError(t, err)
			assert.Equal(t, tc.db, db)
			assert.Equal(t, tc.restore, restore)
		})
	}
}

// A stack recovered with the operator's passphrase needs it at every later
// update; one with the generated passphrase refuses it; one without an
// off-host repository, or a new stack, takes either.
func TestCheckPassphraseSource(t *testing.T) {
	schedule := func(source string) map[string]any {
		return map[string]any{"backupSchedule": map[string]any{"full": "30 1 * * 0", deploy.OutputOffHostPassphrase: source}}
	}
	without := &run{opts: Options{Stack: "prod"}}
	with := &run{opts: Options{Stack: "prod", SecretFiles: map[string]string{"backupCipherPass": "/kept/off/host"}}}
	given := containersState(t, schedule(deploy.PassphraseGiven), "db")
	assert.NoError(t, with.checkPassphraseSource(given))
	err := without.checkPassphraseSource(given)
	assert.Equal(t, ExitUsage, ExitCode(err))
	assert.ErrorContains(t, err, "stack prod opens its off-host repository with the passphrase given at its recovery: give it again with --secret-file backupCipherPass=FILE")

	generated := containersState(t, schedule(deploy.PassphraseGenerated), "db")
	assert.NoError(t, without.checkPassphraseSource(generated))
	err = with.checkPassphraseSource(generated)
	assert.Equal(t, ExitUsage, ExitCode(err))
	assert.ErrorContains(t, err, "stack prod opens its off-host repository with the passphrase the program generated (in its state): drop nbms:backupCipherPass")

	for _, st := range []apitype.UntypedDeployment{{}, containersState(t, map[string]any{"backupSchedule": map[string]any{"full": "30 1 * * 0"}}, "db")} {
		assert.NoError(t, without.checkPassphraseSource(st))
		assert.NoError(t, with.checkPassphraseSource(st))
	}
}
