package backup_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/app/internal/backup"
	"github.com/nbms-deploy/nbms/internal/testsupport"
)

func TestValidateSpec(t *testing.T) {
	tests := []struct {
		spec    string
		wantErr string
	}{
		{"30 1 * * 0", ""},
		{"30 1 * * 1-6", ""},
		{"*/15 * * * *", ""},
		{"0 3 1 * *", ""},
		{"", "empty spec string"},
		{"30 1 * *", "expected exactly 5 fields, found 4"},
		{"0 30 1 * * 0", "expected exactly 5 fields, found 6"},
		{"61 * * * *", "above maximum"},
		{"30 1 * * mon-funday", "failed to parse"},
		{"@every 1h", "does not accept descriptors"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			err := backup.ValidateSpec(tt.spec)
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Contains(t, err.Error(), "want 5 fields: minute hour day-of-month month day-of-week", "the error says what is expected")
		})
	}
}

func TestNewSchedulerReportsEveryProblem(t *testing.T) {
	_, err := backup.NewScheduler(backup.ScheduleOptions{
		FullSpec: "30 1 * *", DiffSpec: "30 25 * * *", AlertURL: "ftp://alerts",
	}, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `full schedule "30 1 * *"`)
	assert.Contains(t, err.Error(), `diff schedule "30 25 * * *"`)
	assert.Contains(t, err.Error(), `alert URL "ftp://alerts" must be an absolute http(s) URL`)
}

