// Command nbms-deploy previews, deploys, destroys and reads an NBMS stack
// with the Pulumi Automation API (package infra/driver): the same program
// `pulumi up` runs from Pulumi.yaml, with the policy pack attached.
//
//	nbms-deploy preview|up|rollback|recover|destroy|outputs --stack prod [flags]
//
// Exit status: 0 ok, 1 deployment or engine failure, 2 usage or
// configuration error, 3 a mandatory policy refused the stack (nothing was
// changed), 4 a release gate or the post-deploy probe failed while an app
// release was live before the update (a failed gate leaves it serving),
// 5 the same on a first deployment: no release was live, none serves.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nbms-deploy/nbms/infra/driver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: nbms-deploy preview|up|rollback|recover|destroy|outputs --stack NAME [flags]

  preview   plan the stack with the policy pack; writes the policy report
  up        preview (a mandatory policy stops here), update, write the
            policy report from the new state, probe /healthz and /readyz
  rollback  up, refused unless this checkout and stack settings deploy the
            previous release (read from the update history): the release
            live before the current one, or after a failed update the live
            release itself; the refusal names the commit to check out
  recover   up of a stack with no database in its state (a lost host, a new
            engine), its database restored first from the off-host
            repository: --to latest (default) or an RFC 3339 time; needs
            --secret-file backupCipherPass=FILE, the passphrase kept off
            the host (docs/production_hardening/db_backup_pitr_runbook.md)
  destroy   delete everything except protected data volumes
  outputs   print the stack outputs (secrets masked)

Engine flags (URNs as ` + "`pulumi stack --show-urns`" + ` lists them; each must
start with "urn:pulumi:<stack>::"):
  --refresh      preview, up, rollback, destroy: refresh the state from the Docker
                 engine first, e.g. after a manual change on the host
  --replace URN  preview, up: replace this resource even if unchanged, e.g.
                 a container a failed run left in the state (repeatable)
  --target URN   preview, up, destroy: operate on these resources only
                 (repeatable); destroy refuses a protected one

preview, up, rollback and recover check first that nbms:bindAddress is 0.0.0.0, :: or an
address of this host, unless the Docker engine is remote (DOCKER_HOST).

Environment: PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE
(required); PULUMI_BACKEND_URL (default file://<repo>/.pulumi-state);
DOCKER_HOST (default: this host's engine).

Exit status:
  0 ok
  1 deployment/engine failure
  2 usage or configuration error
  3 mandatory policy violation (nothing changed)
  4 an app release was live before this up, and a new release failed a
    gate (migrate, collectstatic, health or readiness check, switch) and
    the live one kept serving, or the post-deploy probe failed
  5 first deployment failed: no app release was live before this up, and
    a release gate or the post-deploy probe failed; nothing serves the app

Flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nbms-deploy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		return driver.ExitUsage
	}
	cmd := driver.Command(args[0])
	opts := driver.Options{Stdout: stdout, Stderr: stderr, ConfigFiles: map[string]string{}, SecretFiles: map[string]string{}}
	fs.StringVar(&opts.Stack, "stack", "", "stack name: prod or dev (required)")
	fs.StringVar(&opts.Root, "root", "", "repository root (default: found from the working directory)")
	fs.StringVar(&opts.StackFile, "stack-file", "", "stack settings (default <root>/Pulumi.<stack>.yaml)")
	fs.Var(keyFiles(opts.ConfigFiles), "config-file", "`key=path`: set nbms:key from a file, e.g. tlsCertificate=fullchain.pem (repeatable)")
	fs.Var(keyFiles(opts.SecretFiles), "secret-file", "`key=path`: set nbms:key as a secret from a file, e.g. tlsKey=privkey.pem (repeatable)")
	fs.StringVar(&opts.PolicyPack, "policy-pack", "", "policy pack binary (default <root>/bin/nbms-policy; `make policy`)")
	fs.StringVar(&opts.PolicyConfig, "policy-pack-config", "", "policy config JSON (optional)")
	fs.StringVar(&opts.ReportDir, "report-dir", "", "policy report directory (default <root>/bin/reports/<stack>)")
	fs.StringVar(&opts.PulumiRoot, "pulumi-root", "", "directory holding bin/pulumi (default <root>/.tools/pulumi if built, else PATH)")
	fs.BoolVar(&opts.Refresh, "refresh", false, "refresh the state from the Docker engine first (preview, up, rollback, destroy)")
	fs.Var((*urns)(&opts.Replace), "replace", "`URN` of a resource to replace even if unchanged (preview, up; repeatable)")
	fs.Var((*urns)(&opts.Target), "target", "`URN` of a resource to operate on, and no other (preview, up, destroy; repeatable)")
	fs.StringVar(&opts.RecoverTo, "to", "", "recover: `latest` (default) or an RFC 3339 time such as 2026-12-07T14:05:00Z")
	if err := fs.Parse(args[1:]); err != nil {
		return driver.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nbms-deploy: unexpected arguments %q\n", fs.Args())
		return driver.ExitUsage
	}
	_, err := driver.Run(ctx, cmd, opts)
	if err != nil {
		fmt.Fprintf(stderr, "nbms-deploy %s: %v\n", cmd, err)
	}
	return driver.ExitCode(err)
}

// keyFiles is a repeatable key=path flag.
type keyFiles map[string]string

func (k keyFiles) String() string { return "" }

func (k keyFiles) Set(v string) error {
	key, path, ok := strings.Cut(v, "=")
	if !ok || key == "" || path == "" {
		return fmt.Errorf("want key=path, got %q", v)
	}
	k[strings.TrimPrefix(key, "nbms:")] = path
	return nil
}

// urns is a repeatable URN flag; the driver checks each against the stack.
type urns []string

func (u *urns) String() string { return strings.Join(*u, ",") }

func (u *urns) Set(v string) error {
	*u = append(*u, v)
	return nil
}
