package backup_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/backup"
	"github.com/nbms-deploy/nbms/app/internal/store"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// The real drills: the scheduler's code and `nbms backup-drill` running
// scripts/ops/pgbackrest_restore_drill.sh against PostgreSQL 15 clusters,
// pgBackRest 2.45 and versitygw, as TestRestoreDrill runs the script alone.

// Counted on the source, as pg_amcheck's default selection sees them in
// the copy (src/bin/pg_amcheck: every heap table but TOAST, their TOAST
// tables, and the btree indexes, relkind i, on both). pg_amcheck skips the
// PostGIS table's GiST index: only btree indexes are counted.
const (
	btreeIndexesSQL = `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relkind = 'i'`
	heapTablesSQL   = `SELECT count(*) FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'heap' AND c.relkind IN ('r', 'm', 't')`
)

func (c *cluster) count(sql string) int64 {
	c.t.Helper()
	var n int64
	require.NoError(c.t, c.pool.QueryRow(context.Background(), sql).Scan(&n))
	return n
}

// rowCounts counts the rows of tables in the source.
func (c *cluster) rowCounts(tables ...string) map[string]int64 {
	c.t.Helper()
	counts := map[string]int64{}
	for _, table := range tables {
		counts[table] = c.count("SELECT count(*) FROM " + table)
	}
	return counts
}

// mkdirPostgres makes a directory the postgres OS user owns.
func (c *cluster) mkdirPostgres(path string) {
	c.t.Helper()
	require.NoError(c.t, os.Mkdir(path, 0o700))
	require.NoError(c.t, os.Chown(path, c.uid, c.gid))
}

// drillAlertReceiver is an alert URL that keeps the bodies POSTed to it.
func drillAlertReceiver(t *testing.T) (url string, bodies func() []string) {
	var mu sync.Mutex
	var got []string
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad alert", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, string(body))
		mu.Unlock()
	}))
	t.Cleanup(server.Close)
	return server.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// decodeDrill decodes a status file's or an alert's drill.
func decodeDrill(t *testing.T, data string) backup.DrillResult {
	t.Helper()
	var r backup.DrillResult
	require.NoError(t, json.Unmarshal([]byte(data), &r), data)
	return r
}

// lineCounts is a line's row_counts as numbers.
func lineCounts(line map[string]any) map[string]int64 {
	counts := map[string]int64{}
	m, _ := line["row_counts"].(map[string]any)
	for k, v := range m {
		f, _ := v.(float64)
		counts[k] = int64(f)
	}
	return counts
}