func TestScheduleFlags(t *testing.T) {
	// No --drill: no drill, whatever the other drill flags' defaults.
	drillDefaults := backup.DrillOptions{Tables: backup.DefaultDrillTables, Command: backup.DefaultDrillCommand}
	tests := []struct {
		name       string
		production bool
		args       []string
		want       backup.ScheduleOptions
	}{
		{"production defaults", true, nil, backup.ScheduleOptions{FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", ExitOnFailure: true, CreateStanza: true, Drill: drillDefaults}},
		{"development defaults", false, nil, backup.ScheduleOptions{FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", CreateStanza: true, Drill: drillDefaults}},
		{"everything set", true,
			[]string{"--config=/etc/x.conf", "--stanza=nbms", "--full=0 2 * * 6", "--diff=0 2 * * 0-5", "--exit-on-failure=false", "--alert-url=https://alerts.example/hook", "--create-stanza=false",
				"--drill=15 4 * * 3", "--drill-repo=2", "--drill-tables=users,audit_events", "--drill-command=/usr/local/bin/drill", "--drill-scratch=/var/lib/drill", "--drill-status=/var/lib/drill/status.json"},
			backup.ScheduleOptions{PgBackRest: backup.PgBackRest{ConfigPath: "/etc/x.conf", Stanza: "nbms"}, FullSpec: "0 2 * * 6", DiffSpec: "0 2 * * 0-5", AlertURL: "https://alerts.example/hook",
				DrillSpec: "15 4 * * 3", Drill: backup.DrillOptions{Repo: 2, Tables: "users,audit_events", Command: "/usr/local/bin/drill", ScratchDir: "/var/lib/drill", StatusFile: "/var/lib/drill/status.json"}}},
		{"several repositories, in the order given", true,
			[]string{"--repo", "2", "--repo=1", "--repo", "256"},
			backup.ScheduleOptions{FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", Repos: []int{2, 1, 256}, ExitOnFailure: true, CreateStanza: true, Drill: drillDefaults}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts backup.ScheduleOptions
			fs := flag.NewFlagSet("backup-schedule", flag.ContinueOnError)
			opts.Flags(fs, tt.production)
			require.NoError(t, fs.Parse(tt.args))
			assert.Equal(t, tt.want, opts)
		})
	}
}

func TestScheduleRepoFlagRejectsBadValues(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"zero", []string{"--repo", "0"}, `invalid value "0" for flag -repo: repository 0 is out of range (want 1-256`},
		{"above pgBackRest's maximum", []string{"--repo", "257"}, `invalid value "257" for flag -repo: repository 257 is out of range (want 1-256`},
		{"negative", []string{"--repo=-1"}, `invalid value "-1" for flag -repo: repository -1 is out of range`},
		{"not a number", []string{"--repo", "repo2"}, `invalid value "repo2" for flag -repo: repository "repo2" is not a number`},
		{"a list in one flag", []string{"--repo", "1,2"}, `invalid value "1,2" for flag -repo: repository "1,2" is not a number`},
		{"empty", []string{"--repo="}, `invalid value "" for flag -repo: repository "" is not a number`},
		{"duplicate", []string{"--repo", "1", "--repo", "2", "--repo", "1"}, `invalid value "1" for flag -repo: repository 1 is given twice`},
		{"missing value", []string{"--repo"}, "flag needs an argument: -repo"},
		// --drill-repo takes one repository, with --repo's range.
		{"drill: zero", []string{"--drill-repo", "0"}, `invalid value "0" for flag -drill-repo: repository 0 is out of range (want 1-256`},
		{"drill: above pgBackRest's maximum", []string{"--drill-repo", "257"}, `invalid value "257" for flag -drill-repo: repository 257 is out of range`},
		{"drill: not a number", []string{"--drill-repo", "repo2"}, `invalid value "repo2" for flag -drill-repo: repository "repo2" is not a number`},
		{"drill: one only", []string{"--drill-repo", "1,2"}, `invalid value "1,2" for flag -drill-repo: repository "1,2" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts backup.ScheduleOptions
			fs := flag.NewFlagSet("backup-schedule", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			opts.Flags(fs, true)
			err := fs.Parse(tt.args)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestNewSchedulerRejectsBadRepos(t *testing.T) {
	_, err := backup.NewScheduler(backup.ScheduleOptions{
		FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", Repos: []int{1, 0, 2, 300, 2},
	}, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "backup: repository 0 is out of range (want 1-256")
	assert.Contains(t, err.Error(), "backup: repository 300 is out of range (want 1-256")
	assert.Contains(t, err.Error(), "backup: repository 2 is given twice")
	assert.NotContains(t, err.Error(), "repository 1 ")
}

// stub is a stand-in pgbackrest binary for the scheduler's own logic
// (overlap, failure, alerting); the drill test runs the real one. It
// appends its arguments to calls, sleeps, exits with the given status, and
// answers info with the recorded real JSON.
type stub struct {
	path, calls string
}

func newStub(t *testing.T, backupSleep string, backupExit, stanzaCreateExit int) stub {
	t.Helper()
	return writeStub(t, backupSleep, backupExit, 0, stanzaCreateExit)
}

// newRepoStub is a stub whose backups fail (exit 1) for --repo=failRepo
// only.
func newRepoStub(t *testing.T, failRepo int) stub {
	t.Helper()
	return writeStub(t, "0", 0, failRepo, 0)
}

func writeStub(t *testing.T, backupSleep string, backupExit, failRepo, stanzaCreateExit int) stub {
	t.Helper()
	dir := t.TempDir()
	info, err := filepath.Abs(filepath.Join("testdata", "info_full_diff.json"))
	require.NoError(t, err)
	s := stub{path: filepath.Join(dir, "pgbackrest"), calls: filepath.Join(dir, "calls")}
	script := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[1]q
case "$*" in
  *" backup") sleep %[2]s
    status=%[3]d
    case "$*" in *"--repo=%[6]d "*) status=1 ;; esac
    if [ $status -ne 0 ]; then echo "ERROR: [082]: WAL segment 000000010000000000000002 was not archived before the 60000ms timeout" >&2; fi
    exit $status ;;
  *" info") cat %[4]q ;;
  *stanza-create) exit %[5]d ;;
esac
`, s.calls, backupSleep, backupExit, info, stanzaCreateExit, failRepo)
	require.NoError(t, os.WriteFile(s.path, []byte(script), 0o755))
	return s
}

func (s stub) callLines(t *testing.T) []string {
	data, err := os.ReadFile(s.calls)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// only is the one Run of a backup without ScheduleOptions.Repos.
func only(t *testing.T, runs []backup.Run) backup.Run {
	t.Helper()
	require.Len(t, runs, 1)
	return runs[0]
}

// logLines decodes the JSON log lines written so far.
func logLines(t *testing.T, buf *testsupport.SyncBuffer) []map[string]any {
	t.Helper()
	return jsonLines(t, buf.String())
}

// jsonLines decodes JSON log lines (a logger's, a command's stdout).
func jsonLines(t *testing.T, text string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		lines = append(lines, m)
	}
	return lines
}

func newLogger() (*slog.Logger, *testsupport.SyncBuffer) {
	buf := &testsupport.SyncBuffer{}
	return slog.New(slog.NewJSONHandler(buf, nil)), buf
}

func TestBackupLogsOneLine(t *testing.T) {
	st := newStub(t, "0", 0, 0)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{
		PgBackRest: backup.PgBackRest{Binary: st.path, ConfigPath: "/etc/nbms/pgbackrest.conf", Stanza: "nbms"},
		FullSpec:   "30 1 * * 0", DiffSpec: "30 1 * * 1-6",
	}, logger)
	require.NoError(t, err)

	run := only(t, s.Backup(context.Background(), backup.Diff))
	assert.Equal(t, backup.ResultOK, run.Result)
	assert.Equal(t, recorded, run.Label)
	assert.Equal(t, int64(23254835), run.SizeBytes)
	assert.Equal(t, []string{
		"--config=/etc/nbms/pgbackrest.conf --stanza=nbms --type=diff backup",
		"--config=/etc/nbms/pgbackrest.conf --stanza=nbms --output=json info",
	}, st.callLines(t))

	lines := logLines(t, logs)
	require.Len(t, lines, 1, "one run, one line")
	line := lines[0]
	assert.Equal(t, "INFO", line["level"])
	assert.Equal(t, "diff", line["type"])
	assert.Equal(t, "ok", line["result"])
	assert.Equal(t, recorded, line["label"])
	assert.Equal(t, float64(23254835), line["size_bytes"])
	assert.Equal(t, float64(2831406), line["repo_size_bytes"])
	assert.Contains(t, line, "duration_ms")
	assert.NotContains(t, line, "error")
	assert.Zero(t, s.Failures())
}

func TestBackupWhoseNewestSetIsAnotherTypeFails(t *testing.T) {
	// The recorded repository's newest backup is a diff: a "full" run that
	// leaves it so did not do what it was asked.
	st := newStub(t, "0", 0, 0)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{PgBackRest: backup.PgBackRest{Binary: st.path}, FullSpec: "0 1 * * *", DiffSpec: "0 2 * * *"}, logger)
	require.NoError(t, err)
	run := only(t, s.Backup(context.Background(), backup.Full))
	assert.Equal(t, backup.ResultFailed, run.Result)
	assert.Contains(t, run.Error, "newest backup in the repository is not a full backup")
	require.Len(t, logLines(t, logs), 1)
}

// alertReceiver is an alert URL that records the runs POSTed to it as
// JSON (anything else is refused); alerts returns them so far.
func alertReceiver(t *testing.T) (url string, alerts func() []backup.Run) {
	var mu sync.Mutex
	var got []backup.Run
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var run backup.Run
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &run) != nil {
			http.Error(w, "bad alert", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, run)
		mu.Unlock()
	}))
	t.Cleanup(server.Close)
	return server.URL, func() []backup.Run {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func TestBackupFailureIsLoggedCountedAndAlerted(t *testing.T) {
	alertURL, received := alertReceiver(t)

	st := newStub(t, "0", 1, 0)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{
		PgBackRest: backup.PgBackRest{Binary: st.path, Stanza: "nbms"},
		FullSpec:   "30 1 * * 0", DiffSpec: "30 1 * * 1-6", AlertURL: alertURL + "/hook?token=secret",
	}, logger)
	require.NoError(t, err)

	for i := 1; i <= 2; i++ {
		run := only(t, s.Backup(context.Background(), backup.Full))
		assert.Equal(t, backup.ResultFailed, run.Result)
		assert.Contains(t, run.Error, "ERROR: [082]: WAL segment", "pgBackRest's own message is kept")
		assert.Equal(t, int64(i), s.Failures())
	}
	lines := logLines(t, logs)
	require.Len(t, lines, 2)
	for i, line := range lines {
		assert.Equal(t, "ERROR", line["level"])
		assert.Equal(t, "backup failed", line["msg"])
		assert.Equal(t, "full", line["type"])
		assert.Equal(t, "failed", line["result"])
		assert.Equal(t, float64(i+1), line["failures_total"])
		assert.Contains(t, line["error"], "exit status 1")
		assert.Equal(t, "WAL not reaching the repository", line["cause"], "named from the stub's [082]")
	}
	alerts := received()
	require.Len(t, alerts, 2)
	assert.Equal(t, backup.ResultFailed, alerts[0].Result)
	assert.Equal(t, backup.Full, alerts[0].Type)
	assert.Equal(t, "nbms", alerts[0].Stanza)
	assert.Equal(t, "WAL not reaching the repository", alerts[0].Cause)
}

