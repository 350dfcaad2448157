package driver

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/stacks"
)

const (
	liveID = "0123456789ab"
	newID  = "ba9876543210"
)

// state is an exported deployment holding the stack resource with the
// given outputs and the app server containers of the given releases.
func state(t *testing.T, outputs map[string]any, servers ...string) apitype.UntypedDeployment {
	t.Helper()
	const stackURN = "urn:pulumi:prod::nbms::pulumi:pulumi:Stack::nbms-prod"
	resources := []map[string]any{{"urn": stackURN, "type": "pulumi:pulumi:Stack", "outputs": outputs}}
	for _, release := range servers {
		resources = append(resources, map[string]any{
			"urn":  "urn:pulumi:prod::nbms::nbms:deploy:App$docker:index/container:Container::" + deploy.Instance(stacks.RoleApp, release),
			"type": "docker:index/container:Container",
		})
	}
	data, err := json.Marshal(map[string]any{"resources": resources})
	require.NoError(t, err)
	return apitype.UntypedDeployment{Version: 3, Deployment: data}
}

func appOutput(release string) map[string]any {
	return map[string]any{"app": map[string]any{"release": release, "container": "prod-app-" + release}}
}

// The live release is the one the app output names, while its server is
// still in the state.
func TestLiveRelease(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state apitype.UntypedDeployment
		want  string
	}{
		{"a new stack", apitype.UntypedDeployment{}, ""},
		{"an empty deployment", apitype.UntypedDeployment{Version: 3, Deployment: json.RawMessage(`null`)}, ""},
		{"a deployed stack", state(t, appOutput(liveID), liveID), liveID},
		{"a failed update beside the live release", state(t, appOutput(liveID), liveID, newID), liveID},
		{"a failed first deployment: containers, no output", state(t, nil, newID), ""},
		{"after a destroy that kept the volumes: output, no container", state(t, appOutput(liveID)), ""},
		{"the output names another release than the state holds", state(t, appOutput(liveID), newID), ""},
		{"an empty release", state(t, appOutput(""), liveID), ""},
		{"a secret output", state(t, map[string]any{"app": map[string]any{"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "x"}}, liveID), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := liveRelease(tc.state)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := liveRelease(apitype.UntypedDeployment{Deployment: json.RawMessage(`{"resources": 3}`)})
	assert.ErrorContains(t, err, "reading the state")
}

// A failed gate or probe is exit 4 when a release was live before the
// update, exit 5 (and not "the live app release was kept") when none was;
// every other outcome is left alone.
func TestReleaseExit(t *testing.T) {
	const stackURN = "urn:pulumi:prod::nbms::pulumi:pulumi:Stack::nbms-prod"
	engineErr := errors.New("failed to run update: exit status 255")
	gate := classify(engineErr, []events.EngineEvent{{EngineEvent: apitype.EngineEvent{DiagnosticEvent: &apitype.DiagnosticEvent{
		URN: stackURN, Severity: "error", Message: "running program: " + deploy.NotLivePrefix + " " + newID + ": migrate exited with status 3",
	}}}})
	probe := &Error{Code: ExitProbe, Err: errors.New("post-deploy probe: /readyz not ready after 20s")}
	policy := &Error{Code: ExitPolicy, Err: errors.New("a mandatory policy refused the stack")}
	for _, tc := range []struct {
		name     string
		err      error
		live     string
		code     int
		contains []string
		absent   []string
	}{
		{"success", nil, "", ExitOK, nil, nil},
		{"a gate failed, a release was live", gate, liveID, ExitProbe,
			[]string{"the new app release did not go live", deploy.NotLivePrefix + " " + newID + ": migrate exited with status 3"}, nil},
		{"a gate failed on a first deployment", gate, "", ExitFirstDeployFailed,
			[]string{"no app release serves: none was live before this up", "release " + newID + " did not go live: migrate exited with status 3"},
			[]string{deploy.NotLivePrefix}},
		{"the probe failed, a release was live", probe, liveID, ExitProbe, []string{"post-deploy probe: /readyz not ready"}, []string{"no app release serves"}},
		{"the probe failed on a first deployment", probe, "", ExitFirstDeployFailed, []string{"no app release serves", "post-deploy probe: /readyz not ready"}, nil},
		{"a policy refusal on a first deployment", policy, "", ExitPolicy, nil, []string{"no app release serves"}},
		{"an engine failure on a first deployment", engineErr, "", ExitFailed, nil, []string{"no app release serves"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := releaseExit(tc.err, tc.live)
			assert.Equal(t, tc.code, ExitCode(err))
			for _, s := range tc.contains {
				assert.ErrorContains(t, err, s)
			}
			for _, s := range tc.absent {
				assert.NotContains(t, err.Error(), s)
			}
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err, "the original error stays in the chain")
			}
		})
	}
	assert.ErrorIs(t, releaseExit(gate, ""), engineErr, "the engine's error stays in the chain")
}
