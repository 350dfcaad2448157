package deploy

import (
	"maps"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/pulumi/pulumi-docker/sdk/v4/go/docker"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/stacks"
)

// Paths and names inside the database image (infra/images/db/Dockerfile).
const (
	pgUID          = "999:999" // the postgres user of the Debian postgres images
	pgDataPath     = "/var/lib/postgresql/data"
	pgSocketPath   = "/var/run/postgresql"
	pgRepoPath     = "/var/lib/pgbackrest"
	pgStanza       = "nbms"
	pgConfigPath   = "/tmp/nbms/pgbackrest.conf"
	crontabPath    = "/tmp/nbms/crontab"
	dbAlias        = "db"
	appDBName      = "nbms"
	appDBUser      = "nbms"
	backupRunner   = "/usr/local/bin/nbms-backup-scheduler"
	dbEntrypoint   = "/usr/local/bin/docker-entrypoint.sh"
	dbImageContext = "infra/images/db"
)

// Database is PostgreSQL/PostGIS with WAL archiving to pgBackRest, and the
// backup scheduler.
type Database struct {
	pulumi.ResourceState
	Container, Backup *docker.Container
}

func (d *deployment) newDatabase(ctx *pulumi.Context, net *Network, sec *Secrets) (*Database, error) {
	db := &Database{}
	if err := ctx.RegisterComponentResource(typeDatabase, "database", db); err != nil {
		return nil, err
	}
	image, err := docker.NewImage(ctx, "db-image", &docker.ImageArgs{
		ImageName: pulumi.String("nbms-db:" + d.cfg.Stack),
		Build: &docker.DockerBuildArgs{
			Context:        pulumi.String(d.path(dbImageContext)),
			Dockerfile:     pulumi.String(d.path(filepath.Join(dbImageContext, "Dockerfile"))),
			Platform:       pulumi.String(d.cfg.Images.Platform),
			BuilderVersion: docker.BuilderVersionBuilderBuildKit,
		},
		// One host: the image never leaves it.
		SkipPush: pulumi.Bool(true),
	}, pulumi.Parent(db))
	if err != nil {
		return nil, err
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
	conf := renderedFile{path: pgConfigPath, content: d.rendered.pgbackrestConf}

	// WAL archiving through pgBackRest, as postgres -c flags: no config file
	// to place on the read-only root filesystem.
	postgres := []string{dbEntrypoint, "postgres"}
	settings := pgbackrest.PostgresSettings(pgConfigPath, pgStanza)
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		postgres = append(postgres, "-c", name+"="+settings[name])
	}
	entry, cmd := withFiles([]renderedFile{conf}, postgres...)
	db.Container, err = d.newContainer(ctx, db, containerSpec{
		role:       stacks.RoleDB,
		image:      image.RepoDigest,
		user:       pgUID,
		entrypoint: entry,
		command:    cmd,
		envs: envList(map[string]string{
			"POSTGRES_INITDB_ARGS": "--data-checksums --encoding=UTF8 --locale=C.UTF-8",
			"NBMS_DB_NAME":         appDBName,
			"NBMS_DB_USER":         appDBUser,
		}, map[string]pulumi.StringInput{
			"POSTGRES_PASSWORD": sec.DBSuperuserPassword,
			"NBMS_DB_PASSWORD":  sec.AppDBPassword,
		}),
		healthcheck: healthcheck("10s", "5s", "60s", 5, "pg_isready", "-q", "-h", pgSocketPath, "-U", "postgres"),
		networks:    internal,
		volumes: []volumeMount{
			{volume: pgdata, name: pgdataName, path: pgDataPath},
			{volume: repo, name: repoName, path: pgRepoPath},
			{volume: sock, name: sockName, path: pgSocketPath},
		},
		tmpfs:       map[string]string{"/tmp": tmpfsOptions(64)},
		wait:        true,
		stopTimeout: 60,
		shmSizeMB:   256,
	})
	if err != nil {
		return nil, err
	}

	// Backup scheduler: the same image (it has pgBackRest and the
	// PostgreSQL client), running supercronic. It reads the data directory
	// read-only and reaches PostgreSQL through the shared socket.
	entry, cmd = withFiles([]renderedFile{conf}, backupRunner, crontabPath)
	db.Backup, err = d.newContainer(ctx, db, containerSpec{
		role:       stacks.RoleBackup,
		image:      image.RepoDigest,
		user:       pgUID,
		entrypoint: entry,
		command:    cmd,
		// The schedule travels as NBMS_BACKUP_* variables (what the policy
		// pack checks); the runner writes the crontab from them.
		envs: envList(map[string]string{
			"PGBACKREST_CONFIG":          pgConfigPath,
			"PGBACKREST_STANZA":          pgStanza,
			"PGHOST":                     pgSocketPath,
			"NBMS_BACKUP_SCHEDULE_FULL":  d.cfg.Backup.FullCron,
			"NBMS_BACKUP_SCHEDULE_DIFF":  d.cfg.Backup.DiffCron,
			"NBMS_BACKUP_RETENTION_FULL": strconv.Itoa(d.cfg.Backup.RetentionFull),
			"NBMS_BACKUP_RETENTION_DIFF": strconv.Itoa(d.cfg.Backup.RetentionDiff),
		}, nil),
		healthcheck: healthcheck("5m", "30s", "2m", 3, "pgbackrest", "info"),
		networks:    []attachment{{network: net.Internal, name: net.InternalName}},
		volumes: []volumeMount{
			{volume: pgdata, name: pgdataName, path: pgDataPath, readOnly: true},
			{volume: repo, name: repoName, path: pgRepoPath},
			{volume: sock, name: sockName, path: pgSocketPath},
		},
		tmpfs:       map[string]string{"/tmp": tmpfsOptions(128)},
		init:        true,
		stopTimeout: 30,
		dependsOn:   []pulumi.Resource{db.Container},
	})
	if err != nil {
		return nil, err
	}
	return db, ctx.RegisterResourceOutputs(db, pulumi.Map{
		"container": db.Container.Name, "backup": db.Backup.Name,
	})
}

// databaseURL is the app's DATABASE_URL (a secret: it carries the password).
// The internal network is private to this host, hence sslmode=disable.
func databaseURL(sec *Secrets) pulumi.StringOutput {
	return pulumi.Sprintf("postgres://%s:%s@%s:5432/%s?sslmode=disable", appDBUser, sec.AppDBPassword, dbAlias, appDBName)
}
