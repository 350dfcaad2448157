package driver

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/stacks"
)

// liveRelease is the app release that serves according to the state, or
// "" when none does. A release is live when the stack output app.release
// names it (the program exports it only once the switch pointed nginx at
// it and the program ended without an error) and its server container is
// still in the state: a destroy that kept the protected volumes keeps the
// stack and its outputs but removes the containers, and a failed first
// deployment leaves containers but no output.
func liveRelease(state apitype.UntypedDeployment) (string, error) {
	d, err := deployment(state)
	if err != nil {
		return "", err
	}
	var release string
	for _, res := range d.Resources {
		if res.Type != resource.RootStackType {
			continue
		}
		app, _ := res.Outputs["app"].(map[string]any)
		release, _ = app["release"].(string)
	}
	if release == "" {
		return "", nil
	}
	server := deploy.Instance(stacks.RoleApp, release)
	for _, res := range d.Resources {
		if deploy.IsReleaseContainer(string(res.URN)) && res.URN.Name() == server {
			return release, nil
		}
	}
	return "", nil
}

// stackLiveRelease is the live release (liveRelease) of the stack's state
// as it is before an update.
func stackLiveRelease(ctx context.Context, stack auto.Stack) (string, error) {
	state, err := stack.Export(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the state before the update: %w", err)
	}
	return liveRelease(state)
}

// releaseExit decides the exit code of a failed release gate or post-deploy
// probe (ExitProbe from classify or probe) from live, the app release that
// was live before the update: with one it stays ExitProbe; without one it
// is ExitFirstDeployFailed, since nothing serves the app, and the program's
// "the live app release was kept" (deploy.NotLivePrefix) is reworded,
// because there was none to keep. Any other error is returned as is.
func releaseExit(err error, live string) error {
	var de *Error
	if !errors.As(err, &de) || de.Code != ExitProbe || live != "" {
		return err
	}
	msg := notLiveKept.ReplaceAllString(de.Err.Error(), "release $1 did not go live:")
	return &Error{Code: ExitFirstDeployFailed, Err: &reworded{
		msg: "no app release serves: none was live before this up (first deployment) and the new one failed: " + msg,
		err: de,
	}}
}

// notLiveKept matches the program's message of a gate that kept a release
// from going live, up to the release.
var notLiveKept = regexp.MustCompile(regexp.QuoteMeta(deploy.NotLivePrefix) + ` ([0-9a-f]+):`)

// reworded is an error with another message, wrapping the original.
type reworded struct {
	msg string
	err error
}

func (e *reworded) Error() string { return e.msg }
func (e *reworded) Unwrap() error { return e.err }