func TestAlertFailureDoesNotLeakTheURL(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + "/hook?token=s3cr3t"
	dead.Close()

	st := newStub(t, "0", 1, 0)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{PgBackRest: backup.PgBackRest{Binary: st.path}, FullSpec: "0 1 * * *", DiffSpec: "0 2 * * *", AlertURL: deadURL}, logger)
	require.NoError(t, err)
	s.Backup(context.Background(), backup.Diff)

	lines := logLines(t, logs)
	require.Len(t, lines, 2, "the failure, then the undelivered alert")
	assert.Equal(t, "backup alert not delivered", lines[1]["msg"])
	assert.NotContains(t, logs.String(), "s3cr3t")
}

func TestOverlappingBackupIsSkipped(t *testing.T) {
	st := newStub(t, "2", 0, 0)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{PgBackRest: backup.PgBackRest{Binary: st.path}, FullSpec: "0 1 * * *", DiffSpec: "0 2 * * *"}, logger)
	require.NoError(t, err)

	done := make(chan []backup.Run)
	go func() { done <- s.Backup(context.Background(), backup.Diff) }()
	require.Eventually(t, func() bool { return len(st.callLines(t)) == 1 }, 5*time.Second, 10*time.Millisecond, "the first backup started")

	start := time.Now()
	skipped := only(t, s.Backup(context.Background(), backup.Full))
	assert.Equal(t, backup.ResultSkipped, skipped.Result)
	assert.Less(t, time.Since(start), time.Second, "skipped at once, not queued behind the running backup")

	first := only(t, <-done)
	assert.Equal(t, backup.ResultOK, first.Result)
	assert.Equal(t, []string{"--type=diff backup", "--output=json info"}, st.callLines(t), "the full backup never ran")

	lines := logLines(t, logs)
	require.Len(t, lines, 2)
	assert.Equal(t, "WARN", lines[0]["level"])
	assert.Equal(t, "skipped", lines[0]["result"])
	assert.Equal(t, "full", lines[0]["type"])
	assert.Equal(t, "ok", lines[1]["result"])
	assert.Zero(t, s.Failures(), "a skip is not a failure")
}

