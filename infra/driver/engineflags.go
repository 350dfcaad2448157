package driver

import (
	"slices"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/auto/optdestroy"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optpreview"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optup"
)

// The engine flags (Options.Refresh, Replace, Target) and the commands
// each applies to.
var engineFlagCommands = map[string][]Command{
	"refresh": {Preview, Up, Rollback, Destroy},
	"replace": {Preview, Up},
	"target":  {Preview, Up, Destroy},
}

// checkEngineFlags refuses an engine flag the command does not take, and a
// --replace or --target value that is not a URN of the stack, before any
// Pulumi command runs.
func checkEngineFlags(cmd Command, opts Options) error {
	given := map[string]bool{"refresh": opts.Refresh, "replace": len(opts.Replace) > 0, "target": len(opts.Target) > 0}
	for _, name := range []string{"refresh", "replace", "target"} {
		if given[name] && !slices.Contains(engineFlagCommands[name], cmd) {
			return usageErr("--%s applies to %v, not to %s", name, engineFlagCommands[name], cmd)
		}
	}
	if err := checkURNs("replace", opts.Stack, opts.Replace); err != nil {
		return err
	}
	return checkURNs("target", opts.Stack, opts.Target)
}

// checkURNs refuses a value of --flag that is not a URN of the stack:
// "urn:pulumi:<stack>::<project>::<type>::<name>", as `pulumi stack
// --show-urns` lists them.
func checkURNs(flag, stack string, urns []string) error {
	prefix := "urn:pulumi:" + stack + "::"
	for _, u := range urns {
		rest, ok := strings.CutPrefix(u, prefix)
		if !ok || rest == "" || strings.ContainsFunc(u, isSpace) {
			return usageErr("--%s %q: not a URN of stack %s: it must start with %q (list them with `pulumi stack --stack %s --show-urns`)",
				flag, u, stack, prefix, stack)
		}
	}
	return nil
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// The engine flags as each operation's options.

func (r *run) previewFlags() []optpreview.Option {
	var opts []optpreview.Option
	if r.opts.Refresh {
		opts = append(opts, optpreview.Refresh())
	}
	if len(r.opts.Replace) > 0 {
		opts = append(opts, optpreview.Replace(r.opts.Replace))
	}
	if len(r.opts.Target) > 0 {
		opts = append(opts, optpreview.Target(r.opts.Target))
	}
	return opts
}

func (r *run) upFlags() []optup.Option {
	var opts []optup.Option
	if r.opts.Refresh {
		opts = append(opts, optup.Refresh())
	}
	if len(r.opts.Replace) > 0 {
		opts = append(opts, optup.Replace(r.opts.Replace))
	}
	if len(r.opts.Target) > 0 {
		opts = append(opts, optup.Target(r.opts.Target))
	}
	return opts
}

// destroyFlags are destroy's options for the engine flags. keep is the
// protected closure the destroy must leave: without --target it is
// excluded; with --target only the targets are destroyed, and a target in
// keep is refused.
func (r *run) destroyFlags(keep []string) ([]optdestroy.Option, error) {
	var opts []optdestroy.Option
	if r.opts.Refresh {
		opts = append(opts, optdestroy.Refresh())
	}
	if len(r.opts.Target) == 0 {
		if len(keep) > 0 {
			opts = append(opts, optdestroy.Exclude(keep))
		}
		return opts, nil
	}
	for _, u := range r.opts.Target {
		if slices.Contains(keep, u) {
			return nil, usageErr("--target %q is protected or needed by a protected resource: destroy never removes it (that is a deliberate manual step, `pulumi state unprotect`)", u)
		}
	}
	return append(opts, optdestroy.Target(r.opts.Target)), nil
}
