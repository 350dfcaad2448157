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

// drillStatus is the part of the drill status file the test reads.
type drillStatus struct {
	OK              bool             `json:"ok"`
	Repo            int              `json:"repo"`
	Label           string           `json:"label"`
	StartedAt       time.Time        `json:"started_at"`
	FinishedAt      time.Time        `json:"finished_at"`
	DurationMS      int64            `json:"duration_ms"`
	RowCounts       map[string]int64 `json:"row_counts"`
	Amcheck         map[string]any   `json:"amcheck"`
	RestoreSeconds  float64          `json:"restore_seconds"`
	RecoverySeconds float64          `json:"recovery_seconds"`
	Error           string           `json:"error"`
	Cause           string           `json:"cause"`
}

// readDrillStatus reads the deployed scheduler's drill status file.
func readDrillStatus(t *testing.T) drillStatus {
	t.Helper()
	out, err := execIn(t, conventions.RoleBackup, "", "cat", drillStatusFile)
	require.NoError(t, err, "the drill status file: %s", out)
	var st drillStatus
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	return st
}

// checkScheduledDrill checks the deployed scheduler's own restore drills
// (the run's nbms:backup.drillCron, five minutes from drillFrom): the
// latest backup of the off-host repository restored into a scratch
// instance beside the database, the main tables counted and every btree
// index checked with amcheck. The releases since have replaced the backup
// container (its image holds the app's binary), and its log with it: what
// stays is the drill volume's status file, where backup-status reads it.
// Then one drill by hand, as the runbook says, whose log line is on its
// stdout; and the scratch copy is gone.
func (s *stack) checkScheduledDrill(t *testing.T) {
	window := s.drillFrom.Add(5 * time.Minute)
	if wait := time.Until(window.Add(time.Minute)); wait > 0 {
		t.Logf("waiting %s for the last scheduled drill (%s)", wait.Round(time.Second), s.drillCron)
		time.Sleep(wait)
	}
	st := readDrillStatus(t)
	require.True(t, st.OK, "the last scheduled drill failed: %s (cause %s)", st.Error, st.Cause)
	assert.False(t, st.StartedAt.Before(s.drillFrom), "the status is a scheduled drill's: started %s, the first at %s", st.StartedAt, s.drillFrom)
	assert.True(t, st.StartedAt.Before(window.Add(time.Minute)), "started %s, the last due at %s (a drill waits for a running backup)", st.StartedAt, window)
	t.Logf("scheduled restore drill: %+v", st)
	assert.Equal(t, conventions.BackupOffHostRepo, st.Repo, "the drill restores the off-host repository")
	require.NotEmpty(t, st.Label)
	out, err := execIn(t, conventions.RoleBackup, "", "pgbackrest", "--repo=2", "--output=json", "info")
	require.NoError(t, err)
	assert.Contains(t, out, `"label":"`+st.Label+`"`, "the restored backup is one of repo2's")

	// The rows: the account and the audit trail the workflows wrote are
	// in the backup the drill restored.
	for _, table := range []string{"audit_events", "monitoring_sites", "organisations", "users"} {
		require.Contains(t, st.RowCounts, table, "the drill counts the main tables")
	}
	assert.Positive(t, st.RowCounts["users"], "the account the workflows made")
	assert.Positive(t, st.RowCounts["organisations"])
	assert.Positive(t, st.RowCounts["audit_events"])
	require.NotNil(t, st.Amcheck)
	assert.Positive(t, st.Amcheck["indexes"], "amcheck checked the btree indexes")
	assert.Positive(t, st.Amcheck["relations"])
	s.figures.BackupInfo["scheduledDrill"] = map[string]any{
		"seconds": float64(st.DurationMS) / 1000, "restoreSeconds": st.RestoreSeconds,
		"recoverySeconds": st.RecoverySeconds, "amcheck": st.Amcheck, "rows": st.RowCounts,
	}

	// Where monitoring looks: backup-status with the status file (exit
	// 0: every check passes, the drill's too).
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
	now := readDrillStatus(t)
	assert.True(t, now.OK)
	assert.True(t, now.FinishedAt.After(start), "the status is the new drill's: %+v", now)
	s.figures.Durations["backup-drill.by-hand"] = time.Since(start).Round(100 * time.Millisecond).String()

	// Nothing of a copy is left, not even of a drill the host restart
	// killed (a drill removes those first): the status file and the
	// drills' lock.
	left, err := execIn(t, conventions.RoleBackup, "", "ls", "-A", "/var/lib/nbms-drill")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{".nbms-drill.lock", "last-drill.json"}, strings.Fields(left))
}
