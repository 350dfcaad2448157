// Package driver deploys an NBMS stack through the Pulumi Automation API.
//
// It runs the same program function as `pulumi up` does from Pulumi.yaml
// (deploy.Program; one program, two entry points), inline, so no Go
// language host is needed: only the Pulumi CLI. Around the engine it adds
// what CI needs: the stack's committed settings plus the operator's secrets,
// a local file backend and the passphrase secrets provider by default, the
// policy pack on every preview and update, the policy report files, the
// post-deploy probe after every update, and exit codes a job can act on.
package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"

	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/infra/hooks"
	"github.com/nbms-deploy/nbms/stacks"
)

// Exit codes of a driver run (see ExitCode).
const (
	ExitOK     = 0 // the command succeeded
	ExitFailed = 1 // the engine, a provider or the program failed: look at the output, maybe retry
	ExitUsage  = 2 // bad flags or URNs, missing passphrase, CLI or policy pack, an invalid stack configuration, or a bindAddress that is not this host's: fix the input
	ExitPolicy = 3 // a mandatory policy refused the stack: nothing was created or changed
	// ExitProbe: an app release was live before this up, and the update
	// did not end ready: a new release failed a gate (migrate,
	// collectstatic, its health check, its readiness check, the switch) and
	// the live one kept serving, or the post-deploy probe failed.
	ExitProbe = 4
	// ExitFirstDeployFailed: no app release was live before this up (a
	// first deployment, or the first after a destroy), and a release gate or
	// the post-deploy probe failed: no release serves the app.
	ExitFirstDeployFailed = 5
)

// Error is a failed run with the exit code it maps to.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ExitCode maps the error returned by Run to a process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var de *Error
	if errors.As(err, &de) {
		return de.Code
	}
	return ExitFailed
}

