// Command nbms-policy is the NBMS policy pack.
//
// Run by the Pulumi engine (`pulumi preview --policy-pack ./bin/nbms-policy`)
// it serves the analyzer protocol through policyx. Run by hand or in CI:
//
//	nbms-policy audit (--preview FILE | --state FILE) --out DIR [--config policy-config.json]
//
// evaluates the same policies over `pulumi preview --json` or `pulumi stack
// export` output and writes report.md, report.html, report.json and
// report.sarif. Exit status: 0 no mandatory policy failed, 1 a mandatory
// policy failed, 2 usage or input error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/policyx"

	"github.com/nbms-deploy/nbms/policy/input"
	"github.com/nbms-deploy/nbms/policy/plugin"
	"github.com/nbms-deploy/nbms/policy/report"
	"github.com/nbms-deploy/nbms/policy/rules"
)

// Exit statuses of the audit.
const (
	exitPass      = 0
	exitMandatory = 1
	exitUsage     = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "audit":
			return audit(args[1:], stdout, stderr)
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return exitPass
		}
	}
	// Anything else is the engine starting the plugin (its arguments are
	// the engine address and a directory, which policyx does not need).
	if err := policyx.Main(plugin.Pack); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

const usage = `usage:
  nbms-policy                      serve the policy pack to the Pulumi engine
  nbms-policy audit (--preview FILE | --state FILE) --out DIR [--config FILE]
      FILE for --preview: output of ` + "`pulumi preview --json`" + `
      FILE for --state:   output of ` + "`pulumi stack export`" + `
      --config:           policy config (same format as --policy-pack-config)
  exit status: 0 pass, 1 a mandatory policy failed, 2 usage or input error
`

func audit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	preview := fs.String("preview", "", "pulumi preview --json output")
	state := fs.String("state", "", "pulumi stack export output")
	out := fs.String("out", "", "directory for the reports")
	configPath := fs.String("config", "", "policy config JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if (*preview == "") == (*state == "") || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "nbms-policy audit: give exactly one of --preview or --state, and --out")
		fs.Usage()
		return exitUsage
	}
	rep, source, err := evaluate(*preview, *state, *configPath)
	if err != nil {
		fmt.Fprintln(stderr, "nbms-policy audit:", err)
		return exitUsage
	}
	meta := report.Meta{Tool: plugin.PackName, Version: plugin.Version, Source: source}
	if err := report.WriteAll(*out, rep, meta); err != nil {
		fmt.Fprintln(stderr, "nbms-policy audit: writing reports:", err)
		return exitUsage
	}
	s := report.Summarize(rep)
	fmt.Fprintf(stdout, "%d policies: %d passed, %d failed, %d cannot evaluate, %d disabled; reports in %s\n",
		s.Policies, s.Passed, s.Failed, s.CannotEvaluate, s.Disabled, *out)
	if rep.MandatoryFailed() {
		fmt.Fprintf(stdout, "FAIL: mandatory policies failed: %v\n", s.MandatoryFailed)
		return exitMandatory
	}
	return exitPass
}

func evaluate(previewPath, statePath, configPath string) (rules.Report, string, error) {
	cfg := rules.Config{}
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return rules.Report{}, "", err
		}
		if cfg, err = rules.ParseConfig(data); err != nil {
			return rules.Report{}, "", fmt.Errorf("%s: %w", configPath, err)
		}
	}
	path, read := previewPath, input.Preview
	if statePath != "" {
		path, read = statePath, input.StackExport
	}
	f, err := os.Open(path)
	if err != nil {
		return rules.Report{}, "", err
	}
	defer f.Close()
	resources, err := read(f)
	if err != nil {
		return rules.Report{}, "", fmt.Errorf("%s: %w", path, err)
	}
	if len(resources) == 0 {
		return rules.Report{}, "", errors.New(path + ": no resources to evaluate")
	}
	return rules.Evaluate(resources, cfg), filepath.Base(path), nil
}
