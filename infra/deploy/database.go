package deploy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/conventions"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/stacks"
)

// Paths and names inside the database and backup images (the db and
// backup targets of infra/images/db/Dockerfile).
const (
	pgUID        = "999:999" // the postgres user of infra/images/db
	pgDataPath   = "/var/lib/postgresql/data"
	pgSocketPath = "/var/run/postgresql"
	pgRepoPath   = "/var/lib/pgbackrest"
	pgStanza     = "nbms"
	pgConfigPath = "/tmp/nbms/pgbackrest.conf"
	dbAlias      = "db"
	appDBName    = "nbms"
	// appDBOwner owns the app's database and every object in it; it cannot
	// log in. The app logs in as one of its two login roles (dbLogin).
	appDBOwner = "nbms"
	// dbEntrypoint initialises an empty data directory (superuser password,
	// the app's role and database with PostGIS) and then execs postgres.
	dbEntrypoint = "/usr/local/bin/nbms-db-entrypoint"
	// dbRestore rebuilds an empty data directory from a repository (the
	// restore one-shot of a recovery).
	dbRestore = "/usr/local/bin/nbms-db-restore"
	// drillPath is the backup container's restore drill volume: each drill
	// restores into a new directory there (room for one copy of the
	// database), and the last drill's result stays there for
	// `nbms backup-status --drill-status` (drillStatusPath).
	drillPath       = "/var/lib/nbms-drill"
	drillStatusPath = drillPath + "/last-drill.json"
)

// Repositories of pgBackRest's config as its command lines name them.
var (
	localRepo   = strconv.Itoa(conventions.BackupLocalRepo)
	offHostRepo = strconv.Itoa(conventions.BackupOffHostRepo)
)

// Database is PostgreSQL/PostGIS with WAL archiving to pgBackRest, and the
// backup scheduler.
type Database struct {
	pulumi.ResourceState
	Container, Backup *docker.Container
	// Relay is the backup relay (nil without an off-host repository).
	Relay *docker.Container
	// Restore is the restore one-shot of a recovery (nil without
	// nbms:recover).
	Restore *docker.Container
	// image and socket are what a release's dblogin and dbretire one-shots
	// run from and connect through.
	image  pulumi.StringInput
	socket volumeMount
}

// dbLogin is the role the app logs in as with the app database password
// of a generation (nbms:secretGenerations appDbPassword): <owner>_a for
// even generations, <owner>_b for odd ones. A PostgreSQL role has one
// password, so two roles take turns: a rotation gives its new password to
// the role the live release does not use, and the live release keeps its
// own until the new one is live (see infra/images/db/nbms-db-login.sh).
func dbLogin(generation int) string {
	return appDBOwner + "_" + string(rune('a'+generation%2))
}

