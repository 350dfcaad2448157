package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optdestroy"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optpreview"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optup"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"

	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/hooks"
)

// preview plans the stack with the policy pack and writes the policy
// report from the plan the engine reported.
func (r *run) preview(ctx context.Context, stack auto.Stack, res *Result) error {
	c := collect()
	opts := []optpreview.Option{
		optpreview.PolicyPacks(r.opts.PolicyPack),
		optpreview.ProgressStreams(r.opts.Stdout),
		optpreview.ErrorProgressStreams(r.opts.Stderr),
		optpreview.EventStreams(c.ch),
	}
	if r.opts.PolicyConfig != "" {
		opts = append(opts, optpreview.PolicyPackConfigs(r.opts.PolicyConfig))
	}
	opts = append(opts, r.previewFlags()...)
	_, err := stack.Preview(ctx, opts...)
	evs := c.wait()
	absorb(evs, res)
	res.DeclaredRelease = declaredRelease(evs)
	r.reportFromPlan(evs, res)
	return classify(err, evs)
}

// up previews first, so that a mandatory policy (including the stack
// policies, which the engine evaluates only after every resource is
// registered) refuses the stack before anything is created; then updates,
// writes the policy report from the new state, and probes the deployment
// even when nothing changed (the resource hook only runs on a change).
// A failed gate or probe is exit 4 when an app release was live before the
// update, 5 when none was (see releaseExit).
func (r *run) up(ctx context.Context, stack auto.Stack, res *Result) error {
	if err := r.preview(ctx, stack, res); err != nil {
		return err
	}
	live, err := stackLiveRelease(ctx, stack)
	if err != nil {
		return err
	}
	return r.update(ctx, stack, res, live)
}

// update runs the update that a successful preview planned, with live the
// app release serving before it (for the exit code), and records the
// release it declares and the source in the update history (rollback
// reads them).
func (r *run) update(ctx context.Context, stack auto.Stack, res *Result, live string) error {
	*res = Result{DeclaredRelease: res.DeclaredRelease}
	if live != "" {
		r.printf("Live app release before this update: %s\n", live)
	} else {
		r.printf("No app release is live before this update: a failed gate or probe leaves nothing serving the app.\n")
	}
	c := collect()
	opts := []optup.Option{
		optup.PolicyPacks(r.opts.PolicyPack),
		optup.ProgressStreams(r.opts.Stdout),
		optup.ErrorProgressStreams(r.opts.Stderr),
		optup.EventStreams(c.ch),
		optup.Message(updateMessage(r.cmd, res.DeclaredRelease, sourceOf(ctx, r.opts.Root))),
	}
	if r.opts.PolicyConfig != "" {
		opts = append(opts, optup.PolicyPackConfigs(r.opts.PolicyConfig))
	}
	opts = append(opts, r.upFlags()...)
	up, err := stack.Up(ctx, opts...)
	evs := c.wait()
	absorb(evs, res)
	if err != nil {
		return releaseExit(classify(err, evs), live)
	}
	res.Outputs = up.Outputs
	if state, err := stack.Export(ctx); err != nil {
		r.printf("policy report: cannot export the state: %v\n", err)
	} else {
		r.reportFromState(state, res)
	}
	return releaseExit(r.probe(ctx, res), live)
}

// probe runs the post-deploy prober with the options the resource hook uses.
func (r *run) probe(ctx context.Context, res *Result) error {
	cfg, err := r.config()
	if err != nil {
		return usageErr("%v", err)
	}
	opts, err := deploy.ProbeOptions(cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	opts.Logf = func(format string, args ...any) { r.printf("probe: "+format+"\n", args...) }
	r.printf("Probing %s (host %s) ...\n", opts.BaseURL, opts.Host)
	res.Probe, err = hooks.Probe(ctx, opts)
	if err != nil {
		return &Error{Code: ExitProbe, Err: fmt.Errorf("post-deploy probe: %w", err)}
	}
	r.printf("Probe: ready after %s\n", res.Probe.Duration.Round(1e6))
	return nil
}

// destroy deletes every resource except the protected ones (the data
// volumes when nbms:protectVolumes is true) and what they need to stay
// in the state (their parents, providers and dependencies), as
// `pulumi destroy --exclude-protected` does. Removing protected data is a
// deliberate manual step (`pulumi state unprotect`), never a CI job.
// With Target only those resources are destroyed, never one of the
// protected closure.
func (r *run) destroy(ctx context.Context, stack auto.Stack, res *Result) error {
	state, err := stack.Export(ctx)
	if err != nil {
		return fmt.Errorf("reading the state: %w", err)
	}
	keep, total, err := protectedClosure(state)
	if err != nil {
		return err
	}
	flags, err := r.destroyFlags(keep)
	if err != nil {
		return err
	}
	if total > 0 && len(keep) == total {
		r.printf("Nothing to destroy: the %d remaining resources are protected or needed by protected ones.\n", total)
		return nil
	}
	if len(keep) > 0 && len(r.opts.Target) == 0 {
		r.printf("Keeping %d protected resources and what they depend on.\n", len(keep))
	}
	c := collect()
	opts := []optdestroy.Option{
		optdestroy.ProgressStreams(r.opts.Stdout),
		optdestroy.ErrorProgressStreams(r.opts.Stderr),
		optdestroy.EventStreams(c.ch),
	}
	opts = append(opts, flags...)
	_, err = stack.Destroy(ctx, opts...)
	evs := c.wait()
	absorb(evs, res)
	return classify(err, evs)
}

// protectedClosure returns the URNs of the protected resources and of
// everything they depend on (parents, providers, dependencies), and the
// number of resources in the state.
func protectedClosure(state apitype.UntypedDeployment) ([]string, int, error) {
	d, err := deployment(state)
	if err != nil {
		return nil, 0, err
	}
	byURN := map[string]apitype.ResourceV3{}
	for _, res := range d.Resources {
		byURN[string(res.URN)] = res
	}
	keep := map[string]bool{}
	var visit func(urn string)
	visit = func(urn string) {
		res, ok := byURN[urn]
		if !ok || keep[urn] {
			return
		}
		keep[urn] = true
		visit(string(res.Parent))
		if ref := res.Provider; ref != "" {
			// A provider reference is "<urn>::<id>".
			for u := range byURN {
				if len(ref) > len(u) && ref[:len(u)] == u && ref[len(u):len(u)+2] == "::" {
					visit(u)
				}
			}
		}
		for _, dep := range res.Dependencies {
			visit(string(dep))
		}
	}
	for _, res := range d.Resources {
		if res.Protect {
			visit(string(res.URN))
		}
	}
	return slices.Sorted(maps.Keys(keep)), len(d.Resources), nil
}

// outputs prints the stack outputs as JSON, secrets masked.
func (r *run) outputs(ctx context.Context, stack auto.Stack, res *Result) error {
	out, err := stack.Outputs(ctx)
	if err != nil {
		return fmt.Errorf("reading the outputs: %w", err)
	}
	res.Outputs = out
	shown := map[string]any{}
	for k, v := range out {
		if v.Secret {
			shown[k] = "[secret]"
			continue
		}
		shown[k] = v.Value
	}
	enc := json.NewEncoder(r.opts.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(shown)
}