func TestRunSchedule(t *testing.T) {
	tests := []struct {
		name             string
		backupExit       int
		stanzaCreateExit int
		exitOnFailure    bool
		cancelAfter      time.Duration
		wantErr          string
		wantFirstCall    string
	}{
		{"exits on the first failure", 1, 0, true, 0, "backup: full backup failed", "stanza-create"},
		{"keeps going without exit-on-failure until stopped", 1, 0, false, 2500 * time.Millisecond, "", "stanza-create"},
		{"stanza-create failure stops the start", 0, 1, true, 0, "stanza-create", "stanza-create"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStub(t, "0", tt.backupExit, tt.stanzaCreateExit)
			logger, logs := newLogger()
			s, err := backup.NewSchedulerWithSeconds(backup.ScheduleOptions{
				PgBackRest: backup.PgBackRest{Binary: st.path},
				// every second, and never: only full backups run
				FullSpec: "* * * * * *", DiffSpec: "0 0 0 1 1 *",
				ExitOnFailure: tt.exitOnFailure, CreateStanza: true,
			}, logger)
			require.NoError(t, err)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tt.cancelAfter > 0 {
				time.AfterFunc(tt.cancelAfter, cancel)
			}
			err = s.Run(ctx)
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.GreaterOrEqual(t, s.Failures(), int64(1), "failures were counted, not fatal")
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
			}
			if tt.cancelAfter == 0 {
				assert.NoError(t, ctx.Err(), "Run returned on its own, before the deadline")
			}
			assert.Equal(t, tt.wantFirstCall, st.callLines(t)[0])
			assert.Contains(t, logs.String(), `"level":"ERROR"`)
		})
	}
}