// newDatabase runs PostgreSQL from dbImage and the backup scheduler from
// backupImage: only the latter holds the app's binary, so an app release
// replaces the scheduler but leaves PostgreSQL running.
func (d *deployment) newDatabase(ctx *pulumi.Context, net *Network, sec *Secrets, dbImage, backupImage, relayImage *docker.Image) (*Database, error) {
	db := &Database{}
	if err := ctx.RegisterComponentResource(typeDatabase, "database", db); err != nil {
		return nil, err
	}
	// The off-host repository's relay starts first: the database's first
	// start creates the stanza in both repositories before it archives.
	offHost, err := d.newOffHostAccess(ctx, db, net, sec, relayImage)
	if err != nil {
		return nil, err
	}
	if offHost != nil {
		db.Relay = offHost.relay
	}
	pgdata, pgdataName, err := d.newVolume(ctx, db, "pgdata", true)
	if err != nil {
		return nil, err
	}
	repo, repoName, err := d.newVolume(ctx, db, "pgbackrest-repo", true)
	if err != nil {
		return nil, err
	}
	// The socket directory is shared with the backup scheduler: pgBackRest
	// talks to PostgreSQL over its Unix socket only.
	sock, sockName, err := d.newVolume(ctx, db, "pgrun", false)
	if err != nil {
		return nil, err
	}
	internal := []attachment{{network: net.Internal, name: net.InternalName, aliases: []string{dbAlias}}}
	// The superuser's password, which the entrypoint sets at every start.
	// The app's is not the database container's: each release's dblogin
	// one-shot grants it, so that it rotates with PostgreSQL running.
	files := []secretFile{{name: "POSTGRES_PASSWORD", value: sec.DBSuperuserPassword}}
	// pgBackRest reads its include file itself (no NAME_FILE for it).
	volumeFiles := files
	if offHost != nil {
		volumeFiles = append(slices.Clip(files), offHost.secrets)
	}
	secrets, err := d.newSecretVolume(ctx, db, "secrets-db", dbImage.RepoDigest, pgUID, []string{"/bin/true"}, volumeFiles)
	if err != nil {
		return nil, err
	}
	rendered := []renderedFile{{path: pgConfigPath, content: d.rendered.pgbackrestConf}}

	// WAL archiving through pgBackRest, as postgres -c flags: no config file
	// to place on the read-only root filesystem.
	var settingFlags []string
	settings := pgbackrest.PostgresSettings(pgConfigPath, pgStanza, d.cfg.Backup.ArchiveTimeoutDuration())
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		settingFlags = append(settingFlags, "-c", name+"="+settings[name])
	}
	postgres := append([]string{dbEntrypoint, "postgres"}, settingFlags...)
	dbEnv := map[string]string{
		"POSTGRES_INITDB_ARGS": "--data-checksums --encoding=UTF8 --locale=C.UTF-8",
		"NBMS_DB_NAME":         appDBName,
		// No NBMS_DB_PASSWORD: the owner is created NOLOGIN.
		"NBMS_DB_USER": appDBOwner,
		// The entrypoint creates the stanza before archiving starts, so
		// that no archive_command of a first deploy fails.
		"PGBACKREST_CONFIG": pgConfigPath,
		"PGBACKREST_STANZA": pgStanza,
	}
	maps.Copy(dbEnv, fileEnv(files))
	dbSpec := containerSpec{
		role:        stacks.RoleDB,
		image:       dbImage.RepoDigest,
		user:        pgUID,
		healthcheck: healthcheck(checkTiming{10 * time.Second, 5 * time.Second, time.Minute, 5}, "pg_isready", "-q", "-h", pgSocketPath, "-U", "postgres"),
		networks:    internal,
		volumes: []volumeMount{
			{volume: pgdata, name: pgdataName, path: pgDataPath},
			{volume: repo, name: repoName, path: pgRepoPath},
			{volume: sock, name: sockName, path: pgSocketPath},
			secrets.mount,
		},
		tmpfs:       map[string]string{"/tmp": tmpfsOptions(64)},
		wait:        true,
		stopTimeout: 60,
		shmSizeMB:   256,
		dependsOn:   []pulumi.Resource{secrets.holder},
		opts:        []pulumi.ResourceOption{secrets.replaceOnChange},
	}
	offHost.add(&dbSpec, &rendered, dbEnv)
	if d.cfg.Recover != "" {
		restore, err := d.newRestore(ctx, db, dbSpec, offHost, rendered, dbEnv, settingFlags)
		if err != nil {
			return nil, err
		}
		db.Restore = restore
		// PostgreSQL starts on the recovered data directory, and only if
		// the restore succeeded.
		dbSpec.image = restoredImage(d.name(conventions.RoleRestore), dbSpec.image, restore.ExitCode)
		dbSpec.dependsOn = append(dbSpec.dependsOn, restore)
	}
	dbSpec.entrypoint, dbSpec.command = withFiles(rendered, postgres...)
	dbSpec.envs = envList(dbEnv)
	db.Container, err = d.newContainer(ctx, db, dbSpec)
	if err != nil {
		return nil, err
	}

	// Backup scheduler: the backup image (the database image's pgBackRest
	// and PostgreSQL client, plus the app's nbms binary), running
	// `nbms backup-schedule`. It reads the data directory read-only and
	// reaches PostgreSQL through the shared socket. It starts after
	// PostgreSQL is healthy; if PostgreSQL is down at a later start,
	// stanza-create fails, the process exits and Docker restarts it with a
	// growing delay.
	// The scheduler takes its schedule from its flags; the same values
	// travel as NBMS_BACKUP_* variables because that is what the policy
	// pack checks (policy/rules EnvBackup*). PGBACKREST_* serve the health
	// check and `docker exec ... pgbackrest info`.
	backupEnv := map[string]string{
		"PGBACKREST_CONFIG":                pgConfigPath,
		"PGBACKREST_STANZA":                pgStanza,
		"PGHOST":                           pgSocketPath,
		conventions.EnvBackupScheduleFull:  d.cfg.Backup.FullCron,
		conventions.EnvBackupScheduleDiff:  d.cfg.Backup.DiffCron,
		conventions.EnvBackupRetentionFull: strconv.Itoa(d.cfg.Backup.RetentionFull),
		conventions.EnvBackupRetentionDiff: strconv.Itoa(d.cfg.Backup.RetentionDiff),
	}
	if d.cfg.Backup.DrillCron != "" {
		backupEnv[conventions.EnvBackupScheduleDrill] = d.cfg.Backup.DrillCron
		backupEnv[conventions.EnvBackupDrillRepo] = drillRepo(d.cfg)
	}
	maps.Copy(backupEnv, offHost.policyEnv(d.cfg))
	// The restore drills' scratch space and their last result: not
	// protected, a destroy may take it (the next drill writes a new one).
	drill, drillName, err := d.newVolume(ctx, db, "drill", false)
	if err != nil {
		return nil, err
	}
	backupSpec := containerSpec{
		role:  stacks.RoleBackup,
		image: backupImage.RepoDigest,
		user:  pgUID,
		// The health check reads the local repository: an unreachable
		// off-host one is the scheduler's failed backup, loud in its log
		// and restarts, not a reason to call the local backups unhealthy.
		healthcheck: healthcheck(checkTiming{30 * time.Second, 30 * time.Second, 2 * time.Minute, 3}, "pgbackrest", "--repo="+localRepo, "info"),
		networks:    []attachment{{network: net.Internal, name: net.InternalName}},
		volumes: []volumeMount{
			{volume: pgdata, name: pgdataName, path: pgDataPath, readOnly: true},
			{volume: repo, name: repoName, path: pgRepoPath},
			{volume: sock, name: sockName, path: pgSocketPath},
			{volume: drill, name: drillName, path: drillPath},
		},
		tmpfs:       map[string]string{"/tmp": tmpfsOptions(128)},
		init:        true,
		stopTimeout: 30,
		dependsOn:   []pulumi.Resource{db.Container},
	}
	backupFiles := []renderedFile{{path: pgConfigPath, content: d.rendered.pgbackrestConf}}
	if offHost != nil {
		// The holder runs from the database image, which an app release
		// does not rebuild: a new release replaces the scheduler, not its
		// secrets.
		backupSecrets, err := d.newSecretVolume(ctx, db, "secrets-backup", dbImage.RepoDigest, pgUID, []string{"/bin/true"}, []secretFile{offHost.secrets})
		if err != nil {
			return nil, err
		}
		backupSpec.volumes = append(backupSpec.volumes, backupSecrets.mount)
		backupSpec.dependsOn = append(backupSpec.dependsOn, backupSecrets.holder)
		backupSpec.opts = append(backupSpec.opts, backupSecrets.replaceOnChange)
	}
	offHost.add(&backupSpec, &backupFiles, backupEnv)
	backupSpec.entrypoint, backupSpec.command = withFiles(backupFiles, BackupSchedulerCommand(d.cfg)...)
	backupSpec.envs = envList(backupEnv)
	db.Backup, err = d.newContainer(ctx, db, backupSpec)
	if err != nil {
		return nil, err
	}
	db.image = dbImage.RepoDigest
	db.socket = volumeMount{volume: sock, name: sockName, path: pgSocketPath}
	return db, ctx.RegisterResourceOutputs(db, pulumi.Map{
		"container": db.Container.Name, "backup": db.Backup.Name,
	})
}