func usageErr(format string, args ...any) error {
	return &Error{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// Command is a driver subcommand.
type Command string

// The subcommands.
const (
	Preview Command = "preview"
	Up      Command = "up"
	Destroy Command = "destroy"
	Outputs Command = "outputs"
	// Rollback is an up that brings back the previous release (see
	// rollback.go), refused unless the inputs given declare it.
	Rollback Command = "rollback"
	// Recover is an up of a stack without a database, which restores it
	// from the off-host repository first (see recover.go).
	Recover Command = "recover"
)

// Commands lists the subcommands.
var Commands = []Command{Preview, Up, Rollback, Recover, Destroy, Outputs}

// Options configure a run. Zero values take the documented defaults.
type Options struct {
	// Stack is the stack name (prod, dev); required.
	Stack string
	// Root is the repository root, the directory holding Pulumi.yaml.
	// Default: the nearest such directory at or above the working directory.
	Root string
	// StackFile holds the stack's settings. Default: <Root>/Pulumi.<Stack>.yaml.
	// Like the committed files it must carry no secret, not even encrypted.
	StackFile string
	// ConfigFiles and SecretFiles set nbms:<key> from a file's content (a
	// trailing newline dropped), the way `pulumi config set [--secret] key
	// < file` does: operator settings that are not committed (the TLS
	// certificate; the TLS key and Sentry DSN as secrets). Values travel on
	// stdin, never on a command line.
	ConfigFiles, SecretFiles map[string]string
	// PulumiRoot is the directory holding bin/pulumi. Default:
	// <Root>/.tools/pulumi when it holds one (`make tools`), else pulumi
	// from PATH.
	PulumiRoot string
	// PolicyPack is the policy pack binary (`make policy`). Default:
	// <Root>/bin/nbms-policy.
	PolicyPack string
	// PolicyConfig is an optional policy config file (--policy-pack-config).
	PolicyConfig string
	// ReportDir receives report.md/html/json/sarif. Default:
	// <Root>/bin/reports/<Stack>.
	ReportDir string
	// Refresh refreshes the state from the Docker engine before a preview,
	// an update or a destroy (after a manual change on the host).
	Refresh bool
	// Replace are URNs of resources to replace even if unchanged (preview
	// and up), e.g. a container a failed run left behind.
	Replace []string
	// Target are URNs of the only resources to operate on (preview, up and
	// destroy). Each URN of Replace and Target starts with
	// "urn:pulumi:<Stack>::".
	Target []string
	// RecoverTo is what recover restores: "latest" (the default: every
	// transaction in the off-host repository's archive) or an RFC 3339
	// time (the last transaction committed at or before it).
	RecoverTo string
	// Stdout receives the engine's progress and the driver's own lines;
	// Stderr the engine's error stream. Default os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
}

// Step is one resource operation the engine reported.
type Step struct {
	Op   string // create, update, replace, delete, same, ...
	URN  string
	Type string
	// Diffs are the properties that changed; Replaces those of them that
	// force a replacement.
	Diffs, Replaces []string
}

// Result is what a run observed.
type Result struct {
	// Steps are the engine's resource steps in the order it reported them
	// (for up: those of the update, not of the preview before it).
	Steps []Step
	// Changes counts the steps by operation (the engine's summary).
	Changes map[string]int
	// Policy are the policy findings the engine reported.
	Policy []apitype.PolicyEvent
	// Outputs are the stack outputs (outputs and up).
	Outputs auto.OutputMap
	// Report is the directory the policy report was written to, or "".
	Report string
	// Probe is the post-deploy probe's observation (up).
	Probe *hooks.Result
	// DeclaredRelease is the app release the program declared (preview,
	// up, rollback): the one that is live once an update succeeds.
	DeclaredRelease string
}

// Run executes one command against one stack. The error maps to an exit
// code with ExitCode.
//
// For its duration Run makes <Root>/infra the process's working directory:
// the program and the docker provider both resolve the image build paths
// relative to it, exactly as under `pulumi up` (Pulumi.yaml's main).
func Run(ctx context.Context, cmd Command, opts Options) (*Result, error) {
	r, err := newRun(cmd, opts)
	if err != nil {
		return nil, err
	}
	prev, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if err := os.Chdir(filepath.Join(r.opts.Root, "infra")); err != nil {
		return nil, usageErr("driver: %v", err)
	}
	defer func() { _ = os.Chdir(prev) }()

	work, err := os.MkdirTemp("", "nbms-deploy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	stack, err := r.openStack(ctx, work)
	if err != nil {
		return nil, err
	}
	if cmd == Preview || cmd == Up || cmd == Rollback {
		state, err := stack.Export(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading the state: %w", err)
		}
		if err := r.checkPassphraseSource(state); err != nil {
			return nil, err
		}
	}
	res := &Result{}
	switch cmd {
	case Preview:
		err = r.preview(ctx, stack, res)
	case Up:
		err = r.up(ctx, stack, res)
	case Rollback:
		err = r.rollback(ctx, stack, res)
	case Recover:
		err = r.recover(ctx, stack, func(replace []string) error {
			r.opts.Replace = replace
			return r.up(ctx, stack, res)
		})
	case Destroy:
		err = r.destroy(ctx, stack, res)
	case Outputs:
		err = r.outputs(ctx, stack, res)
	}
	return res, err
}

// run is one Run's resolved options and inputs.
type run struct {
	cmd  Command
	opts Options
	// raw is the stack's nbms settings (file plus operator files) as
	// stacks.Parse wants them, for the probe options.
	raw map[string]string
	// stackFile is the stack file as read once, copied verbatim into the
	// workspace.
	stackFile []byte
	pulumi    auto.PulumiCommand
	env       map[string]string
	project   *workspace.Project
}

func newRun(cmd Command, opts Options) (*run, error) {
	if !slices.Contains(Commands, cmd) {
		return nil, usageErr("unknown command %q; want one of %v", cmd, Commands)
	}
	if opts.Stack == "" {
		return nil, usageErr("--stack is required")
	}
	if err := checkEngineFlags(cmd, opts); err != nil {
		return nil, err
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Root == "" {
		root, err := stacks.FindRoot()
		if err != nil {
			return nil, usageErr("%v; run from the repository or pass --root", err)
		}
		opts.Root = root
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	opts.Root = root
	if opts.StackFile == "" {
		opts.StackFile = filepath.Join(root, "Pulumi."+opts.Stack+".yaml")
	}
	if opts.PolicyPack == "" {
		opts.PolicyPack = filepath.Join(root, "bin", "nbms-policy")
	}
	if opts.ReportDir == "" {
		opts.ReportDir = filepath.Join(root, "bin", "reports", opts.Stack)
	}
	if opts.PulumiRoot == "" {
		if _, err := os.Stat(filepath.Join(root, ".tools", "pulumi", "bin", "pulumi")); err == nil {
			opts.PulumiRoot = filepath.Join(root, ".tools", "pulumi")
		}
	}
	r := &run{cmd: cmd, opts: opts}

	if r.stackFile, err = os.ReadFile(opts.StackFile); err != nil {
		return nil, usageErr("stack %s: %v", opts.Stack, err)
	}
	if r.raw, err = stacks.ParseStackFile(r.stackFile); err != nil {
		return nil, usageErr("%s: %v", opts.StackFile, err)
	}
	for _, files := range []map[string]string{opts.ConfigFiles, opts.SecretFiles} {
		for key, path := range files {
			content, err := os.ReadFile(path)
			if err != nil {
				return nil, usageErr("nbms:%s: %v", key, err)
			}
			r.raw[key] = strings.TrimSuffix(strings.TrimSuffix(string(content), "\n"), "\r")
		}
	}
	if err := checkRecoverInputs(cmd, opts, r.raw); err != nil {
		return nil, err
	}
	if cmd == Recover {
		r.raw["recover"] = cmp.Or(opts.RecoverTo, stacks.RecoverLatest)
	}

	// The passphrase secrets provider needs it for every command: config
	// and state secrets are encrypted with it.
	if os.Getenv("PULUMI_CONFIG_PASSPHRASE") == "" && os.Getenv("PULUMI_CONFIG_PASSPHRASE_FILE") == "" {
		return nil, usageErr("set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE: the stack's secrets are encrypted with it (keep it in the CI secret store)")
	}
	if cmd == Preview || cmd == Up || cmd == Rollback || cmd == Recover {
		if info, err := os.Stat(opts.PolicyPack); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			return nil, usageErr("policy pack %s is missing or not executable: run `make policy`", opts.PolicyPack)
		}
		// Before any image build or engine run.
		if err := r.checkBindAddress(); err != nil {
			return nil, err
		}
	}

	if r.pulumi, err = auto.NewPulumiCommand(&auto.PulumiCommandOptions{Root: opts.PulumiRoot}); err != nil {
		return nil, usageErr("Pulumi CLI: %v (run `make tools`, or install Pulumi and put it on PATH)", err)
	}
	r.env, err = engineEnv(root)
	if err != nil {
		return nil, err
	}
	// The project is the repository's Pulumi.yaml (name, config schema,
	// required CLI version); only main changes, to an absolute path, so the
	// engine's working directory is infra/ as under `pulumi up`.
	if r.project, err = workspace.LoadProject(filepath.Join(root, stacks.ProjectPath)); err != nil {
		return nil, usageErr("%v", err)
	}
	r.project.Main = filepath.Join(root, "infra")
	return r, nil
}

// engineEnv is the environment of every pulumi command: the caller's, plus
// defaults for CI.
func engineEnv(root string) (map[string]string, error) {
	env := map[string]string{}
	backend := os.Getenv("PULUMI_BACKEND_URL")
	if backend == "" {
		dir := filepath.Join(root, ".pulumi-state")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		backend = "file://" + dir
	}
	env["PULUMI_BACKEND_URL"] = backend
	// The provider plugins scripts/build-providers.sh built and installed
	// for machines that cannot download them (`make setup`). Elsewhere the
	// user's own Pulumi home, where `pulumi plugin install` put them.
	if _, set := os.LookupEnv("PULUMI_HOME"); !set {
		if home := ProjectPulumiHome(root); dirExists(filepath.Join(home, "plugins")) {
			env["PULUMI_HOME"] = home
		}
	}
	defaults := map[string]string{
		"PULUMI_SKIP_UPDATE_CHECK": "true",
		// Plugins are installed on purpose (`pulumi plugin install`), not
		// fetched from the internet in the middle of a deployment.
		"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
		// Each run starts from a fresh workspace whose stack file has no
		// encryption salt yet: take the stack's secrets manager from its
		// state instead of making a new one (pulumi/pulumi#16412).
		"PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER": "true",
	}
	for k, v := range defaults {
		if _, set := os.LookupEnv(k); !set {
			env[k] = v
		}
	}
	return env, nil
}

// ProjectPulumiHome is the project-local Pulumi home under root, where
// scripts/build-providers.sh installs the provider plugins.
func ProjectPulumiHome(root string) string { return filepath.Join(root, ".tools", "pulumi", "home") }

func dirExists(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}

// openStack creates the inline workspace in work, copies the stack file
// into it, selects (or creates) the stack and sets the operator's values.
func (r *run) openStack(ctx context.Context, work string) (auto.Stack, error) {
	// The committed file verbatim: the settings keep their YAML types
	// (objects stay objects for the project's config schema).
	if err := os.WriteFile(filepath.Join(work, "Pulumi."+r.opts.Stack+".yaml"), r.stackFile, 0o600); err != nil {
		return auto.Stack{}, err
	}
	ws, err := auto.NewLocalWorkspace(ctx,
		auto.WorkDir(work),
		auto.Project(*r.project),
		auto.Program(deploy.Program),
		auto.Pulumi(r.pulumi),
		auto.EnvVars(r.env),
		auto.SecretsProvider("passphrase"),
	)
	if err != nil {
		return auto.Stack{}, fmt.Errorf("workspace: %w", err)
	}
	stack, err := auto.UpsertStack(ctx, r.opts.Stack, ws)
	if err != nil {
		return auto.Stack{}, fmt.Errorf("stack %s: %w", r.opts.Stack, err)
	}
	var env []string
	for k, v := range ws.GetEnvVars() {
		env = append(env, k+"="+v)
	}
	set := func(key, path string, secret bool) error {
		f, err := os.Open(path)
		if err != nil {
			return usageErr("nbms:%s: %v", key, err)
		}
		defer f.Close()
		kind := "--plaintext"
		if secret {
			kind = "--secret"
		}
		_, stderr, _, err := r.pulumi.Run(ctx, work, f, nil, nil, env,
			"config", "set", "--stack", r.opts.Stack, stacks.Namespace+":"+key, kind, "--non-interactive")
		if err != nil {
			return fmt.Errorf("setting nbms:%s: %w: %s", key, err, strings.TrimSpace(stderr))
		}
		return nil
	}
	for key, path := range r.opts.ConfigFiles {
		if err := set(key, path, false); err != nil {
			return auto.Stack{}, err
		}
	}
	for key, path := range r.opts.SecretFiles {
		if err := set(key, path, true); err != nil {
			return auto.Stack{}, err
		}
	}
	if r.cmd == Recover {
		// For this run only: each run starts from a fresh workspace.
		if err := stack.SetConfig(ctx, stacks.Namespace+":recover", auto.ConfigValue{Value: r.raw["recover"]}); err != nil {
			return auto.Stack{}, fmt.Errorf("setting nbms:recover: %w", err)
		}
	}
	return stack, nil
}

// config parses the stack's settings as the program does, for the probe.
func (r *run) config() (*stacks.Config, error) {
	return stacks.Parse(r.opts.Stack, stacks.Values{
		Raw: r.raw,
		Secret: func(key string) bool {
			_, ok := r.opts.SecretFiles[key]
			return ok
		},
	})
}

func (r *run) printf(format string, args ...any) {
	fmt.Fprintf(r.opts.Stdout, format, args...)
}

// collector gathers the engine events of one operation.
type collector struct {
	ch   chan events.EngineEvent
	done chan struct{}
	mu   sync.Mutex
	evs  []events.EngineEvent
}

func collect() *collector {
	c := &collector{ch: make(chan events.EngineEvent), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for ev := range c.ch {
			c.mu.Lock()
			c.evs = append(c.evs, ev)
			c.mu.Unlock()
		}
	}()
	return c
}

// streamGrace bounds the wait for the end of the event stream once the
// operation has returned. The Automation API closes the stream when the CLI
// ends it, but not when the CLI fails before starting it (e.g. on a stack
// config error): then the events seen so far are all there will be.
const streamGrace = 3 * time.Second

// wait returns the events once the operation's stream ended.
func (c *collector) wait() []events.EngineEvent {
	select {
	case <-c.done:
	case <-time.After(streamGrace):
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

// absorb records steps, policy findings and the summary into res.
func absorb(evs []events.EngineEvent, res *Result) {
	res.Steps = nil
	for _, ev := range evs {
		switch {
		case ev.ResourcePreEvent != nil:
			m := ev.ResourcePreEvent.Metadata
			res.Steps = append(res.Steps, Step{Op: string(m.Op), URN: m.URN, Type: m.Type, Diffs: m.Diffs, Replaces: m.Keys})
		case ev.PolicyEvent != nil:
			res.Policy = append(res.Policy, *ev.PolicyEvent)
		case ev.SummaryEvent != nil:
			res.Changes = map[string]int{}
			for op, n := range ev.SummaryEvent.ResourceChanges {
				res.Changes[string(op)] = n
			}
		}
	}
}

// classify maps a failed operation to its exit code from what the engine
// reported: a mandatory policy finding, the program's stack validation
// (stacks.Error), the post-deploy hook, or anything else.
func classify(err error, evs []events.EngineEvent) error {
	if err == nil {
		return nil
	}
	code := ExitFailed
	var reason string
	for _, ev := range evs {
		switch {
		case ev.PolicyEvent != nil && ev.PolicyEvent.EnforcementLevel == "mandatory":
			code, reason = ExitPolicy, "a mandatory policy refused the stack"
		case ev.DiagnosticEvent != nil && ev.DiagnosticEvent.Severity == "error" && code == ExitFailed:
			msg := ev.DiagnosticEvent.Message
			switch {
			case strings.Contains(msg, "invalid stack configuration"):
				code, reason = ExitUsage, "invalid stack configuration (see the diagnostics above)"
			case slices.ContainsFunc(deploy.HookNames, func(h string) bool { return strings.Contains(msg, fmt.Sprintf("hook %q failed", h)) }):
				code, reason = ExitProbe, "the post-deploy probe failed: "+firstLine(msg)
			case strings.Contains(msg, deploy.NotLivePrefix):
				// migrate, collectstatic or the switch kept a new release
				// from going live: the live one still serves.
				code, reason = ExitProbe, "the new app release did not go live: "+firstLine(msg[strings.Index(msg, deploy.NotLivePrefix):])
			case deploy.IsReleaseContainer(ev.DiagnosticEvent.URN):
				// A new release's container failed (its health check never
				// passed, say): the live release still serves.
				code, reason = ExitProbe, "the new app release did not go live: "+firstLine(msg)
			}
		}
	}
	// The CLI refuses a stack file that does not match Pulumi.yaml's config
	// schema before the program or the event stream starts.
	if code == ExitFailed && strings.Contains(err.Error(), "validating stack config") {
		code, reason = ExitUsage, "the stack settings do not match Pulumi.yaml's config schema"
	}
	if reason != "" {
		err = fmt.Errorf("%s: %w", reason, err)
	}
	return &Error{Code: code, Err: err}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
