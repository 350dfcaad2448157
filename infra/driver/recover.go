package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/deploy"
	"github.com/nbms-deploy/nbms/stacks"
)

// Disaster recovery: `nbms-deploy recover` brings a stack up on a Docker
// engine that has none of it (no volumes, no containers), with its
// database restored from the off-host repository (nbms:recover), latest
// or to a point in time. It is an up with nbms:recover set for that one
// run, so the restore one-shot runs once, before PostgreSQL first starts,
// and the next plain up removes it and changes nothing else.

// cipherPassKey is the secret config key of the off-host repository's
// passphrase given by the operator (stacks.Config.BackupCipherPass).
const cipherPassKey = "backupCipherPass"

// checkRecoverInputs refuses, before any Pulumi command, a recover without
// the passphrase that opens the repository, and any other command with
// nbms:recover set: recovery runs through recover alone, which checks the
// stack first.
func checkRecoverInputs(cmd Command, opts Options, raw map[string]string) error {
	if cmd != Recover {
		if opts.RecoverTo != "" {
			return usageErr("--to applies to recover, not to %s", cmd)
		}
		if raw["recover"] != "" {
			return usageErr("nbms:recover is set in %s: a recovery runs through `nbms-deploy recover`, which checks that the stack has no database first; remove the setting", opts.StackFile)
		}
		return nil
	}
	if raw["recover"] != "" {
		return usageErr("nbms:recover is set in %s: give the target with --to instead", opts.StackFile)
	}
	if _, ok := opts.SecretFiles[cipherPassKey]; !ok {
		return usageErr("recover reads the off-host repository, which only its passphrase opens: give the one kept off the host (generatedSecrets.backupCipherPass) with --secret-file %s=FILE", cipherPassKey)
	}
	return nil
}

// recover runs the recovery's up, once the state shows that the stack has
// no database container. A state that holds the restore one-shot but no
// database is an earlier recovery that failed at its restore: that
// one-shot runs again.
func (r *run) recover(ctx context.Context, stack auto.Stack, up func(replace []string) error) error {
	state, err := stack.Export(ctx)
	if err != nil {
		return fmt.Errorf("reading the state: %w", err)
	}
	db, restore, err := recoveryResources(state)
	if err != nil {
		return err
	}
	if db != "" {
		return usageErr("stack %s has a database in its state (%s): recover starts a stack whose state has none, on an engine without its data. "+
			"If its host is gone and this state is all that is left: read its passphrase first (`pulumi stack output --stack %s generatedSecrets --show-secrets`, backupCipherPass, "+
			"unless it was given), then remove the state (`pulumi stack rm --stack %s --force`) and run recover again; the backup runbook has the steps",
			r.opts.Stack, db, r.opts.Stack, r.opts.Stack)
	}
	var replace []string
	if restore != "" {
		r.printf("The state holds the restore of an earlier recovery that did not finish (%s): it runs again.\n", restore)
		replace = []string{restore}
	}
	target := r.raw["recover"]
	if target == stacks.RecoverLatest {
		r.printf("Recovering stack %s from its off-host repository: every transaction in the archive.\n", r.opts.Stack)
	} else {
		r.printf("Recovering stack %s from its off-host repository to the point in time %s.\n", r.opts.Stack, target)
	}
	return up(replace)
}

// recoveryResources returns the URNs of the database container and of the
// restore one-shot in state ("" for each one it does not hold).
func recoveryResources(state apitype.UntypedDeployment) (db, restore string, err error) {
	d, err := deployment(state)
	if err != nil {
		return "", "", err
	}
	for _, res := range d.Resources {
		if res.Type != "docker:index/container:Container" {
			continue
		}
		switch name := string(res.URN)[strings.LastIndex(string(res.URN), "::")+2:]; name {
		case conventions.RoleDB:
			db = string(res.URN)
		case conventions.RoleRestore:
			restore = string(res.URN)
		}
	}
	return db, restore, nil
}

// checkPassphraseSource refuses an update that would change where the
// off-host repository's passphrase comes from (deploy.OutputOffHostPassphrase
// in the state's outputs): a stack recovered with a given passphrase
// needs it at every update (the program would generate a new one, which
// does not open the repository), and a stack whose passphrase is generated
// must not be given one (the program would drop the generated one, which
// is protected, and change the repository's passphrase).
func (r *run) checkPassphraseSource(state apitype.UntypedDeployment) error {
	d, err := deployment(state)
	if err != nil {
		return err
	}
	_, given := r.opts.SecretFiles[cipherPassKey]
	for _, res := range d.Resources {
		if res.Type != resource.RootStackType {
			continue
		}
		schedule, _ := res.Outputs["backupSchedule"].(map[string]any)
		switch source := schedule[deploy.OutputOffHostPassphrase]; {
		case source == deploy.PassphraseGiven && !given:
			return usageErr("stack %s opens its off-host repository with the passphrase given at its recovery: give it again with --secret-file %s=FILE (a generated one would not open the repository)",
				r.opts.Stack, cipherPassKey)
		case source == deploy.PassphraseGenerated && given:
			return usageErr("stack %s opens its off-host repository with the passphrase the program generated (in its state): drop nbms:%s, which only a recovered stack takes",
				r.opts.Stack, cipherPassKey)
		}
	}
	return nil
}

// deployment decodes an exported state ("" state: no resources).
func deployment(state apitype.UntypedDeployment) (apitype.DeploymentV3, error) {
	var d apitype.DeploymentV3
	if len(state.Deployment) > 0 {
		if err := json.Unmarshal(state.Deployment, &d); err != nil {
			return d, fmt.Errorf("reading the state: %w", err)
		}
	}
	return d, nil
}