// newRestore registers the restore one-shot of a recovery (nbms:recover):
// the database's own spec (image, user, volumes, secrets, the way to the
// off-host repository, pgBackRest's config and environment) running
// nbms-db-restore instead of the server, with the server's settings, so
// that the recovered server archives its first WAL as the database does.
// It runs once, when it is created: in the up of `nbms-deploy recover`,
// the only run that sets nbms:recover.
//
// A recovery needs an off-host repository (stacks.Parse checks it).
func (d *deployment) newRestore(ctx *pulumi.Context, db *Database, dbSpec containerSpec, offHost *offHostAccess, rendered []renderedFile, env map[string]string, settingFlags []string) (*docker.Container, error) {
	spec := dbSpec
	spec.role = conventions.RoleRestore
	spec.healthcheck = healthcheck(checkTiming{30 * time.Second, 5 * time.Second, 5 * time.Second, 1}, "test", "-x", dbRestore)
	spec.wait = false
	// Only the backup network: the restore serves no one, and reaches
	// nothing but the off-host repository (through the relay).
	spec.networks = offHost.networks
	// No replacement when the database's secrets change: a second run
	// would find the recovered cluster and refuse (nbms-db-restore never
	// restores over one).
	spec.opts = nil
	// pgBackRest's config, stanza and include path; no password: the
	// restore's private server takes no TCP connection.
	restoreEnv := map[string]string{}
	for name, value := range env {
		if strings.HasPrefix(name, "PGBACKREST_") {
			restoreEnv[name] = value
		}
	}
	spec.envs = envList(restoreEnv)
	args := append([]string{dbRestore, offHostRepo, restoreTarget(d.cfg.Recover)}, settingFlags...)
	spec.entrypoint, spec.command = withFiles(rendered, args...)
	return d.newContainer(ctx, db, spec)
}