// TestDrillOfTheOffHostRepository runs `nbms backup-drill`, the binary,
// as the backup container's postgres user runs it, against production's
// two repositories: repo1 local, repo2 encrypted on versitygw (newOffHost).
// A drill from repo2 restores repo2's own backup and reports the source's
// exact row counts and as many btree indexes as pg_index has; a wrong
// cipher passphrase for repo2 and a backup file missing from repo1 each
// fail a drill loudly (exit 1, an error line with the error and, where
// one is known, the cause, the alert, the status file, backup-status's
// check), and repo2's drill passes again whatever happened to repo1.
func TestDrillOfTheOffHostRepository(t *testing.T) {
	ctx := context.Background()
	o := newOffHost(t)
	bin := filepath.Join(o.base, "nbms")
	require.NoError(t, testsupport.BuildBinary(bin, "github.com/nbms-deploy/nbms/app/cmd/nbms"))
	require.NoError(t, os.Chown(bin, o.uid, o.gid))

	// Rows in the app's main tables, through its store.
	var org store.Organisation
	var admin store.User
	require.NoError(t, o.store.InTx(ctx, func(tx store.Tx) error {
		var err error
		if org, err = tx.CreateOrganisation(ctx, "sanbi", "SANBI"); err != nil {
			return err
		}
		for _, name := range []string{"drill-viewer", "drill-admin"} {
			if admin, err = tx.CreateUser(ctx, store.NewUser{OrganisationID: org.ID, Username: name, Role: "admin", PasswordHash: "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$aGFzaA"}); err != nil {
				return err
			}
		}
		return nil
	}))
	o.writeSites(org, admin, "kruger", "addo", "kirstenbosch")

	lines, _ := o.backUpBoth(t, backup.Full)
	labels := map[int]string{}
	for repo := 1; repo <= 2; repo++ {
		require.Equal(t, "ok", lines[repo]["result"], "repo%d: %v", repo, lines[repo]["error"])
		labels[repo] = lines[repo]["label"].(string)
	}
	require.NotEqual(t, labels[1], labels[2], "a backup of each repository's own")

	// The source, as the drill's copy must find it: nothing is written
	// after the backups.
	tables := []string{"audit_events", "monitoring_sites", "organisations", "users"}
	wantCounts := o.rowCounts(tables...)
	require.Equal(t, map[string]int64{"audit_events": 3, "monitoring_sites": 3, "organisations": 1, "users": 2}, wantCounts)
	wantIndexes, wantTables := o.count(btreeIndexesSQL), o.count(heapTablesSQL)

	statusFile := filepath.Join(o.base, "drill-status.json")
	scratch := filepath.Join(o.base, "drill-scratch")
	o.mkdirPostgres(scratch)
	alertURL, alerts := drillAlertReceiver(t)
	secrets := []string{o.secrets.CipherPass, o.secrets.SecretKey}

	// drill runs `nbms backup-drill` from repo as postgres.
	drill := func(t *testing.T, repo int) (line map[string]any, stdout, stderr string, code int) {
		t.Helper()
		stdout, stderr, code = o.script(bin, "backup-drill", "--config", o.conf, "--stanza", drillStanza,
			"--repo", strconv.Itoa(repo), "--tables", strings.Join(tables, ","), "--command", o.drillPath,
			"--scratch", scratch, "--status", statusFile, "--alert-url", alertURL)
		lines := jsonLines(t, stdout)
		require.Len(t, lines, 1, "one line per drill:\n%s\nstderr:\n%s", stdout, stderr)
		left, err := os.ReadDir(scratch)
		require.NoError(t, err)
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		assert.Equal(t, []string{".nbms-drill.lock"}, names, "nothing is left of the drill's copy, only the drills' lock")
		return lines[0], stdout, stderr, code
	}
	// status runs `nbms backup-status --drill-status` as postgres.
	status := func(t *testing.T) (backup.StatusReport, backup.Check, int) {
		t.Helper()
		stdout, stderr, code := o.script(bin, "backup-status", "--config", o.conf, "--stanza", drillStanza,
			"--drill-status", statusFile, "--json")
		var report backup.StatusReport
		require.NoError(t, json.Unmarshal([]byte(stdout), &report), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		i := slices.IndexFunc(report.Checks, func(c backup.Check) bool { return c.Name == "restore drill" })
		require.GreaterOrEqual(t, i, 0, "%+v", report.Checks)
		assert.Equal(t, report.OK, code == 0, "exit status %d, report ok %v", code, report.OK)
		return report, report.Checks[i], code
	}
	readStatus := func(t *testing.T) (backup.DrillResult, string) {
		t.Helper()
		data, err := os.ReadFile(statusFile)
		require.NoError(t, err)
		return decodeDrill(t, string(data)), string(data)
	}
	assertPassed := func(t *testing.T, line map[string]any, code int, stderr string) {
		t.Helper()
		require.Equal(t, 0, code, "line: %v\nstderr:\n%s", line, stderr)
		assert.Equal(t, "INFO", line["level"])
		assert.Equal(t, "restore drill passed", line["msg"])
		assert.Equal(t, "restore_drill", line["type"])
		assert.Equal(t, "ok", line["result"])
		assert.Equal(t, float64(2), line["repo"])
		assert.Equal(t, drillStanza, line["stanza"])
		assert.Equal(t, labels[2], line["label"], "repo2's own backup, not repo1's")
		assert.Equal(t, wantCounts, lineCounts(line), "the source's rows, exactly")
		amcheck, _ := line["amcheck"].(map[string]any)
		assert.Equal(t, float64(wantIndexes), amcheck["indexes"], "every btree index pg_index lists")
		assert.Equal(t, float64(wantTables), amcheck["relations"], "every heap and TOAST table")
		assert.NotContains(t, line, "error")

		r, _ := readStatus(t)
		assert.True(t, r.OK)
		assert.Equal(t, backup.ResultOK, r.Result)
		assert.Equal(t, 2, r.Repo)
		assert.Equal(t, labels[2], r.Label)
		assert.Equal(t, wantCounts, r.RowCounts)
		require.NotNil(t, r.Amcheck)
		assert.Equal(t, int(wantIndexes), r.Amcheck.Indexes)
		assert.Equal(t, int(wantTables), r.Amcheck.Relations)
		assert.WithinDuration(t, time.Now(), r.FinishedAt, time.Minute)
		assert.Equal(t, r.FinishedAt.Sub(r.StartedAt).Milliseconds(), r.DurationMS)
		assert.Equal(t, line["duration_ms"], float64(r.DurationMS), "the line and the file say the same")

		_, check, _ := status(t)
		assert.True(t, check.OK, check.Detail)
		assert.Contains(t, check.Detail, "last drill passed, finished ")
		assert.Contains(t, check.Detail, "from repo2, backup "+labels[2])
		assert.Contains(t, check.Detail, "rows audit_events=3 monitoring_sites=3 organisations=1 users=2")
		assert.Contains(t, check.Detail, "amcheck: "+strconv.FormatInt(wantIndexes, 10)+" btree indexes")
	}

	t.Run("a drill from repo2 passes", func(t *testing.T) {
		line, _, stderr, code := drill(t, 2)
		assertPassed(t, line, code, stderr)
		assert.Empty(t, stderr, "nothing on stderr for a passed drill")
		assert.Empty(t, alerts(), "a passed drill is not alerted")
		r, _ := readStatus(t)
		t.Logf("timing: drill from repo2 (versitygw, encrypted): %d ms in all: restore %.2f s, recovery %.2f s, amcheck %.2f s (%d btree indexes, %d tables); database %s",
			r.DurationMS, r.RestoreSeconds, r.RecoverySeconds, r.Amcheck.Seconds, r.Amcheck.Indexes, r.Amcheck.Relations,
			o.queryString(`SELECT pg_size_pretty(pg_database_size(current_database()))`))
	})

	t.Run("a wrong cipher passphrase for repo2 fails its drill loudly", func(t *testing.T) {
		o.waitAsyncIdle(t)
		wrong := o.secrets
		wrong.CipherPass = "another-" + testsupport.RandomWord(t)
		o.configure(t, o.repo2, wrong)
		line, stdout, stderr, code := drill(t, 2)
		// Mended before backup-status, which reads every repository.
		o.configure(t, o.repo2, o.secrets)

		assert.Equal(t, 1, code)
		assert.Contains(t, stderr, "nbms backup-drill: backup: restore drill from repo2 failed: "+o.drillPath+": exit status 1:")
		assert.Equal(t, "ERROR", line["level"])
		assert.Equal(t, "restore drill failed", line["msg"])
		assert.Equal(t, "failed", line["result"])
		assert.Equal(t, float64(2), line["repo"])
		assert.Equal(t, "wrong cipher passphrase", line["cause"])
		assert.Contains(t, line["error"], "ERROR: [", "pgBackRest's own error")
		assert.Regexp(t, `drill FAILED: pgbackrest restore from repo2 failed \(is the repository there, complete and readable\?\)$`, line["error"], "the script's verdict ends it")
		t.Logf("error: %s", line["error"])

		bodies := alerts()
		require.Len(t, bodies, 1, "the failure is alerted")
		alert := decodeDrill(t, bodies[0])
		assert.Equal(t, "restore_drill", alert.Type, "the alert says it is a drill")
		assert.Equal(t, backup.ResultFailed, alert.Result)
		assert.False(t, alert.OK)
		assert.Equal(t, 2, alert.Repo)
		assert.Equal(t, "wrong cipher passphrase", alert.Cause)
		assert.Equal(t, line["error"], alert.Error)

		r, file := readStatus(t)
		assert.False(t, r.OK)
		assert.Equal(t, backup.ResultFailed, r.Result)
		assert.Equal(t, "wrong cipher passphrase", r.Cause)
		assert.Equal(t, line["error"], r.Error)
		assert.Empty(t, r.Label)
		assert.Nil(t, r.Amcheck)

		for _, secret := range append(secrets, wrong.CipherPass) {
			for where, text := range map[string]string{"stdout": stdout, "stderr": stderr, "status file": file, "alert": bodies[0]} {
				assert.NotContains(t, text, secret, "a secret in the %s", where)
			}
		}

		report, check, code := status(t)
		assert.Equal(t, 1, code)
		assert.False(t, report.OK)
		assert.False(t, check.OK)
		assert.Contains(t, check.Detail, "last drill FAILED, finished ")
		assert.Contains(t, check.Detail, "from repo2: wrong cipher passphrase: "+o.drillPath+": exit status 1")
		require.NotNil(t, report.LastDrill)
		assert.Equal(t, "wrong cipher passphrase", report.LastDrill.Cause)
	})

	t.Run("a backup file missing from repo1 fails its drill, not repo2's", func(t *testing.T) {
		o.waitAsyncIdle(t)
		var biggest string
		var biggestSize int64
		require.NoError(t, filepath.Walk(filepath.Join(o.repo, "backup", drillStanza, labels[1], "pg_data", "base"), func(path string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() && info.Size() > biggestSize {
				biggest, biggestSize = path, info.Size()
			}
			return err
		}))
		require.NotEmpty(t, biggest)
		require.NoError(t, os.Remove(biggest))
		before := len(alerts())

		line, _, _, code := drill(t, 1)
		assert.Equal(t, 1, code)
		assert.Equal(t, "restore drill failed", line["msg"])
		assert.Equal(t, float64(1), line["repo"])
		assert.Contains(t, line["error"], "unable to open missing file", "pgBackRest's error names the file")
		assert.Contains(t, line["error"], filepath.Base(biggest))
		assert.Contains(t, line["error"], "drill FAILED: pgbackrest restore from repo1 failed")
		// No cause in Cause's table names a file missing from a backup.
		assert.NotContains(t, line, "cause")
		require.Len(t, alerts(), before+1)
		r, _ := readStatus(t)
		assert.False(t, r.OK)
		assert.Equal(t, 1, r.Repo)
		_, check, _ := status(t)
		assert.False(t, check.OK, check.Detail)
		assert.Contains(t, check.Detail, "from repo1: "+o.drillPath+": exit status 1")
		t.Logf("error: %s", line["error"])

		// repo2 holds backups of its own: its drill passes, and the status
		// file says so again.
		line, _, stderr, code := drill(t, 2)
		assertPassed(t, line, code, stderr)
		assert.Len(t, alerts(), before+1)
	})
}

// TestDrillAmcheckFindsAnIndexThatLies: an expression index over a
// function declared IMMUTABLE that then returns other values (as a
// changed collation or a function fixed in place does to an index): the
// index's entries no longer match its table. Nothing else notices: the
// database answers, the backup takes it (no page checksum error: a backup
// with one is not the newest the scheduler accepts), pg_amcheck without
// --heapallindexed passes. The scheduler's drill of that backup fails,
// naming the index, with cause, alert and status file, where the same
// drill of the backup before the change passed.
func TestDrillAmcheckFindsAnIndexThatLies(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	require.NoError(t, c.pgbackrest.StanzaCreate(ctx))
	_, err := c.pool.Exec(ctx, `CREATE FUNCTION drill_key(bigint) RETURNS bigint IMMUTABLE LANGUAGE sql AS 'SELECT $1';
		CREATE TABLE drill_lies AS SELECT g::bigint AS id FROM generate_series(1, 5000) g;
		CREATE INDEX drill_lies_key ON drill_lies (drill_key(id))`)
	require.NoError(t, err)

	statusFile := filepath.Join(c.base, "drill.json")
	alertURL, alerts := drillAlertReceiver(t)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{
		PgBackRest: c.pgbackrest, FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", AlertURL: alertURL,
		DrillSpec: "15 4 * * 3", Drill: backup.DrillOptions{Tables: "drill_lies", Command: c.drillPath, StatusFile: statusFile},
	}, logger)
	require.NoError(t, err)
	require.Equal(t, backup.ResultOK, only(t, s.Backup(ctx, backup.Full)).Result)
	wantIndexes := c.count(btreeIndexesSQL)

	r, ran := s.Drill(ctx)
	require.True(t, ran)
	require.True(t, r.OK, r.Error)
	assert.Equal(t, map[string]int64{"drill_lies": 5000}, r.RowCounts)
	assert.Equal(t, int(wantIndexes), r.Amcheck.Indexes)

	// The lie.
	_, err = c.pool.Exec(ctx, `CREATE OR REPLACE FUNCTION drill_key(bigint) RETURNS bigint IMMUTABLE LANGUAGE sql AS 'SELECT -$1';
		CREATE EXTENSION amcheck`)
	require.NoError(t, err)
	var n int64
	require.NoError(t, c.pool.QueryRow(ctx, `SELECT count(*) FROM drill_lies WHERE id > 100`).Scan(&n))
	assert.Equal(t, int64(4900), n, "the database answers")
	amcheckLive := func(args ...string) (string, int) {
		stdout, stderr, code := c.script(pgBin+"/pg_amcheck", append([]string{"-h", c.sock, "-p", strconv.Itoa(c.port), "-U", "postgres"}, append(args, drillDB)...)...)
		return stdout + stderr, code
	}
	out, code := amcheckLive()
	assert.Equal(t, 0, code, "the index's own structure is sound: %s", out)
	out, code = amcheckLive("--heapallindexed")
	assert.Equal(t, 2, code, "only --heapallindexed, which looks each heap tuple up in the index, finds it: %s", out)
	require.Equal(t, backup.ResultOK, only(t, s.Backup(ctx, backup.Diff)).Result, "the backup takes it")

	r, ran = s.Drill(ctx)
	require.True(t, ran)
	assert.False(t, r.OK)
	assert.Equal(t, "corruption found by amcheck", r.Cause)
	assert.Contains(t, r.Error, `lacks matching index tuple within index "drill_lies_key"`, "pg_amcheck's report")
	assert.Regexp(t, `drill FAILED: amcheck reported corruption in btree index "nbms\.public\.drill_lies_key"$`, r.Error, "the verdict names the index")
	t.Logf("error: %s", r.Error)

	var failed []map[string]any
	for _, line := range logLines(t, logs) {
		if line["msg"] == "restore drill failed" {
			failed = append(failed, line)
		}
	}
	require.Len(t, failed, 1)
	assert.Equal(t, "ERROR", failed[0]["level"])
	assert.Equal(t, "corruption found by amcheck", failed[0]["cause"])
	bodies := alerts()
	require.Len(t, bodies, 1)
	assert.Equal(t, "corruption found by amcheck", decodeDrill(t, bodies[0]).Cause)
	written, err := backup.ReadDrillStatus(statusFile)
	require.NoError(t, err)
	assert.Equal(t, r, written, "the status file holds the drill")
}

