package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/internal/testsupport"
)

// `nbms backup-schedule --repo`, as the backup container's command line
// meets it: a bad repository is a usage error that names it, before any
// pgbackrest runs.
func TestBackupScheduleRejectsABadRepo(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"out of range", []string{"--repo", "1", "--repo", "257"}, `invalid value "257" for flag -repo: repository 257 is out of range (want 1-256`},
		{"duplicate", []string{"--repo", "2", "--repo", "2"}, `invalid value "2" for flag -repo: repository 2 is given twice`},
		{"not a number", []string{"--repo", "s3"}, `invalid value "s3" for flag -repo: repository "s3" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append([]string{"backup-schedule"}, tt.args...)...)
			assert.Equal(t, exitUsage, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			assert.Contains(t, errOut, tt.wantErr)
			assert.Empty(t, out, "nothing started: no log line")
		})
	}

	_, errOut, code := run(t, nil, "backup-schedule", "-h")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "-repo N\n")
	assert.Contains(t, errOut, "repeat for several (--repo 1 --repo 2)")
}

// `nbms backup-drill` as an operator meets it: a bad flag is a usage error
// before anything runs; a drill that fails (here its script is missing:
// the real drills are package backup's tests) exits 1, with its error line
// on stdout and its status file written.
func TestBackupDrill(t *testing.T) {
	dir := t.TempDir()
	status := filepath.Join(dir, "drill.json")
	usage := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no status file", nil, "nbms backup-drill: backup: --status is required"},
		{"status file in no directory", []string{"--status", filepath.Join(dir, "nowhere", "drill.json")}, "its directory " + filepath.Join(dir, "nowhere") + " does not exist"},
		{"relative scratch", []string{"--status", status, "--scratch", "tmp"}, `backup: --scratch "tmp" must be an absolute path`},
		{"repository out of range", []string{"--status", status, "--repo", "0"}, `invalid value "0" for flag -repo: repository 0 is out of range (want 1-256`},
		{"bad alert URL", []string{"--status", status, "--alert-url", "alerts.example"}, `alert URL "alerts.example" must be an absolute http(s) URL`},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append([]string{"backup-drill"}, tt.args...)...)
			assert.Equal(t, exitUsage, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			assert.Contains(t, errOut, tt.wantErr)
			assert.Empty(t, out, "nothing ran: no log line")
			assert.NoFileExists(t, status)
		})
	}

	t.Run("a failed drill", func(t *testing.T) {
		missing := filepath.Join(dir, "no-such-drill")
		out, errOut, code := run(t, nil, "backup-drill", "--status", status, "--repo", "2", "--command", missing)
		assert.Equal(t, exitFail, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
		assert.Contains(t, errOut, "nbms backup-drill: backup: restore drill from repo2 failed: "+missing)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 1, "one line: %s", out)
		var line map[string]any
		require.NoError(t, json.Unmarshal([]byte(lines[0]), &line))
		assert.Equal(t, "ERROR", line["level"])
		assert.Equal(t, "restore drill failed", line["msg"])
		assert.Equal(t, "restore_drill", line["type"])
		assert.Equal(t, float64(2), line["repo"])
		assert.Contains(t, line["error"], "no such file or directory")

		data, err := os.ReadFile(status)
		require.NoError(t, err)
		var written map[string]any
		require.NoError(t, json.Unmarshal(data, &written))
		assert.Equal(t, false, written["ok"])
		assert.Equal(t, line["error"], written["error"])
	})

	_, errOut, code := run(t, nil, "backup-drill", "-h")
	assert.Equal(t, exitUsage, code)
	for _, flag := range []string{"-config", "-stanza", "-repo N", "-tables tables", "-command path", "-scratch directory", "-status file", "-alert-url"} {
		assert.Contains(t, errOut, "  "+flag)
	}
}

// The drill flags of `nbms backup-schedule` are checked before anything
// runs, and `nbms backup-status` has its drill check's.
func TestBackupScheduleAndStatusDrillFlags(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := run(t, nil, "backup-schedule", "--repo", "1", "--drill", "15 4 * *", "--drill-repo", "2", "--drill-status", filepath.Join(dir, "drill.json"))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, `backup: drill schedule "15 4 * *"`)
	assert.Contains(t, errOut, "backup: --drill-repo 2 is not one of the repositories backed up (--repo 1)")
	assert.Empty(t, out, "nothing started: no log line")

	_, errOut, code = run(t, nil, "backup-schedule", "--drill-status", filepath.Join(dir, "drill.json"))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, "only --drill SPEC schedules")

	_, errOut, _ = run(t, nil, "backup-schedule", "-h")
	for _, flag := range []string{"-drill spec", "-drill-repo N", "-drill-tables tables", "-drill-command path", "-drill-scratch directory", "-drill-status file"} {
		assert.Contains(t, errOut, "  "+flag)
	}
	_, errOut, _ = run(t, nil, "backup-status", "-h")
	assert.Contains(t, errOut, "  -drill-status file")
	assert.Contains(t, errOut, "  -max-drill-age duration")
	assert.Contains(t, errOut, "(default 170h0m0s)")
}

// `nbms standby-status` as an operator or a health check meets it: bad
// options are usage errors that name every problem before anything
// connects; a primary that is down is a report that says so, exit 1, in
// text and JSON. The real standby's checks are package standby's tests.
func TestStandbyStatus(t *testing.T) {
	usage := []struct {
		name    string
		args    []string
		wantErr []string
	}{
		{"no server", nil, []string{"nbms standby-status: standby: give --primary, --standby or both"}},
		{"a password on the command line", []string{"--primary", "postgres://postgres:hunter2@db/postgres"}, []string{"--primary has a password"}},
		{"bad thresholds", []string{"--standby", "host=db", "--max-lag-bytes", "0", "--max-lag", "0s", "--slot", "Slot"}, []string{
			"max lag bytes must be positive", "max lag must be positive", `slot "Slot" is not a replication slot name`,
		}},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, nil, append([]string{"standby-status"}, tt.args...)...)
			assert.Equal(t, exitUsage, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			for _, want := range tt.wantErr {
				assert.Contains(t, errOut, want)
			}
			assert.NotContains(t, errOut, "hunter2")
			assert.Empty(t, out, "no report")
		})
	}

	closed := testsupport.ClosedAddr(t)
	host, port, _ := strings.Cut(closed, ":")
	primary := "host=" + host + " port=" + port + " user=postgres dbname=postgres sslmode=disable"
	out, errOut, code := run(t, nil, "standby-status", "--primary", primary, "--timeout", "5s")
	assert.Equal(t, exitFail, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	assert.Contains(t, out, "  FAIL primary              host="+host+" port="+port+" dbname=postgres user=postgres: failed to connect")
	assert.True(t, strings.HasSuffix(out, "the standby is NOT OK\n"), out)

	out, _, code = run(t, nil, "standby-status", "--primary", primary, "--json", "--slot", "other_slot")
	assert.Equal(t, exitFail, code)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	assert.Equal(t, false, rep["ok"])
	assert.Equal(t, "other_slot", rep["slot"])
	assert.Nil(t, rep["lag_bytes"])

	_, errOut, code = run(t, nil, "standby-status", "-h")
	assert.Equal(t, exitUsage, code)
	for _, flag := range []string{"-primary string", "-standby string", "-slot slot", "-max-lag-bytes bytes", "-max-lag duration", "-timeout duration", "-json"} {
		assert.Contains(t, errOut, "  "+flag)
	}
	assert.Contains(t, errOut, `(default "nbms_standby")`)
	assert.Contains(t, errOut, "(default 67108864)")
}
