// Package deploy is the NBMS Pulumi program: one Docker host running nginx,
// the app, PostgreSQL/PostGIS with pgBackRest, and Redis, one
// ComponentResource per tier.
//
// Program is the whole program. infra/main.go runs it under the Pulumi CLI;
// an Automation API driver can pass the same function as an inline program.
package deploy

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/nginx"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/stacks"
)

// deployment carries what every tier needs.
type deployment struct {
	cfg      *stacks.Config
	rendered rendered
	// root is the repository root relative to the working directory, so
	// image build paths stay the same on every machine.
	root string
}

// rendered are the config files, rendered before any resource exists so a
// renderer error also registers nothing.
type rendered struct {
	nginxConf      string
	pgbackrestConf string
	// relayConf is the backup relay's nginx.conf ("" without an off-host
	// repository).
	relayConf string
}

// Program is the Pulumi program: Deploy, then export the stack outputs.
func Program(ctx *pulumi.Context) error {
	outputs, err := Deploy(ctx)
	if err != nil {
		return err
	}
	for name, value := range outputs {
		ctx.Export(name, value)
	}
	return nil
}

// Deploy loads and validates the stack configuration, renders the config
// files, and only then registers the resources. It returns the stack
// outputs: url, containers, app (the live release), backupSchedule and
// generatedSecrets (secret).
func Deploy(ctx *pulumi.Context) (pulumi.Map, error) {
	cfg, err := stacks.Load(ctx)
	if err != nil {
		return nil, err
	}
	r, err := render(cfg)
	if err != nil {
		return nil, err
	}
	// The CLI runs the program in infra/, an Automation API driver anywhere
	// below the root.
	root, err := stacks.FindRoot()
	if err != nil {
		return nil, fmt.Errorf("deploy: %w", err)
	}
	d := &deployment{cfg: cfg, rendered: r, root: root}
	return d.run(ctx)
}

func render(cfg *stacks.Config) (rendered, error) {
	var r rendered
	var errs []error
	var err error
	if p, err := NginxParams(cfg); err != nil {
		errs = append(errs, err)
	} else if r.nginxConf, err = nginx.Render(p); err != nil {
		errs = append(errs, err)
	}
	params := pgbackrest.Params{
		Stanza: pgStanza, PGDataPath: pgDataPath, PGSocketPath: pgSocketPath, PGUser: "postgres", PGPort: 5432,
		RepoPath: pgRepoPath, LogPath: "/tmp/nbms", LockPath: "/tmp/nbms",
		RetentionFull: cfg.Backup.RetentionFull, RetentionDiff: cfg.Backup.RetentionDiff, ProcessMax: cfg.Backup.ProcessMax,
	}
	if cfg.Backup.OffHost != nil {
		repo := cfg.Backup.OffHostRepo(offHostCAPath, pgSpoolPath)
		params.OffHost = &repo
		if r.relayConf, err = nginx.RenderRelay(relayParams(cfg)); err != nil {
			errs = append(errs, err)
		}
	}
	if r.pgbackrestConf, err = pgbackrest.Render(params); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return r, fmt.Errorf("rendering the stack's config files: %w", errors.Join(errs...))
	}
	return r, nil
}