// TestScheduledDrills runs the scheduler's cron loop (specs with seconds,
// as TestRunSchedule's) with a drill every second against a real cluster:
// with --exit-on-failure a failed drill ends the schedule; with a full
// backup every second too, drills and backups each run, a drill waits
// for a running backup, backups skip while a drill runs or waits, and
// they never overlap. A drill that a stop (SIGTERM) interrupts leaves the
// last drill's status and alerts nothing.
func TestScheduledDrills(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	require.NoError(t, c.pgbackrest.StanzaCreate(ctx))
	statusFile := filepath.Join(c.base, "drill.json")
	drill := backup.DrillOptions{Tables: "organisations,users", Command: c.drillPath, StatusFile: statusFile}
	const never = "0 0 0 1 1 *" // at midnight on 1 January
	count := func(lines []map[string]any, msg string) int {
		n := 0
		for _, line := range lines {
			if line["msg"] == msg {
				n++
			}
		}
		return n
	}

	t.Run("a failed drill ends the schedule", func(t *testing.T) {
		// No backup yet: nothing to restore.
		logger, logs := newLogger()
		s, err := backup.NewSchedulerWithSeconds(backup.ScheduleOptions{
			PgBackRest: c.pgbackrest, FullSpec: never, DiffSpec: never, DrillSpec: "* * * * * *", Drill: drill,
			ExitOnFailure: true, CreateStanza: true,
		}, logger)
		require.NoError(t, err)
		// A bound for a broken scheduler: Run returns after the first drill.
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		err = s.Run(ctx)
		require.Error(t, err)
		assert.NoError(t, ctx.Err(), "Run returned on its own")
		assert.Contains(t, err.Error(), "backup: restore drill failed: "+c.drillPath+": exit status 1:")
		assert.Contains(t, err.Error(), "ERROR: [075]: no backup set found to restore")

		lines := logLines(t, logs)
		require.Equal(t, "backup scheduler started", lines[1]["msg"], "after stanza-create")
		assert.Equal(t, "* * * * * *", lines[1]["drill"])
		assert.Equal(t, 1, count(lines, "restore drill failed"))
		r, err := backup.ReadDrillStatus(statusFile)
		require.NoError(t, err)
		assert.False(t, r.OK)
	})

	t.Run("drills and backups take turns", func(t *testing.T) {
		logger, logs := newLogger()
		s, err := backup.NewSchedulerWithSeconds(backup.ScheduleOptions{
			PgBackRest: c.pgbackrest, FullSpec: "* * * * * *", DiffSpec: never, DrillSpec: "* * * * * *", Drill: drill,
		}, logger)
		require.NoError(t, err)
		// A backup for the first drill to restore.
		require.Equal(t, backup.ResultOK, only(t, s.Backup(ctx, backup.Full)).Result)

		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ran := make(chan error, 1)
		go func() { ran <- s.Run(ctx) }()
		// Both fire every second: a drill that finds a backup running
		// waits for it, backups due while a drill runs or waits are
		// skipped, and so are drills due while another runs or waits.
		require.Eventually(t, func() bool {
			lines := logLines(t, logs)
			return count(lines, "restore drill passed") >= 2 && count(lines, "backup finished") >= 2 &&
				count(lines, "restore drill waits: a backup is running") >= 1 &&
				count(lines, "backup skipped: a restore drill is running")+count(lines, "backup skipped: a restore drill is waiting") >= 1 &&
				count(lines, "restore drill skipped: another restore drill is running")+count(lines, "restore drill skipped: another restore drill is waiting") >= 1
		}, 3*time.Minute, 100*time.Millisecond, "drills and backups ran in turn")
		assert.Zero(t, count(logLines(t, logs), "restore drill skipped: a backup is running"), "a drill waits for a backup")
		cancel()
		require.NoError(t, <-ran)

		// Each job's interval, from its line's time and duration, lies
		// within the job's hold of the gate: none may overlap one of the
		// other kind.
		type interval struct {
			msg        string
			start, end time.Time
		}
		var backups, drills []interval
		for _, line := range logLines(t, logs) {
			msg, _ := line["msg"].(string)
			switch msg {
			case "backup finished", "backup failed", "restore drill passed", "restore drill failed", "restore drill interrupted":
			default:
				continue
			}
			end, err := time.Parse(time.RFC3339Nano, line["time"].(string))
			require.NoError(t, err)
			in := interval{msg, end.Add(-time.Duration(line["duration_ms"].(float64)) * time.Millisecond), end}
			if strings.HasPrefix(msg, "backup") {
				backups = append(backups, in)
			} else {
				drills = append(drills, in)
			}
		}
		require.GreaterOrEqual(t, len(drills), 2)
		for _, b := range backups {
			for _, d := range drills {
				assert.False(t, b.start.Before(d.end) && d.start.Before(b.end), "%s %s–%s overlaps %s %s–%s",
					b.msg, b.start.Format(time.StampMilli), b.end.Format(time.StampMilli), d.msg, d.start.Format(time.StampMilli), d.end.Format(time.StampMilli))
			}
		}
		for _, line := range logLines(t, logs) {
			if msg, _ := line["msg"].(string); strings.HasPrefix(msg, "restore drill skipped: ") {
				assert.Equal(t, "WARN", line["level"])
				assert.Equal(t, "restore_drill", line["type"])
				assert.Equal(t, "skipped", line["result"])
			}
			if line["msg"] == "restore drill passed" {
				assert.Equal(t, map[string]int64{"organisations": 0, "users": 0}, lineCounts(line))
			}
		}
		t.Logf("%d backups and %d drills in turn", len(backups), len(drills))
		r, err := backup.ReadDrillStatus(statusFile)
		require.NoError(t, err)
		assert.True(t, r.OK, "a drill the stop interrupted leaves the last finished one: %s", r.Error)
	})

	t.Run("a stop interrupts a drill, which says nothing of the backups", func(t *testing.T) {
		before, err := os.ReadFile(statusFile)
		require.NoError(t, err)
		alertURL, alerts := drillAlertReceiver(t)
		scratch := filepath.Join(c.base, "interrupted")
		c.mkdirPostgres(scratch)
		logger, logs := newLogger()
		stopping := drill
		stopping.ScratchDir = scratch
		s, err := backup.NewSchedulerWithSeconds(backup.ScheduleOptions{
			PgBackRest: c.pgbackrest, FullSpec: never, DiffSpec: never, AlertURL: alertURL,
			DrillSpec: never, Drill: stopping, ExitOnFailure: true,
		}, logger)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan backup.DrillResult, 1)
		go func() { r, _ := s.Drill(ctx); done <- r }()
		// The stop once the copy's server runs: the script's trap must stop
		// it.
		var copyServer string
		require.Eventually(t, func() bool {
			copyServer = processUnder(t, scratch, "postgres")
			return copyServer != ""
		}, time.Minute, 20*time.Millisecond, "the drill's copy started")
		cancel()
		r := <-done

		assert.False(t, r.OK)
		lines := logLines(t, logs)
		require.Len(t, lines, 1, "one line: %v", lines)
		assert.Equal(t, "WARN", lines[0]["level"])
		assert.Equal(t, "restore drill interrupted", lines[0]["msg"])
		after, err := os.ReadFile(statusFile)
		require.NoError(t, err)
		assert.Equal(t, string(before), string(after), "the last finished drill's status stays")
		assert.Empty(t, alerts())
		assert.Empty(t, processUnder(t, scratch, ""), "the copy's server (%s) stopped", copyServer)
	})
}

// processUnder is the command line of a process (not the drill script nor
// runuser) whose arguments name a path under dir, and contain name, ""
// when there is none.
func processUnder(t *testing.T, dir, name string) string {
	t.Helper()
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	for _, path := range cmdlines {
		data, err := os.ReadFile(path) // gone since the glob: err
		cmdline := strings.ReplaceAll(string(data), "\x00", " ")
		if err == nil && strings.Contains(cmdline, dir+"/") && strings.Contains(cmdline, name) &&
			!strings.Contains(cmdline, "pgbackrest_restore_drill.sh") && !strings.HasPrefix(cmdline, "runuser") {
			return cmdline
		}
	}
	return ""
}
