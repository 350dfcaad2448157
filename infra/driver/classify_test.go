package driver

import (
	"errors"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/stretchr/testify/assert"

	"github.com/nbms-deploy/nbms/infra/deploy"
)

// Every way a new app release can fail to go live is exit 4 (which up
// turns into 5 when no release was live before, see TestReleaseExit), with
// the failing gate's message; a failure elsewhere stays exit 1.
func TestClassifyReleaseFailures(t *testing.T) {
	const stackURN = "urn:pulumi:prod::nbms::pulumi:pulumi:Stack::nbms-prod"
	const release = "0123456789ab"
	container := func(name string) string {
		return "urn:pulumi:prod::nbms::nbms:deploy:App$docker:index/container:Container::" + name
	}
	diag := func(urn, msg string) []events.EngineEvent {
		return []events.EngineEvent{{EngineEvent: apitype.EngineEvent{DiagnosticEvent: &apitype.DiagnosticEvent{URN: urn, Severity: "error", Message: msg}}}}
	}
	for _, tc := range []struct {
		name   string
		evs    []events.EngineEvent
		code   int
		reason string
	}{
		{"migrate failed", diag(stackURN, "running program: "+deploy.NotLivePrefix+" "+release+": migrate exited with status 3 (see `docker logs prod-migrate-"+release+"`)"),
			ExitProbe, "the new app release did not go live: " + deploy.NotLivePrefix + " " + release + ": migrate exited with status 3"},
		{"the switch failed", diag(stackURN, deploy.NotLivePrefix+" "+release+": the switch exited with status 1"),
			ExitProbe, "the switch exited with status 1"},
		{"a health check that never passes", diag(container(deploy.Instance("app", release)), "container did not become healthy\nmore"),
			ExitProbe, "the new app release did not go live: container did not become healthy"},
		{"the readiness hook", diag(container(deploy.Instance("app", release)), `after hook "nbms-app-readiness-probe" failed: readiness probe`),
			ExitProbe, "the post-deploy probe failed"},
		{"the database container", diag(container("db"), "container did not become healthy"), ExitFailed, ""},
		{"a container named like a release but not one", diag(container("app-notarelease"), "boom"), ExitFailed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := classify(errors.New("update failed"), tc.evs)
			assert.Equal(t, tc.code, ExitCode(err))
			if tc.reason != "" {
				assert.Contains(t, err.Error(), tc.reason)
			}
		})
	}
}