// restoreTarget is nbms:recover as nbms-db-restore takes it: latest, or
// the time in UTC in the form pgBackRest's --target and PostgreSQL's
// recovery_target_time both read.
func restoreTarget(recover string) string {
	if recover == stacks.RecoverLatest {
		return recover
	}
	t, err := time.Parse(time.RFC3339Nano, recover)
	if err != nil {
		return recover // validated by stacks.Parse
	}
	return t.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
}

// restoredImage is image once the restore one-shot named name exited 0 (its
// exitCode): the database container, whose image it is, starts only then,
// and a failed restore stops the update there, naming the container whose
// log says why.
func restoredImage(name string, image pulumi.StringInput, exitCode pulumi.IntOutput) pulumi.StringOutput {
	return pulumi.All(image, exitCode).ApplyT(func(v []any) (string, error) {
		if code := v[1].(int); code != 0 {
			return "", fmt.Errorf("the recovery's restore exited with status %d: see `docker logs %s`; the data volume is left as the restore left it (remove it before another recovery)", code, name)
		}
		return v[0].(string), nil
	}).(pulumi.StringOutput)
}

// BackupSchedulerCommand is the backup container's command line: the app
// binary's scheduler (robfig/cron, one structured log line per run, never
// two runs at once) on the stack's schedule, exiting on a failed backup so
// that the container restarts and the failure is loud. Retention is in the
// pgBackRest config, applied by the expire that ends every backup.
func BackupSchedulerCommand(cfg *stacks.Config) []string {
	cmd := []string{
		appBinary, "backup-schedule",
		"--config", pgConfigPath,
		"--stanza", pgStanza,
		"--full", cfg.Backup.FullCron,
		"--diff", cfg.Backup.DiffCron,
		"--exit-on-failure",
	}
	if cfg.Backup.OffHost != nil {
		// One backup per repository, the local one first: an unreachable
		// off-host repository does not keep the local one from its backup.
		cmd = append(cmd, "--repo", localRepo, "--repo", offHostRepo)
	}
	if cfg.Backup.DrillCron != "" {
		cmd = append(cmd, "--drill", cfg.Backup.DrillCron, "--drill-repo", drillRepo(cfg),
			"--drill-scratch", drillPath, "--drill-status", drillStatusPath)
	}
	return cmd
}

// drillRepo is the repository the restore drills restore from: the
// off-host one when the stack has it (the copy that survives the host is
// the one to prove), else the local one.
func drillRepo(cfg *stacks.Config) string {
	if cfg.Backup.OffHost != nil {
		return offHostRepo
	}
	return localRepo
}

// databaseURL is the app's DATABASE_URL (a secret: it carries the password):
// the login role of the password's generation. The internal network is
// private to this host, hence sslmode=disable.
func databaseURL(sec *Secrets, generation int) pulumi.StringOutput {
	return pulumi.Sprintf("postgres://%s:%s@%s:5432/%s?sslmode=disable", dbLogin(generation), sec.AppDBPassword, dbAlias, appDBName)
}

// dbLoginCommand is the db image's script that grants and retires the
// app's logins.
const dbLoginCommand = "/usr/local/bin/nbms-db-login"

// dbLoginPasswordFile is the release's secret file dblogin reads the
// login's password from (beside the app's own files on the release's
// secrets volume; the app reads it from its DATABASE_URL).
const dbLoginPasswordFile = "NBMS_DB_PASSWORD"