func (d *deployment) run(ctx *pulumi.Context) (pulumi.Map, error) {
	hooks, err := d.registerHooks(ctx)
	if err != nil {
		return nil, err
	}
	net, err := d.newNetwork(ctx)
	if err != nil {
		return nil, err
	}
	sec, err := d.newSecrets(ctx)
	if err != nil {
		return nil, err
	}
	images, err := d.newImages(ctx)
	if err != nil {
		return nil, err
	}
	app, err := d.newApp(ctx)
	if err != nil {
		return nil, err
	}
	db, err := d.newDatabase(ctx, net, sec, images.DB, images.Backup, images.Proxy)
	if err != nil {
		return nil, err
	}
	cache, err := d.newCache(ctx, net, images.Cache)
	if err != nil {
		return nil, err
	}
	if err := d.startApp(ctx, app, images.App, net, sec, db, cache, hooks.app); err != nil {
		return nil, err
	}
	proxy, err := d.newProxy(ctx, net, app, images.Proxy, hooks.public)
	if err != nil {
		return nil, err
	}
	if err := d.retireLogins(ctx, app, proxy); err != nil {
		return nil, err
	}
	generated := pulumi.StringMap{
		"dbSuperuserPassword": sec.DBSuperuserPassword,
		"appDbPassword":       sec.AppDBPassword,
		"redisPassword":       sec.RedisPassword,
		"secretKey":           sec.SecretKey,
	}
	schedule := pulumi.Map{
		"full": pulumi.String(d.cfg.Backup.FullCron), "diff": pulumi.String(d.cfg.Backup.DiffCron),
		"retentionFull": pulumi.Int(d.cfg.Backup.RetentionFull), "retentionDiff": pulumi.Int(d.cfg.Backup.RetentionDiff),
		"archiveTimeout": pulumi.String(d.cfg.Backup.ArchiveTimeout),
	}
	if d.cfg.Backup.OffHost != nil {
		schedule[OutputOffHostPassphrase] = pulumi.String(PassphraseGenerated)
		if d.cfg.BackupCipherPass.IsSet() {
			schedule[OutputOffHostPassphrase] = pulumi.String(PassphraseGiven)
		} else {
			// Without it the off-host backups cannot be read: the operator
			// keeps a copy away from this host (the backup runbook says how).
			generated["backupCipherPass"] = sec.BackupCipherPass
		}
	}
	containers := pulumi.StringMap{
		stacks.RoleProxy: proxy.Container.Name, stacks.RoleSwitch: proxy.Switch.Name, stacks.RoleApp: app.Container.Name,
		stacks.RoleMigrate: app.Migrate.Name, stacks.RoleCollectstatic: app.Collectstatic.Name,
		stacks.RoleDB: db.Container.Name, stacks.RoleBackup: db.Backup.Name, stacks.RoleCache: cache.Container.Name,
	}
	if db.Relay != nil {
		containers[conventions.RoleBackupRelay] = db.Relay.Name
	}
	if db.Restore != nil {
		containers[conventions.RoleRestore] = db.Restore.Name
	}
	for role, c := range app.Logins {
		containers[role] = c.Name
	}
	for role, c := range app.Retires {
		containers[role] = c.Name
	}
	return pulumi.Map{
		"url":        pulumi.String(d.cfg.PublicURL()),
		"containers": containers,
		// The live app release: what the state says nginx sends to, and the
		// logins it uses (the only ones left).
		"app": pulumi.Map{
			"release": proxy.Switched, "container": app.Container.Name,
			"logins": d.liveLogins(app, dbLogin(d.cfg.SecretGenerations.AppDBPassword), cacheLogin(d.cfg.SecretGenerations.RedisPassword)),
		},
		// The release this run declares: known before any resource changes
		// (a preview reports it), and app.release once the update succeeds.
		// The driver records it in the update history, which is what
		// rollback reads.
		"declaredRelease": pulumi.String(app.Release),
		"backupSchedule":  schedule,
		// Generated by this program (not given by the operator); read one with
		// `pulumi stack output generatedSecrets --show-secrets`.
		"generatedSecrets": pulumi.ToSecret(generated),
	}, nil
}

// OutputOffHostPassphrase is the key of the backupSchedule output that says
// where the off-host repository's passphrase comes from: PassphraseGenerated
// (the program's, in the state) or PassphraseGiven (nbms:backupCipherPass,
// which every later up must give again: nbms-deploy checks it).
const (
	OutputOffHostPassphrase = "offHostPassphrase"
	PassphraseGenerated     = "generated"
	PassphraseGiven         = "nbms:backupCipherPass"
)

// path is a repository path relative to the working directory.
func (d *deployment) path(p string) string { return filepath.Join(d.root, p) }
