package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nbms-deploy/nbms/conventions"
)

// drillStatusFile is where the deployed scheduler records its last restore
// drill (infra/deploy's drillStatusPath): the file backup-status reads.
const drillStatusFile = "/var/lib/nbms-drill/last-drill.json"

// checkScheduledDrill waits for the deployed scheduler's own restore drill
// (the run's nbms:backup.drillCron, from drillFrom): the latest backup of
// the off-host repository restored into a scratch instance beside the
// database, the main tables counted and every btree index checked with
// amcheck. It checks what the drill left where operators look: the
// scheduler's log line, the status file, and `nbms backup-status
// --drill-status`, which passes; and that the scratch copy is gone.
func (s *stack) checkScheduledDrill(t *testing.T) {
	var passed map[string]any
	deadline := s.drillFrom.Add(10 * time.Minute)
	for passed == nil {
		for _, line := range jsonLog(t, conventions.RoleBackup, s.drillFrom.Add(-time.Minute)) {
			switch line["msg"] {
			case "restore drill passed":
				passed = line
			case "restore drill failed":
				require.FailNow(t, "a scheduled restore drill failed", "%v (cause %v)", line["error"], line["cause"])
			}
		}
		if passed == nil {
			require.True(t, time.Now().Before(deadline), "no scheduled restore drill passed between %s and %s (%s)",
				s.drillFrom.Format(time.TimeOnly), deadline.Format(time.TimeOnly), s.drillCron)
			time.Sleep(5 * time.Second)
		}
	}
	t.Logf("scheduled restore drill: %v", passed)
	assert.Equal(t, float64(conventions.BackupOffHostRepo), passed["repo"], "the drill restores the off-host repository")
	label, _ := passed["label"].(string)
	require.NotEmpty(t, label)
	out, err := execIn(t, conventions.RoleBackup, "", "pgbackrest", "--repo=2", "--output=json", "info")
	require.NoError(t, err)
	assert.Contains(t, out, `"label":"`+label+`"`, "the restored backup is one of repo2's")

	// The rows: the accounts and the audit trail the workflows wrote are in
	// the backup the drill restored.
	counts, _ := passed["row_counts"].(map[string]any)
	for _, table := range []string{"audit_events", "monitoring_sites", "organisations", "users"} {
		require.Contains(t, counts, table, "the drill counts the main tables")
	}
	assert.Positive(t, counts["users"], "the accounts the workflows made")
	assert.Positive(t, counts["organisations"])
	assert.Positive(t, counts["audit_events"])
	amcheck, _ := passed["amcheck"].(map[string]any)
	require.NotNil(t, amcheck, "%v", passed)
	assert.Positive(t, amcheck["indexes"], "amcheck checked the btree indexes")
	assert.Positive(t, amcheck["relations"])

	// Where operators and monitoring look: the status file, and
	// backup-status with it (exit 0: every check passes).
	status, err := execIn(t, conventions.RoleBackup, "", "cat", drillStatusFile)
	require.NoError(t, err)
	var result struct {
		OK    bool   `json:"ok"`
		Repo  int    `json:"repo"`
		Label string `json:"label"`
	}
	require.NoError(t, json.Unmarshal([]byte(status), &result), status)
	assert.True(t, result.OK)
	assert.Equal(t, conventions.BackupOffHostRepo, result.Repo)
	report, err := execIn(t, conventions.RoleBackup, "", "nbms", "backup-status", "--drill-status", drillStatusFile, "--json")
	require.NoError(t, err, "backup-status passes with the drill's check: %s", report)
	var rep struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	require.NoError(t, json.Unmarshal([]byte(report), &rep), report)
	assert.True(t, rep.OK)
	found := false
	for _, c := range rep.Checks {
		if c.Name == "restore drill" {
			found = true
			assert.True(t, c.OK, c.Detail)
			assert.Contains(t, c.Detail, "repo2", c.Detail)
		}
	}
	assert.True(t, found, "backup-status reports the restore drill: %s", report)

	// One drill now, as the runbook has an operator run it: the
	// scheduler's code path, its line on stdout, a new status.
	start := time.Now()
	out, err = execIn(t, conventions.RoleBackup, "", "nbms", "backup-drill", "--repo", "2",
		"--scratch", "/var/lib/nbms-drill", "--status", drillStatusFile)
	require.NoError(t, err, "nbms backup-drill: %s", out)
	assert.Contains(t, out, `"msg":"restore drill passed"`)
	status, err = execIn(t, conventions.RoleBackup, "", "cat", drillStatusFile)
	require.NoError(t, err)
	var now struct {
		OK         bool      `json:"ok"`
		FinishedAt time.Time `json:"finished_at"`
	}
	require.NoError(t, json.Unmarshal([]byte(status), &now), status)
	assert.True(t, now.OK)
	assert.True(t, now.FinishedAt.After(start), "the status is the new drill's: %s", status)
	s.figures.Durations["backup-drill.by-hand"] = time.Since(start).Round(100 * time.Millisecond).String()

	// Nothing of the copy is left: only the status file.
	left, err := execIn(t, conventions.RoleBackup, "", "ls", "-A", "/var/lib/nbms-drill")
	require.NoError(t, err)
	assert.Equal(t, "last-drill.json", strings.TrimSpace(left))

	s.figures.BackupInfo["scheduledDrill"] = map[string]any{
		"seconds": passed["duration_ms"].(float64) / 1000, "restoreSeconds": passed["restore_seconds"],
		"recoverySeconds": passed["recovery_seconds"], "amcheck": amcheck, "rows": counts,
	}
}
