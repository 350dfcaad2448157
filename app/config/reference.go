package config

import (
	"fmt"
	"strings"
)

// ReferencePath is where the generated reference lives, relative to the
// repository root.
const ReferencePath = "docs/production_hardening/secure_settings_reference.md"

// Reference renders the settings reference (Markdown) from the declaration.
// The committed copy at ReferencePath must equal it; a test enforces that.
func Reference() string {
	var b strings.Builder
	b.WriteString("# Secure settings reference\n\n")
	b.WriteString("<!-- Generated from app/config by `nbms settings-reference` (make docs). Do not edit by hand: a test fails when this file is stale. -->\n\n")
	b.WriteString("Every environment variable the NBMS app reads, declared once in `app/config`. ")
	b.WriteString("The app validates all of them at start-up and exits with status 78 (EX_CONFIG) and one message naming every missing or invalid variable; ")
	b.WriteString("secret values are never echoed. `NBMS_ENV` selects the profile (`dev`, `test`, `prod`) and has no default.\n\n")
	b.WriteString("Columns: **Prod** says whether production requires the variable to be set explicitly; ")
	b.WriteString("**Secret** variables may instead be given as a file: `NAME_FILE` names a file holding the value (surrounding white space dropped), and setting both `NAME` and `NAME_FILE` is an error. ")
	b.WriteString("The infra program delivers every secret that way, as a file under `/run/secrets` on a volume only its tier mounts, so no secret is in Docker's metadata (`docker inspect`); the policy pack refuses a secret in a container's environment; ")
	b.WriteString("**Default dev/test** and **Default prod** are the values used when the variable is unset; ")
	b.WriteString("**Stack** is how a deployment stack (`Pulumi.<stack>.yaml`, validated by `stacks/` before any resource exists) sets the variable: ")
	b.WriteString("its typed stack key, or `" + StackEnvKey + ".NAME` for the operator's tuning, or \"set by the program\" (listen address, paths, the generated secrets and connection URLs).\n\n")
	b.WriteString("Tuning a variable from the stack: `pulumi config set --path '" + StackEnvKey + ".RATE_LIMIT_PUBLIC_API' 600/1m` ")
	b.WriteString("(in a committed stack file, one line: `" + StackEnvKey + ": {\"RATE_LIMIT_PUBLIC_API\": \"600/1m\"}`). ")
	b.WriteString("Each value is checked by the rules below, and the whole environment by the app's loader and the deploy checks, before anything deploys; ")
	b.WriteString("a name that is not in the contract, that has a typed key, that the program sets or that is a secret is refused with the key that names it. ")
	b.WriteString("A new value is a new app release, which goes live blue/green.\n")

	group := ""
	for _, v := range contract {
		if v.Group != group {
			group = v.Group
			fmt.Fprintf(&b, "\n## %s\n\n", group)
			b.WriteString("| Variable | Prod | Secret | Default dev/test | Default prod | Rules | Stack | Description |\n")
			b.WriteString("|---|---|---|---|---|---|---|---|\n")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s | %s |\n",
			v.Name, requirement(v), yesNo(v.Secret), cell(v.DefaultFor(Dev)), cell(v.DefaultFor(Prod)), rulesCell(v), stackCell(v), escapePipes(v.Doc))
	}

	b.WriteString("\n## Deploy checks\n\n")
	b.WriteString("Rules over the settings as a whole, after Django's `check --deploy` (IDs `NBMS-Wnnn` mirror Django's `security.Wnnn`; `NBMS-Cnnn` are checks Django lacks). ")
	b.WriteString("Start-up refuses a failing check that applies to the profile; `nbms predeploy-check` lists them all with the database, Redis, migration and file-system checks.\n\n")
	b.WriteString("| ID | Applies to | Variables | Requirement |\n|---|---|---|---|\n")
	for _, c := range deployChecks {
		applies := "prod"
		if c.AllProfiles {
			applies = "all profiles"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.ID, applies, "`"+strings.Join(c.Vars, "`, `")+"`", escapePipes(c.Title))
	}
	return b.String()
}

func requirement(v Var) string {
	switch v.Required {
	case Always:
		return "required (all profiles)"
	case RequiredInProd:
		return "required"
	}
	return "optional"
}

func stackCell(v Var) string {
	switch key := v.StackKey(); {
	case key != "":
		return "`" + key + "`"
	case v.Stack == ProgramOwned:
		return "set by the program"
	}
	return "none (a secret without a stack key)"
}

func rulesCell(v Var) string {
	parts := []string{}
	if v.Rules != "" {
		parts = append(parts, "`"+escapePipes(v.Rules)+"`")
	}
	if v.check != nil {
		parts = append(parts, "semantic check")
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, " + ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

func cell(s string) string {
	if s == "" {
		return "(none)"
	}
	return "`" + escapePipes(s) + "`"
}

func escapePipes(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
