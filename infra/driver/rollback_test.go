package driver

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	releaseA = "aaaaaaaaaaaa"
	releaseB = "bbbbbbbbbbbb"
	releaseC = "cccccccccccc"
)

// update is a history summary of an update this driver ran, its message
// quoted as the history keeps it (the Automation API passes it to the CLI
// as %q).
func update(minute int, cmd Command, release string, result string) auto.UpdateSummary {
	return auto.UpdateSummary{StartTime: startTime(minute), Kind: "update", Result: result,
		Message: strconv.Quote(updateMessage(cmd, release, "commit 0f0f with uncommitted changes"))}
}

// startTime is the history's start time of an update at minute past 3.
func startTime(minute int) string { return fmt.Sprintf("2026-12-07T03:%02d:00.000Z", minute) }

func TestReleaseHistoryKeepsTheDriversUpdatesNewestFirst(t *testing.T) {
	h := releaseHistory([]auto.UpdateSummary{
		update(1, Up, releaseA, "succeeded"),
		{StartTime: startTime(2), Kind: "refresh", Result: "succeeded", Message: updateMessage(Up, releaseB, "x")},
		{StartTime: startTime(3), Kind: "update", Result: "succeeded", Message: "pulumi up by hand"},
		update(4, Rollback, releaseB, "failed"),
		{StartTime: startTime(5), Kind: "update", Result: "succeeded", Message: updateMessage(Up, releaseC, "x")}, // unquoted, as by hand
	})
	require.Len(t, h, 3)
	assert.Equal(t, historyEntry{StartTime: startTime(5), Release: releaseC, Source: "x", Succeeded: true}, h[0])
	assert.Equal(t, historyEntry{StartTime: startTime(4), Release: releaseB, Source: "commit 0f0f with uncommitted changes"}, h[1])
	assert.Equal(t, historyEntry{StartTime: startTime(1), Release: releaseA, Source: "commit 0f0f with uncommitted changes", Succeeded: true}, h[2])
}

func TestRollbackTarget(t *testing.T) {
	cases := []struct {
		name    string
		history []auto.UpdateSummary
		live    string
		want    string // the target's release, or "" for a refusal
		why     string // a part of the reason or of the refusal
	}{
		{"after a new version: the release live before it", []auto.UpdateSummary{
			update(1, Up, releaseA, "succeeded"), update(2, Up, releaseA, "succeeded"), update(3, Up, releaseB, "succeeded"),
		}, releaseB, releaseA, "blue/green switch"},
		{"a second rollback goes forward again", []auto.UpdateSummary{
			update(1, Up, releaseA, "succeeded"), update(2, Up, releaseB, "succeeded"), update(3, Rollback, releaseA, "succeeded"),
		}, releaseA, releaseB, "was live before"},
		{"after a broken release: the live release's own inputs", []auto.UpdateSummary{
			update(1, Up, releaseA, "succeeded"), update(2, Up, releaseB, "succeeded"), update(3, Up, releaseC, "failed"),
		}, releaseB, releaseB, "kept serving"},
		{"a failed update of the live release counts as broken too", []auto.UpdateSummary{
			update(1, Up, releaseA, "succeeded"), update(2, Up, releaseB, "succeeded"), update(3, Up, releaseB, "failed"),
		}, releaseB, releaseB, "kept serving"},
		{"only the live release was ever deployed", []auto.UpdateSummary{
			update(1, Up, releaseA, "succeeded"), update(2, Up, releaseA, "succeeded"),
		}, releaseA, "", "nothing to roll back to"},
		{"a failed release before the live one is never a target", []auto.UpdateSummary{
			update(1, Up, releaseC, "failed"), update(2, Up, releaseA, "succeeded"),
		}, releaseA, "", "nothing to roll back to"},
		{"no history of this driver", nil, releaseA, "", "holds no release"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why, err := rollbackTarget(releaseHistory(c.history), c.live)
			if c.want == "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.why)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got.Release)
			assert.True(t, got.Succeeded)
			assert.Contains(t, why, c.why)
		})
	}
}

func TestDeclaredReleaseIsReadFromTheStacksOutputs(t *testing.T) {
	out := func(typ string, outputs map[string]any) events.EngineEvent {
		return events.EngineEvent{EngineEvent: apitype.EngineEvent{ResOutputsEvent: &apitype.ResOutputsEvent{
			Metadata: apitype.StepEventMetadata{Type: typ, New: &apitype.StepEventStateMetadata{Outputs: outputs}},
		}}}
	}
	// As a preview reports them: the state's outputs, then the program's.
	evs := []events.EngineEvent{
		out("pulumi:pulumi:Stack", map[string]any{}),
		out("pulumi:pulumi:Stack", map[string]any{"declaredRelease": releaseB}),
		out("nbms:deploy:App", map[string]any{"declaredRelease": releaseC}),
		out("pulumi:pulumi:Stack", map[string]any{"declaredRelease": releaseA, "url": "https://x"}),
	}
	assert.Equal(t, releaseA, declaredRelease(evs), "the last report of the stack's outputs")
	assert.Empty(t, declaredRelease(evs[:1]))
	assert.Empty(t, declaredRelease(evs[2:3]), "only the stack's own outputs")
}

func TestSourceOfNamesTheCommit(t *testing.T) {
	src := sourceOf(t.Context(), "../..")
	assert.Regexp(t, `^commit [0-9a-f]{40}( with uncommitted changes)?$`, src)
	assert.Equal(t, "a directory that is not a git checkout", sourceOf(t.Context(), t.TempDir()))
}
