package driver

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/opthistory"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Rollback is one command, two cases, both read from the stack's update
// history (`pulumi stack history`), where every up and rollback of this
// driver records the app release it declared and the source it ran from
// (updateMessage):
//
//   - After an update that succeeded (a new release is live), rollback
//     brings back the release that was live before it: the newest
//     successful update of another release. It starts beside the live one
//     and takes over with a blue/green switch, like any new release. A
//     second rollback goes forward again, as `kubectl rollout undo` does.
//   - After an update that failed (a broken release never went live, the
//     live one kept serving), rollback re-deploys the live release's own
//     inputs: the live containers stay exactly as they are (a release's
//     containers never follow a rebuilt image ID, see deploy.startApp) and
//     what the failed update left behind is removed.
//
// A release is a hash of its inputs (the source of the app image and the
// stack settings), which the driver cannot bring back by itself: the
// operator checks out the target's source and stack file (the refusal
// names the commit), and rollback runs only when what it would deploy is
// exactly the target release, which the preview tells before anything
// changes.

// updateMessagePrefix starts the message of every update this driver runs.
const updateMessagePrefix = "nbms-deploy "

// updateMessage is the update-history message of an up or rollback that
// declares release, from source (sourceOf).
func updateMessage(cmd Command, release, source string) string {
	return fmt.Sprintf("%s%s: release %s from %s", updateMessagePrefix, cmd, release, source)
}

var messageRelease = regexp.MustCompile(`^` + regexp.QuoteMeta(updateMessagePrefix) + `\w+: release ([0-9a-f]+) from (.*)$`)

// historyEntry is an update of the history that this driver ran.
type historyEntry struct {
	Release   string
	Source    string
	Succeeded bool
	StartTime string
}

// releaseHistory reads the updates this driver recorded, newest first;
// anything else in the history (refreshes, destroys, a plain `pulumi up`)
// is skipped.
func releaseHistory(summaries []auto.UpdateSummary) []historyEntry {
	var out []historyEntry
	for _, s := range summaries {
		// The Automation API passes the message to the CLI quoted (%q),
		// and the history keeps the quotes.
		msg := s.Message
		if unquoted, err := strconv.Unquote(msg); err == nil {
			msg = unquoted
		}
		m := messageRelease.FindStringSubmatch(msg)
		if s.Kind != "update" || m == nil {
			continue
		}
		out = append(out, historyEntry{Release: m[1], Source: m[2], Succeeded: s.Result == "succeeded", StartTime: s.StartTime})
	}
	// The CLI lists the newest first, and its start times (RFC 3339 UTC,
	// which sort as strings) say the same; the file backend numbers every
	// update 0, so the version cannot.
	slices.SortStableFunc(out, func(a, b historyEntry) int { return strings.Compare(b.StartTime, a.StartTime) })
	return out
}

// rollbackTarget picks the update whose release rollback brings back, with
// live the release serving now (see the comment at the top of this file),
// and says why in a sentence for the operator.
func rollbackTarget(history []historyEntry, live string) (historyEntry, string, error) {
	if len(history) == 0 {
		return historyEntry{}, "", errors.New("the update history holds no release deployed by nbms-deploy: nothing to roll back to")
	}
	if last := history[0]; !last.Succeeded {
		for _, h := range history {
			if h.Succeeded && h.Release == live {
				return h, fmt.Sprintf("the last update (%s, release %s) failed and release %s kept serving: re-deploying %s's inputs removes what the failed update left and leaves the live containers as they are",
					last.StartTime, last.Release, live, live), nil
			}
		}
		return historyEntry{}, "", fmt.Errorf("the last update (%s) failed and no successful update of the live release %s is in the history", last.StartTime, live)
	}
	for _, h := range history {
		if h.Succeeded && h.Release != live {
			return h, fmt.Sprintf("release %s was live before %s: it starts beside %s and takes over with a blue/green switch", h.Release, live, live), nil
		}
	}
	return historyEntry{}, "", fmt.Errorf("no release other than the live one (%s) was ever deployed successfully: nothing to roll back to", live)
}

// rollback checks that the inputs given (the checkout, the stack file and
// the operator's files) declare the target release, then updates like up.
func (r *run) rollback(ctx context.Context, stack auto.Stack, res *Result) error {
	live, err := stackLiveRelease(ctx, stack)
	if err != nil {
		return err
	}
	if live == "" {
		return usageErr("rollback: no app release is live in stack %s: deploy one with up", r.opts.Stack)
	}
	summaries, err := stack.History(ctx, 0, 0, opthistory.ShowSecrets(false))
	if err != nil {
		return fmt.Errorf("reading the update history: %w", err)
	}
	target, why, err := rollbackTarget(releaseHistory(summaries), live)
	if err != nil {
		return usageErr("rollback: %v", err)
	}
	r.printf("Rollback of %s: %s.\n", r.opts.Stack, why)
	if err := r.preview(ctx, stack, res); err != nil {
		return err
	}
	if res.DeclaredRelease != target.Release {
		return usageErr("rollback: this checkout and these stack settings deploy release %s, not %s, which the update of %s deployed from %s: "+
			"check out that source (e.g. `git checkout <commit>`) with the stack file and operator files of that update, and run rollback again",
			res.DeclaredRelease, target.Release, target.StartTime, target.Source)
	}
	return r.update(ctx, stack, res, live)
}

// declaredRelease is the stack output declaredRelease as an operation's
// events report it (a preview knows it: it is plain), or "". The stack's
// outputs are reported more than once, the state's before the program's:
// the last report is this run's.
func declaredRelease(evs []events.EngineEvent) string {
	var release string
	for _, ev := range evs {
		if e := ev.ResOutputsEvent; e != nil && e.Metadata.Type == string(resource.RootStackType) && e.Metadata.New != nil {
			if v, ok := e.Metadata.New.Outputs["declaredRelease"].(string); ok {
				release = v
			}
		}
	}
	return release
}

// sourceOf describes the source the program runs from, for the update
// history: the git commit of root, marked when the checkout has changes
// that git does not ignore (the release may then not be reproducible from
// the commit alone).
func sourceOf(ctx context.Context, root string) string {
	commit, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		return "a directory that is not a git checkout"
	}
	src := "commit " + strings.TrimSpace(string(commit))
	if status, err := exec.CommandContext(ctx, "git", "-C", root, "status", "--porcelain").Output(); err != nil || len(status) > 0 {
		src += " with uncommitted changes"
	}
	return src
}