func TestBackupToSeveralRepositories(t *testing.T) {
	// Each repository in turn: a failure of either one, the off-host repo2
	// being unreachable or the local repo1's disk full, leaves the other
	// backed up, logged, and the failure counted and alerted on its own.
	for _, failRepo := range []int{1, 2} {
		t.Run(fmt.Sprintf("repo%d fails", failRepo), func(t *testing.T) {
			alertURL, received := alertReceiver(t)

			st := newRepoStub(t, failRepo)
			logger, logs := newLogger()
			s, err := backup.NewScheduler(backup.ScheduleOptions{
				PgBackRest: backup.PgBackRest{Binary: st.path, Stanza: "nbms"},
				FullSpec:   "30 1 * * 0", DiffSpec: "30 1 * * 1-6", Repos: []int{1, 2},
				ExitOnFailure: true, AlertURL: alertURL,
			}, logger)
			require.NoError(t, err)

			runs := s.Backup(context.Background(), backup.Diff)
			require.Len(t, runs, 2)
			okRepo := 3 - failRepo
			for i, run := range runs {
				assert.Equal(t, i+1, run.Repo, "in the order of Repos")
				assert.Equal(t, backup.Diff, run.Type)
				assert.Equal(t, "nbms", run.Stanza)
				if run.Repo == failRepo {
					assert.Equal(t, backup.ResultFailed, run.Result)
					assert.Contains(t, run.Error, "pgbackrest --type=diff backup: exit status 1")
					assert.Contains(t, run.Error, "ERROR: [082]")
					assert.Empty(t, run.Label)
				} else {
					assert.Equal(t, backup.ResultOK, run.Result, run.Error)
					assert.Equal(t, recorded, run.Label, "from the info of its own repository")
					assert.Equal(t, int64(23254835), run.SizeBytes)
				}
			}

			calls := []string{"--stanza=nbms --repo=1 --type=diff backup"}
			if failRepo != 1 {
				calls = append(calls, "--stanza=nbms --repo=1 --output=json info")
			}
			calls = append(calls, "--stanza=nbms --repo=2 --type=diff backup")
			if failRepo != 2 {
				calls = append(calls, "--stanza=nbms --repo=2 --output=json info")
			}
			assert.Equal(t, calls, st.callLines(t), "one backup per repository; info of that repository only")

			lines := logLines(t, logs)
			require.Len(t, lines, 2, "one line per repository")
			for i, line := range lines {
				assert.Equal(t, float64(i+1), line["repo"])
				assert.Equal(t, "diff", line["type"])
				assert.Equal(t, "nbms", line["stanza"])
			}
			failed, ok := lines[failRepo-1], lines[okRepo-1]
			assert.Equal(t, "ERROR", failed["level"])
			assert.Equal(t, "backup failed", failed["msg"])
			assert.Equal(t, "failed", failed["result"])
			assert.Equal(t, float64(1), failed["failures_total"])
			assert.Contains(t, failed["error"], "ERROR: [082]")
			assert.Equal(t, "INFO", ok["level"])
			assert.Equal(t, "backup finished", ok["msg"])
			assert.Equal(t, "ok", ok["result"])
			assert.Equal(t, recorded, ok["label"])
			assert.NotContains(t, ok, "error")

			assert.Equal(t, int64(1), s.Failures())
			alerts := received()
			require.Len(t, alerts, 1, "the failed repository is alerted, the other not")
			assert.Equal(t, failRepo, alerts[0].Repo)
			assert.Equal(t, backup.ResultFailed, alerts[0].Result)
			assert.Equal(t, backup.Diff, alerts[0].Type)
		})
	}
}

