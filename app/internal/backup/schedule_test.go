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
	tests := []struct {
		name       string
		production bool
		args       []string
		want       backup.ScheduleOptions
	}{
		{"production defaults", true, nil, backup.ScheduleOptions{FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", ExitOnFailure: true, CreateStanza: true}},
		{"development defaults", false, nil, backup.ScheduleOptions{FullSpec: "30 1 * * 0", DiffSpec: "30 1 * * 1-6", CreateStanza: true}},
		{"everything set", true,
			[]string{"--config=/etc/x.conf", "--stanza=nbms", "--full=0 2 * * 6", "--diff=0 2 * * 0-5", "--exit-on-failure=false", "--alert-url=https://alerts.example/hook", "--create-stanza=false"},
			backup.ScheduleOptions{PgBackRest: backup.PgBackRest{ConfigPath: "/etc/x.conf", Stanza: "nbms"}, FullSpec: "0 2 * * 6", DiffSpec: "0 2 * * 0-5", AlertURL: "https://alerts.example/hook"}},
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

// stub is a stand-in pgbackrest binary for the scheduler's own logic
// (overlap, failure, alerting); the drill test runs the real one. It
// appends its arguments to calls, sleeps, exits with the given status, and
// answers info with the recorded real JSON.
type stub struct {
	path, calls string
}

func newStub(t *testing.T, backupSleep string, backupExit, stanzaCreateExit int) stub {
	t.Helper()
	dir := t.TempDir()
	info, err := filepath.Abs(filepath.Join("testdata", "info_full_diff.json"))
	require.NoError(t, err)
	s := stub{path: filepath.Join(dir, "pgbackrest"), calls: filepath.Join(dir, "calls")}
	script := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[1]q
case "$*" in
  *" backup") sleep %[2]s
    if [ %[3]d -ne 0 ]; then echo "ERROR: [082]: WAL segment 000000010000000000000002 was not archived before the 60000ms timeout" >&2; fi
    exit %[3]d ;;
  *" info") cat %[4]q ;;
  *stanza-create) exit %[5]d ;;
esac
`, s.calls, backupSleep, backupExit, info, stanzaCreateExit)
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

// logLines decodes the JSON log lines written so far.
func logLines(t *testing.T, buf *testsupport.SyncBuffer) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
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

	run := s.Backup(context.Background(), backup.Diff)
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
	run := s.Backup(context.Background(), backup.Full)
	assert.Equal(t, backup.ResultFailed, run.Result)
	assert.Contains(t, run.Error, "newest backup in the repository is not a full backup")
	require.Len(t, logLines(t, logs), 1)
}

func TestBackupFailureIsLoggedCountedAndAlerted(t *testing.T) {
	var mu sync.Mutex
	var alerts []backup.Run
	alertServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var run backup.Run
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &run) != nil {
			http.Error(w, "bad alert", http.StatusBadRequest)
			return
		}
		mu.Lock()
		alerts = append(alerts, run)
		mu.Unlock()
	}))
	defer alertServer.Close()

	st := newStub(t, "0", 1, 0)
	logger, logs := newLogger()
	s, err := backup.NewScheduler(backup.ScheduleOptions{
		PgBackRest: backup.PgBackRest{Binary: st.path, Stanza: "nbms"},
		FullSpec:   "30 1 * * 0", DiffSpec: "30 1 * * 1-6", AlertURL: alertServer.URL + "/hook?token=secret",
	}, logger)
	require.NoError(t, err)

	for i := 1; i <= 2; i++ {
		run := s.Backup(context.Background(), backup.Full)
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
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, alerts, 2)
	assert.Equal(t, backup.ResultFailed, alerts[0].Result)
	assert.Equal(t, backup.Full, alerts[0].Type)
	assert.Equal(t, "nbms", alerts[0].Stanza)
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

	done := make(chan backup.Run)
	go func() { done <- s.Backup(context.Background(), backup.Diff) }()
	require.Eventually(t, func() bool { return len(st.callLines(t)) == 1 }, 5*time.Second, 10*time.Millisecond, "the first backup started")

	start := time.Now()
	skipped := s.Backup(context.Background(), backup.Full)
	assert.Equal(t, backup.ResultSkipped, skipped.Result)
	assert.Less(t, time.Since(start), time.Second, "skipped at once, not queued behind the running backup")

	first := <-done
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
