package backup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/backup"
	"github.com/nbms-deploy/nbms/app/internal/migrate"
	"github.com/nbms-deploy/nbms/app/internal/store"
	"github.com/nbms-deploy/nbms/infra/pgbackrest"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

const (
	pgBin       = "/usr/lib/postgresql/15/bin"
	drillStanza = "nbms"
	drillDB     = "nbms"
)

// asPostgres is the command prefix of every PostgreSQL and pgBackRest
// command: they must run as the postgres OS user (the tests run as root).
var asPostgres = []string{"runuser", "-u", "postgres", "--"}

// cluster is a throwaway PostgreSQL 15 cluster archiving WAL into its own
// pgBackRest repository, configured by infra/pgbackrest as production is.
type cluster struct {
	t                       *testing.T
	base, data, sock, conf  string
	repo                    string
	port                    int
	uid, gid                int
	params                  pgbackrest.Params // what c.conf was rendered from
	pgbackrest              backup.PgBackRest
	pool                    *pgxpool.Pool
	store                   *store.Store
	backupScript, drillPath string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	u, err := user.Lookup("postgres")
	require.NoError(t, err, "the postgres OS user comes with Debian's postgresql package")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	base, err := os.MkdirTemp("", "nbms-backup-drill-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	c := &cluster{
		t: t, base: base, uid: uid, gid: gid,
		data: filepath.Join(base, "data"), sock: filepath.Join(base, "sock"),
		conf: filepath.Join(base, "pgbackrest.conf"), repo: filepath.Join(base, "repo"),
		port: testsupport.FreePort(t),
	}
	for _, dir := range []string{base, c.sock, c.repo, filepath.Join(base, "log"), filepath.Join(base, "lock")} {
		require.NoError(t, os.MkdirAll(dir, 0o700))
		require.NoError(t, os.Chown(dir, uid, gid))
	}
	c.params = pgbackrest.Params{
		Stanza: drillStanza, PGDataPath: c.data, PGSocketPath: c.sock, PGUser: "postgres",
		RepoPath: c.repo, LogPath: filepath.Join(base, "log"), LockPath: filepath.Join(base, "lock"),
		PGPort: c.port, RetentionFull: 2, RetentionDiff: 6, ProcessMax: 2,
	}
	conf, err := pgbackrest.Render(c.params)
	require.NoError(t, err)
	c.writeFile(c.conf, conf)
	c.pgbackrest = backup.PgBackRest{ConfigPath: c.conf, Stanza: drillStanza, CommandPrefix: asPostgres}

	c.backupScript, err = filepath.Abs("../../../scripts/ops/pgbackrest_backup.sh")
	require.NoError(t, err)
	c.drillPath, err = filepath.Abs("../../../scripts/ops/pgbackrest_restore_drill.sh")
	require.NoError(t, err)

	c.run(pgBin+"/initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--locale=C.UTF-8", "--data-checksums", "--no-sync")
	settings := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n", c.port, c.sock) +
		// Test speed only: nothing here must survive a crash.
		"fsync = off\n" +
		pgbackrest.PostgresConf(pgbackrest.PostgresSettings(c.conf, drillStanza, time.Minute))
	f, err := os.OpenFile(filepath.Join(c.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(settings)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	pgLog := filepath.Join(base, "pg.log")
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(pgLog)
			t.Logf("PostgreSQL log:\n%s", log)
		}
		_ = c.command(pgBin+"/pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop").Run()
	})
	c.run(pgBin+"/pg_ctl", "-D", c.data, "-l", pgLog, "-w", "-t", "60", "start")
	c.run(pgBin+"/psql", "-X", "-q", "-h", c.sock, "-p", strconv.Itoa(c.port), "-U", "postgres", "-c", "CREATE DATABASE "+drillDB)

	ctx := context.Background()
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&timezone=UTC", c.port, drillDB)
	c.pool, err = pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(c.pool.Close)
	c.store = store.New(c.pool)
	db, err := migrate.Open(url)
	require.NoError(t, err)
	defer db.Close()
	_, err = migrate.Up(ctx, db)
	require.NoError(t, err)
	return c
}