func TestRunScheduleExitsAfterTheRoundNamingTheFailedRepository(t *testing.T) {
	st := newRepoStub(t, 1)
	logger, logs := newLogger()
	s, err := backup.NewSchedulerWithSeconds(backup.ScheduleOptions{
		PgBackRest: backup.PgBackRest{Binary: st.path},
		// every second, and never: only differential backups run (the
		// recorded info's newest backup is a diff)
		FullSpec: "0 0 0 1 1 *", DiffSpec: "* * * * * *",
		Repos: []int{1, 2}, ExitOnFailure: true, CreateStanza: true,
	}, logger)
	require.NoError(t, err)

	// A bound for a broken scheduler, not a speed: Run returns after the
	// first round, about a second in.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = s.Run(ctx)
	require.Error(t, err)
	assert.NoError(t, ctx.Err(), "Run returned on its own, before the deadline")
	assert.Contains(t, err.Error(), "backup: diff backup to repo1 failed: pgbackrest --type=diff backup: exit status 1")
	assert.Contains(t, err.Error(), "ERROR: [082]", "pgBackRest's own message is kept")
	assert.NotContains(t, err.Error(), "repo2", "repo2's backup succeeded")

	calls := st.callLines(t)
	require.GreaterOrEqual(t, len(calls), 4)
	assert.Equal(t, []string{
		"stanza-create", // of every repository: pgBackRest takes no --repo for it
		"--repo=1 --type=diff backup",
		"--repo=2 --type=diff backup",
		"--repo=2 --output=json info",
	}, calls[:4], "repo2 was backed up after repo1 failed, before the exit")

	var backups []map[string]any
	for _, line := range logLines(t, logs) {
		if line["msg"] == "backup scheduler started" {
			assert.Equal(t, []any{float64(1), float64(2)}, line["repos"])
		}
		if _, ok := line["result"]; ok && line["repo"] != nil {
			backups = append(backups, line)
		}
	}
	require.GreaterOrEqual(t, len(backups), 2)
	assert.Equal(t, float64(1), backups[0]["repo"])
	assert.Equal(t, "failed", backups[0]["result"])
	assert.Equal(t, float64(2), backups[1]["repo"])
	assert.Equal(t, "ok", backups[1]["result"])
}

func TestOverlappingRunIsSkippedForEveryRepository(t *testing.T) {
	st := newStub(t, "2", 0, 0)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{PgBackRest: backup.PgBackRest{Binary: st.path}, FullSpec: "0 1 * * *", DiffSpec: "0 2 * * *", Repos: []int{1, 2}}, logger)
	require.NoError(t, err)

	done := make(chan []backup.Run)
	go func() { done <- s.Backup(context.Background(), backup.Diff) }()
	// Not only while repo1's backup runs: while the last one does.
	require.Eventually(t, func() bool { return slices.Contains(st.callLines(t), "--repo=2 --type=diff backup") }, 10*time.Second, 10*time.Millisecond, "repo2's backup started")

	skipped := s.Backup(context.Background(), backup.Full)
	require.Len(t, skipped, 2)
	for i, run := range skipped {
		assert.Equal(t, i+1, run.Repo)
		assert.Equal(t, backup.ResultSkipped, run.Result)
		assert.Equal(t, backup.Full, run.Type)
	}

	first := <-done
	require.Len(t, first, 2)
	assert.Equal(t, backup.ResultOK, first[0].Result, first[0].Error)
	assert.Equal(t, backup.ResultOK, first[1].Result, first[1].Error)
	assert.Equal(t, []string{"--repo=1 --type=diff backup", "--repo=1 --output=json info", "--repo=2 --type=diff backup", "--repo=2 --output=json info"},
		st.callLines(t), "the full backups never ran")

	// repo1's backup finished, then the skipped call, then repo2's.
	lines := logLines(t, logs)
	require.Len(t, lines, 4, "one line per repository and call")
	for i, want := range []struct {
		msg, result, typ string
		repo             float64
	}{
		{"backup finished", "ok", "diff", 1},
		{"backup skipped: another backup is running", "skipped", "full", 1},
		{"backup skipped: another backup is running", "skipped", "full", 2},
		{"backup finished", "ok", "diff", 2},
	} {
		assert.Equal(t, want.msg, lines[i]["msg"])
		assert.Equal(t, want.result, lines[i]["result"])
		assert.Equal(t, want.typ, lines[i]["type"])
		assert.Equal(t, want.repo, lines[i]["repo"])
	}
	assert.Equal(t, "WARN", lines[1]["level"])
	assert.Zero(t, s.Failures(), "a skip is not a failure")
}