func (c *cluster) writeFile(path, content string) {
	c.t.Helper()
	require.NoError(c.t, os.WriteFile(path, []byte(content), 0o640))
	require.NoError(c.t, os.Chown(path, c.uid, c.gid))
}

func (c *cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(asPostgres[0], append(append(asPostgres[1:], name), args...)...)
	cmd.Dir = c.base
	return cmd
}

func (c *cluster) run(name string, args ...string) string {
	c.t.Helper()
	out, err := c.command(name, args...).CombinedOutput()
	require.NoError(c.t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

// script runs a scripts/ops script as postgres, returning stdout, stderr
// and the exit status.
func (c *cluster) script(path string, args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	cmd := c.command(path, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		require.NoError(c.t, err)
	}
	return out.String(), errOut.String(), code
}

func (c *cluster) queryString(sql string, args ...any) string {
	c.t.Helper()
	var s string
	require.NoError(c.t, c.pool.QueryRow(context.Background(), sql, args...).Scan(&s))
	return s
}

// writeSites creates sites through the app's store, each with its audit
// event in the same transaction, as the app's handlers do.
func (c *cluster) writeSites(org store.Organisation, by store.User, names ...string) {
	c.t.Helper()
	for i, name := range names {
		err := c.store.InTx(context.Background(), func(tx store.Tx) error {
			site, err := tx.CreateSite(context.Background(), store.NewSite{Name: name, Lon: 10 + float64(i), Lat: -5 - float64(i), CreatedBy: by.ID})
			if err != nil {
				return err
			}
			_, err = tx.InsertAuditEvent(context.Background(), store.Event{
				ActorUserID: by.ID, Action: "site.create", ObjectType: "site",
				ObjectID: strconv.FormatInt(site.ID, 10), RequestID: "drill-" + name,
				Details: map[string]any{"name": name, "organisation": org.Slug},
			})
			return err
		})
		require.NoError(c.t, err)
	}
}

// Exact rows, rendered by PostgreSQL the same way on the source and on the
// restored copy (both sessions run in UTC).
const (
	sitesRowsSQL = `SELECT coalesce(json_agg(s ORDER BY s.id), '[]')::text FROM (SELECT id, organisation_id, name, ST_AsText(geom) AS geom, created_by, created_at FROM monitoring_sites) s`
	auditRowsSQL = `SELECT coalesce(json_agg(a ORDER BY a.id), '[]')::text FROM audit_events a`
	// The drill's checksum: md5 of the rows' text sorted by that text.
	auditMD5SQL = `SELECT md5(coalesce(string_agg(a::text, E'\n' ORDER BY a::text), '')) FROM audit_events a WHERE $1::timestamptz IS NULL OR a.occurred_at <= $1::timestamptz`
)

// state is what the restored database must hold.
type state struct {
	Sites, Audit string
	SiteNames    []string
	AuditMD5     string
	Counts       map[string]int64
}

func (c *cluster) snapshot(target *string) state {
	c.t.Helper()
	s := state{
		Sites:    c.queryString(sitesRowsSQL),
		Audit:    c.queryString(auditRowsSQL),
		AuditMD5: c.queryString(auditMD5SQL, target),
		Counts:   map[string]int64{},
	}
	for _, table := range []string{"audit_events", "monitoring_sites", "organisations", "users", "drill_ballast"} {
		var n int64
		require.NoError(c.t, c.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n))
		s.Counts[table] = n
	}
	var sites []struct{ Name string }
	require.NoError(c.t, json.Unmarshal([]byte(s.Sites), &sites))
	for _, site := range sites {
		s.SiteNames = append(s.SiteNames, site.Name)
	}
	return s
}

// drillSummary is the part of the drill's JSON the test reads.
type drillSummary struct {
	Result           string           `json:"result"`
	BackupSet        string           `json:"backup_set"`
	TargetTime       *string          `json:"target_time"`
	MigrationVersion int64            `json:"migration_version"`
	RowCounts        map[string]int64 `json:"row_counts"`
	Audit            struct {
		Rows int64  `json:"rows"`
		MD5  string `json:"md5"`
	} `json:"audit"`
	Queries         map[string]string `json:"queries"`
	RestoreSeconds  float64           `json:"restore_seconds"`
	RecoverySeconds float64           `json:"recovery_seconds"`
	RecoveryStop    *string           `json:"recovery_stop"`
	Mismatches      []json.RawMessage `json:"mismatches"`
}

func (c *cluster) drill(extra ...string) (drillSummary, string, int) {
	c.t.Helper()
	args := append([]string{"--config", c.conf, "--stanza", drillStanza, "--database", drillDB,
		"--tables", "audit_events,monitoring_sites,organisations,users,drill_ballast",
		"--query", "sites=" + sitesRowsSQL, "--query", "audit=" + auditRowsSQL}, extra...)
	stdout, stderr, code := c.script(c.drillPath, args...)
	var s drillSummary
	if strings.TrimSpace(stdout) != "" {
		require.NoError(c.t, json.Unmarshal([]byte(stdout), &s), "stdout: %s\nstderr: %s", stdout, stderr)
	}
	return s, stderr, code
}

func assertRestored(t *testing.T, got drillSummary, want state, wantVersion int64) {
	t.Helper()
	assert.Equal(t, "ok", got.Result)
	assert.Equal(t, wantVersion, got.MigrationVersion, "the newest migration is in goose_db_version")
	assert.Equal(t, want.Counts, got.RowCounts)
	assert.Equal(t, want.AuditMD5, got.Audit.MD5)
	assert.Equal(t, want.Counts["audit_events"], got.Audit.Rows)
	assert.JSONEq(t, want.Sites, got.Queries["sites"], "exactly the sites of the source at that point")
	assert.JSONEq(t, want.Audit, got.Queries["audit"], "exactly the audit events of the source at that point")
}

// TestRestoreDrill is the proof that the backups restore: a real cluster
// with WAL archiving (infra/pgbackrest's config), the app's migrations and
// store, a full backup by the scheduler, a differential by
// pgbackrest_backup.sh, and pgbackrest_restore_drill.sh restoring the
// latest state and a point in time between them, row for row.
func TestRestoreDrill(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	require.NoError(t, c.pgbackrest.StanzaCreate(ctx))
	require.NoError(t, c.pgbackrest.StanzaCreate(ctx), "stanza-create is idempotent: the scheduler runs it on every start")

	// Phase 1: accounts and sites through the store, and ~100 MB of
	// ballast so the timings mean something.
	var org store.Organisation
	var admin store.User
	require.NoError(t, c.store.InTx(ctx, func(tx store.Tx) error {
		var err error
		if org, err = tx.CreateOrganisation(ctx, "sanbi", "SANBI"); err != nil {
			return err
		}
		admin, err = tx.CreateUser(ctx, store.NewUser{OrganisationID: org.ID, Username: "drill-admin", Role: "admin", PasswordHash: "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$aGFzaA"})
		return err
	}))
	c.writeSites(org, admin, "phase1-kruger", "phase1-addo")
	start := time.Now()
	_, err := c.pool.Exec(ctx, `CREATE TABLE drill_ballast (id bigint PRIMARY KEY, payload text NOT NULL);
		INSERT INTO drill_ballast SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 800000) g`)
	require.NoError(t, err)
	dbSize := c.queryString(`SELECT pg_size_pretty(pg_database_size(current_database()))`)
	t.Logf("timing: loaded ballast in %s; database size %s", time.Since(start).Round(time.Millisecond), dbSize)

	// Full backup through the scheduler's own code.
	logger, logs := newLogger()
	scheduler, err := backup.NewScheduler(backup.ScheduleOptions{PgBackRest: c.pgbackrest, FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6"}, logger)
	require.NoError(t, err)
	full := only(t, scheduler.Backup(ctx, backup.Full))
	require.Equal(t, backup.ResultOK, full.Result, full.Error)
	assert.Regexp(t, `^\d{8}-\d{6}F$`, full.Label)
	assert.Greater(t, full.SizeBytes, int64(100<<20), "size_bytes comes from pgbackrest info after the run")
	require.Len(t, logLines(t, logs), 1)
	t.Logf("timing: full backup (scheduler) %d ms, database %d MB, repository %d MB",
		full.DurationMS, full.SizeBytes>>20, full.RepoBytes>>20)

	// Phase 2, then the target time. pgBackRest restores a point in time
	// from a backup that stopped before it, and records stop times in
	// whole seconds: leave the full backup a clear second behind.
	time.Sleep(1500 * time.Millisecond)
	c.writeSites(org, admin, "phase2-kirstenbosch", "phase2-tsitsikamma", "phase2-mapungubwe")
	time.Sleep(100 * time.Millisecond)
	target := c.queryString(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'`)
	atTarget := c.snapshot(&target)
	time.Sleep(100 * time.Millisecond)

	// Phase 3: more rows and a change to the ballast, after the target.
	c.writeSites(org, admin, "phase3-golden-gate", "phase3-augrabies")
	_, err = c.pool.Exec(ctx, `DELETE FROM drill_ballast WHERE id > 700000`)
	require.NoError(t, err)
	latest := c.snapshot(nil)
	require.NotEqual(t, atTarget.Counts, latest.Counts)

	// Differential backup through the script. It also makes the phase 3
	// commits reach the archive: a backup waits for its last WAL segment.
	stdout, stderr, code := c.script(c.backupScript, "--type", "diff", "--config", c.conf, "--stanza", drillStanza)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	assert.Regexp(t, `^backup ok: type=diff stanza=nbms duration_s=\d+ label=`+full.Label+`_\d{8}-\d{6}D size_bytes=\d+ repo_size_bytes=\d+\n$`, stdout)
	t.Logf("timing: %s", strings.TrimSpace(stdout))

	migrations, err := func() ([]migrate.Migration, error) {
		db, err := migrate.Open(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, drillDB))
		require.NoError(t, err)
		defer db.Close()
		return migrate.Status(ctx, db)
	}()
	require.NoError(t, err)
	newestMigration := migrations[len(migrations)-1].Version

	t.Run("status of the real repository", func(t *testing.T) {
		report, err := backup.Status(ctx, backup.StatusOptions{PgBackRest: c.pgbackrest, Policy: backup.DefaultPolicy})
		require.NoError(t, err)
		assert.True(t, report.OK, "%+v", report.Checks)
		require.NotNil(t, report.LastFull)
		assert.Equal(t, full.Label, report.LastFull.Label)
		require.NotNil(t, report.LastBackup)
		assert.Equal(t, backup.Diff, report.LastBackup.Type)
		require.NotNil(t, report.WALArchivedAt)
		assert.WithinDuration(t, time.Now(), *report.WALArchivedAt, 2*time.Minute)

		strict := backup.DefaultPolicy
		strict.MaxBackupAge = time.Millisecond
		report, err = backup.Status(ctx, backup.StatusOptions{PgBackRest: c.pgbackrest, Policy: strict})
		require.NoError(t, err)
		assert.False(t, report.OK, "stale under a policy the backups cannot meet")

		other := c.pgbackrest
		other.Stanza = "no-such-stanza"
		report, err = backup.Status(ctx, backup.StatusOptions{PgBackRest: other, Policy: backup.DefaultPolicy})
		require.NoError(t, err, "info exits 0 for a missing stanza")
		assert.False(t, report.OK)
		assert.Equal(t, 1, report.StatusCode)
	})

	t.Run("latest", func(t *testing.T) {
		got, stderr, code := c.drill()
		require.Equal(t, 0, code, stderr)
		assertRestored(t, got, latest, newestMigration)
		assert.Equal(t, []string{"phase1-kruger", "phase1-addo", "phase2-kirstenbosch", "phase2-tsitsikamma", "phase2-mapungubwe", "phase3-golden-gate", "phase3-augrabies"}, latest.SiteNames)
		assert.Nil(t, got.TargetTime)
		assert.Contains(t, got.BackupSet, "D", "the latest state restores from the differential")
		t.Logf("timing: latest drill: restore %.2f s, recovery %.2f s", got.RestoreSeconds, got.RecoverySeconds)
	})

	t.Run("point in time", func(t *testing.T) {
		expect, err := json.Marshal(map[string]any{
			"migration_version": newestMigration,
			"row_counts":        atTarget.Counts,
			"audit":             map[string]any{"md5": atTarget.AuditMD5, "rows": atTarget.Counts["audit_events"]},
		})
		require.NoError(t, err)
		expectFile := filepath.Join(c.base, "expect.json")
		c.writeFile(expectFile, string(expect))

		got, stderr, code := c.drill("--target-time", target, "--expect-json", expectFile)
		require.Equal(t, 0, code, stderr)
		assertRestored(t, got, atTarget, newestMigration)
		assert.Equal(t, []string{"phase1-kruger", "phase1-addo", "phase2-kirstenbosch", "phase2-tsitsikamma", "phase2-mapungubwe"}, atTarget.SiteNames)
		assert.Equal(t, int64(800000), got.RowCounts["drill_ballast"], "the ballast deleted after the target is back")
		assert.Equal(t, full.Label, got.BackupSet, "the differential finished after the target: pgBackRest picks the full")
		require.NotNil(t, got.RecoveryStop)
		assert.Contains(t, *got.RecoveryStop, "recovery stopping before commit")
		assert.Empty(t, got.Mismatches)
		t.Logf("timing: point-in-time drill: restore %.2f s, recovery %.2f s", got.RestoreSeconds, got.RecoverySeconds)

		wrong := strings.Replace(string(expect), `"monitoring_sites":5`, `"monitoring_sites":6`, 1)
		require.NotEqual(t, string(expect), wrong)
		c.writeFile(expectFile, wrong)
		got, stderr, code = c.drill("--target-time", target, "--expect-json", expectFile)
		assert.Equal(t, 3, code, "a restored database that differs from the expectation fails the drill")
		assert.Equal(t, "mismatch", got.Result)
		require.Len(t, got.Mismatches, 1)
		assert.Contains(t, string(got.Mismatches[0]), `"key": "row_counts"`)
		assert.Contains(t, stderr, "drill MISMATCH")
	})

	t.Run("nothing of the live cluster is touched", func(t *testing.T) {
		inside := filepath.Join(c.data, "drill")
		nonEmpty := filepath.Join(c.base, "non-empty")
		require.NoError(t, os.Mkdir(nonEmpty, 0o700))
		require.NoError(t, os.Chown(nonEmpty, c.uid, c.gid))
		c.writeFile(filepath.Join(nonEmpty, "keep.txt"), "an operator's file")
		tests := []struct {
			name    string
			args    []string
			wantErr string
		}{
			{"live port", []string{"--port", strconv.Itoa(c.port)}, "it is the live cluster's port"},
			{"scratch inside the live data directory", []string{"--scratch", inside}, "overlaps " + c.data},
			{"scratch inside the repository", []string{"--scratch", filepath.Join(c.repo, "x")}, "overlaps " + c.repo},
			{"scratch not empty", []string{"--scratch", nonEmpty}, "must be a new or empty directory"},
			{"bad target time", []string{"--target-time", "yesterday"}, "--target-time 'yesterday' must look like"},
			{"unsafe table name", []string{"--tables", "audit_events;drop table users"}, "must be a plain lower-case table name"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, stderr, code := c.drill(tt.args...)
				assert.Equal(t, 2, code, stderr)
				assert.Contains(t, stderr, tt.wantErr)
			})
		}
		assert.NoDirExists(t, inside, "the refusal came before any mkdir")
		assert.FileExists(t, filepath.Join(nonEmpty, "keep.txt"))
	})

	t.Run("a broken repository fails loudly", func(t *testing.T) {
		// Missing: the same config pointing at an empty repository.
		emptyRepo := filepath.Join(c.base, "empty-repo")
		require.NoError(t, os.Mkdir(emptyRepo, 0o700))
		require.NoError(t, os.Chown(emptyRepo, c.uid, c.gid))
		conf, err := os.ReadFile(c.conf)
		require.NoError(t, err)
		missingConf := filepath.Join(c.base, "missing-repo.conf")
		c.writeFile(missingConf, strings.Replace(string(conf), "repo1-path="+c.repo, "repo1-path="+emptyRepo, 1))

		// Corrupt: garble the ballast's file in the full backup set (the
		// largest one), which the point-in-time restore needs.
		var biggest string
		var biggestSize int64
		require.NoError(t, filepath.Walk(filepath.Join(c.repo, "backup", drillStanza, full.Label, "pg_data", "base"), func(path string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() && info.Size() > biggestSize {
				biggest, biggestSize = path, info.Size()
			}
			return err
		}))
		require.NotEmpty(t, biggest)
		f, err := os.OpenFile(biggest, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(bytes.Repeat([]byte("corrupt!"), 4096), biggestSize/2)
		require.NoError(t, err)
		require.NoError(t, f.Close())

		tests := []struct {
			name    string
			args    []string
			wantErr string
		}{
			{"missing repository", []string{"--config", missingConf}, "drill FAILED: pgbackrest restore failed"},
			{"corrupted backup file", []string{"--target-time", target}, "drill FAILED: pgbackrest restore failed"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, stderr, code := c.drill(tt.args...)
				assert.Equal(t, 1, code, stderr)
				assert.Contains(t, stderr, tt.wantErr)
				assert.Contains(t, stderr, "ERROR: [", "pgBackRest's own error is shown")
				assert.Empty(t, got.Result, "no summary is printed for a failed drill")
				t.Logf("%s:\n%s", tt.name, stderr)
			})
		}
	})
}

// TestScheduledBackupToTwoRepositories runs the scheduler's cron loop
// against the real pgBackRest with two repositories, both posix here (they
// stand for the local repo1 and the off-host repo2): one scheduled full
// backup lands in each, as the info of each repository shows. Then, with
// repo2's backups unwritable, a run that tries repo2 first still backs up
// repo1.
func TestScheduledBackupToTwoRepositories(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	repoPaths := map[int]string{1: c.repo, 2: filepath.Join(c.base, "repo2")}
	require.NoError(t, os.Mkdir(repoPaths[2], 0o700))
	require.NoError(t, os.Chown(repoPaths[2], c.uid, c.gid))
	conf, err := os.ReadFile(c.conf)
	require.NoError(t, err)
	section := "\n[" + drillStanza + "]\n"
	require.Contains(t, string(conf), section)
	c.writeFile(c.conf, strings.Replace(string(conf), section,
		"repo2-path="+repoPaths[2]+"\nrepo2-retention-full-type=count\nrepo2-retention-full=2\nrepo2-retention-diff=6\n"+section, 1))
	// Without --repo, stanza-create creates the stanza in every repository.
	require.NoError(t, c.pgbackrest.StanzaCreate(ctx))

	// One scheduled round, as the cron entry runs it (the cron loop
	// itself is TestRunScheduleExitsAfterTheRoundNamingTheFailedRepository's).
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{
		PgBackRest: c.pgbackrest, Repos: []int{1, 2}, ExitOnFailure: true,
		FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6",
	}, logger)
	require.NoError(t, err)
	runs := s.Backup(ctx, backup.Full)
	require.Len(t, runs, 2, "one run per repository")

	var lines []map[string]any
	for _, line := range logLines(t, logs) {
		if _, ok := line["repo"]; ok {
			lines = append(lines, line)
		}
	}
	require.Len(t, lines, 2, "one line per repository")
	labels := map[int]string{}
	for i, line := range lines {
		repo := i + 1
		require.Equal(t, "ok", line["result"], "repo%d: %v", repo, line["error"])
		assert.Equal(t, float64(repo), line["repo"], "in the order of Repos")
		assert.Equal(t, "full", line["type"])
		labels[repo] = fmt.Sprint(line["label"])
		assert.Regexp(t, `^\d{8}-\d{6}F$`, labels[repo])
		assert.Greater(t, line["size_bytes"], float64(0))
	}
	assert.NotEqual(t, labels[1], labels[2], "two backups, one per repository")
	assert.Zero(t, s.Failures())

	for repo, path := range repoPaths {
		p := c.pgbackrest
		p.Repo = repo // pgbackrest --repo=N info
		stanzas, err := p.Info(ctx)
		require.NoError(t, err)
		require.Len(t, stanzas, 1)
		assert.Equal(t, 0, stanzas[0].Status.Code, "repo%d: %s", repo, stanzas[0].Status.Message)
		require.Len(t, stanzas[0].Backup, 1, "repo%d holds its own backup only", repo)
		assert.Equal(t, labels[repo], stanzas[0].Backup[0].Label, "repo%d", repo)
		assert.Equal(t, backup.Full, stanzas[0].Backup[0].Type)
		assert.DirExists(t, filepath.Join(path, "backup", drillStanza, labels[repo]))
	}

	// Without --repo, info merges the repositories' backups, each tagged
	// with the repository it is in.
	out, err := c.command("pgbackrest", "--config="+c.conf, "--stanza="+drillStanza, "--output=json", "info").Output()
	require.NoError(t, err)
	var merged []struct {
		Backup []struct {
			Label    string `json:"label"`
			Database struct {
				RepoKey int `json:"repo-key"`
			} `json:"database"`
		} `json:"backup"`
	}
	require.NoError(t, json.Unmarshal(out, &merged), string(out))
	require.Len(t, merged, 1)
	repoKeys := map[string]int{}
	for _, b := range merged[0].Backup {
		repoKeys[b.Label] = b.Database.RepoKey
	}
	assert.Equal(t, map[string]int{labels[1]: 1, labels[2]: 2}, repoKeys)

	t.Run("a failing repository does not stop the next", func(t *testing.T) {
		// repo2 cannot take backups (its WAL archive still works, so
		// PostgreSQL keeps archiving to both), and comes first.
		backupDir := filepath.Join(repoPaths[2], "backup", drillStanza)
		require.NoError(t, os.Chmod(backupDir, 0))
		t.Cleanup(func() { _ = os.Chmod(backupDir, 0o750) })
		logger, logs := newLogger()
		s, err := backup.NewScheduler(backup.ScheduleOptions{
			PgBackRest: c.pgbackrest, Repos: []int{2, 1}, FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6",
		}, logger)
		require.NoError(t, err)

		runs := s.Backup(ctx, backup.Diff)
		require.Len(t, runs, 2)
		assert.Equal(t, 2, runs[0].Repo)
		assert.Equal(t, backup.ResultFailed, runs[0].Result)
		assert.Contains(t, runs[0].Error, "exit status 41") // pgBackRest's FileOpenError
		assert.Contains(t, runs[0].Error, "Permission denied", "pgBackRest's own message is kept")
		assert.Equal(t, 1, runs[1].Repo)
		require.Equal(t, backup.ResultOK, runs[1].Result, runs[1].Error)
		assert.Regexp(t, `^`+labels[1]+`_\d{8}-\d{6}D$`, runs[1].Label, "a differential on repo1's own full backup")
		assert.Equal(t, int64(1), s.Failures())
		lines := logLines(t, logs)
		require.Len(t, lines, 2)
		assert.Equal(t, []any{float64(2), "failed"}, []any{lines[0]["repo"], lines[0]["result"]})
		assert.Equal(t, []any{float64(1), "ok"}, []any{lines[1]["repo"], lines[1]["result"]})
		t.Logf("repo2's failure: %s", runs[0].Error)
	})
}