// At start, an unreachable off-host repository (stanza-create, which
// works on every repository, fails) does not stop the scheduler when the
// first repository holds the stanza: the local repository keeps its
// backups. When the first holds none, the scheduler stops.
func TestStanzaCreateFailureInALaterRepository(t *testing.T) {
	stubWithFirstRepo := func(t *testing.T, firstInfo string) stub {
		dir := t.TempDir()
		info, err := filepath.Abs(filepath.Join("testdata", "info_full_diff.json"))
		require.NoError(t, err)
		// repo1's info: the recorded one (status ok, with the backups a
		// scheduled diff then finds), or firstInfo.
		first := info
		if firstInfo != "" {
			first = filepath.Join(dir, "first.json")
			require.NoError(t, os.WriteFile(first, []byte(firstInfo), 0o644))
		}
		s := stub{path: filepath.Join(dir, "pgbackrest"), calls: filepath.Join(dir, "calls")}
		script := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[1]q
case "$*" in
  stanza-create) echo "ERROR: [039]: HTTP request failed with 503" >&2; exit 39 ;;
  "--repo=1 --output=json info") cat %[2]q ;;
  *" info") cat %[3]q ;;
esac
`, s.calls, first, info)
		require.NoError(t, os.WriteFile(s.path, []byte(script), 0o755))
		return s
	}
	opts := func(st stub) backup.ScheduleOptions {
		return backup.ScheduleOptions{
			PgBackRest: backup.PgBackRest{Binary: st.path}, FullSpec: "0 0 0 1 1 *", DiffSpec: "* * * * * *",
			Repos: []int{1, 2}, ExitOnFailure: true, CreateStanza: true,
		}
	}

	t.Run("the first repository holds the stanza", func(t *testing.T) {
		st := stubWithFirstRepo(t, "")
		logger, logs := newLogger()
		s, err := backup.NewSchedulerWithSeconds(opts(st), logger)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ran := make(chan error, 1)
		go func() { ran <- s.Run(ctx) }()
		require.Eventually(t, func() bool { return slices.Contains(st.callLines(t), "--repo=1 --type=diff backup") }, time.Minute, 10*time.Millisecond,
			"the local repository's scheduled backup ran")
		cancel()
		require.NoError(t, <-ran)
		var errorsLogged []string
		for _, line := range logLines(t, logs) {
			if line["level"] == "ERROR" && line["result"] == nil {
				errorsLogged = append(errorsLogged, line["msg"].(string))
			}
		}
		assert.Equal(t, []string{"backup stanza-create failed", "backup stanza ready in the first repository only: backups to the others fail until they can be reached"}, errorsLogged)
		assert.Equal(t, []string{"stanza-create", "--repo=1 --output=json info"}, st.callLines(t)[:2])
	})
	t.Run("the first repository holds none", func(t *testing.T) {
		st := stubWithFirstRepo(t, `[{"name":"nbms","status":{"code":1,"message":"missing stanza path"},"backup":[],"archive":[],"db":[]}]`)
		s, err := backup.NewSchedulerWithSeconds(opts(st), slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		err = s.Run(context.Background())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "stanza-create failed and repo1 holds no usable stanza")
		assert.Contains(t, err.Error(), "ERROR: [039]")
		assert.Equal(t, []string{"stanza-create", "--repo=1 --output=json info"}, st.callLines(t), "nothing else ran")
	})
}
